"""Parley: negotiate voice calls between identities over an authenticated relay.

The asyncio SDK::

    from parley import Client

    async with Client.from_credentials("operator.json") as client:
        voice = client.voice()

        @voice.on_start
        async def on_start(issuer, payload): ...

        await voice.start(recipient, cid, call_id, peer_info, data)

A blocking facade with the same calls is :class:`parley.sync.Client`.
"""

from parley.client import Client, Connections, Handler, Voice, add_device, register_identity
from parley.credentials import Credentials
from parley.errors import ParleyError
from parley.ids import DeviceId, IdentityId
from parley.protocol.messages import (
    Message,
    MessageType,
    Payload,
    VoiceAccept,
    VoiceBusy,
    VoiceSetup,
    VoiceStart,
    VoiceStop,
    VoiceSummary,
)

__all__ = [
    "Client",
    "Connections",
    "Credentials",
    "DeviceId",
    "Handler",
    "IdentityId",
    "Message",
    "MessageType",
    "ParleyError",
    "Payload",
    "Voice",
    "VoiceAccept",
    "VoiceBusy",
    "VoiceSetup",
    "VoiceStart",
    "VoiceStop",
    "VoiceSummary",
    "add_device",
    "register_identity",
]

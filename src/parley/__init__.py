"""Parley: negotiate voice calls between identities over an authenticated relay.

The asyncio SDK::

    from parley import Client

    async with Client.from_credentials("operator.json") as client:
        voice = client.voice()

        @voice.on_start
        async def on_start(issuer, payload): ...

        await voice.start(recipient, cid, call_id, peer_info, data)

Calls on top of those messages (ring lifetime, glare, several devices, busy, gone)::

    calls = client.calls()
    call = await calls.place(recipient, peer_info)
    async for event in call.events(): ...  # Dialing, Connected, Ended
    await call.hangup()

    async for incoming in calls.incoming():
        await incoming.accept(peer_info)  # or .busy() / .decline()

A blocking facade with the same calls is :class:`parley.sync.Client`.
"""

from parley.client import (
    Call,
    Calls,
    CallUpdate,
    Client,
    Connections,
    Dialing,
    Handler,
    IncomingCall,
    Voice,
    add_device,
    register_identity,
)
from parley.credentials import Credentials
from parley.errors import ParleyError
from parley.ids import DeviceId, IdentityId
from parley.protocol.call import CallRecord, EndReason
from parley.protocol.call_io import Connected, Ended
from parley.protocol.call_phone import PhoneConfig
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


def _version() -> str:
    """The installed distribution's version; from a source tree without it installed,
    the version in pyproject.toml beside it."""
    from importlib import metadata

    try:
        return metadata.version("parley")
    except metadata.PackageNotFoundError:
        import tomllib
        from pathlib import Path

        pyproject = Path(__file__).resolve().parents[2] / "pyproject.toml"
        try:
            return str(tomllib.loads(pyproject.read_text())["project"]["version"])
        except (OSError, KeyError, tomllib.TOMLDecodeError):
            return "0+unknown"


__version__ = _version()

__all__ = [
    "Call",
    "CallRecord",
    "CallUpdate",
    "Calls",
    "Client",
    "Connected",
    "Connections",
    "Credentials",
    "DeviceId",
    "Dialing",
    "EndReason",
    "Ended",
    "Handler",
    "IdentityId",
    "IncomingCall",
    "Message",
    "MessageType",
    "ParleyError",
    "Payload",
    "PhoneConfig",
    "Voice",
    "VoiceAccept",
    "VoiceBusy",
    "VoiceSetup",
    "VoiceStart",
    "VoiceStop",
    "VoiceSummary",
    "__version__",
    "add_device",
    "register_identity",
]

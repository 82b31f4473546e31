"""The asyncio client SDK: :class:`Client`, its services, registration helpers."""

from parley.client.calls import Calls
from parley.client.client import Client
from parley.client.connection import Connector
from parley.client.connections import Connections
from parley.client.handlers import Handler
from parley.client.phone_call import Call, CallUpdate, Dialing, IncomingCall
from parley.client.registration import add_device, register_identity
from parley.client.voice import Voice

__all__ = [
    "Call",
    "CallUpdate",
    "Calls",
    "Client",
    "Connections",
    "Connector",
    "Dialing",
    "Handler",
    "IncomingCall",
    "Voice",
    "add_device",
    "register_identity",
]

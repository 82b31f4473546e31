"""The asyncio client SDK: :class:`Client`, its services, registration helpers."""

from parley.client.client import Client
from parley.client.connection import Connector
from parley.client.connections import Connections
from parley.client.handlers import Handler
from parley.client.registration import add_device, register_identity
from parley.client.voice import Voice

__all__ = [
    "Client",
    "Connections",
    "Connector",
    "Handler",
    "Voice",
    "add_device",
    "register_identity",
]

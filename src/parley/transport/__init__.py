"""Byte-message transports between a client and a relay.

A :class:`Transport` moves whole binary messages. The relay and the client only see this
protocol, so the same code runs over a real WebSocket (:mod:`.websocket`) and over the
in-memory pair used by unit tests (:mod:`.memory`).
"""

from __future__ import annotations

from typing import Protocol


class Transport(Protocol):
    @property
    def remote(self) -> str:
        """A printable name of the other end, for logs."""
        ...

    @property
    def source(self) -> str:
        """The other end's network address (no port): what per-address limits count."""
        ...

    async def send(self, data: bytes) -> None:
        """Send one message; raises :class:`~parley.errors.TransportClosed` once closed."""
        ...

    async def recv(self) -> bytes:
        """The next message; raises :class:`~parley.errors.TransportClosed` once closed."""
        ...

    async def close(self, code: int = 1000, reason: str = "") -> None: ...

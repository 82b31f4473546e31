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

    def write_now(self, data: bytes) -> bool:
        """Send one message without waiting, if the transport can take it at once (open,
        and its buffer not full); False: nothing was sent (:meth:`send` waits, or says
        why it cannot)."""
        ...

    async def recv(self) -> bytes:
        """The next message; raises :class:`~parley.errors.TransportClosed` once closed."""
        ...

    async def close(self, code: int = 1000, reason: str = "") -> None: ...

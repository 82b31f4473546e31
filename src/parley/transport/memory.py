"""An in-memory transport pair for unit tests: two cross-wired queues."""

from __future__ import annotations

import asyncio

from parley.errors import TransportClosed

_CLOSED = object()


class MemoryTransport:
    def __init__(self, name: str, inbox: asyncio.Queue[object], outbox: asyncio.Queue[object]):
        self._name = name
        self._inbox = inbox
        self._outbox = outbox
        self._closed = False
        self.close_code: int | None = None
        self.close_reason = ""

    @property
    def remote(self) -> str:
        return self._name

    @property
    def source(self) -> str:
        return "memory"

    async def send(self, data: bytes) -> None:
        if not self.write_now(data):
            raise TransportClosed(f"{self._name}: closed")

    def write_now(self, data: bytes) -> bool:
        if self._closed:
            return False
        self._outbox.put_nowait(bytes(data))
        return True

    async def recv(self) -> bytes:
        if self._closed and self._inbox.empty():
            raise TransportClosed(f"{self._name}: closed")
        item = await self._inbox.get()
        if item is _CLOSED:
            self._closed = True
            self._inbox.put_nowait(_CLOSED)  # wake any other reader too
            raise TransportClosed(f"{self._name}: closed by peer ({self.close_reason})")
        assert isinstance(item, bytes)
        return item

    async def close(self, code: int = 1000, reason: str = "") -> None:
        if self._closed:
            return
        self._closed = True
        self.close_code, self.close_reason = code, reason
        self._outbox.put_nowait(_CLOSED)
        self._inbox.put_nowait(_CLOSED)


def memory_pair(name: str = "memory") -> tuple[MemoryTransport, MemoryTransport]:
    """Two connected ends: what one sends, the other receives."""
    a_to_b: asyncio.Queue[object] = asyncio.Queue()
    b_to_a: asyncio.Queue[object] = asyncio.Queue()
    return (
        MemoryTransport(f"{name}-client", b_to_a, a_to_b),
        MemoryTransport(f"{name}-relay", a_to_b, b_to_a),
    )

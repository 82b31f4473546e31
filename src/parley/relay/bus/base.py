"""The bus between relay nodes, as a structural protocol.

A node publishes :mod:`~parley.relay.bus.events` as things happen and hears every other
node's. Publishing never waits for the network (a relay must not slow a Send down for
its wake-up), and events from one node arrive in the order it published them.

Delivery is best effort: when a bus may have lost events (its connection dropped, the
server restarted), it calls ``on_gap`` once it is back, and the node re-reads from the
store what it serves and forgets what it cached. That is why no event carries data.

The bus is also where presence lives across nodes: each node says which devices are
connected to it (``PresenceChanged``), and a bus that spans processes lets a crashed
node's devices expire (``on_event`` then gets a ``PresenceChanged`` with none).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from parley.relay.bus.events import BusEvent

EventHandler = Callable[[BusEvent], None]
GapHandler = Callable[[], None]


class Bus(Protocol):
    @property
    def node(self) -> str:
        """This node's id: what its own events carry, and what it ignores coming back."""
        ...

    async def start(self, on_event: EventHandler, on_gap: GapHandler) -> None:
        """Connect; from now on ``on_event`` gets other nodes' events (never this
        node's own), and ``on_gap`` is called after events may have been lost."""
        ...

    async def close(self) -> None:
        """Publish what is queued, say this node's devices are gone, disconnect."""
        ...

    def publish(self, event: BusEvent) -> None:
        """Send ``event`` to every other node; never blocks."""
        ...

    @property
    def connected(self) -> bool:
        """Whether the bus reaches the other nodes now (for ``/health``)."""
        ...

    def present(self, identity: str) -> frozenset[str]:
        """The devices of ``identity`` connected to *other* nodes, as last heard."""
        ...

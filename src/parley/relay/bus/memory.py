"""Buses inside one process: the default, and a hub of several nodes for tests.

A single relay process is the only node there is, so its default bus
(:class:`LocalBus`) has nobody to tell: publishing does nothing, and no other node has
devices. :class:`MemoryHub` connects several relays in one process the way a Redis bus
connects processes (in order, never the publisher's own events), so the cross-node
behaviour of the relay is a plain unit test.
"""

from __future__ import annotations

import asyncio
import logging
import secrets

from parley.relay.bus.base import EventHandler, GapHandler
from parley.relay.bus.events import BusEvent, PresenceChanged

log = logging.getLogger(__name__)


class LocalBus:
    """The bus of a relay that is the only node."""

    def __init__(self, node: str | None = None) -> None:
        self._node = node or secrets.token_hex(4)

    @property
    def node(self) -> str:
        return self._node

    @property
    def connected(self) -> bool:
        return True  # there is nobody to reach

    async def start(self, on_event: EventHandler, on_gap: GapHandler) -> None:
        pass

    async def close(self) -> None:
        pass

    def publish(self, event: BusEvent) -> None:
        pass

    def present(self, identity: str) -> frozenset[str]:
        return frozenset()


class MemoryHub:
    """Several nodes' buses in one process: ``hub.bus(node)`` for each relay."""

    def __init__(self) -> None:
        self._buses: dict[str, MemoryBus] = {}

    def bus(self, node: str) -> MemoryBus:
        bus = MemoryBus(self, node)
        self._buses[node] = bus
        return bus

    def _deliver(self, sender: str, event: BusEvent) -> None:
        for node, bus in list(self._buses.items()):
            if node != sender:
                bus._receive(event)

    def _leave(self, node: str) -> None:
        self._buses.pop(node, None)

    def _presence_of_others(self, node: str) -> dict[str, dict[str, tuple[str, ...]]]:
        """What a joining node must know: every other node's devices, by identity."""
        view: dict[str, dict[str, tuple[str, ...]]] = {}
        for other, bus in self._buses.items():
            if other != node:
                for identity, devices in bus._mine.items():
                    view.setdefault(identity, {})[other] = devices
        return view


class MemoryBus:
    """One node on a :class:`MemoryHub`. Events go through the event loop (as over a
    network: after the publisher's current step), in publishing order."""

    def __init__(self, hub: MemoryHub, node: str) -> None:
        self._hub = hub
        self._node = node
        self._on_event: EventHandler | None = None
        self._on_gap: GapHandler | None = None
        self._queue: asyncio.Queue[BusEvent] = asyncio.Queue()
        self._pump: asyncio.Task[None] | None = None
        # identity -> node -> devices connected there
        self._presence: dict[str, dict[str, tuple[str, ...]]] = {}
        self._mine: dict[str, tuple[str, ...]] = {}
        self._closed = False

    @property
    def node(self) -> str:
        return self._node

    @property
    def connected(self) -> bool:
        return not self._closed

    async def start(self, on_event: EventHandler, on_gap: GapHandler) -> None:
        self._on_event, self._on_gap = on_event, on_gap
        # As a bus across processes reads presence from its server when it joins.
        self._presence = self._hub._presence_of_others(self._node)
        self._pump = asyncio.create_task(self._run(), name=f"memory-bus:{self._node}")

    async def close(self) -> None:
        for identity in list(self._mine):
            self.publish(PresenceChanged(identity=identity, node=self._node, devices=()))
        self._closed = True
        self._hub._leave(self._node)
        if self._pump is not None:
            self._pump.cancel()
            await asyncio.gather(self._pump, return_exceptions=True)

    def publish(self, event: BusEvent) -> None:
        if self._closed:
            return
        if isinstance(event, PresenceChanged):
            self._mine[event.identity] = event.devices
            if not event.devices:
                del self._mine[event.identity]
        self._hub._deliver(self._node, event)

    def present(self, identity: str) -> frozenset[str]:
        nodes = self._presence.get(identity, {})
        return frozenset(device for devices in nodes.values() for device in devices)

    def gap(self) -> None:
        """As if events had been lost: the node must re-read (for tests)."""
        if self._on_gap is not None:
            self._on_gap()

    def _receive(self, event: BusEvent) -> None:
        self._queue.put_nowait(event)

    async def _run(self) -> None:
        while True:
            event = await self._queue.get()
            if isinstance(event, PresenceChanged):
                nodes = self._presence.setdefault(event.identity, {})
                if event.devices:
                    nodes[event.node] = event.devices
                else:
                    nodes.pop(event.node, None)
                    if not nodes:
                        del self._presence[event.identity]
            assert self._on_event is not None
            try:
                self._on_event(event)
            except Exception:  # a handler's bug must not stop the bus for this node
                log.exception("bus handler failed on %s", type(event).__name__)

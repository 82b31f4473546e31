"""What a test node does with its bus: record every event and gap, and wait for them."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from tests import waits

from parley.relay.bus.events import BusEvent, PresenceChanged

WAIT = waits.WAIT


class Recorder:
    """``on_event`` / ``on_gap`` for ``Bus.start``, keeping what they got."""

    def __init__(self) -> None:
        self.events: list[BusEvent] = []
        self.gaps = 0
        self._changed = asyncio.Event()

    def on_event(self, event: BusEvent) -> None:
        self.events.append(event)
        self._changed.set()

    def on_gap(self) -> None:
        self.gaps += 1
        self._changed.set()

    def presence(self, identity: str | None = None) -> list[PresenceChanged]:
        return [
            event
            for event in self.events
            if isinstance(event, PresenceChanged) and identity in (None, event.identity)
        ]

    async def until(self, condition: Callable[[], bool], timeout: float = WAIT) -> None:
        """Wait until ``condition()`` holds, checking after each event or gap."""
        async with asyncio.timeout(timeout):
            while not condition():
                self._changed.clear()
                await self._changed.wait()

    async def count(self, n: int, timeout: float = WAIT) -> list[BusEvent]:
        """Wait for ``n`` events in all; the first ``n``."""
        await self.until(lambda: len(self.events) >= n, timeout)
        return self.events[:n]


async def eventually(condition: Callable[[], bool], timeout: float = WAIT) -> None:
    """Wait until ``condition()`` holds, for what no handler announces (Redis keys)."""
    async with asyncio.timeout(timeout):
        while not condition():  # noqa: ASYNC110  (Redis tells nobody: polled)
            await asyncio.sleep(0.01)

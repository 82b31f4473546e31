"""The bus between relay nodes: wake-ups, invalidations and presence (``base``), in
process by default (``memory``), over Redis across machines (``redis``)."""

from __future__ import annotations

from parley.relay.bus.base import Bus
from parley.relay.bus.events import BusEvent
from parley.relay.bus.memory import LocalBus, MemoryHub

__all__ = ["Bus", "BusEvent", "LocalBus", "MemoryHub"]

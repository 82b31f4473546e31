from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from parley.relay import Relay, RelayConfig, SqliteStore

from .helpers import RelayLink, World


@pytest.fixture
async def relay(tmp_path: Path) -> AsyncIterator[Relay]:
    relay = Relay(SqliteStore(tmp_path / "relay.db"), RelayConfig(), clock=time.time)
    await relay.start()
    yield relay
    await relay.close()


@pytest.fixture
async def world(relay: Relay, tmp_path: Path) -> AsyncIterator[World]:
    world = World(relay, RelayLink(relay), tmp_path)
    yield world
    await world.aclose()

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from parley.relay import Relay, RelayConfig, SqliteStore

from .helpers import FakeClock


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def config() -> RelayConfig:
    # The sweeper stays out of the way; tests call relay.sweep() when they mean it.
    return RelayConfig(sweep_interval=3600)


@pytest.fixture
async def relay(tmp_path: Path, config: RelayConfig, clock: FakeClock) -> AsyncIterator[Relay]:
    relay = Relay(SqliteStore(tmp_path / "relay.db"), config, clock=clock)
    await relay.start()
    yield relay
    await relay.close()

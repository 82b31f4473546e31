"""One setting chooses the bus: nothing (a node alone) or a Redis URL with its prefix."""

from __future__ import annotations

from pathlib import Path

import pytest


def test_a_bus_is_named_by_a_redis_url_or_nothing() -> None:
    from parley.errors import InvalidBusLocation
    from parley.relay.bus.location import backend as bus_backend

    assert bus_backend(None) == "local"
    assert bus_backend("redis://127.0.0.1:6379/0") == "redis"
    with pytest.raises(InvalidBusLocation, match="redis://"):
        bus_backend("nats://127.0.0.1:4222")


def test_a_bus_needs_a_shared_store(tmp_path: Path) -> None:
    from parley.errors import InvalidBusLocation
    from parley.relay.server import RelayServer

    with pytest.raises(InvalidBusLocation, match="postgresql"):
        RelayServer(tmp_path, bus="redis://127.0.0.1:6379/0")


def test_a_bus_url_may_name_its_key_prefix() -> None:
    from parley.relay.bus.location import split_prefix

    assert split_prefix("redis://h:6379/0") == ("redis://h:6379/0", "parley")
    assert split_prefix("redis://h:6379/0?prefix=test-1&x=y") == ("redis://h:6379/0?x=y", "test-1")

"""One setting chooses the store: nothing, sqlite:PATH, or a PostgreSQL URL."""

from __future__ import annotations

from pathlib import Path

import pytest

from parley.errors import InvalidStoreLocation
from parley.relay.store.location import backend, open_store, redacted
from parley.relay.store.sqlite import SqliteStore


def test_nothing_is_sqlite_in_the_data_dir(tmp_path: Path) -> None:
    store = open_store(None, tmp_path)
    assert isinstance(store, SqliteStore)
    assert backend(None) == "sqlite"


def test_sqlite_path(tmp_path: Path) -> None:
    assert isinstance(open_store(f"sqlite:{tmp_path / 'x.db'}", tmp_path), SqliteStore)


@pytest.mark.parametrize("url", ["postgresql://u@127.0.0.1:5432/db", "postgres://127.0.0.1/db"])
def test_postgresql_urls(url: str) -> None:
    assert backend(url) == "postgresql"


@pytest.mark.parametrize("url", ["mysql://x/y", "relay.db", "http://x"])
def test_anything_else_is_a_typed_error(url: str) -> None:
    with pytest.raises(InvalidStoreLocation, match="postgresql://"):
        backend(url)


def test_passwords_never_show() -> None:
    assert redacted("postgresql://u:secret@h:5432/db") == "postgresql://u:***@h:5432/db"
    assert redacted("postgresql://u@h/db") == "postgresql://u@h/db"


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

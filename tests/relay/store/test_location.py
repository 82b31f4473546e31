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

"""What only the SQLite backend has: one file in WAL mode."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from parley.relay import SqliteStore


async def test_the_database_is_one_file_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "relay.db"
    store = SqliteStore(path)
    await store.open()
    await store.permit("alice", "bob")
    await store.close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert db.execute("SELECT owner, peer FROM permits").fetchall() == [("alice", "bob")]

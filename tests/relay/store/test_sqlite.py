"""What only the SQLite backend has: one file in WAL mode, batched statements."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from tests.relay.helpers import Identity
from tests.relay.store.helpers import add_device, add_identity, envelope

from parley.relay import SqliteStore
from parley.relay.store import StoreStatus
from parley.relay.store.sqlite import _confirm_all, _store_envelopes


async def test_the_database_is_one_file_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "relay.db"
    store = SqliteStore(path)
    await store.open()
    await store.permit("alice", "bob")
    await store.close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert db.execute("SELECT owner, peer FROM permits").fetchall() == [("alice", "bob")]


async def _people_in(path: Path) -> None:
    store = SqliteStore(path)
    await store.open()
    alice, bob = Identity.create("alice"), Identity.create("bob")
    for person in (alice, bob):
        await add_identity(store, person)
        await add_device(store, person, "d2")
    await store.store_envelope(envelope("old"))
    await store.close()


async def test_a_batch_of_envelopes_is_stored_in_a_few_statements(tmp_path: Path) -> None:
    path = tmp_path / "relay.db"
    await _people_in(path)
    batch = [envelope(f"e{i}") for i in range(70)]  # more than one multi-row INSERT
    batch[10] = envelope("e3")  # a retry within the batch
    batch[20] = envelope("e4", recipient="bob")  # an id taken within the batch
    batch[30] = envelope("old")  # a retry of one stored before
    batch[40] = envelope("old", sender="alice")  # an id taken before
    conn = sqlite3.connect(path, isolation_level=None)
    statements: list[str] = []
    conn.set_trace_callback(statements.append)
    conn.execute("BEGIN")
    results = _store_envelopes(conn, batch)
    conn.execute("COMMIT")
    assert len(statements) <= 12  # not a few per envelope
    statuses = [r.status for r in results]
    odd = {10: StoreStatus.DUPLICATE, 20: StoreStatus.CONFLICT}
    odd |= {30: StoreStatus.DUPLICATE, 40: StoreStatus.CONFLICT}
    assert statuses == [odd.get(i, StoreStatus.STORED) for i in range(70)]
    assert all(results[i].rows == () for i in odd)
    for result in results:
        if result.status is StoreStatus.STORED:
            devices = [(r.identity, r.device) for r in result.rows]
            assert devices == [("alice", "d1"), ("alice", "d2"), ("bob", "d2")]
    offsets = [r.offset for result in results for r in result.rows]
    assert offsets == sorted(offsets) and len(set(offsets)) == len(offsets)
    stored = conn.execute("SELECT id FROM messages ORDER BY seq").fetchall()
    assert [i for (i,) in stored] == ["old"] + [e.id for i, e in enumerate(batch) if i not in odd]
    conn.close()


async def test_confirms_in_one_batch_keep_the_highest_and_release_bodies(tmp_path: Path) -> None:
    path = tmp_path / "relay.db"
    await _people_in(path)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("BEGIN")
    results = _store_envelopes(conn, [envelope(f"e{i}") for i in range(4)])
    alice = [r.offset for result in results for r in result.rows if r.identity == "alice"]
    d1, d2 = alice[0::2], alice[1::2]
    _confirm_all(conn, [("alice", "d1", d1[2]), ("alice", "d1", d1[0]), ("alice", "d2", d2[1])])
    _confirm_all(conn, [("bob", "d2", 10**9), ("nobody", "d1", 5)])
    conn.execute("COMMIT")
    confirmed = dict(conn.execute("SELECT identity || ':' || device, confirmed FROM devices"))
    assert confirmed == {"alice:d1": d1[2], "alice:d2": d2[1], "bob:d1": 0, "bob:d2": 10**9}
    left = conn.execute("SELECT identity, device, pos FROM inbox ORDER BY pos").fetchall()
    assert left == [("alice", "d2", d2[2]), ("alice", "d1", d1[3]), ("alice", "d2", d2[3])]
    bodies = dict(conn.execute("SELECT id, body IS NOT NULL FROM messages"))
    # "old" was in alice d1's and d2's inboxes too, below every offset confirmed here.
    assert bodies == {"old": 0, "e0": 0, "e1": 0, "e2": 1, "e3": 1}
    conn.close()

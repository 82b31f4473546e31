"""SqliteStore: fan-out, idempotency, confirmation, revocation, expiry, durability."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from tests.relay.helpers import Identity

from parley.protocol.frames import Envelope
from parley.protocol.keychain import KeyOp
from parley.relay import SqliteStore
from parley.relay.store import StoreStatus

NOW = 1000.0


def envelope(
    id_: str, sender: str = "bob", recipient: str = "alice", expires: float = 2000.0
) -> Envelope:
    return Envelope(
        id=id_,
        sender=sender,
        sender_device="d1",
        recipient=recipient,
        body=b"body of " + id_.encode(),
        sent_at=NOW,
        expires_at=expires,
    )


async def add_identity(store: SqliteStore, ident: Identity) -> None:
    assert await store.create_identity(ident.id, None, ident.genesis, ident.genesis.decoded(), NOW)


async def add_device(store: SqliteStore, ident: Identity, device: str) -> None:
    entry = ident.next_entry(KeyOp.ADD, device, signer="d1")
    await store.append_entry(ident.id, entry, ident.chain.append(entry))


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    store = SqliteStore(tmp_path / "relay.db")
    await store.open()
    yield store
    await store.close()


@pytest.fixture
async def people(store: SqliteStore) -> tuple[Identity, Identity]:
    alice, bob = Identity.create("alice"), Identity.create("bob")
    await add_identity(store, alice)
    await add_identity(store, bob)
    await add_device(store, alice, "d2")
    await add_device(store, bob, "d2")
    return alice, bob


async def test_identities_and_chains(store: SqliteStore) -> None:
    alice = Identity.create("alice")
    await add_identity(store, alice)
    assert not await store.create_identity(
        "alice", None, alice.genesis, alice.genesis.decoded(), NOW
    )
    await add_device(store, alice, "d2")
    assert await store.load_chain("alice") == alice.chain.entries
    assert await store.load_chain("nobody") is None


async def test_permits(store: SqliteStore) -> None:
    await store.permit("alice", "bob")
    await store.permit("alice", "bob")
    await store.permit("alice", "carol")
    await store.unpermit("alice", "carol")
    await store.unpermit("alice", "dave")
    assert await store.load_permits("alice") == {"bob"}
    assert await store.load_permits("bob") == set()


async def test_an_envelope_fans_out_to_recipient_and_other_sender_devices(
    store: SqliteStore, people: tuple[Identity, Identity]
) -> None:
    result = await store.store_envelope(envelope("e1"))
    assert result.status is StoreStatus.STORED
    targets = {(r.identity, r.device) for r in result.rows}
    assert targets == {("alice", "d1"), ("alice", "d2"), ("bob", "d2")}
    for row in result.rows:
        items = await store.read_inbox(row.identity, row.device, 0, 10)
        assert [(i.offset, i.envelope) for i in items] == [(row.offset, envelope("e1"))]


async def test_an_envelope_id_is_stored_once(
    store: SqliteStore, people: tuple[Identity, Identity]
) -> None:
    await store.store_envelope(envelope("e1"))
    again = await store.store_envelope(envelope("e1"))
    assert again.status is StoreStatus.DUPLICATE
    assert again.rows == ()
    other = await store.store_envelope(envelope("e1", sender="alice", recipient="bob"))
    assert other.status is StoreStatus.CONFLICT
    assert len(await store.read_inbox("alice", "d1", 0, 10)) == 1


async def test_concurrent_stores_get_increasing_offsets_in_order(
    store: SqliteStore, people: tuple[Identity, Identity]
) -> None:
    results = await asyncio.gather(*(store.store_envelope(envelope(f"e{i}")) for i in range(50)))
    offsets = [
        row.offset
        for result in results
        for row in result.rows
        if (row.identity, row.device) == ("alice", "d1")
    ]
    assert offsets == sorted(offsets)
    items = await store.read_inbox("alice", "d1", 0, 100)
    assert [i.envelope.id for i in items] == [f"e{i}" for i in range(50)]
    page = await store.read_inbox("alice", "d1", items[9].offset, 5)
    assert [i.envelope.id for i in page] == [f"e{i}" for i in range(10, 15)]


async def test_confirm_is_monotonic_and_releases_bodies(tmp_path: Path, store: SqliteStore) -> None:
    await add_identity(store, Identity.create("carol"))  # one device: one copy each

    def note(id_: str) -> Envelope:
        return envelope(id_, sender="carol", recipient="carol")

    for i in range(3):
        await store.store_envelope(note(f"e{i}"))
    items = await store.read_inbox("carol", "d1", 0, 10)
    await store.confirm("carol", "d1", items[1].offset)
    await store.confirm("carol", "d1", items[0].offset)
    assert await store.confirmed_offset("carol", "d1") == items[1].offset
    assert await store.confirmed_offset("carol", "d9") == 0
    assert [i.envelope.id for i in await store.read_inbox("carol", "d1", 0, 10)] == ["e2"]
    with sqlite3.connect(tmp_path / "relay.db") as db:
        bodies = dict(db.execute("SELECT id, body IS NOT NULL FROM messages"))
    assert bodies == {"e0": 0, "e1": 0, "e2": 1}
    # The id outlives the body, so a late retry is still recognised.
    assert (await store.store_envelope(note("e0"))).status is StoreStatus.DUPLICATE


async def test_revoke_drops_the_inbox_and_stops_fan_out(
    store: SqliteStore, people: tuple[Identity, Identity]
) -> None:
    alice, _ = people
    await store.store_envelope(envelope("e1"))
    revoke = alice.next_entry(KeyOp.REVOKE, "d2", signer="d1")
    await store.append_entry("alice", revoke, alice.chain.append(revoke))
    assert await store.read_inbox("alice", "d2", 0, 10) == []
    result = await store.store_envelope(envelope("e2"))
    assert ("alice", "d2") not in {(r.identity, r.device) for r in result.rows}


async def test_expire_and_drop(store: SqliteStore, people: tuple[Identity, Identity]) -> None:
    await store.store_envelope(envelope("soon", expires=1500.0))
    await store.store_envelope(envelope("late", expires=3000.0))
    assert await store.expire(1499.0) == 0
    assert await store.expire(1500.0) == 3  # alice d1, alice d2, bob d2
    late = await store.read_inbox("alice", "d1", 0, 10)
    assert [i.envelope.id for i in late] == ["late"]
    assert await store.drop_rows("alice", "d1", [late[0].offset, 999]) == 1
    assert await store.read_inbox("alice", "d1", 0, 10) == []
    # An expired envelope's id is forgotten with it.
    assert (await store.store_envelope(envelope("soon", expires=4000.0))).status is (
        StoreStatus.STORED
    )


async def test_everything_survives_reopening(tmp_path: Path) -> None:
    path = tmp_path / "relay.db"
    store = SqliteStore(path)
    await store.open()
    alice, bob = Identity.create("alice"), Identity.create("bob")
    await add_identity(store, alice)
    await add_identity(store, bob)
    await store.permit("alice", "bob")
    await store.store_envelope(envelope("e1"))
    await store.store_envelope(envelope("e2"))
    first = (await store.read_inbox("alice", "d1", 0, 10))[0]
    await store.confirm("alice", "d1", first.offset)
    await store.close()

    reopened = SqliteStore(path)
    await reopened.open()
    try:
        assert await reopened.load_chain("alice") == alice.chain.entries
        assert await reopened.load_permits("alice") == {"bob"}
        assert await reopened.confirmed_offset("alice", "d1") == first.offset
        items = await reopened.read_inbox("alice", "d1", 0, 10)
        assert [i.envelope.id for i in items] == ["e2"]
        with sqlite3.connect(path) as db:
            assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    finally:
        await reopened.close()

"""Every backend behaves the same (each test runs on SQLite and on PostgreSQL): fan-out,
idempotency, offsets, confirmation, revocation, expiry, keys, reopening."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest
from tests.relay.helpers import Identity
from tests.relay.store.conftest import Backend
from tests.relay.store.helpers import (
    NOW,
    add_device,
    add_identity,
    envelope,
    identity_key,
    one_time_keys,
    revoke_device,
)

from parley.errors import RegistrationRefused
from parley.relay.store import Claim, KeyStatus, RelayStore, StoreResult, StoreStatus

People = tuple[Identity, Identity]


def offsets_of(results: Sequence[StoreResult], identity: str, device: str) -> list[int]:
    return [
        row.offset
        for result in results
        for row in result.rows
        if (row.identity, row.device) == (identity, device)
    ]


# -- directory ----------------------------------------------------------------------------


async def test_identities_and_chains(store: RelayStore) -> None:
    alice = Identity.create("alice")
    await add_identity(store, alice)
    assert not await store.create_identity(
        "alice", None, alice.genesis, alice.genesis.decoded(), NOW
    )
    await add_device(store, alice, "d2")
    await revoke_device(store, alice, "d2")
    assert await store.load_chain("alice") == alice.chain.entries
    assert await store.load_chain("nobody") is None


async def test_any_name_is_stored(store: RelayStore) -> None:
    for n, name in enumerate(["Zoë 🙂", "nul\x00inside", ""]):
        ident = Identity.create(f"id{n}")
        assert await store.create_identity(
            ident.id, name, ident.genesis, ident.genesis.decoded(), NOW
        )
        assert await store.load_chain(ident.id) == ident.chain.entries


async def test_permits(store: RelayStore) -> None:
    await store.permit("alice", "bob")
    await store.permit("alice", "bob")
    await store.permit("alice", "carol")
    await store.unpermit("alice", "carol")
    await store.unpermit("alice", "dave")
    assert await store.load_permits("alice") == {"bob"}
    assert await store.load_permits("bob") == set()


# -- envelopes and inboxes ----------------------------------------------------------------


async def test_an_envelope_fans_out_to_recipient_and_other_sender_devices(
    store: RelayStore, people: People
) -> None:
    result = await store.store_envelope(envelope("e1"))
    assert result.status is StoreStatus.STORED
    targets = [(r.identity, r.device) for r in result.rows]
    assert targets == [("alice", "d1"), ("alice", "d2"), ("bob", "d2")]
    for row in result.rows:
        items = await store.read_inbox(row.identity, row.device, 0, 10)
        assert [(i.offset, i.envelope) for i in items] == [(row.offset, envelope("e1"))]


async def test_a_recipient_with_no_active_device_gets_no_rows(
    store: RelayStore, people: People
) -> None:
    carol = Identity.create("carol")
    await add_identity(store, carol)
    await revoke_device(store, carol, "d1")
    result = await store.store_envelope(envelope("e1", recipient="carol"))
    assert result.status is StoreStatus.STORED
    assert [(r.identity, r.device) for r in result.rows] == [("bob", "d2")]


async def test_an_envelope_id_is_stored_once(store: RelayStore, people: People) -> None:
    await store.store_envelope(envelope("e1"))
    again = await store.store_envelope(envelope("e1"))
    assert again.status is StoreStatus.DUPLICATE
    assert again.rows == ()
    other = await store.store_envelope(envelope("e1", sender="alice", recipient="bob"))
    assert other.status is StoreStatus.CONFLICT
    assert len(await store.read_inbox("alice", "d1", 0, 10)) == 1
    assert await store.stored_from("bob", "alice", "e1")
    assert not await store.stored_from("alice", "bob", "e1")
    assert not await store.stored_from("bob", "bob", "e1")
    assert not await store.stored_from("bob", "alice", "e2")


async def test_repeats_of_an_id_stored_together_act_as_one_after_the_other(
    store: RelayStore, people: People
) -> None:
    # Made at once, they are written in one group: the first is stored, the rest are
    # what they would be after it.
    results = await asyncio.gather(
        store.store_envelope(envelope("e1")),
        store.store_envelope(envelope("e1")),
        store.store_envelope(envelope("e1", sender="alice", recipient="bob")),
        store.store_envelope(envelope("e2")),
        store.store_envelope(envelope("e2")),
    )
    assert [r.status for r in results] == [
        StoreStatus.STORED,
        StoreStatus.DUPLICATE,
        StoreStatus.CONFLICT,
        StoreStatus.STORED,
        StoreStatus.DUPLICATE,
    ]
    assert [r.rows for r in results[1:3]] == [(), ()]
    # bob d1 -> alice: alice d1, alice d2 and bob d2, in key order, after e1 on each.
    first, second = results[0].rows, results[3].rows
    assert [(r.identity, r.device) for r in second] == [
        ("alice", "d1"),
        ("alice", "d2"),
        ("bob", "d2"),
    ]
    assert all(b.offset > a.offset for a, b in zip(first, second, strict=True))
    items = await store.read_inbox("bob", "d2", 0, 10)
    assert [i.envelope.id for i in items] == ["e1", "e2"]
    assert await store.read_inbox("bob", "d1", 0, 10) == []


async def test_stores_both_ways_made_at_once_number_each_device_in_order(
    store: RelayStore, people: People
) -> None:
    results = await asyncio.gather(
        *(
            store.store_envelope(
                envelope(f"e{i}", *(("alice", "bob") if i % 3 else ("bob", "alice")))
            )
            for i in range(30)
        )
    )
    for identity in ("alice", "bob"):
        for device in ("d1", "d2"):
            offsets = offsets_of(results, identity, device)
            assert offsets == sorted(set(offsets))  # increasing, in call order
            items = await store.read_inbox(identity, device, 0, 100)
            assert [i.offset for i in items] == offsets
    # Each sender device gets nothing of its own sends; the other devices get all.
    assert len(offsets_of(results, "alice", "d2")) == 30
    assert len(offsets_of(results, "bob", "d1")) == 20
    assert len(offsets_of(results, "alice", "d1")) == 10


async def test_an_envelope_id_reused_for_another_recipient_is_a_conflict(
    store: RelayStore, people: People
) -> None:
    carol = Identity.create("carol")
    await add_identity(store, carol)
    assert (await store.store_envelope(envelope("e1"))).status is StoreStatus.STORED
    to_carol = await store.store_envelope(envelope("e1", recipient="carol"))
    assert to_carol.status is StoreStatus.CONFLICT
    assert to_carol.rows == ()
    assert await store.read_inbox("carol", "d1", 0, 10) == []


async def test_any_envelope_id_is_stored_and_read_back(store: RelayStore, people: People) -> None:
    ids = ["Zoë 🙂", "nul\x00inside", "x" * 200, "Ab", "ab"]
    for id_ in ids:
        assert (await store.store_envelope(envelope(id_))).status is StoreStatus.STORED
        assert await store.stored_from("bob", "alice", id_)
    items = await store.read_inbox("alice", "d1", 0, 10)
    assert [i.envelope for i in items] == [envelope(id_) for id_ in ids]
    assert (await store.store_envelope(envelope("nul\x00inside"))).status is StoreStatus.DUPLICATE
    assert (await store.store_envelope(envelope("nul"))).status is StoreStatus.STORED


async def test_concurrent_stores_get_increasing_offsets_in_order(
    store: RelayStore, people: People
) -> None:
    results = await asyncio.gather(*(store.store_envelope(envelope(f"e{i}")) for i in range(50)))
    offsets = offsets_of(results, "alice", "d1")
    assert offsets == sorted(offsets)
    items = await store.read_inbox("alice", "d1", 0, 100)
    assert [i.envelope.id for i in items] == [f"e{i}" for i in range(50)]
    page = await store.read_inbox("alice", "d1", items[9].offset, 5)
    assert [i.envelope.id for i in page] == [f"e{i}" for i in range(10, 15)]


async def test_concurrent_stores_return_in_offset_order(store: RelayStore, people: People) -> None:
    # The relay pushes each envelope as its store call returns, and a connection skips
    # offsets at or below the last one it sent: returns must come in offset order.
    returned: list[int] = []

    async def store_one(i: int) -> None:
        # Both directions: every call shares devices with the others.
        sender, recipient = ("alice", "bob") if i % 2 else ("bob", "alice")
        result = await store.store_envelope(envelope(f"e{i}", sender, recipient))
        returned.extend(r.offset for r in result.rows if (r.identity, r.device) == ("bob", "d2"))

    await asyncio.gather(*(store_one(i) for i in range(60)))
    assert len(returned) == 60
    assert returned == sorted(returned)


async def test_stores_and_confirms_made_at_once_act_as_one_after_the_other(
    backend: Backend, store: RelayStore, people: People
) -> None:
    # Made together, they share a commit (and, on SQLite, a few batched statements).
    rows: dict[tuple[str, str], list[int]] = {}
    for i in range(2):
        result = await store.store_envelope(envelope(f"e{i}"))
        for r in result.rows:
            rows.setdefault((r.identity, r.device), []).append(r.offset)
    done = await asyncio.gather(
        store.store_envelope(envelope("e2")),
        store.confirm("alice", "d1", rows["alice", "d1"][0]),
        store.store_envelope(envelope("e2")),  # a retry, made before the first returned
        store.store_envelope(envelope("e3")),
        store.confirm("alice", "d2", rows["alice", "d2"][1]),
        store.store_envelope(envelope("e3", recipient="bob")),  # e3 is taken
        store.confirm("alice", "d1", rows["alice", "d1"][1]),
        store.confirm("bob", "d2", rows["bob", "d2"][0]),
    )
    stores = [r for r in done if isinstance(r, StoreResult)]
    assert len(stores) == 4
    first, retry, third, taken = stores
    assert [first.status, third.status] == [StoreStatus.STORED] * 2
    assert retry == StoreResult(StoreStatus.DUPLICATE)
    assert taken == StoreResult(StoreStatus.CONFLICT)
    for who in (("alice", "d1"), ("alice", "d2"), ("bob", "d2")):
        (before,), (after,) = offsets_of([first], *who), offsets_of([third], *who)
        assert max(rows[who]) < before < after
    assert await store.confirmed_offset("alice", "d1") == rows["alice", "d1"][1]
    assert await store.confirmed_offset("alice", "d2") == rows["alice", "d2"][1]
    inboxes = {
        who: [i.envelope.id for i in await store.read_inbox(*who, 0, 10)]
        for who in (("alice", "d1"), ("alice", "d2"), ("bob", "d2"))
    }
    assert inboxes == {
        ("alice", "d1"): ["e2", "e3"],
        ("alice", "d2"): ["e2", "e3"],
        ("bob", "d2"): ["e1", "e2", "e3"],
    }
    # e0's last copy went with these confirms; e1 is still in bob d2's inbox.
    assert await backend.bodies() == {"e0": False, "e1": True, "e2": True, "e3": True}


async def test_offsets_keep_growing_after_rows_are_gone(store: RelayStore, people: People) -> None:
    first = await store.store_envelope(envelope("e1"))
    (row,) = [r for r in first.rows if r.device == "d1"]
    await store.confirm("alice", "d1", row.offset)
    second = await store.store_envelope(envelope("e2"))
    (after,) = [r for r in second.rows if (r.identity, r.device) == ("alice", "d1")]
    assert after.offset > row.offset
    assert [i.offset for i in await store.read_inbox("alice", "d1", 0, 10)] == [after.offset]


async def test_read_inbox_pages(store: RelayStore, people: People) -> None:
    for i in range(5):
        await store.store_envelope(envelope(f"e{i}"))
    everything = await store.read_inbox("alice", "d1", 0, 100)
    assert [i.envelope.id for i in everything] == [f"e{i}" for i in range(5)]
    assert await store.read_inbox("alice", "d1", 0, 0) == []
    assert await store.read_inbox("alice", "d1", everything[-1].offset, 10) == []
    assert await store.read_inbox("alice", "d9", 0, 10) == []
    assert await store.read_inbox("nobody", "d1", 0, 10) == []


async def test_a_read_stops_once_its_bodies_reach_max_bytes(
    store: RelayStore, people: People
) -> None:
    for i in range(5):
        await store.store_envelope(envelope(f"e{i}"))  # bodies of 10 bytes: b"body of e0"
    ids = [
        [i.envelope.id for i in await store.read_inbox("alice", "d1", 0, 100, max_bytes=m)]
        for m in (1, 10, 11, 25, 30, 10_000)
    ]
    assert ids == [
        ["e0"],  # at least one, however small the budget
        ["e0"],
        ["e0", "e1"],
        ["e0", "e1", "e2"],
        ["e0", "e1", "e2"],
        ["e0", "e1", "e2", "e3", "e4"],
    ]
    first = await store.read_inbox("alice", "d1", 0, 100, max_bytes=20)
    rest = await store.read_inbox("alice", "d1", first[-1].offset, 2, max_bytes=10_000)
    assert [i.envelope.id for i in first + rest] == ["e0", "e1", "e2", "e3"]


async def test_confirm_is_monotonic_and_releases_bodies(
    backend: Backend, store: RelayStore
) -> None:
    await add_identity(store, Identity.create("carol"))  # one device: one copy each
    for i in range(3):
        await store.store_envelope(envelope(f"e{i}", sender="carol", recipient="carol"))
    items = await store.read_inbox("carol", "d1", 0, 10)
    await store.confirm("carol", "d1", items[1].offset)
    await store.confirm("carol", "d1", items[0].offset)
    assert await store.confirmed_offset("carol", "d1") == items[1].offset
    assert await store.confirmed_offset("carol", "d9") == 0
    await store.confirm("carol", "d9", 5)  # an unknown device: nothing to do
    assert [i.envelope.id for i in await store.read_inbox("carol", "d1", 0, 10)] == ["e2"]
    assert await backend.bodies() == {"e0": False, "e1": False, "e2": True}
    # The id outlives the body, so a late retry is still recognised.
    retry = envelope("e0", sender="carol", recipient="carol")
    assert (await store.store_envelope(retry)).status is StoreStatus.DUPLICATE


async def test_a_body_stays_until_every_copy_is_gone(
    backend: Backend, store: RelayStore, people: People
) -> None:
    result = await store.store_envelope(envelope("e1"))
    rows = {(r.identity, r.device): r.offset for r in result.rows}
    await store.confirm("alice", "d1", rows["alice", "d1"])
    assert await backend.bodies() == {"e1": True}
    assert await store.drop_rows("bob", "d2", [rows["bob", "d2"]]) == 1
    assert await backend.bodies() == {"e1": True}
    await revoke_device(store, people[0], "d2")  # drops alice d2's copy, the last one
    assert await backend.bodies() == {"e1": False}


async def test_revoke_drops_the_inbox_and_stops_fan_out(store: RelayStore, people: People) -> None:
    alice, _ = people
    await store.store_envelope(envelope("e1"))
    await revoke_device(store, alice, "d2")
    assert await store.read_inbox("alice", "d2", 0, 10) == []
    result = await store.store_envelope(envelope("e2"))
    assert ("alice", "d2") not in {(r.identity, r.device) for r in result.rows}


async def test_expire_and_drop(backend: Backend, store: RelayStore, people: People) -> None:
    await store.store_envelope(envelope("soon", expires=1500.0))
    await store.store_envelope(envelope("late", expires=3000.0))
    assert await store.expire(1499.0) == 0
    assert await store.expire(1500.0) == 3  # alice d1, alice d2, bob d2
    assert await backend.bodies() == {"late": True}
    late = await store.read_inbox("alice", "d1", 0, 10)
    assert [i.envelope.id for i in late] == ["late"]
    assert await store.drop_rows("alice", "d1", [late[0].offset, 999]) == 1
    assert await store.drop_rows("alice", "d1", []) == 0
    assert await store.read_inbox("alice", "d1", 0, 10) == []
    # An expired envelope's id is forgotten with it.
    assert (await store.store_envelope(envelope("soon", expires=4000.0))).status is (
        StoreStatus.STORED
    )


async def test_everything_survives_reopening(backend: Backend) -> None:
    store = backend.new_store()
    await store.open()
    alice, bob = Identity.create("alice"), Identity.create("bob")
    await add_identity(store, alice)
    await add_identity(store, bob)
    await store.permit("alice", "bob")
    await store.store_envelope(envelope("e1"))
    await store.store_envelope(envelope("e2"))
    first = (await store.read_inbox("alice", "d1", 0, 10))[0]
    await store.confirm("alice", "d1", first.offset)
    await store.publish_keys("alice", "d1", identity_key(1), one_time_keys(1, 3), b"f" * 32)
    await store.close()

    reopened = backend.new_store()
    await reopened.open()
    try:
        assert await reopened.load_chain("alice") == alice.chain.entries
        assert await reopened.load_permits("alice") == {"bob"}
        assert await reopened.confirmed_offset("alice", "d1") == first.offset
        items = await reopened.read_inbox("alice", "d1", 0, 10)
        assert [i.envelope.id for i in items] == ["e2"]
        assert await reopened.key_status("alice", "d1") == KeyStatus(3, fallback_key=True)
        assert (await reopened.store_envelope(envelope("e1"))).status is StoreStatus.DUPLICATE
    finally:
        await reopened.close()


# -- end-to-end encryption keys -----------------------------------------------------------


async def test_published_keys_are_claimed_oldest_first_then_the_fallback(
    store: RelayStore, people: People
) -> None:
    keys = one_time_keys(1, 3)
    status = await store.publish_keys("alice", "d1", identity_key(1), keys, b"F" * 32)
    assert status == KeyStatus(one_time_keys=3, fallback_key=True)
    assert await store.load_identity_keys("alice") == {"d1": identity_key(1)}
    claimed = [await store.claim_keys("alice", ["d1"]) for _ in range(5)]
    assert [c[0].one_time_key for c in claimed] == [*keys, b"F" * 32, b"F" * 32]
    assert [c[0].fallback for c in claimed] == [False, False, False, True, True]
    assert [c[0].status for c in claimed] == [
        KeyStatus(2, True),
        KeyStatus(1, True),
        KeyStatus(0, True),
        KeyStatus(0, False),
        KeyStatus(0, False),
    ]
    assert await store.key_status("alice", "d1") == KeyStatus(0, fallback_key=False)


async def test_claims_answer_in_the_order_asked(store: RelayStore, people: People) -> None:
    await store.publish_keys("alice", "d2", identity_key(2), one_time_keys(2, 1), None)
    await store.publish_keys("alice", "d1", identity_key(1), [], b"F" * 32)
    claims = await store.claim_keys("alice", ["d2", "d1", "d9", "d2"])
    assert claims == [
        Claim("d2", one_time_keys(2, 1)[0], False, KeyStatus(0, False)),
        Claim("d1", b"F" * 32, True, KeyStatus(0, False)),
        Claim("d9", None, False, KeyStatus(0, False)),
        Claim("d2", None, False, KeyStatus(0, False)),
    ]
    assert await store.claim_keys("alice", []) == []


async def test_publishing_again_adds_keys_once_and_keeps_the_fallback_claimed(
    store: RelayStore, people: People
) -> None:
    keys = one_time_keys(1, 3)
    await store.publish_keys("alice", "d1", identity_key(1), [*keys, keys[0]], b"F" * 32)
    (claim,) = await store.claim_keys("alice", ["d1"])
    assert claim.one_time_key == keys[0]
    await store.claim_keys("alice", ["d1"])
    await store.claim_keys("alice", ["d1"])
    await store.claim_keys("alice", ["d1"])  # the fallback, now handed out
    # The same keys again are not doubled (those claimed come back: a store cannot tell a
    # retry from a republish); the same fallback key stays handed out, a new one is not.
    status = await store.publish_keys("alice", "d1", identity_key(1), keys[1:], b"F" * 32)
    assert status == KeyStatus(one_time_keys=2, fallback_key=False)
    status = await store.publish_keys("alice", "d1", identity_key(1), keys[1:], b"G" * 32)
    assert status == KeyStatus(one_time_keys=2, fallback_key=True)
    assert await store.key_status("alice", "d1") == status


@pytest.mark.parametrize(("old", "new"), [(1, 2), (2, 1)])  # either way round in key order
async def test_a_new_identity_key_drops_the_old_accounts_keys(
    store: RelayStore, people: People, old: int, new: int
) -> None:
    await store.publish_keys("alice", "d1", identity_key(old), one_time_keys(old, 3), b"F" * 32)
    status = await store.publish_keys("alice", "d1", identity_key(new), one_time_keys(new, 1), None)
    assert status == KeyStatus(one_time_keys=1, fallback_key=False)
    assert await store.load_identity_keys("alice") == {"d1": identity_key(new)}
    (claim,) = await store.claim_keys("alice", ["d1"])
    assert claim.one_time_key == one_time_keys(new, 1)[0]


async def test_a_revoked_device_has_no_keys_and_stores_none(
    store: RelayStore, people: People
) -> None:
    alice, _ = people
    await store.publish_keys("alice", "d1", identity_key(1), one_time_keys(1, 2), b"F" * 32)
    await store.publish_keys("alice", "d2", identity_key(2), one_time_keys(2, 2), b"G" * 32)
    await revoke_device(store, alice, "d2")
    assert await store.load_identity_keys("alice") == {"d1": identity_key(1)}
    assert await store.key_status("alice", "d2") == KeyStatus(0, False)
    later = await store.publish_keys("alice", "d2", identity_key(2), one_time_keys(2, 2), b"G")
    assert later == KeyStatus(0, False)
    unknown = await store.publish_keys("alice", "d9", identity_key(9), one_time_keys(9, 1), None)
    assert unknown == KeyStatus(0, False)
    assert await store.load_identity_keys("alice") == {"d1": identity_key(1)}
    assert await store.claim_keys("alice", ["d2"]) == [
        Claim("d2", None, False, KeyStatus(0, False))
    ]


@pytest.mark.parametrize("count", [1, 40])
async def test_concurrent_claims_never_share_a_key(
    store: RelayStore, people: People, count: int
) -> None:
    keys = one_time_keys(1, count)
    await store.publish_keys("alice", "d1", identity_key(1), keys, b"F" * 32)
    claims = await asyncio.gather(*(store.claim_keys("alice", ["d1"]) for _ in range(count + 5)))
    handed = [c.one_time_key for (c,) in claims if not c.fallback]
    assert sorted(k for k in handed if k is not None) == sorted(keys)
    assert [c.one_time_key for (c,) in claims if c.fallback] == [b"F" * 32] * 5
    assert await store.key_status("alice", "d1") == KeyStatus(0, fallback_key=False)


async def test_an_invitation_registers_one_identity_once_before_it_expires(
    store: RelayStore,
) -> None:
    await store.create_invites([b"good", b"late"], NOW, NOW + 60)
    carol, dave, erin = (Identity.create(n) for n in ("carol", "dave", "erin"))

    async def create(ident: Identity, invite: bytes, now: float = NOW) -> bool:
        genesis = ident.genesis
        return await store.create_identity(ident.id, None, genesis, genesis.decoded(), now, invite)

    assert await create(carol, b"good")
    for ident, invite, now in [
        (dave, b"good", NOW),  # used by carol
        (dave, b"nope", NOW),  # never issued
        (dave, b"late", NOW + 60),  # expired
    ]:
        with pytest.raises(RegistrationRefused):
            await create(ident, invite, now)
    # A refused invitation stored nothing: dave is still free.
    assert await store.load_chain("dave") is None
    # An id that is taken does not use the invitation up.
    assert not await create(carol, b"late")
    assert await create(erin, b"late")

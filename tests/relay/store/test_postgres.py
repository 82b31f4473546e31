"""What only the PostgreSQL backend has: its schema versions and migrations, errors a
person can act on, and the races between relay nodes (two stores, two pools, one
database) that SQLite's single writer never meets."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import pytest
from tests.relay.helpers import WAIT, Identity
from tests.relay.store.helpers import (
    add_device,
    add_identity,
    envelope,
    identity_key,
    one_time_keys,
    revoke_device,
)
from tests.relay.store.pg import free_port

from parley.errors import ChainConflict, SchemaMismatch, StoreUnavailable
from parley.protocol.frames import Envelope
from parley.protocol.keychain import KeyOp
from parley.relay.store import (
    InboxItem,
    InboxRow,
    KeyStatus,
    RelayStore,
    StoreResult,
    StoreStatus,
    postgres_schema,
)
from parley.relay.store.postgres import SCHEMA_VERSION, PostgresStore, migrate
from parley.relay.store.postgres_schema import Connection, describe_dsn

# -- helpers ------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def connect(dsn: str) -> AsyncIterator[Any]:
    conn = await asyncpg.connect(dsn)
    try:
        yield conn
    finally:
        await conn.close()


async def sql(dsn: str, query: str, *args: object) -> list[Any]:
    async with connect(dsn) as conn:
        return list(await conn.fetch(query, *args))


async def script(dsn: str, statements: str) -> None:
    async with connect(dsn) as conn:
        await conn.execute(statements)


@contextlib.asynccontextmanager
async def opened(*stores: PostgresStore) -> AsyncIterator[None]:
    for store in stores:
        await store.open()
    try:
        yield
    finally:
        for store in stores:
            await store.close()


def nodes(dsn: str, count: int = 2) -> list[PostgresStore]:
    """``count`` stores on one database, each with its own pool: relay nodes."""
    return [PostgresStore(dsn, max_size=4) for _ in range(count)]


async def wait_until(check: Callable[[], Awaitable[bool]]) -> None:
    """Poll the server (nothing here could set an event) until ``check`` holds."""
    async with asyncio.timeout(WAIT):
        while not await check():  # noqa: ASYNC110
            await asyncio.sleep(0.005)


async def waiting(dsn: str, *events: str) -> bool:
    """Whether one of the relay's backends on this database waits on one of these locks."""
    rows = await sql(
        dsn,
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
        " AND application_name = 'parley-relay' AND wait_event_type = 'Lock'"
        " AND wait_event = ANY($1::text[])",
        list(events),
    )
    return int(rows[0][0]) >= 1


async def add_people(store: RelayStore, devices: int = 2) -> tuple[Identity, Identity]:
    alice, bob = Identity.create("alice"), Identity.create("bob")
    for ident in (alice, bob):
        await add_identity(store, ident)
        for n in range(2, devices + 1):
            await add_device(store, ident, f"d{n}")
    return alice, bob


# -- schema and migrations ----------------------------------------------------------------


async def test_open_refuses_a_database_without_the_schema(empty_postgres_dsn: str) -> None:
    with pytest.raises(SchemaMismatch) as caught:
        await PostgresStore(empty_postgres_dsn).open()
    assert (caught.value.found, caught.value.expected) == (0, SCHEMA_VERSION)
    assert f"parley relay migrate --store {empty_postgres_dsn}" in str(caught.value)
    assert "version 0" in str(caught.value)


async def test_open_and_migrate_refuse_a_newer_schema(postgres_dsn: str) -> None:
    await sql(postgres_dsn, "INSERT INTO schema_version (version) VALUES ($1)", SCHEMA_VERSION + 1)
    with pytest.raises(
        SchemaMismatch, match=r"newer than this relay knows .*upgrade Parley"
    ) as caught:
        await PostgresStore(postgres_dsn).open()
    assert (caught.value.found, caught.value.expected) == (SCHEMA_VERSION + 1, SCHEMA_VERSION)
    with pytest.raises(SchemaMismatch, match="upgrade Parley"):
        await migrate(postgres_dsn)
    rows = await sql(postgres_dsn, "SELECT max(version) FROM schema_version")
    assert rows[0][0] == SCHEMA_VERSION + 1


async def test_migrate_creates_the_schema_once(empty_postgres_dsn: str) -> None:
    assert await migrate(empty_postgres_dsn) == (0, SCHEMA_VERSION)
    assert await migrate(empty_postgres_dsn) == (SCHEMA_VERSION, SCHEMA_VERSION)
    rows = await sql(empty_postgres_dsn, "SELECT version FROM schema_version ORDER BY version")
    assert [r[0] for r in rows] == list(range(1, SCHEMA_VERSION + 1))
    store = PostgresStore(empty_postgres_dsn)
    async with opened(store):
        await store.permit("alice", "bob")
        assert await store.load_permits("alice") == {"bob"}


async def test_concurrent_migrations_apply_each_version_once(empty_postgres_dsn: str) -> None:
    results = await asyncio.gather(*(migrate(empty_postgres_dsn) for _ in range(4)))
    assert sorted(results) == [(0, SCHEMA_VERSION)] + [(SCHEMA_VERSION, SCHEMA_VERSION)] * 3
    rows = await sql(empty_postgres_dsn, "SELECT version FROM schema_version ORDER BY version")
    assert [r[0] for r in rows] == list(range(1, SCHEMA_VERSION + 1))


async def test_an_upgrade_runs_only_the_versions_after_the_current_one(
    postgres_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    new = SCHEMA_VERSION + 1
    monkeypatch.setattr(
        postgres_schema, "MIGRATIONS", (*postgres_schema.MIGRATIONS, "CREATE TABLE extra (x int)")
    )
    monkeypatch.setattr(postgres_schema, "SCHEMA_VERSION", new)
    with pytest.raises(SchemaMismatch, match=r"older than this relay's .*parley relay migrate"):
        await PostgresStore(postgres_dsn).open()
    assert await migrate(postgres_dsn) == (SCHEMA_VERSION, new)
    assert await migrate(postgres_dsn) == (new, new)
    await sql(postgres_dsn, "SELECT x FROM extra")
    store = PostgresStore(postgres_dsn)
    async with opened(store):
        assert await store.load_chain("nobody") is None


async def test_an_unreachable_server_is_store_unavailable(postgres_dsn: str) -> None:
    nowhere = f"postgresql://postgres:hunter2@127.0.0.1:{free_port()}/parley"
    for attempt in (PostgresStore(nowhere).open(), migrate(nowhere)):
        with pytest.raises(StoreUnavailable) as caught:
            await attempt
        assert "hunter2" not in str(caught.value)
        assert "postgres@127.0.0.1" in str(caught.value)
    missing = postgres_dsn.rpartition("/")[0] + "/parley_no_such_database"
    with pytest.raises(StoreUnavailable, match="does not exist"):
        await PostgresStore(missing).open()


def test_a_dsn_is_described_without_its_password() -> None:
    assert describe_dsn("postgresql://u:pw@h:5432/db?password=pw&sslmode=require") == (
        "postgresql://u@h:5432/db?sslmode=require"
    )
    assert describe_dsn("postgres://h/db") == "postgres://h/db"
    assert describe_dsn("postgresql://[::1/db") == "(a DSN that does not parse)"


# -- durability and failures ----------------------------------------------------------------


async def test_every_write_is_committed_when_it_returns(postgres_dsn: str) -> None:
    # Even where the database's default lets commits return before they are on disk.
    await sql(postgres_dsn, "SELECT 1")
    async with connect(postgres_dsn) as conn:
        name = await conn.fetchval("SELECT current_database()")
        await conn.execute(f'ALTER DATABASE "{name}" SET synchronous_commit = off')
    store = PostgresStore(postgres_dsn, min_size=2)
    async with opened(store):
        settings = await asyncio.gather(
            *(store._fetchval("SHOW synchronous_commit") for _ in range(4))
        )
        assert settings == ["on"] * 4
        await add_people(store)
        result = await store.store_envelope(envelope("e1"))
        # Another connection (another node) sees it as soon as the call returned.
        rows = await sql(postgres_dsn, "SELECT identity, device, pos FROM inbox ORDER BY 1, 2")
        assert [InboxRow(*r) for r in rows] == list(result.rows)
        await store.permit("alice", "bob")
        assert await sql(postgres_dsn, "SELECT owner, peer FROM permits") == [("alice", "bob")]


async def test_a_connection_lost_is_store_unavailable_and_the_pool_recovers(
    postgres_dsn: str,
) -> None:
    store = PostgresStore(postgres_dsn, min_size=2, max_size=2)
    async with opened(store):
        await store.permit("alice", "bob")
        await sql(
            postgres_dsn,
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND application_name = 'parley-relay'",
        )
        outcomes = []
        for _ in range(4):
            try:
                outcomes.append(await store.load_permits("alice"))
            except StoreUnavailable as exc:
                outcomes.append(exc)  # type: ignore[arg-type]
        assert outcomes[-1] == {"bob"}
        assert all(o == {"bob"} or isinstance(o, StoreUnavailable) for o in outcomes)


async def test_a_closed_store_says_so(postgres_dsn: str) -> None:
    store = PostgresStore(postgres_dsn)
    with pytest.raises(RuntimeError, match="not open"):
        await store.load_permits("alice")
    await store.open()
    await store.close()
    await store.close()


# -- offsets in commit order ----------------------------------------------------------------


class GlobalSequenceStore(PostgresStore):
    """The naive design, for the tests to prove they catch it: inbox offsets from one
    global sequence, taken without the device row's lock."""

    async def _add_inbox_rows(
        self, conn: Connection, stored: list[tuple[int, Envelope]]
    ) -> list[tuple[InboxRow, ...]]:
        made = []
        for message, stored_envelope in stored:
            rows = await conn.fetch(
                "INSERT INTO inbox (identity, device, pos, message, expires_at)"
                " SELECT identity, device, nextval('naive_offsets'), $4, $5 FROM devices"
                " WHERE NOT revoked AND (identity = $1 OR (identity = $2 AND device <> $3))"
                " RETURNING identity, device, pos",
                stored_envelope.recipient,
                stored_envelope.sender,
                stored_envelope.sender_device,
                message,
                stored_envelope.expires_at,
            )
            made.append(tuple(InboxRow(i, d, int(p)) for i, d, p in rows))
        return made


STORES = {"device counter": PostgresStore, "global sequence": GlobalSequenceStore}

# Holds an inbox insert until the test lets go of advisory lock 1 (envelope "slow"
# only), or delays every insert by up to 2 ms (any other "jitter-" envelope): a
# transaction that took its offset then stays open while others run.
_HOLD = """
CREATE SEQUENCE naive_offsets;
CREATE FUNCTION hold() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    id bytea := (SELECT m.id FROM messages m WHERE m.seq = NEW.message);
BEGIN
    IF id = 'slow' THEN
        PERFORM pg_advisory_xact_lock_shared(1);
    ELSIF position('jitter-' IN convert_from(id, 'UTF8')) = 1 THEN
        PERFORM pg_sleep(random() * 0.002);
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER hold AFTER INSERT ON inbox FOR EACH ROW EXECUTE FUNCTION hold();
"""


@pytest.mark.parametrize("design", STORES)
async def test_a_reader_never_skips_a_row_committed_late(postgres_dsn: str, design: str) -> None:
    """The race of DESIGN.md §4, made to happen every time: node A takes an offset and
    is slow to commit; node B stores for the same device meanwhile; a reader reads what
    is committed, moves past it, reads again after A commits."""
    await script(postgres_dsn, _HOLD)
    node_a, node_b, reader = [STORES[design](postgres_dsn, max_size=2) for _ in range(3)]
    async with opened(node_a, node_b, reader), connect(postgres_dsn) as control:
        await add_people(node_a, devices=1)  # bob d1 -> alice d1: one target
        await control.execute("SELECT pg_advisory_lock(1)")
        slow = asyncio.ensure_future(node_a.store_envelope(envelope("slow")))
        await wait_until(lambda: waiting(postgres_dsn, "advisory"))
        fast = asyncio.ensure_future(node_b.store_envelope(envelope("fast")))
        if design == "device counter":
            # B waits for the device row A holds: it cannot take an offset yet.
            await wait_until(lambda: waiting(postgres_dsn, "transactionid", "tuple"))
        else:
            await fast  # B took a higher number and committed first
        seen = await reader.read_inbox("alice", "d1", 0, 10)
        last_seen = seen[-1].offset if seen else 0
        await control.execute("SELECT pg_advisory_unlock(1)")
        await asyncio.gather(slow, fast)
        seen += await reader.read_inbox("alice", "d1", last_seen, 10)

    ids = [item.envelope.id for item in seen]
    if design == "global sequence":
        assert ids == ["fast"]  # "slow" was committed below the reader's position: lost
        return
    assert ids == ["slow", "fast"]
    assert [item.offset for item in seen] == [1, 2]


async def read_everything(
    reader: RelayStore, identity: str, device: str, writing: asyncio.Future[Any]
) -> list[InboxItem]:
    """Read as a connection does: after the last offset seen, again and again, until the
    writers are done (then once more)."""
    seen: list[InboxItem] = []
    last = 0
    while True:
        done = writing.done()
        items = await reader.read_inbox(identity, device, last, 1000)
        seen += items
        if items:
            last = items[-1].offset
        if done:
            return seen
        await asyncio.sleep(0)


@pytest.mark.parametrize("design", STORES)
async def test_concurrent_writers_on_two_nodes_and_a_reader(postgres_dsn: str, design: str) -> None:
    """The same race left to chance: two nodes store for one device at once (each insert
    held up to 2 ms, so commits could overtake each other), a third node's reader keeps
    reading after the last offset it saw. Every row must be read, in offset order."""
    await script(postgres_dsn, _HOLD)
    node_a, node_b, reader = [STORES[design](postgres_dsn, max_size=4) for _ in range(3)]
    count = 120
    async with opened(node_a, node_b, reader):
        await add_people(node_a, devices=1)
        writing = asyncio.gather(
            *(
                (node_a if i % 2 else node_b).store_envelope(envelope(f"jitter-{i}"))
                for i in range(2 * count)
            )
        )
        seen = await read_everything(reader, "alice", "d1", writing)
        results = await writing
        stored = await reader.read_inbox("alice", "d1", 0, 10_000)

    assert all(r.status is StoreStatus.STORED for r in results)
    assert len(stored) == 2 * count
    offsets = [item.offset for item in seen]
    assert offsets == sorted(set(offsets))  # strictly increasing, as read
    skipped = {item.envelope.id for item in stored} - {item.envelope.id for item in seen}
    if design == "global sequence":
        # Jitter makes commits overtake each other; the reader loses some rows.
        assert skipped
        return
    assert not skipped
    assert offsets == list(range(1, 2 * count + 1))  # one device's offsets: consecutive


# -- the other races between nodes ------------------------------------------------------------


async def test_a_retry_racing_its_original_is_stored_once(postgres_dsn: str) -> None:
    node_a, node_b = nodes(postgres_dsn)
    async with opened(node_a, node_b):
        await add_people(node_a)
        for i in range(30):
            results = await asyncio.gather(
                node_a.store_envelope(envelope(f"e{i}")), node_b.store_envelope(envelope(f"e{i}"))
            )
            assert sorted(r.status.value for r in results) == ["duplicate", "stored"]
            taken = await asyncio.gather(
                node_a.store_envelope(envelope(f"x{i}", sender="alice", recipient="bob")),
                node_b.store_envelope(envelope(f"x{i}")),
            )
            assert sorted(r.status.value for r in taken) == ["conflict", "stored"]
        for device in ("d1", "d2"):
            items = await node_a.read_inbox("alice", device, 0, 1000)
            ids = [i.envelope.id for i in items]
            assert len(ids) == len(set(ids))
            assert {f"e{i}" for i in range(30)} <= set(ids)


async def test_one_time_keys_are_never_handed_out_twice(postgres_dsn: str) -> None:
    node_a, node_b = nodes(postgres_dsn)
    async with opened(node_a, node_b):
        await add_people(node_a)
        for device, n in (("d1", 1), ("d2", 2)):
            await node_a.publish_keys("alice", device, identity_key(n), one_time_keys(n, 50), b"F")
        # Both devices per claim, in both orders: the fallback rows are taken in one
        # order whatever is asked, or these would deadlock.
        claims = await asyncio.gather(
            *(
                node_a.claim_keys("alice", ["d1", "d2"])
                if i % 2
                else node_b.claim_keys("alice", ["d2", "d1"])
                for i in range(70)
            )
        )
    for device, n in (("d1", 1), ("d2", 2)):
        mine = [c for claim in claims for c in claim if c.device == device]
        handed = [c.one_time_key for c in mine if not c.fallback]
        assert sorted(k for k in handed if k is not None) == sorted(one_time_keys(n, 50))
        assert [c.one_time_key for c in mine if c.fallback] == [b"F"] * 20


async def test_chain_appends_from_two_nodes_are_serialized(postgres_dsn: str) -> None:
    node_a, node_b = nodes(postgres_dsn)
    async with opened(node_a, node_b):
        for n in range(10):
            ident = Identity.create(f"id{n}")
            await add_identity(node_a, ident)
            first = ident.next_entry(KeyOp.ADD, "d2", signer="d1")
            first_body = ident.chain.append(first)
            second = ident.next_entry(KeyOp.ADD, "d3", signer="d1")
            second_body = ident.chain.append(second)
            await asyncio.gather(
                node_a.append_entry(ident.id, first, first_body),
                node_b.append_entry(ident.id, second, second_body),
            )
            assert await node_b.load_chain(ident.id) == ident.chain.entries


async def test_an_append_that_lost_the_race_is_a_chain_conflict(postgres_dsn: str) -> None:
    node_a, node_b = nodes(postgres_dsn)
    async with opened(node_a, node_b):
        await add_people(node_a, devices=1)
        alice = Identity.create("carol")
        await add_identity(node_a, alice)
        # Two entries made from the same head, as two nodes would check them.
        one = alice.next_entry(KeyOp.ADD, "d2", signer="d1")
        other = alice.next_entry(KeyOp.ADD, "d3", signer="d1")
        outcomes = await asyncio.gather(
            node_a.append_entry("carol", one, one.decoded()),
            node_b.append_entry("carol", other, other.decoded()),
            return_exceptions=True,
        )
        failures = [o for o in outcomes if isinstance(o, BaseException)]
        assert len(failures) == 1
        assert isinstance(failures[0], ChainConflict)
        chain = await node_a.load_chain("carol")
        assert chain is not None and len(chain) == 2
        winner = chain[1].decoded().device
        # Nothing of the loser was kept: only the winner's device gets copies.
        result = await node_a.store_envelope(envelope("e1", recipient="carol"))
        assert {(r.identity, r.device) for r in result.rows} == {("carol", "d1"), ("carol", winner)}


async def test_fan_outs_both_ways_between_nodes_do_not_deadlock(postgres_dsn: str) -> None:
    node_a, node_b = nodes(postgres_dsn)
    async with opened(node_a, node_b):
        await add_people(node_a, devices=3)
        # alice -> bob locks bob's devices and alice d2, d3; bob -> alice the reverse.
        results = await asyncio.gather(
            *(
                node_a.store_envelope(envelope(f"a{i}", sender="alice", recipient="bob"))
                if i % 2
                else node_b.store_envelope(envelope(f"b{i}", sender="bob", recipient="alice"))
                for i in range(200)
            )
        )
        assert all(r.status is StoreStatus.STORED for r in results)
        for identity in ("alice", "bob"):
            items = await node_a.read_inbox(identity, "d2", 0, 1000)
            assert [i.offset for i in items] == list(range(1, 201))


async def test_a_revoke_racing_stores_leaves_the_device_nothing(postgres_dsn: str) -> None:
    node_a, node_b = nodes(postgres_dsn)
    async with opened(node_a, node_b):
        alice, _ = await add_people(node_a)
        await node_a.publish_keys("alice", "d2", identity_key(2), one_time_keys(2, 5), b"F")
        stores = [node_a.store_envelope(envelope(f"e{i}")) for i in range(60)]
        publishes = [
            node_a.publish_keys("alice", "d2", identity_key(2), one_time_keys(3 + i, 5), b"G")
            for i in range(10)
        ]
        revoke = revoke_device(node_b, alice, "d2")
        await asyncio.gather(*stores[:30], revoke, *stores[30:], *publishes)
        assert await node_b.read_inbox("alice", "d2", 0, 1000) == []
        assert await node_b.key_status("alice", "d2") == KeyStatus(0, False)
        assert await node_b.load_identity_keys("alice") == {}
        assert len(await node_b.read_inbox("alice", "d1", 0, 1000)) == 60


async def test_an_envelope_the_database_refuses_fails_alone_in_its_group(
    postgres_dsn: str,
) -> None:
    (store,) = nodes(postgres_dsn, 1)
    async with opened(store):
        await add_people(store, devices=1)
        # PostgreSQL text cannot hold NUL (the relay validates identity ids; the store
        # must still not let one bad value fail the envelopes stored with it).
        results = await asyncio.gather(
            store.store_envelope(envelope("e1")),
            store.store_envelope(envelope("e2", recipient="ali\x00ce")),
            store.store_envelope(envelope("e3")),
            return_exceptions=True,
        )
        assert isinstance(results[1], asyncpg.exceptions.DataError | ValueError)
        assert [r.rows for r in results if isinstance(r, StoreResult)] == [
            (InboxRow("alice", "d1", 1),),
            (InboxRow("alice", "d1", 2),),
        ]
        items = await store.read_inbox("alice", "d1", 0, 10)
        assert [i.envelope.id for i in items] == ["e1", "e3"]


class CountingTransactions(PostgresStore):
    transactions = 0

    async def _run(self, job: Callable[[Connection], Awaitable[Any]]) -> Any:
        self.transactions += 1
        return await super()._run(job)


async def test_stores_and_confirms_made_at_once_are_written_in_a_few_transactions(
    postgres_dsn: str,
) -> None:
    store = CountingTransactions(postgres_dsn, max_size=4)
    async with opened(store):
        await add_people(store, devices=1)
        store.transactions = 0
        results = await asyncio.gather(
            *(store.store_envelope(envelope(f"e{i}")) for i in range(200))
        )
        assert [r.rows[0].offset for r in results] == list(range(1, 201))
        assert store.transactions <= 4  # group commit: not one each
        store.transactions = 0
        await asyncio.gather(*(store.confirm("alice", "d1", offset) for offset in range(1, 151)))
        assert store.transactions <= 4
        left = await store.read_inbox("alice", "d1", 0, 1000)
        assert [i.offset for i in left] == list(range(151, 201))
        assert await store.confirmed_offset("alice", "d1") == 150


async def test_devices_confirming_one_message_at_once_release_its_body(postgres_dsn: str) -> None:
    node_a, node_b = nodes(postgres_dsn)
    async with opened(node_a, node_b):
        await add_people(node_a)
        # bob d1 -> alice: copies for alice d1, alice d2 and bob d2.
        results = [await node_a.store_envelope(envelope(f"e{i}")) for i in range(40)]
        confirms = []
        for result in results:
            for row, node in zip(result.rows, (node_a, node_b, node_a), strict=True):
                confirms.append(node.confirm(row.identity, row.device, row.offset))
        await asyncio.gather(*confirms)
        assert await sql(postgres_dsn, "SELECT id FROM messages WHERE body IS NOT NULL") == []


async def test_two_sweeps_at_once_expire_each_row_once(postgres_dsn: str) -> None:
    node_a, node_b = nodes(postgres_dsn)
    async with opened(node_a, node_b):
        await add_people(node_a)
        for i in range(50):
            await node_a.store_envelope(envelope(f"e{i}", expires=1500.0))
        swept = await asyncio.gather(node_a.expire(1500.0), node_b.expire(1500.0))
        swept_again = await node_a.expire(1500.0)
        assert sum(swept) + swept_again == 150
        assert await sql(postgres_dsn, "SELECT count(*) FROM messages") == [(0,)]


# -- one node's calls return in order ----------------------------------------------------------


class SlowReplies(PostgresStore):
    """A store whose reply for the group holding envelope "slow" is read late, as a
    reply off one pool connection can be read after a later one's off another."""

    async def _store_envelopes(
        self, conn: Connection, envelopes: list[Envelope]
    ) -> list[StoreResult]:
        results = await super()._store_envelopes(conn, envelopes)
        if any(e.id == "slow" for e in envelopes):
            _SLOW_TASKS.add(asyncio.current_task())
        return results

    async def _run(self, job: Callable[[Connection], Awaitable[Any]]) -> Any:
        result = await super()._run(job)
        if asyncio.current_task() in _SLOW_TASKS:
            await asyncio.sleep(0.2)
        return result


_SLOW_TASKS: set[asyncio.Task[Any] | None] = set()


class Unordered(SlowReplies):
    """The naive design: each call is its own transaction, and returns when that is done."""

    def store_envelope(self, envelope: Envelope) -> asyncio.Future[StoreResult]:
        return asyncio.ensure_future(self._alone(envelope))

    async def _alone(self, envelope: Envelope) -> StoreResult:
        results: list[StoreResult] = await self._run(
            lambda conn: self._store_envelopes(conn, [envelope])
        )
        return results[0]


@pytest.mark.parametrize("design", [SlowReplies, Unordered])
async def test_one_nodes_stores_return_in_offset_order(
    postgres_dsn: str, design: type[SlowReplies]
) -> None:
    store = design(postgres_dsn, max_size=4)
    returned: list[tuple[str, int]] = []

    async def store_one(id_: str) -> None:
        result = await store.store_envelope(envelope(id_))
        returned.append((id_, result.rows[0].offset))

    async def committed() -> bool:
        return bool(await sql(postgres_dsn, "SELECT 1 FROM inbox"))

    async with opened(store):
        await add_people(store, devices=1)
        first = asyncio.create_task(store_one("slow"))
        await wait_until(committed)  # committed, but its reply is "not read yet"
        await store_one("fast")
        await first
    if design is Unordered:
        # The relay would push offset 2, then skip offset 1 as already passed.
        assert returned == [("fast", 2), ("slow", 1)]
        return
    assert returned == [("slow", 1), ("fast", 2)]

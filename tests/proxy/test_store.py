"""The proxy's stores, each test on SQLite and on PostgreSQL: bindings and pools by cid,
leg records, other writers' changes seen (and one's own not). Then what only PostgreSQL
does: notification instead of polling, a lost listener, its schema version."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import msgspec
import pytest
from tests.client.helpers import eventually

from parley.errors import SchemaMismatch, StoreError
from parley.ids import DeviceId, IdentityId
from parley.protocol.call import CallRecord, EndReason, Role
from parley.protocol.proxy_state import MessageId
from parley.proxy import (
    Binding,
    Leg,
    LegRecord,
    Pool,
    ProxyStore,
    default_store_path,
    open_proxy_store,
)
from parley.proxy.postgres import _MIGRATIONS, SCHEMA_VERSION, PostgresProxyStore
from parley.proxy.records import BridgeRow, Resumable, Saved, parties
from parley.proxy.store import CHECKPOINT_EVERY, WAL_LIMIT, SqliteProxyStore, _enable_wal

APP, OLGA, CUST = IdentityId("app"), IdentityId("olga"), IdentityId("cust")
BINDING = Binding(cid="conv", operator=OLGA, operator_name="Olga", customer=CUST)
POOL = Pool(cid="sales", customer=CUST, operators=(IdentityId("al"), IdentityId("cy")))
POLL = 0.05  # SQLite's poll interval in these tests
QUIET = 0.3  # long enough to be sure nothing is coming: several SQLite polls


def opened(location: str) -> ProxyStore:
    return open_proxy_store(location, poll_interval=POLL)


async def returns_within(seconds: float, waiting: Awaitable[None]) -> bool:
    try:
        async with asyncio.timeout(seconds):
            await waiting
    except TimeoutError:
        return False
    return True


def record(role: Role, peer: IdentityId, answered: float | None = 12.0) -> CallRecord:
    return CallRecord(
        call_id="k1",
        cid="conv",
        role=role,
        peer=peer,
        peer_device=DeviceId("d1"),
        started=10.0,
        ringing=10.5,
        answered=answered,
        ended=42.0,
        reason=EndReason.HANGUP,
    )


def test_a_leg_record_names_both_ends_of_the_leg() -> None:
    inbound = LegRecord.of(record(Role.CALLEE, OLGA), APP)
    assert (inbound.leg, inbound.caller, inbound.callee, inbound.party) == (
        Leg.INBOUND,
        OLGA,
        APP,
        OLGA,
    )
    outbound = LegRecord.of(record(Role.CALLER, CUST, answered=None), APP)
    assert (outbound.leg, outbound.caller, outbound.callee, outbound.party) == (
        Leg.OUTBOUND,
        APP,
        CUST,
        CUST,
    )
    assert inbound.duration == 30.0 and outbound.duration == 0.0


async def test_bindings_pools_and_records_survive_reopening(store_location: str) -> None:
    store = opened(store_location)
    await store.bind(BINDING)
    await store.bind_pool(POOL)
    legs = [
        LegRecord.of(record(Role.CALLEE, OLGA), APP),
        LegRecord.of(record(Role.CALLER, CUST, answered=None), APP),
    ]
    for leg in legs:
        await store.record(leg)
    await store.record(legs[0])  # recorded twice, kept once
    await store.close()

    again = opened(store_location)
    routes = await again.routes()
    assert routes == [BINDING, POOL]
    assert parties(routes) == {OLGA, CUST, IdentityId("al"), IdentityId("cy")}
    assert await again.records() == legs
    await again.close()


async def test_records_come_in_the_order_the_legs_ended(store_location: str) -> None:
    store = opened(store_location)
    late = msgspec.structs.replace(
        LegRecord.of(record(Role.CALLEE, OLGA), APP), call_id="k2", ended=50.0
    )
    early = LegRecord.of(record(Role.CALLEE, OLGA), APP)
    tie = msgspec.structs.replace(early, call_id="k3")
    for leg in (late, early, tie):
        await store.record(leg)
    assert await store.records() == [early, tie, late]  # a tie: the order recorded
    await store.close()


async def test_a_cid_is_either_bound_or_pooled(store_location: str) -> None:
    store = opened(store_location)
    await store.bind(BINDING)
    await store.bind_pool(Pool(cid="conv", customer=CUST, operators=(OLGA,)))
    assert await store.routes() == [Pool(cid="conv", customer=CUST, operators=(OLGA,))]
    await store.bind(BINDING)
    assert await store.routes() == [BINDING]
    renamed = Binding(cid="conv", operator=OLGA, operator_name="Olga K.", customer=CUST)
    await store.bind(renamed)  # replaced, not added
    assert await store.routes() == [renamed]
    await store.close()


async def test_wait_changed_returns_on_others_writes_only(store_location: str) -> None:
    proxy = opened(store_location)
    cli = opened(store_location)  # as ``parley proxy bind`` opens it
    assert await proxy.routes() == []  # opened: changes from here on count
    assert not await returns_within(QUIET, proxy.wait_changed())
    await proxy.bind_pool(POOL)
    await proxy.record(LegRecord.of(record(Role.CALLEE, OLGA), APP))
    assert not await returns_within(QUIET, proxy.wait_changed())  # its own writes
    await cli.bind(BINDING)
    assert await returns_within(5, proxy.wait_changed())
    assert not await returns_within(QUIET, proxy.wait_changed())  # reported once
    assert await proxy.routes() == [BINDING, POOL]
    await cli.bind_pool(Pool(cid="more", customer=CUST, operators=(OLGA,)))
    assert await returns_within(5, proxy.wait_changed())  # pools too
    await cli.close()
    await proxy.close()


def row(call_id: str, rank: int, *, live: bool, state: bytes = b"state") -> BridgeRow:
    return BridgeRow(
        call_id=call_id, cid="conv", parties=(OLGA, CUST), live=live, rank=rank, state=state
    )


async def test_the_core_state_is_saved_in_one_write_and_loaded_after_reopening(
    store_location: str,
) -> None:
    store = opened(store_location)
    assert await store.load() == Resumable()
    leg = LegRecord.of(record(Role.CALLEE, OLGA), APP)
    await store.save(
        Saved(rows=(row("k1", 1, live=True), row("k0", 0, live=False)), legs=(leg,), outbox=b"o1")
    )
    # A later write replaces a row and the outbox; a leg saved twice is kept once.
    await store.save(
        Saved(rows=(row("k1", 2, live=False, state=b"ended"),), legs=(leg,), away=b"a1")
    )
    await store.close()
    store = opened(store_location)
    assert await store.load() == Resumable(
        rows=(row("k0", 0, live=False), row("k1", 2, live=False, state=b"ended")),
        outbox=b"o1",
        away=b"a1",
    )
    assert await store.records() == [leg]
    await store.close()


async def test_ended_rows_beyond_the_newest_kept_are_forgotten_live_ones_never(
    store_location: str,
) -> None:
    store = opened(store_location)
    live = row("up", 0, live=True)
    await store.save(Saved(rows=(live, *(row(f"k{i}", i, live=False) for i in range(1, 6)))))
    await store.save(Saved(rows=(row("k6", 6, live=False),), keep=3))
    assert [r.call_id for r in (await store.load()).rows] == ["up", "k4", "k5", "k6"]
    await store.close()


async def test_handled_messages_are_saved_with_their_input_once_and_forgotten_after_exp(
    store_location: str,
) -> None:
    store = opened(store_location)
    early, late = MessageId(OLGA, "j1", exp=100), MessageId(CUST, "j2", exp=200)
    await store.save(Saved(rows=(row("k1", 1, live=True),), handled=(early, late)))
    # The same id again (a redelivery saved by an older proxy) is kept once.
    await store.save(Saved(handled=(early,)))
    await store.close()
    store = opened(store_location)
    loaded = await store.load()
    assert (loaded.rows, set(loaded.handled)) == ((row("k1", 1, live=True),), {early, late})
    # forget_before drops the ids that expired before it, in the same write.
    again = MessageId(OLGA, "j3", exp=300)
    await store.save(Saved(handled=(again,), forget_before=150))
    assert set((await store.load()).handled) == {late, again}
    await store.close()


async def test_sqlite_saves_past_its_checkpoints_are_all_kept(tmp_path: Path) -> None:
    """Saves are written on the loop; every CHECKPOINT_EVERY of them a checkpoint runs
    on a thread beside them (automatic checkpoints are off): the WAL is copied into the
    database file while the store is open, and no save is lost across checkpoints."""
    path = tmp_path / "p.db"
    store = SqliteProxyStore(path)
    before = path.stat().st_size
    ids = [MessageId(OLGA, f"j{n}", exp=100) for n in range(3 * CHECKPOINT_EVERY + 3)]

    async def save(n: int) -> None:
        await store.save(Saved(rows=(row(f"k{n}", n, live=True),), handled=(ids[n],)))

    for n in range(CHECKPOINT_EVERY - 1):
        await save(n)
    await asyncio.sleep(QUIET)
    assert path.stat().st_size == before  # nothing copied from the WAL yet
    await save(CHECKPOINT_EVERY - 1)
    await eventually(lambda: path.stat().st_size > before)
    for n in range(CHECKPOINT_EVERY, len(ids)):
        await save(n)
    await store.close()
    store = SqliteProxyStore(path)
    loaded = await store.load()
    assert (len(loaded.rows), set(loaded.handled)) == (len(ids), set(ids))
    await store.close()


def counted_threads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the functions run through ``asyncio.to_thread`` from now on."""
    names: list[str] = []
    to_thread = asyncio.to_thread

    async def counted(work: Callable[..., object], /, *args: object) -> object:
        names.append(getattr(work, "__name__", repr(work)))
        return await to_thread(work, *args)

    monkeypatch.setattr(asyncio, "to_thread", counted)
    return names


async def test_sqlite_wal_stays_bounded_while_saves_keep_coming(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A checkpoint beside the saves cannot start the WAL over while they keep coming:
    once one finds more than WAL_LIMIT frames in it, the next save waits for a
    checkpoint of its own, and starts it over. (Before, the WAL grew by every save, to
    95 MB here.) Only those few saves wait."""
    path = tmp_path / "p.db"
    store = SqliteProxyStore(path)
    on_threads = counted_threads(monkeypatch)
    saves = 40 * CHECKPOINT_EVERY
    for n in range(saves):
        rows = (row(f"k{n}", n, live=True, state=bytes(300)),)
        await store.save(
            Saved(rows=rows, outbox=bytes(200), handled=(MessageId(OLGA, f"j{n}", exp=2**40),))
        )
        await asyncio.sleep(0)  # a checkpoint that ended reports back
    wal = path.with_name(path.name + "-wal").stat().st_size  # its largest yet
    await store.close()
    with sqlite3.connect(path) as db:
        (page,) = db.execute("PRAGMA page_size").fetchone()
        assert db.execute("SELECT count(*) FROM bridges").fetchone() == (saves,)
    assert wal <= 4 * WAL_LIMIT * page, wal  # the limit, and the saves until the next checkpoint
    waited = on_threads.count("checkpoint_then_work")
    assert waited <= saves // CHECKPOINT_EVERY // 2, on_threads


async def test_no_save_waits_for_a_checkpoint_while_the_wal_starts_over_by_itself(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Saves that give each checkpoint time to finish leave the WAL small: every save is
    written on the loop, and the only work on threads is the checkpoints beside them."""
    store = SqliteProxyStore(tmp_path / "p.db")
    on_threads = counted_threads(monkeypatch)
    for n in range(3 * CHECKPOINT_EVERY + 1):
        await store.save(Saved(rows=(row(f"k{n}", n, live=True),)))
        if store._checkpoint is not None:
            await store._checkpoint
    assert on_threads == ["_checkpoint_wal"] * 3
    monkeypatch.undo()
    await store.close()


async def test_a_failed_checkpoint_is_logged_and_tried_again_and_the_store_closes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    store = SqliteProxyStore(tmp_path / "p.db")
    tried: list[int] = []

    def failing() -> int:
        tried.append(1)
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(store, "_checkpoint_wal", failing)
    for n in range(2 * CHECKPOINT_EVERY):
        await store.save(Saved(rows=(row(f"k{n}", n, live=True),)))
        if n == CHECKPOINT_EVERY - 1:  # let the first one fail before the next is due
            await asyncio.gather(store._checkpoint or asyncio.sleep(0), return_exceptions=True)
    assert store._checkpoint is not None  # the second one, not awaited yet
    await store.close()  # waits for it, and does not raise what it raised
    assert len(tried) == 2
    assert "checkpointing the proxy store failed (tried again later): disk I/O error" in caplog.text
    store = SqliteProxyStore(tmp_path / "p.db")
    assert len((await store.load()).rows) == 2 * CHECKPOINT_EVERY
    await store.close()


def test_a_new_file_locked_by_another_process_for_a_while_turns_wal_once_it_is_free(
    tmp_path: Path,
) -> None:
    """Switching to WAL does not wait for a lock (a connection with no busy timeout here,
    to be sure): it is tried again every 20 ms."""
    path = tmp_path / "p.db"
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN EXCLUSIVE")
    releasing = threading.Timer(0.2, lambda: other.execute("ROLLBACK"))
    releasing.start()
    db = sqlite3.connect(path, timeout=0)
    try:
        _enable_wal(db)
    finally:
        releasing.join()
        other.close()
    assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    db.close()


def test_a_new_file_that_stays_locked_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "p.db"
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            _enable_wal(sqlite3.connect(path, timeout=0))  # after its retries, 2 s
    finally:
        other.close()


async def test_a_row_whose_parties_cannot_be_read_still_loads(tmp_path: Path) -> None:
    """Its call is ended as failed on restart (proxy/durable.py); nobody to tell then."""
    path = tmp_path / "p.db"
    await SqliteProxyStore(path).close()
    with sqlite3.connect(path) as db:
        db.execute("INSERT INTO bridges VALUES ('k1', 'conv', 'not json', 1, 1, x'00')")
    store = SqliteProxyStore(path)
    (loaded,) = (await store.load()).rows
    assert (loaded.call_id, loaded.parties) == ("k1", ())
    await store.close()


async def test_a_lease_runs_out_after_its_seconds_and_not_before(store_location: str) -> None:
    first, second = opened(store_location), opened(store_location)
    assert await first.lease("a", 1.0) == "a"
    assert await second.lease("b", 30.0) == "a"
    await asyncio.sleep(1.2)
    assert await second.lease("b", 30.0) == "b"
    await first.close()
    await second.close()


async def test_a_fenced_save_refused_keeps_its_handled_ids_out(store_location: str) -> None:
    """The ids go in the same transaction as the rest: a refused write writes none."""
    store = opened(store_location)
    assert await store.lease("other", 60) == "other"
    with pytest.raises(StoreError):
        await store.save(Saved(handled=(MessageId(OLGA, "j1", exp=100),), fence="me"))
    assert (await store.load()).handled == ()
    await store.close()


def test_the_default_store_sits_beside_the_credentials(tmp_path: Path) -> None:
    assert default_store_path(tmp_path / "app.json") == tmp_path / "app.proxy.db"


# -- PostgreSQL only ----------------------------------------------------------------------


async def test_a_binding_wakes_another_store_at_once_without_polling(
    postgres_database: str,
) -> None:
    proxy, cli = PostgresProxyStore(postgres_database), PostgresProxyStore(postgres_database)
    await proxy.routes()
    await cli.routes()
    waiting = asyncio.create_task(proxy.wait_changed())
    await asyncio.sleep(0.05)
    assert not waiting.done()
    await cli.bind(BINDING)
    # Well inside the 0.5 s a poll would take: only a notification can be this quick.
    done, _ = await asyncio.wait({waiting}, timeout=0.25)
    assert waiting in done
    assert await proxy.routes() == [BINDING]
    await cli.close()
    await proxy.close()


async def test_after_losing_its_listener_a_store_reconnects_and_reports_a_change_once(
    postgres_database: str,
) -> None:
    proxy = PostgresProxyStore(postgres_database)
    cli = PostgresProxyStore(postgres_database)
    await proxy.routes()
    # The server ends every connection of the proxy's (as a restart or a failover does).
    admin = await asyncpg.connect(postgres_database)
    try:
        killed = await admin.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
    finally:
        await admin.close()
    assert killed >= 2  # the pool's connection and the listening one
    # Nothing was written, but while nobody listened something might have been.
    assert await returns_within(5, proxy.wait_changed())
    assert not await returns_within(QUIET, proxy.wait_changed())
    await cli.bind(BINDING)  # heard again: listening on the new connection
    assert await returns_within(5, proxy.wait_changed())
    assert await proxy.routes() == [BINDING]  # and the pool has connected again
    await cli.close()
    await proxy.close()


async def test_the_proxy_tables_share_a_database_with_the_relay_store(
    postgres_dsn: str,  # migrated by the relay's store
) -> None:
    store = PostgresProxyStore(postgres_dsn)
    await store.bind(BINDING)
    assert await store.routes() == [BINDING]
    await store.close()
    admin = await asyncpg.connect(postgres_dsn)
    try:
        ours = await admin.fetch(
            "SELECT tablename FROM pg_tables WHERE tablename LIKE 'proxy%' ORDER BY 1"
        )
    finally:
        await admin.close()
    names = [row["tablename"] for row in ours]
    assert names == [
        "proxy_bindings",
        "proxy_bridges",
        "proxy_core",
        "proxy_handled",
        "proxy_lease",
        "proxy_legs",
        "proxy_pools",
        "proxy_schema_version",
    ]


async def test_a_newer_schema_is_refused(postgres_database: str) -> None:
    store = PostgresProxyStore(postgres_database)
    await store.routes()  # at our version
    await store.close()
    admin = await asyncpg.connect(postgres_database)
    try:
        await admin.execute("INSERT INTO proxy_schema_version VALUES (99)")
    finally:
        await admin.close()
    newer = PostgresProxyStore(postgres_database)
    with pytest.raises(SchemaMismatch, match="upgrade Parley") as refused:
        await newer.routes()
    assert (refused.value.found, refused.value.expected) == (99, SCHEMA_VERSION)
    await newer.close()


async def test_a_store_at_schema_1_is_migrated_keeping_its_bindings(
    postgres_database: str,
) -> None:
    admin = await asyncpg.connect(postgres_database)
    try:
        await admin.execute("CREATE TABLE proxy_schema_version (version integer NOT NULL)")
        await admin.execute(_MIGRATIONS[0])
        await admin.execute("INSERT INTO proxy_schema_version VALUES (1)")
        await admin.execute("INSERT INTO proxy_bindings VALUES ('conv', 'olga', 'Olga', 'cust')")
    finally:
        await admin.close()
    store = PostgresProxyStore(postgres_database)
    assert await store.routes() == [BINDING]
    await store.save(Saved(rows=(row("k1", 1, live=True),)))
    assert (await store.load()).rows == (row("k1", 1, live=True),)
    await store.close()


async def test_a_store_at_schema_3_is_migrated_keeping_its_calls(postgres_database: str) -> None:
    admin = await asyncpg.connect(postgres_database)
    try:
        await admin.execute("CREATE TABLE proxy_schema_version (version integer NOT NULL)")
        for migration in _MIGRATIONS[:3]:
            await admin.execute(migration)
        await admin.execute("INSERT INTO proxy_schema_version VALUES (3)")
        await admin.execute(
            "INSERT INTO proxy_bridges VALUES ('k1', 'conv', '{olga,cust}', true, 1, 'x')"
        )
    finally:
        await admin.close()
    store = PostgresProxyStore(postgres_database)
    handled = MessageId(OLGA, "j1", exp=100)
    await store.save(Saved(handled=(handled,)))
    loaded = await store.load()
    assert (loaded.rows, loaded.handled) == ((row("k1", 1, live=True, state=b"x"),), (handled,))
    await store.close()


async def test_the_lease_is_one_holders_until_released_or_run_out(store_location: str) -> None:
    first, second = opened(store_location), opened(store_location)
    assert await first.lease("a", 30.0) == "a"
    assert await second.lease("b", 30.0) == "a"  # held: b waits
    assert await first.lease("a", 30.0) == "a"  # renewed
    await first.release("b")  # not b's to release
    assert await second.lease("b", 30.0) == "a"
    await first.release("a")
    assert await second.lease("b", 0.0) == "b"  # free: taken (and run out at once)
    assert await first.lease("a", 30.0) == "a"  # run out: taken over
    await first.close()
    await second.close()


@pytest.mark.parametrize("live", [True, False], ids=["plain", "pruning"])
async def test_a_save_refused_by_its_fence_writes_none_of_it(
    store_location: str, live: bool
) -> None:
    store = opened(store_location)
    assert await store.lease("other", 60) == "other"
    saved = Saved(
        rows=(row("k1", 1, live=live),),
        legs=(LegRecord.of(record(Role.CALLEE, OLGA), APP),),
        outbox=b"o1",
        away=b"a1",
        handled=(MessageId(OLGA, "j1", exp=100),),
        forget_before=0 if live else 50,
        fence="me",
    )
    with pytest.raises(StoreError, match="held by other"):
        await store.save(saved)
    assert (await store.load(), await store.records()) == (Resumable(), [])
    await store.close()


class _Counted:
    """A pooled connection that counts what is sent through it."""

    def __init__(self, db: object, calls: list[str]) -> None:
        self._db, self._calls = db, calls

    def __getattr__(self, name: str) -> object:
        self._calls.append(name)
        return getattr(self._db, name)


@pytest.mark.parametrize(
    ("saved", "calls"),
    [
        (
            Saved(rows=(row("k1", 1, live=True),), outbox=b"o", handled=(MessageId(OLGA, "j", 9),)),
            1,
        ),
        (
            Saved(
                rows=(row("k1", 1, live=False),),
                legs=(LegRecord.of(record(Role.CALLEE, OLGA), APP),),
            ),
            3,
        ),
        (Saved(handled=(MessageId(OLGA, "j", 9),), forget_before=5), 3),
    ],
    ids=["plain", "ended", "forgetting"],
)
async def test_a_postgresql_save_is_one_statement_unless_it_prunes_or_forgets(
    postgres_database: str, monkeypatch: pytest.MonkeyPatch, saved: Saved, calls: int
) -> None:
    """One round trip for the saves on every message; a transaction (begin, the save,
    the pruning or forgetting) only for the few that end a call or forget ids."""
    store = PostgresProxyStore(postgres_database)
    await store.load()
    sent: list[str] = []
    with_connection = store._with

    async def counted(work: Callable[[Any], Awaitable[object]]) -> object:
        return await with_connection(lambda db: work(_Counted(db, sent)))

    monkeypatch.setattr(store, "_with", counted)
    await store.save(saved)
    assert len(sent) == calls, sent
    assert sent[0] == ("fetchval" if calls == 1 else "transaction")
    monkeypatch.undo()
    loaded = await store.load()
    kept = tuple(m for m in saved.handled if m.exp >= saved.forget_before)
    assert (loaded.rows, loaded.handled) == (saved.rows, kept)
    await store.close()


async def test_a_save_fenced_by_a_lease_its_holder_lost_is_refused(store_location: str) -> None:
    store = opened(store_location)
    await store.lease("a", 30.0)
    await store.save(Saved(rows=(row("k1", 1, live=True),), fence="a"))
    with pytest.raises(StoreError, match="no longer holds the lease"):
        await store.save(Saved(rows=(row("k2", 2, live=True),), fence="b"))
    assert [r.call_id for r in (await store.load()).rows] == ["k1"]
    await store.close()

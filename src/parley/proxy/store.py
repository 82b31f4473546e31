"""Where the calling proxy keeps its bindings and the records of its legs.

A store is shared by processes: the running proxy reads bindings and writes records
while ``parley proxy bind`` adds bindings and ``parley calls`` reads records.
:meth:`ProxyStore.wait_changed` is how the running proxy learns that another process
wrote. Two backends (:mod:`parley.proxy.location` picks one from ``--store``):

- :class:`SqliteProxyStore` here, one SQLite file in WAL mode. SQLite cannot tell a
  connection about other connections' commits, so it polls ``PRAGMA data_version``
  (which moves only on other connections' commits) every ``poll_interval``. Every
  method is one short statement or transaction, run in a worker thread so the event
  loop never waits on the disk.
- :class:`~parley.proxy.postgres.PostgresProxyStore`, tables in a PostgreSQL database
  (which it may share with a relay's store): writes notify, nothing polls.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol, TypeVar

import msgspec

from parley.errors import StoreError
from parley.ids import IdentityId
from parley.protocol.proxy import Binding, Pool
from parley.protocol.proxy_state import MessageId
from parley.proxy.records import BridgeRow, LegRecord, Resumable, Route, Saved

log = logging.getLogger(__name__)

T = TypeVar("T")


class ProxyStore(Protocol):
    """Where a proxy keeps its bindings, pools, live calls, outbox and call records, and its lease:
    :class:`SqliteProxyStore` or the PostgreSQL store (:func:`open_proxy_store`)."""

    async def bind(self, binding: Binding) -> None:
        """Add or replace the binding of ``binding.cid`` (and drop a pool of that cid)."""

    async def bind_pool(self, pool: Pool) -> None:
        """Add or replace the pool of ``pool.cid`` (and drop a binding of that cid)."""

    async def routes(self) -> list[Route]:
        """Every binding, then every pool, each by cid."""

    async def wait_changed(self) -> None:
        """Return when someone else may have changed the bindings: since the last return
        (the first call: since the store was opened). A store's own writes do not count.
        It may return without a change (the caller reads the routes again, which is
        cheap) but never misses one, also when cancelled while waiting."""

    async def record(self, leg: LegRecord) -> None:
        """Keep ``leg``; the same leg recorded twice is kept once."""

    async def records(self) -> list[LegRecord]:
        """Every leg, in the order they ended."""

    async def save(self, saved: Saved) -> None:
        """Write ``saved`` in one transaction (see :class:`Saved`)."""

    async def load(self) -> Resumable:
        """What the last :meth:`save` calls left: the core's rows, outbox, presence."""

    async def lease(self, holder: str, seconds: float) -> str:
        """Take the lease of the active proxy for ``seconds`` (or renew it) if it is free,
        expired or ``holder``'s already; return who holds it now."""

    async def release(self, holder: str) -> None:
        """Give the lease up, if ``holder`` has it."""

    async def close(self) -> None: ...


def default_store_path(credentials: Path) -> Path:
    """The proxy's store beside its credentials file: ``app.json`` -> ``app.proxy.db``."""
    return credentials.with_name(credentials.stem + ".proxy.db")


_SCHEMA = """
CREATE TABLE IF NOT EXISTS bindings (
    cid TEXT PRIMARY KEY,
    operator TEXT NOT NULL,
    operator_name TEXT NOT NULL,
    customer TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS pools (
    cid TEXT PRIMARY KEY,
    customer TEXT NOT NULL,
    operators TEXT NOT NULL  -- a JSON array of identity ids, in ringing order
);
CREATE TABLE IF NOT EXISTS legs (
    call_id TEXT NOT NULL,
    cid TEXT NOT NULL,
    leg TEXT NOT NULL,
    caller TEXT NOT NULL,
    callee TEXT NOT NULL,
    peer_device TEXT,
    started REAL NOT NULL,
    ringing REAL,
    answered REAL,
    ended REAL NOT NULL,
    duration REAL NOT NULL,
    reason TEXT NOT NULL,
    PRIMARY KEY (call_id, leg, caller, callee)
);
CREATE INDEX IF NOT EXISTS legs_by_end ON legs (ended);
CREATE TABLE IF NOT EXISTS bridges (
    call_id TEXT PRIMARY KEY,
    cid TEXT NOT NULL,
    parties TEXT NOT NULL,  -- a JSON array of identity ids: the inbound party first
    live INTEGER NOT NULL,
    rank INTEGER NOT NULL,
    state BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS bridges_by_rank ON bridges (live, rank);
-- the core's outbox and presence, one row each
CREATE TABLE IF NOT EXISTS core (key TEXT PRIMARY KEY, value BLOB NOT NULL);
-- the messages the core handled, by issuer and jti, until they expire
CREATE TABLE IF NOT EXISTS handled (
    issuer TEXT NOT NULL,
    jti TEXT NOT NULL,
    exp INTEGER NOT NULL,
    PRIMARY KEY (issuer, jti)
);
CREATE INDEX IF NOT EXISTS handled_by_exp ON handled (exp);
-- which proxy process is the active one, until when (Unix seconds)
CREATE TABLE IF NOT EXISTS lease (
    id INTEGER PRIMARY KEY CHECK (id = 0),
    holder TEXT NOT NULL,
    expires REAL NOT NULL
);
"""

_TAKE_LEASE = (
    "INSERT INTO lease VALUES (0, ?, ?) ON CONFLICT (id) DO UPDATE SET"
    " holder = excluded.holder, expires = excluded.expires"
    " WHERE lease.holder = excluded.holder OR lease.expires < ?"
)

# Ended rows (not live) past the newest ``keep`` of them: the core has forgotten them.
_PRUNE = (
    "DELETE FROM bridges WHERE live = 0 AND rank <= "
    "(SELECT rank FROM bridges WHERE live = 0 ORDER BY rank DESC LIMIT 1 OFFSET ?)"
)


def _enable_wal(db: sqlite3.Connection, attempts: int = 100) -> None:
    """Switch to WAL once. The switch needs the file to itself and SQLite does not wait
    for that (no busy handler), so retry while another process opens the same new file
    (``parley proxy bind`` beside a starting proxy)."""
    for attempt in range(attempts):
        try:
            if db.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                db.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or attempt == attempts - 1:
                raise
            time.sleep(0.02)


# Saves between two checkpoints of the WAL.
CHECKPOINT_EVERY = 64
# A checkpoint beside the saves copies the WAL into the database but cannot start it
# over while saves append to it; one that finds more frames than this in the WAL (it has
# not started over for several checkpoints: saves kept coming) makes the next save wait
# for a checkpoint of its own, which then starts the WAL over. Without that a busy proxy's
# WAL grew by every save (about 37 KB each) for as long as the saves kept coming.
WAL_LIMIT = 2048  # frames (pages): 8 MiB of 4 KiB pages

_LEG_FIELDS = LegRecord.__struct_fields__  # the legs table has these columns
_LEG_COLUMNS = ", ".join(_LEG_FIELDS)


class SqliteProxyStore:
    """The store in the SQLite file ``path`` (created if missing). :meth:`wait_changed`
    notices other processes' writes within ``poll_interval`` seconds."""

    def __init__(self, path: str | Path, *, poll_interval: float = 0.5) -> None:
        self.path = Path(path)
        self.poll_interval = poll_interval
        # Used from worker threads, one at a time (the lock): never two at once.
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        self._db.execute("PRAGMA busy_timeout = 5000")
        _enable_wal(self._db)
        # WAL with synchronous=NORMAL: a commit survives a crash of the process; only a
        # power cut may lose the last ones. Records are bookkeeping, not messages.
        self._db.execute("PRAGMA synchronous = NORMAL")
        # What syncs is the checkpoint: run here every CHECKPOINT_EVERY saves, on a
        # worker thread beside the saves, never on the event loop (and, past WAL_LIMIT,
        # once with a save of its own after it, which starts the WAL over).
        self._db.execute("PRAGMA wal_autocheckpoint = 0")
        self._until_checkpoint = CHECKPOINT_EVERY
        self._checkpoint: asyncio.Task[int] | None = None
        self._checkpointer: sqlite3.Connection | None = None  # the checkpoint's thread's
        self._start_wal_over = False  # the next save waits for a checkpoint of its own
        self._db.executescript(_SCHEMA)
        self._version = self._data_version()

    async def _do(self, work: Callable[[sqlite3.Connection], T]) -> T:
        def locked() -> T:
            with self._lock:
                return work(self._db)

        return await asyncio.to_thread(locked)

    def _data_version(self) -> int:
        row = self._db.execute("PRAGMA data_version").fetchone()
        return int(row[0])

    async def bind(self, binding: Binding) -> None:
        def work(db: sqlite3.Connection) -> None:
            with db:
                db.execute("BEGIN IMMEDIATE")
                db.execute("DELETE FROM pools WHERE cid = ?", (binding.cid,))
                db.execute(
                    "INSERT OR REPLACE INTO bindings VALUES (?, ?, ?, ?)",
                    (binding.cid, binding.operator, binding.operator_name, binding.customer),
                )

        await self._do(work)

    async def bind_pool(self, pool: Pool) -> None:
        operators = msgspec.json.encode(pool.operators).decode()

        def work(db: sqlite3.Connection) -> None:
            with db:
                db.execute("BEGIN IMMEDIATE")
                db.execute("DELETE FROM bindings WHERE cid = ?", (pool.cid,))
                db.execute(
                    "INSERT OR REPLACE INTO pools VALUES (?, ?, ?)",
                    (pool.cid, pool.customer, operators),
                )

        await self._do(work)

    async def routes(self) -> list[Route]:
        def work(db: sqlite3.Connection) -> list[Route]:
            bindings = db.execute(
                "SELECT cid, operator, operator_name, customer FROM bindings ORDER BY cid"
            ).fetchall()
            pools = db.execute("SELECT cid, customer, operators FROM pools ORDER BY cid").fetchall()
            return [
                *(
                    Binding(
                        cid=cid,
                        operator=IdentityId(operator),
                        operator_name=name,
                        customer=IdentityId(customer),
                    )
                    for cid, operator, name, customer in bindings
                ),
                *(
                    Pool(
                        cid=cid,
                        customer=IdentityId(customer),
                        operators=msgspec.json.decode(ops, type=tuple[IdentityId, ...]),
                    )
                    for cid, customer, ops in pools
                ),
            ]

        return await self._do(work)

    async def wait_changed(self) -> None:
        # Look first, then sleep: a caller that gives up after a while (asyncio.timeout)
        # still gets one look per call. The version is compared and kept here, after the
        # read returns, so a cancellation during the read forgets nothing.
        while True:
            version = await self._do(lambda _: self._data_version())
            if version != self._version:
                self._version = version
                return
            await asyncio.sleep(self.poll_interval)

    async def record(self, leg: LegRecord) -> None:
        row = msgspec.to_builtins(msgspec.structs.astuple(leg))
        marks = ", ".join("?" * len(_LEG_FIELDS))
        await self._do(
            lambda db: db.execute(
                f"INSERT OR IGNORE INTO legs ({_LEG_COLUMNS}) VALUES ({marks})", row
            )
        )

    async def records(self) -> list[LegRecord]:
        def work(db: sqlite3.Connection) -> list[LegRecord]:
            rows = db.execute(f"SELECT {_LEG_COLUMNS} FROM legs ORDER BY ended, rowid").fetchall()
            return [
                msgspec.convert(dict(zip(_LEG_FIELDS, row, strict=True)), LegRecord) for row in rows
            ]

        return await self._do(work)

    async def save(self, saved: Saved) -> None:
        rows = [
            (
                row.call_id,
                row.cid,
                msgspec.json.encode(row.parties).decode(),
                int(row.live),
                row.rank,
                row.state,
            )
            for row in saved.rows
        ]
        legs = [msgspec.to_builtins(msgspec.structs.astuple(leg)) for leg in saved.legs]
        core = [(k, v) for k, v in (("outbox", saved.outbox), ("away", saved.away)) if v]
        handled = [msgspec.structs.astuple(m) for m in saved.handled]
        marks = ", ".join("?" * len(_LEG_FIELDS))

        def work(db: sqlite3.Connection) -> None:
            with db:
                db.execute("BEGIN IMMEDIATE")
                if saved.fence is not None:
                    _fenced(saved.fence, db.execute("SELECT holder FROM lease").fetchone())
                db.executemany("INSERT OR REPLACE INTO bridges VALUES (?, ?, ?, ?, ?, ?)", rows)
                db.executemany(
                    f"INSERT OR IGNORE INTO legs ({_LEG_COLUMNS}) VALUES ({marks})", legs
                )
                db.executemany("INSERT OR REPLACE INTO core VALUES (?, ?)", core)
                db.executemany("INSERT OR IGNORE INTO handled VALUES (?, ?, ?)", handled)
                if saved.writes_ended:
                    db.execute(_PRUNE, (saved.keep,))
                if saved.forget_before:
                    db.execute("DELETE FROM handled WHERE exp < ?", (saved.forget_before,))

        if self._start_wal_over and self._checkpoint is None:
            self._start_wal_over = False
            self._until_checkpoint = CHECKPOINT_EVERY

            def checkpoint_then_work() -> None:
                # Nothing writes between the two: the copy is whole, so this save starts
                # the WAL over (syncing its header: on this thread, not the loop).
                with self._lock:
                    self._db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                    work(self._db)

            await asyncio.to_thread(checkpoint_then_work)
            return
        # On the event loop, not a worker thread: a WAL append without fsync is a
        # fraction of a millisecond, about a quarter of the hop to a thread and back, and
        # the proxy waits for this commit before it goes on anyway.
        with self._lock:
            work(self._db)
        self._until_checkpoint -= 1
        if self._until_checkpoint <= 0 and self._checkpoint is None:
            self._until_checkpoint = CHECKPOINT_EVERY
            self._checkpoint = asyncio.create_task(asyncio.to_thread(self._checkpoint_wal))
            self._checkpoint.add_done_callback(self._checkpointed)

    def _checkpoint_wal(self) -> int:
        """On a worker thread, with its own connection: copy the WAL into the database
        and sync both, beside the saves (the next one then starts the WAL over, if the
        copy was whole). Returns the frames the WAL held."""
        if self._checkpointer is None:
            self._checkpointer = sqlite3.connect(self.path, check_same_thread=False)
            self._checkpointer.execute("PRAGMA busy_timeout = 5000")
        _, frames, _ = self._checkpointer.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        return int(frames)

    def _checkpointed(self, task: asyncio.Task[int]) -> None:
        self._checkpoint = None
        if task.cancelled():
            return
        if (exc := task.exception()) is not None:
            log.warning("checkpointing the proxy store failed (tried again later): %s", exc)
        elif task.result() > WAL_LIMIT:
            self._start_wal_over = True

    async def load(self) -> Resumable:
        def work(db: sqlite3.Connection) -> Resumable:
            rows = db.execute(
                "SELECT call_id, cid, parties, live, rank, state FROM bridges ORDER BY rank"
            ).fetchall()
            core = dict(db.execute("SELECT key, value FROM core").fetchall())
            handled = db.execute("SELECT issuer, jti, exp FROM handled").fetchall()
            return Resumable(
                rows=tuple(
                    BridgeRow(
                        call_id=call_id,
                        cid=cid,
                        parties=_parties(parties),
                        live=bool(live),
                        rank=rank,
                        state=bytes(state),
                    )
                    for call_id, cid, parties, live, rank, state in rows
                ),
                outbox=core.get("outbox"),
                away=core.get("away"),
                handled=tuple(MessageId(*row) for row in handled),
            )

        return await self._do(work)

    async def lease(self, holder: str, seconds: float) -> str:
        def work(db: sqlite3.Connection) -> str:
            now = time.time()
            with db:
                db.execute("BEGIN IMMEDIATE")
                db.execute(_TAKE_LEASE, (holder, now + seconds, now))
                return str(db.execute("SELECT holder FROM lease").fetchone()[0])

        return await self._do(work)

    async def release(self, holder: str) -> None:
        await self._do(lambda db: db.execute("DELETE FROM lease WHERE holder = ?", (holder,)))

    async def close(self) -> None:
        if self._checkpoint is not None:
            await asyncio.gather(self._checkpoint, return_exceptions=True)
        if self._checkpointer is not None:
            self._checkpointer.close()
        await self._do(lambda db: db.close())


def fenced(holder: str, found: object) -> None:
    """Raise unless ``found`` (the lease's holder column, or None) is ``holder``."""
    if found is None or found != holder:
        raise StoreError(f"this proxy no longer holds the lease (held by {found}): not saving")


def _fenced(holder: str, row: tuple[object, ...] | None) -> None:
    fenced(holder, None if row is None else row[0])


def _parties(column: str) -> tuple[IdentityId, ...]:
    # Readable or not, a row must still name whom to end its call with: never raise.
    try:
        return msgspec.json.decode(column, type=tuple[IdentityId, ...])
    except msgspec.MsgspecError:
        return ()

"""The calling proxy's store on PostgreSQL (the ``parley[postgres]`` extra: asyncpg).

The same bindings, pools and leg records as :class:`~parley.proxy.store.SqliteProxyStore`,
in tables prefixed ``proxy_`` with their own ``proxy_schema_version``, so the proxy can
share a database with a relay's store without either knowing the other's tables.

Nothing polls. A write that changes bindings sends ``NOTIFY parley_proxy_bindings`` in
its transaction (PostgreSQL delivers it at commit, so whoever hears it reads the new
rows), and every open store keeps one connection that ``LISTEN``\\ s: a notification from
another store wakes :meth:`PostgresProxyStore.wait_changed`. The payload is the writer's
token, so a store does not wake itself. While that connection is down nothing is heard:
the store reconnects, and then ``wait_changed`` returns once, because writes may have
been missed meanwhile. A connection that dies without the socket closing (a network
partition) is noticed by a ``SELECT 1`` every ``check_interval`` seconds.

asyncpg has no type stubs: its objects are ``Any`` here and go no further.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, Final, TypeVar

import asyncpg
import msgspec

from parley.errors import SchemaMismatch, StoreError, StoreUnavailable
from parley.ids import IdentityId
from parley.pg_pool import keep_session
from parley.protocol.proxy import Binding, Pool
from parley.protocol.proxy_state import MessageId
from parley.proxy.location import describe
from parley.proxy.records import BridgeRow, LegRecord, Resumable, Route, Saved
from parley.proxy.store import fenced

log = logging.getLogger(__name__)

T = TypeVar("T")

CHANNEL: Final = "parley_proxy_bindings"
SCHEMA_VERSION: Final = 4
# pg_advisory_xact_lock key serialising schema setup: two processes opening a new
# database at once (``parley proxy bind`` beside a starting proxy) would otherwise race
# in CREATE TABLE IF NOT EXISTS, which is not safe against concurrent creators.
_SCHEMA_LOCK: Final = 0x7061726C_70727879  # "parlprxy"

# _MIGRATIONS[n] takes the schema from version n to n + 1.
_MIGRATIONS: Final[tuple[str, ...]] = (
    """
    CREATE TABLE proxy_bindings (
        cid text PRIMARY KEY,
        operator text NOT NULL,
        operator_name text NOT NULL,
        customer text NOT NULL
    );
    CREATE TABLE proxy_pools (
        cid text PRIMARY KEY,
        customer text NOT NULL,
        operators text[] NOT NULL  -- identity ids, in ringing order
    );
    CREATE TABLE proxy_legs (
        -- insertion order: ties in ``ended`` come back in the order they were recorded
        seq bigint GENERATED ALWAYS AS IDENTITY,
        call_id text NOT NULL,
        cid text NOT NULL,
        leg text NOT NULL,
        caller text NOT NULL,
        callee text NOT NULL,
        peer_device text,
        started double precision NOT NULL,
        ringing double precision,
        answered double precision,
        ended double precision NOT NULL,
        duration double precision NOT NULL,
        reason text NOT NULL,
        PRIMARY KEY (call_id, leg, caller, callee)
    );
    CREATE INDEX proxy_legs_by_end ON proxy_legs (ended, seq);
    """,
    # 2: the core's state, saved after every input (records.Saved).
    """
    CREATE TABLE proxy_bridges (
        call_id text PRIMARY KEY,
        cid text NOT NULL,
        parties text[] NOT NULL,  -- the inbound party first
        live boolean NOT NULL,
        rank bigint NOT NULL,
        state bytea NOT NULL
    );
    CREATE INDEX proxy_bridges_by_rank ON proxy_bridges (live, rank);
    -- the core's outbox and presence, one row each
    CREATE TABLE proxy_core (key text PRIMARY KEY, value bytea NOT NULL);
    """,
    # 3: which proxy process is the active one, until when (the database's Unix time).
    """
    CREATE TABLE proxy_lease (
        id integer PRIMARY KEY CHECK (id = 0),
        holder text NOT NULL,
        expires double precision NOT NULL
    );
    """,
    # 4: the messages the core handled, until they expire (a repeat is skipped).
    """
    CREATE TABLE proxy_handled (
        issuer text NOT NULL,
        jti text NOT NULL,
        exp bigint NOT NULL,
        PRIMARY KEY (issuer, jti)
    );
    CREATE INDEX proxy_handled_by_exp ON proxy_handled (exp);
    """,
)
assert len(_MIGRATIONS) == SCHEMA_VERSION

_LEG_FIELDS: Final = LegRecord.__struct_fields__  # proxy_legs has these columns
_LEG_COLUMNS: Final = ", ".join(_LEG_FIELDS)
_LEG_TYPES: Final = {
    "call_id": "text",
    "cid": "text",
    "leg": "text",
    "caller": "text",
    "callee": "text",
    "peer_device": "text",
    "started": "float8",
    "ringing": "float8",
    "answered": "float8",
    "ended": "float8",
    "duration": "float8",
    "reason": "text",
}
assert tuple(_LEG_TYPES) == _LEG_FIELDS
_INSERT_LEG: Final = (
    f"INSERT INTO proxy_legs ({_LEG_COLUMNS})"
    f" VALUES ({', '.join(f'${i}' for i in range(1, len(_LEG_FIELDS) + 1))})"
    " ON CONFLICT DO NOTHING"
)
# One save (records.Saved) in one statement, so in one round trip: each table's rows as
# arrays, a column each ($2-$7 bridges, their parties as JSON lists; $10-$12 handled;
# from $13 legs, in the order recorded), and nothing written unless the lease is the
# fence's ($1; None: no lease), which the statement returns. The lease row is locked
# (FOR SHARE) until the save commits: a takeover waits for it, or it sees the new holder.
_LEG_ARRAYS: Final = ", ".join(f"${13 + i}::{kind}[]" for i, kind in enumerate(_LEG_TYPES.values()))
_LEG_VALUES: Final = ", ".join(f"l.{name}" for name in _LEG_FIELDS)
_SAVE: Final = f"""
WITH lease AS (SELECT holder FROM proxy_lease FOR SHARE),
allowed AS (SELECT $1::text IS NULL OR EXISTS (SELECT FROM lease WHERE holder = $1) AS ok),
bridges AS (
    INSERT INTO proxy_bridges (call_id, cid, parties, live, rank, state)
    SELECT b.call_id, b.cid, ARRAY(SELECT jsonb_array_elements_text(b.parties::jsonb)),
        b.live, b.rank, b.state
    FROM unnest($2::text[], $3::text[], $4::text[], $5::boolean[], $6::bigint[], $7::bytea[])
        AS b(call_id, cid, parties, live, rank, state)
    WHERE (SELECT ok FROM allowed)
    ON CONFLICT (call_id) DO UPDATE SET cid = excluded.cid, parties = excluded.parties,
        live = excluded.live, rank = excluded.rank, state = excluded.state
),
core AS (
    INSERT INTO proxy_core (key, value)
    SELECT c.key, c.value FROM (VALUES ('outbox', $8::bytea), ('away', $9::bytea)) AS c(key, value)
    WHERE c.value IS NOT NULL AND (SELECT ok FROM allowed)
    ON CONFLICT (key) DO UPDATE SET value = excluded.value
),
handled AS (
    INSERT INTO proxy_handled (issuer, jti, exp)
    SELECT h.issuer, h.jti, h.exp
    FROM unnest($10::text[], $11::text[], $12::bigint[]) AS h(issuer, jti, exp)
    WHERE (SELECT ok FROM allowed)
    ON CONFLICT DO NOTHING
),
legs AS (
    INSERT INTO proxy_legs ({_LEG_COLUMNS})
    SELECT {_LEG_VALUES}
    FROM unnest({_LEG_ARRAYS}) WITH ORDINALITY AS l({_LEG_COLUMNS}, n)
    WHERE (SELECT ok FROM allowed)
    ORDER BY l.n
    ON CONFLICT DO NOTHING
)
SELECT (SELECT holder FROM lease LIMIT 1)
"""
# The database's clock, not the processes': a lease means the same on every host.
_TAKE_LEASE: Final = (
    "INSERT INTO proxy_lease (id, holder, expires)"
    " VALUES (0, $1, extract(epoch FROM clock_timestamp()) + $2)"
    " ON CONFLICT (id) DO UPDATE SET holder = excluded.holder, expires = excluded.expires"
    " WHERE proxy_lease.holder = excluded.holder"
    " OR proxy_lease.expires < extract(epoch FROM clock_timestamp())"
)
# Ended rows past the newest ``keep`` of them: the core has forgotten them.
_PRUNE: Final = (
    "DELETE FROM proxy_bridges WHERE NOT live AND rank <="
    " (SELECT rank FROM proxy_bridges WHERE NOT live ORDER BY rank DESC LIMIT 1 OFFSET $1)"
)

# What a lost or refused connection raises; anything else from asyncpg is a StoreError
# too (one line on the command line), but not "unavailable".
_UNAVAILABLE: Final = (
    OSError,
    TimeoutError,
    asyncpg.InterfaceError,
    asyncpg.PostgresConnectionError,
    asyncpg.OperatorInterventionError,
    asyncpg.InvalidCatalogNameError,
    asyncpg.InvalidAuthorizationSpecificationError,
    asyncpg.InsufficientResourcesError,
)


class PostgresProxyStore:
    """The proxy's store in the PostgreSQL database ``dsn`` names
    (``postgresql://USER@HOST:PORT/DB``).

    It connects on first use (creating its tables if missing) and holds a pool of at
    most ``max_connections`` plus the listening connection. ``check_interval``: how
    often the listening connection is checked; ``connect_timeout``: how long one
    attempt to connect may take.
    """

    def __init__(
        self,
        dsn: str,
        *,
        max_connections: int = 4,
        check_interval: float = 10.0,
        connect_timeout: float = 10.0,
    ) -> None:
        self.dsn = dsn
        self._name = describe(dsn)  # for messages: without the password
        self._max_connections = max_connections
        self._check_interval = check_interval
        self._connect_timeout = connect_timeout
        self._token = secrets.token_hex(8)  # our NOTIFY payload: not a change for us
        self._opening = asyncio.Lock()
        self._pool: Any = None
        self._listener: Any = None
        self._changed = asyncio.Event()
        self._lost = asyncio.Event()
        self._keeper: asyncio.Task[None] | None = None
        self._closed = False

    # -- connections ----------------------------------------------------------------

    async def _open(self) -> Any:
        """The pool, connected and at our schema, with the listener up (first call)."""
        if self._pool is not None:
            return self._pool
        async with self._opening:
            if self._closed:
                raise StoreUnavailable(f"the proxy store {self._name} is closed")
            if self._pool is None:
                with self._translated("cannot open"):
                    pool = await asyncpg.create_pool(
                        self.dsn,
                        min_size=1,
                        max_size=self._max_connections,
                        timeout=self._connect_timeout,
                        reset=keep_session,
                    )
                try:
                    await self._migrate(pool)
                    # Listening before the first read returns: a write after it is heard.
                    self._listener = await self._listen()
                except BaseException:
                    await pool.close()
                    raise
                self._pool = pool
                self._keeper = asyncio.create_task(
                    self._keep_listening(), name="parley-proxy-store-listener"
                )
        return self._pool

    async def _migrate(self, pool: Any) -> None:
        with self._translated("cannot set up the schema of"):
            async with pool.acquire() as db, db.transaction():
                await db.execute("SELECT pg_advisory_xact_lock($1)", _SCHEMA_LOCK)
                await db.execute(
                    "CREATE TABLE IF NOT EXISTS proxy_schema_version (version integer NOT NULL)"
                )
                found = await db.fetchval("SELECT max(version) FROM proxy_schema_version") or 0
                if found > SCHEMA_VERSION:
                    raise SchemaMismatch(
                        f"the proxy store {self._name} is at schema version {found}, newer "
                        f"than this Parley's {SCHEMA_VERSION}: upgrade Parley",
                        found=found,
                        expected=SCHEMA_VERSION,
                    )
                for version in range(found, SCHEMA_VERSION):
                    await db.execute(_MIGRATIONS[version])
                    await db.execute("INSERT INTO proxy_schema_version VALUES ($1)", version + 1)
                if found < SCHEMA_VERSION:
                    log.info("proxy store %s: schema %d -> %d", self._name, found, SCHEMA_VERSION)

    async def _listen(self) -> Any:
        """A new connection listening on the channel (raises if it cannot be had)."""
        with self._translated("cannot listen to"):
            conn = await asyncpg.connect(self.dsn, timeout=self._connect_timeout)
            try:
                await conn.add_listener(CHANNEL, self._notified)
            except BaseException:
                conn.terminate()
                raise
        conn.add_termination_listener(self._terminated)
        if conn.is_closed():  # died before the termination listener was there to hear it
            raise StoreUnavailable(f"the proxy store {self._name} closed the connection")
        return conn

    def _notified(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        if payload != self._token:
            self._changed.set()

    def _terminated(self, conn: Any) -> None:
        # Also called for connections we replaced or closed: only the current one counts.
        if conn is self._listener and not self._closed:
            self._lost.set()

    async def _keep_listening(self) -> None:
        """Replace the listening connection whenever it is lost; then report a change
        once, since writes made while nobody listened were not heard."""
        while True:
            await self._until_lost()
            log.warning("proxy store %s: lost the listening connection; reconnecting", self._name)
            old, self._listener = self._listener, None
            if old is not None:
                old.terminate()
            self._lost.clear()
            delay = 0.05
            while True:
                try:
                    self._listener = await self._listen()
                    break
                except StoreError as exc:
                    log.warning(
                        "proxy store %s: %s; trying again in %.1f s", self._name, exc, delay
                    )
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 5.0)
            log.info("proxy store %s: listening again", self._name)
            self._changed.set()

    async def _until_lost(self) -> None:
        while True:
            try:
                async with asyncio.timeout(self._check_interval):
                    await self._lost.wait()
                return
            except TimeoutError:
                pass
            # Nothing closed the socket, but a partition closes nothing: ask.
            conn = self._listener
            try:
                async with asyncio.timeout(self._connect_timeout):
                    await conn.execute("SELECT 1")
            except Exception as exc:
                log.debug("proxy store %s: listening connection check failed: %r", self._name, exc)
                return

    @contextlib.contextmanager
    def _translated(self, doing: str) -> Iterator[None]:
        """asyncpg's and the socket's errors as Parley's store errors, in one line."""
        try:
            yield
        except _UNAVAILABLE as exc:
            raise StoreUnavailable(f"{doing} the proxy store {self._name}: {exc}") from exc
        except asyncpg.PostgresError as exc:
            raise StoreError(f"{doing} the proxy store {self._name}: {exc}") from exc

    async def _with(self, work: Callable[[Any], Awaitable[T]]) -> T:
        pool = await self._open()
        with self._translated("cannot use"):
            async with pool.acquire() as db:
                return await work(db)

    # -- ProxyStore -----------------------------------------------------------------

    async def bind(self, binding: Binding) -> None:
        async def work(db: Any) -> None:
            async with db.transaction():
                await db.execute("DELETE FROM proxy_pools WHERE cid = $1", binding.cid)
                await db.execute(
                    "INSERT INTO proxy_bindings (cid, operator, operator_name, customer)"
                    " VALUES ($1, $2, $3, $4) ON CONFLICT (cid) DO UPDATE SET"
                    " operator = excluded.operator, operator_name = excluded.operator_name,"
                    " customer = excluded.customer",
                    binding.cid,
                    binding.operator,
                    binding.operator_name,
                    binding.customer,
                )
                await db.execute("SELECT pg_notify($1, $2)", CHANNEL, self._token)

        await self._with(work)

    async def bind_pool(self, pool: Pool) -> None:
        async def work(db: Any) -> None:
            async with db.transaction():
                await db.execute("DELETE FROM proxy_bindings WHERE cid = $1", pool.cid)
                await db.execute(
                    "INSERT INTO proxy_pools (cid, customer, operators) VALUES ($1, $2, $3)"
                    " ON CONFLICT (cid) DO UPDATE SET"
                    " customer = excluded.customer, operators = excluded.operators",
                    pool.cid,
                    pool.customer,
                    list(pool.operators),
                )
                await db.execute("SELECT pg_notify($1, $2)", CHANNEL, self._token)

        await self._with(work)

    async def routes(self) -> list[Route]:
        async def work(db: Any) -> list[Route]:
            # One snapshot for both tables: a cid moved from a binding to a pool in
            # between is not seen twice, nor missed.
            async with db.transaction(isolation="repeatable_read", readonly=True):
                bindings = await db.fetch(
                    "SELECT cid, operator, operator_name, customer FROM proxy_bindings ORDER BY cid"
                )
                pools = await db.fetch(
                    "SELECT cid, customer, operators FROM proxy_pools ORDER BY cid"
                )
            return [
                *(
                    Binding(
                        cid=row["cid"],
                        operator=IdentityId(row["operator"]),
                        operator_name=row["operator_name"],
                        customer=IdentityId(row["customer"]),
                    )
                    for row in bindings
                ),
                *(
                    Pool(
                        cid=row["cid"],
                        customer=IdentityId(row["customer"]),
                        operators=tuple(IdentityId(op) for op in row["operators"]),
                    )
                    for row in pools
                ),
            ]

        return await self._with(work)

    async def wait_changed(self) -> None:
        await self._open()
        # Cancelling here loses nothing: the event stays set for the next call.
        await self._changed.wait()
        self._changed.clear()

    async def record(self, leg: LegRecord) -> None:
        row = msgspec.to_builtins(msgspec.structs.astuple(leg))

        async def work(db: Any) -> None:
            await db.execute(_INSERT_LEG, *row)

        await self._with(work)

    async def records(self) -> list[LegRecord]:
        async def work(db: Any) -> list[LegRecord]:
            rows = await db.fetch(f"SELECT {_LEG_COLUMNS} FROM proxy_legs ORDER BY ended, seq")
            return [msgspec.convert(dict(row), LegRecord) for row in rows]

        return await self._with(work)

    async def save(self, saved: Saved) -> None:
        args = _save_arguments(saved)

        async def write(db: Any) -> None:
            holder = await db.fetchval(_SAVE, *args)
            if saved.fence is not None:
                fenced(saved.fence, holder)  # nothing was written

        async def work(db: Any) -> None:
            if not (saved.writes_ended or saved.forget_before):
                await write(db)  # its own transaction: most saves are one round trip
                return
            async with db.transaction():
                await write(db)
                if saved.writes_ended:
                    await db.execute(_PRUNE, saved.keep)
                if saved.forget_before:
                    await db.execute(
                        "DELETE FROM proxy_handled WHERE exp < $1", saved.forget_before
                    )

        await self._with(work)

    async def load(self) -> Resumable:
        async def work(db: Any) -> Resumable:
            async with db.transaction(isolation="repeatable_read", readonly=True):
                rows = await db.fetch(
                    "SELECT call_id, cid, parties, live, rank, state FROM proxy_bridges"
                    " ORDER BY rank"
                )
                core = {
                    r["key"]: bytes(r["value"])
                    for r in await db.fetch("SELECT key, value FROM proxy_core")
                }
                handled = await db.fetch("SELECT issuer, jti, exp FROM proxy_handled")
            return Resumable(
                rows=tuple(
                    BridgeRow(
                        call_id=r["call_id"],
                        cid=r["cid"],
                        parties=tuple(IdentityId(p) for p in r["parties"]),
                        live=r["live"],
                        rank=r["rank"],
                        state=bytes(r["state"]),
                    )
                    for r in rows
                ),
                outbox=core.get("outbox"),
                away=core.get("away"),
                handled=tuple(MessageId(r["issuer"], r["jti"], r["exp"]) for r in handled),
            )

        return await self._with(work)

    async def lease(self, holder: str, seconds: float) -> str:
        async def work(db: Any) -> str:
            async with db.transaction():
                await db.execute(_TAKE_LEASE, holder, seconds)
                return str(await db.fetchval("SELECT holder FROM proxy_lease"))

        return await self._with(work)

    async def release(self, holder: str) -> None:
        async def work(db: Any) -> None:
            await db.execute("DELETE FROM proxy_lease WHERE holder = $1", holder)

        await self._with(work)

    async def close(self) -> None:
        self._closed = True
        if self._keeper is not None:
            self._keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._keeper
            self._keeper = None
        listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(*_UNAVAILABLE):
                await listener.close(timeout=self._connect_timeout)
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()


def _save_arguments(saved: Saved) -> list[object]:
    """The parameters of :data:`_SAVE` for ``saved``."""
    bridges = [
        (r.call_id, r.cid, msgspec.json.encode(r.parties).decode(), r.live, r.rank, r.state)
        for r in saved.rows
    ]
    legs = [msgspec.to_builtins(msgspec.structs.astuple(leg)) for leg in saved.legs]
    handled = [msgspec.structs.astuple(m) for m in saved.handled]
    return [
        saved.fence,
        *_columns(bridges, 6),
        saved.outbox or None,
        saved.away or None,
        *_columns(handled, 3),
        *_columns(legs, len(_LEG_FIELDS)),
    ]


def _columns(rows: list[Any], width: int) -> list[list[Any]]:
    """``rows`` (each ``width`` long) as ``width`` columns."""
    return [list(column) for column in zip(*rows, strict=True)] if rows else [[]] * width

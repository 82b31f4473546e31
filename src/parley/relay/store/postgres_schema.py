"""The PostgreSQL store's schema: its versions, :func:`migrate`, and the check a relay
makes before it serves.

A relay never creates or alters tables itself: several nodes share one database, and a
node started with an older or newer Parley must not reshape it under the others. An
operator runs ``parley relay migrate --store DSN`` (:func:`migrate`) once per upgrade;
a relay whose schema is missing or at another version refuses to start
(:class:`~parley.errors.SchemaMismatch`, saying which command fixes it).

``schema_version`` holds one row per applied version. Each version's SQL runs in one
transaction with the version row, under an advisory lock, so two ``migrate`` runs at
once (two nodes deployed together) apply each version exactly once.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol
from urllib.parse import parse_qsl, urlencode, urlsplit

import asyncpg

from parley.errors import SchemaMismatch, StoreUnavailable

# Version 1: everything the SQLite backend stores, in the same shape, plus what several
# writers need (per-device offset counters under the device row's lock).
#
# Text that the relay has validated (identity and device ids) is ``text COLLATE "C"``:
# bytewise comparison and order, as SQLite compares, whatever the database's locale.
# Text the relay does not validate (envelope ids, identity names) is stored as its UTF-8
# bytes: PostgreSQL text cannot hold NUL, which SQLite (and the protocol) allow.
_V1 = """
CREATE TABLE identities (
    id text COLLATE "C" PRIMARY KEY,
    name bytea,
    created_at double precision NOT NULL
);
CREATE TABLE chain (
    identity text COLLATE "C" NOT NULL,
    seq bigint NOT NULL,
    body bytea NOT NULL,
    signature bytea NOT NULL,
    PRIMARY KEY (identity, seq)
);
CREATE TABLE devices (
    identity text COLLATE "C" NOT NULL,
    device text COLLATE "C" NOT NULL,
    revoked boolean NOT NULL DEFAULT false,
    confirmed bigint NOT NULL DEFAULT 0,
    -- The offset of the device's newest inbox row: taken and raised under this row's
    -- lock, so a device's offsets are consecutive and in commit order.
    last_offset bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (identity, device)
);
CREATE TABLE permits (
    owner text COLLATE "C" NOT NULL,
    peer text COLLATE "C" NOT NULL,
    PRIMARY KEY (owner, peer)
);
CREATE TABLE messages (
    seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id bytea NOT NULL UNIQUE,
    sender text COLLATE "C" NOT NULL,
    sender_device text COLLATE "C" NOT NULL,
    recipient text COLLATE "C" NOT NULL,
    body bytea,
    sent_at double precision NOT NULL,
    expires_at double precision NOT NULL
);
CREATE INDEX messages_expiry ON messages (expires_at);
CREATE TABLE inbox (
    identity text COLLATE "C" NOT NULL,
    device text COLLATE "C" NOT NULL,
    pos bigint NOT NULL,
    message bigint NOT NULL,
    expires_at double precision NOT NULL,
    PRIMARY KEY (identity, device, pos)
);
CREATE INDEX inbox_expiry ON inbox (expires_at);
CREATE INDEX inbox_message ON inbox (message);
CREATE TABLE identity_keys (
    identity text COLLATE "C" NOT NULL,
    device text COLLATE "C" NOT NULL,
    key bytea NOT NULL,
    signature bytea NOT NULL,
    PRIMARY KEY (identity, device)
);
CREATE TABLE one_time_keys (
    seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    identity text COLLATE "C" NOT NULL,
    device text COLLATE "C" NOT NULL,
    key bytea NOT NULL,
    UNIQUE (identity, device, key)
);
CREATE INDEX one_time_keys_oldest ON one_time_keys (identity, device, seq);
CREATE TABLE fallback_keys (
    identity text COLLATE "C" NOT NULL,
    device text COLLATE "C" NOT NULL,
    key bytea NOT NULL,
    claimed boolean NOT NULL DEFAULT false,
    PRIMARY KEY (identity, device)
);
"""

# MIGRATIONS[n - 1] takes the schema from version n - 1 to n. Append, never edit: a
# database at version n has run exactly the first n of them.
# Version 2: invitation tokens (hashes), for relays that register only invited identities.
_V2 = """
CREATE TABLE invites (
    token_hash bytea PRIMARY KEY,
    created_at double precision NOT NULL,
    expires_at double precision NOT NULL,
    used_by text COLLATE "C"
);
"""

MIGRATIONS: tuple[str, ...] = (_V1, _V2)
SCHEMA_VERSION = len(MIGRATIONS)

_CREATE_VERSION_TABLE = """
CREATE TABLE IF NOT EXISTS schema_version (
    version integer PRIMARY KEY,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""
# Any constant both migrate() runs agree on; advisory locks are per database.
_MIGRATION_LOCK = 0x7061_726C_6579_0001  # "parley" 1


# asyncpg has no type hints: its rows and connections are used through these, so the
# untyped values stay inside the two PostgreSQL modules.
Record = Sequence[Any]


class Connection(Protocol):
    """The part of ``asyncpg.Connection`` (and ``asyncpg.Pool``) the store uses."""

    async def execute(self, query: str, *args: object) -> str: ...

    async def fetch(self, query: str, *args: object) -> list[Record]: ...

    async def fetchrow(self, query: str, *args: object) -> Record | None: ...

    async def fetchval(self, query: str, *args: object) -> Any: ...


_SECRET_PARAMETERS = frozenset({"password", "sslpassword"})


def describe_dsn(dsn: str) -> str:
    """The DSN without its password, for messages and logs."""
    try:
        parts = urlsplit(dsn)
        netloc = parts.netloc.rpartition("@")[2]
        user = parts.username
        query = [(k, v) for k, v in parse_qsl(parts.query) if k not in _SECRET_PARAMETERS]
    except ValueError:
        return "(a DSN that does not parse)"
    if user:
        netloc = f"{user}@{netloc}"
    return parts._replace(netloc=netloc, query=urlencode(query, safe="/"), fragment="").geturl()


def unavailable(dsn: str, exc: BaseException) -> StoreUnavailable:
    """The error to raise when the server behind ``dsn`` cannot be used."""
    reason = str(exc) or type(exc).__name__
    return StoreUnavailable(f"the PostgreSQL store {describe_dsn(dsn)} is unavailable: {reason}")


# What says "this server cannot be used now" rather than "this query is wrong": the relay
# reports these as an unavailable store, not as a bug.
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,  # includes a connection lost mid-query
    # A query made in the instant between the server's "terminating connection" and
    # the socket closing: asyncpg's protocol is still consuming the error.
    asyncpg.exceptions.InternalClientError,
    asyncpg.exceptions.OperatorInterventionError,  # shutting down, starting up
    asyncpg.exceptions.InsufficientResourcesError,  # too many connections, disk full
    asyncpg.exceptions.InvalidAuthorizationSpecificationError,  # unknown role, password
    asyncpg.exceptions.InvalidCatalogNameError,  # no such database
    asyncpg.exceptions.ClientConfigurationError,  # a DSN asyncpg cannot use
)


async def read_version(conn: Connection) -> int:
    """The schema version of the database ``conn`` is connected to (0: none)."""
    if await conn.fetchval("SELECT to_regclass('schema_version') IS NULL"):
        return 0
    version = await conn.fetchval("SELECT max(version) FROM schema_version")
    return 0 if version is None else int(version)


def check_version(found: int, dsn: str) -> None:
    """Raise :class:`~parley.errors.SchemaMismatch` unless ``found`` is the version this
    relay runs, saying what the operator should do."""
    if found == SCHEMA_VERSION:
        return
    where = describe_dsn(dsn)
    if found == 0:
        message = (
            f"the PostgreSQL database {where} has no Parley schema (version 0);"
            f" create it with `parley relay migrate --store {where}`"
        )
    elif found < SCHEMA_VERSION:
        message = (
            f"the PostgreSQL schema of {where} is at version {found}, older than this"
            f" relay's ({SCHEMA_VERSION}); upgrade it with"
            f" `parley relay migrate --store {where}`"
        )
    else:
        message = (
            f"the PostgreSQL schema of {where} is at version {found}, newer than this"
            f" relay knows ({SCHEMA_VERSION}): upgrade Parley on this node"
        )
    raise SchemaMismatch(message, found=found, expected=SCHEMA_VERSION)


async def migrate(dsn: str) -> tuple[int, int]:
    """Create or upgrade the schema of the database at ``dsn`` to :data:`SCHEMA_VERSION`;
    returns (version before, version after).

    Idempotent (at the current version it changes nothing) and safe to run from several
    processes at once: the whole upgrade is one transaction holding an advisory lock, so
    a second run waits, then finds the work done. A database newer than this Parley is
    left alone (:class:`~parley.errors.SchemaMismatch`): downgrading is not supported.
    """
    try:
        conn = await asyncpg.connect(dsn)
    except CONNECTION_ERRORS as exc:
        raise unavailable(dsn, exc) from exc
    try:
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
            before = await read_version(conn)
            if before > SCHEMA_VERSION:
                check_version(before, dsn)
            if before == 0:
                await conn.execute(_CREATE_VERSION_TABLE)
            for version in range(before + 1, SCHEMA_VERSION + 1):
                await conn.execute(MIGRATIONS[version - 1])
                await conn.execute("INSERT INTO schema_version (version) VALUES ($1)", version)
            return before, SCHEMA_VERSION
    except CONNECTION_ERRORS as exc:
        raise unavailable(dsn, exc) from exc
    finally:
        await conn.close()

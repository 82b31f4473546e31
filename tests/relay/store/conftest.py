"""Store fixtures: ``backend`` runs a test once on SQLite and once on PostgreSQL (a
database of its own on the server that ``pg`` finds or starts), ``store`` is a store
opened on it, ``people`` two identities with two devices each."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from tests.relay.helpers import Identity
from tests.relay.store.helpers import add_device, add_identity
from tests.relay.store.pg import (
    PostgresServer,
    empty_postgres_dsn,
    postgres_dsn,
    postgres_server,
)

from parley.relay import SqliteStore
from parley.relay.store import RelayStore
from parley.relay.store.postgres import PostgresStore

__all__ = ["empty_postgres_dsn", "postgres_dsn", "postgres_server"]  # fixtures, for pytest


class Backend:
    """One backend's data: stores opened on it, and a look below the protocol."""

    name: str

    def new_store(self) -> RelayStore:
        """A store on this data: the same node reopened, or another node."""
        raise NotImplementedError

    async def bodies(self) -> dict[str, bool]:
        """Whether each stored envelope, by id, still holds its body."""
        raise NotImplementedError


class SqliteBackend(Backend):
    name = "sqlite"

    def __init__(self, path: Path) -> None:
        self.path = path

    def new_store(self) -> RelayStore:
        return SqliteStore(self.path)

    async def bodies(self) -> dict[str, bool]:
        with sqlite3.connect(self.path) as db:
            return {i: bool(b) for i, b in db.execute("SELECT id, body IS NOT NULL FROM messages")}


class PostgresBackend(Backend):
    name = "postgres"

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn

    def new_store(self) -> RelayStore:
        return PostgresStore(self.dsn, max_size=4)

    async def bodies(self) -> dict[str, bool]:
        conn = await asyncpg.connect(self.dsn)
        try:
            rows = await conn.fetch("SELECT id, body IS NOT NULL FROM messages")
        finally:
            await conn.close()
        return {bytes(i).decode(): bool(b) for i, b in rows}


@pytest.fixture(params=["sqlite", "postgres"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    if request.param == "sqlite":
        yield SqliteBackend(tmp_path / "relay.db")
        return
    server: PostgresServer = request.getfixturevalue("postgres_server")
    dsn = await server.create_database()
    try:
        yield PostgresBackend(dsn)
    finally:
        await server.drop_database(dsn)


@pytest.fixture
async def store(backend: Backend) -> AsyncIterator[RelayStore]:
    store = backend.new_store()
    await store.open()
    yield store
    await store.close()


@pytest.fixture
async def people(store: RelayStore) -> tuple[Identity, Identity]:
    alice, bob = Identity.create("alice"), Identity.create("bob")
    await add_identity(store, alice)
    await add_identity(store, bob)
    await add_device(store, alice, "d2")
    await add_device(store, bob, "d2")
    return alice, bob

"""PostgreSQL for the proxy's tests, on the shared test server (``tests.relay.store.pg``:
the loopback server if one answers, else a private instance, else a skip saying why).

``postgres_database`` is an empty database of the test's own, dropped afterwards;
``store_location`` runs a test once on a SQLite file and once on such a database. Import
the fixtures (and ``postgres_server``, which they need) where they are used.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from tests.relay.store.pg import PostgresServer, postgres_server

__all__ = ["postgres_database", "postgres_server", "store_location"]


@pytest.fixture
async def postgres_database(postgres_server: PostgresServer) -> AsyncIterator[str]:
    """The DSN of a database of this test's own, with no tables: the proxy's store
    creates its own."""
    dsn = await postgres_server.create_database(migrated=False)
    try:
        yield dsn
    finally:
        await postgres_server.drop_database(dsn)


@pytest.fixture(params=["sqlite", "postgresql"])
async def store_location(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """Where a proxy store is, as ``--store`` takes it: a file, or a ``postgresql://``."""
    if request.param == "sqlite":
        yield str(tmp_path / "proxy.db")
        return
    # Asked for only here, so that the SQLite half runs (and a missing server skips
    # only the PostgreSQL half).
    server: PostgresServer = request.getfixturevalue("postgres_server")
    dsn = await server.create_database(migrated=False)
    try:
        yield dsn
    finally:
        await server.drop_database(dsn)

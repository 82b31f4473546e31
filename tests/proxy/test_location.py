"""``--store`` / ``PARLEY_PROXY_STORE``: which backend a location names, and the errors
for one that names none (or needs an extra that is missing)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from parley.errors import InvalidProxyStoreLocation, StoreUnavailable
from parley.proxy import SqliteProxyStore, open_proxy_store
from parley.proxy.location import backend, describe, sqlite_path
from parley.proxy.postgres import PostgresProxyStore


def test_a_path_is_a_sqlite_file_and_a_postgresql_url_a_server(tmp_path: Path) -> None:
    assert backend(tmp_path / "app.proxy.db") == "sqlite"
    assert backend("app.proxy.db") == "sqlite"
    assert sqlite_path("sqlite:/srv/app.proxy.db") == Path("/srv/app.proxy.db")
    assert sqlite_path("rel/app.proxy.db") == Path("rel/app.proxy.db")
    for url in ("postgresql://parley@db:5432/parley", "postgres://db/parley"):
        assert backend(url) == "postgresql"
        assert sqlite_path(url) is None


def test_another_url_is_refused_rather_than_taken_for_a_file_name() -> None:
    with pytest.raises(InvalidProxyStoreLocation, match="expected a file path or postgresql"):
        backend("redis://127.0.0.1:6379/0")
    with pytest.raises(InvalidProxyStoreLocation):
        open_proxy_store("mysql://root:hunter2@db/parley")


def test_messages_name_a_url_without_its_password() -> None:
    assert describe("postgresql://parley:s3cret@db:5432/x") == "postgresql://parley:***@db:5432/x"
    assert describe("postgresql://parley@db/x") == "postgresql://parley@db/x"
    with pytest.raises(InvalidProxyStoreLocation) as refused:
        backend("mysql://root:hunter2@db/parley")
    assert "hunter2" not in str(refused.value)


async def test_open_proxy_store_picks_the_backend(tmp_path: Path) -> None:
    sqlite = open_proxy_store(tmp_path / "a.db", poll_interval=0.1)
    assert isinstance(sqlite, SqliteProxyStore) and sqlite.poll_interval == 0.1
    await sqlite.close()
    postgres = open_proxy_store("postgresql://postgres@127.0.0.1:1/nothing")
    assert isinstance(postgres, PostgresProxyStore)  # it connects on first use
    await postgres.close()


async def test_an_unreachable_server_is_one_store_error() -> None:
    store = open_proxy_store("postgresql://postgres:pw@127.0.0.1:1/nothing")
    with pytest.raises(StoreUnavailable, match=r"cannot open the proxy store .*:\*\*\*@") as e:
        await store.routes()
    assert "pw@" not in str(e.value)
    await store.close()


def test_without_the_postgres_extra_the_error_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "asyncpg", None)  # import asyncpg raises ImportError
    monkeypatch.delitem(sys.modules, "parley.proxy.postgres")
    with pytest.raises(InvalidProxyStoreLocation, match=r"pip install 'parley\[postgres\]'"):
        open_proxy_store("postgresql://postgres@127.0.0.1/parley")

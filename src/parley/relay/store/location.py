"""Which store a relay node uses, from one setting: ``--store`` / ``PARLEY_STORE``.

- none: the embedded default, SQLite in the node's data directory;
- ``sqlite:PATH``: SQLite in that file;
- ``postgresql://USER@HOST:PORT/DB`` (or ``postgres://``): PostgreSQL, the one store of
  record that several nodes share (needs the ``parley[postgres]`` extra).

This is the only place outside the backends that knows their names.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType
from typing import Final
from urllib.parse import urlsplit, urlunsplit

from parley.errors import InvalidStoreLocation
from parley.relay.store.base import RelayStore

STORE_VARIABLE: Final = "PARLEY_STORE"
DB_NAME: Final = "relay.db"
_POSTGRES_SCHEMES: Final = ("postgresql", "postgres")


def backend(location: str | None) -> str:
    """``sqlite`` or ``postgresql``."""
    if not location or location.startswith("sqlite:"):
        return "sqlite"
    scheme = urlsplit(location).scheme
    if scheme in _POSTGRES_SCHEMES:
        return "postgresql"
    raise InvalidStoreLocation(
        f"--store {redacted(location)!r}: expected postgresql://USER@HOST:PORT/DB or "
        "sqlite:PATH (or nothing, for SQLite in --data-dir)"
    )


def redacted(location: str) -> str:
    """The location without its password, for logs and ``/health``."""
    parts = urlsplit(location)
    if parts.password is None:
        return location
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit(parts._replace(netloc=netloc))


def open_store(location: str | None, data_dir: Path) -> RelayStore:
    """The store ``location`` names (not opened yet: the relay opens it)."""
    kind = backend(location)
    if kind == "sqlite":
        from parley.relay.store.sqlite import SqliteStore

        if location:
            return SqliteStore(Path(location.removeprefix("sqlite:")))
        return SqliteStore(data_dir / DB_NAME)
    assert location is not None
    return _postgres(location)


async def migrate(location: str | None, data_dir: Path) -> tuple[int, int]:
    """Create or upgrade the schema of the store ``location`` names; (before, after)
    versions. SQLite migrates itself when a node opens it."""
    if backend(location) == "sqlite":
        store = open_store(location, data_dir)
        await store.open()
        await store.close()
        return (0, 0)
    assert location is not None
    versions: tuple[int, int] = await _postgres_module().migrate(location)
    return versions


def _postgres(location: str) -> RelayStore:
    store: RelayStore = _postgres_module().PostgresStore(location)
    return store


def _postgres_module() -> ModuleType:
    # Imported on use: asyncpg is an optional extra, and SQLite nodes never need it.
    try:
        return importlib.import_module("parley.relay.store.postgres")
    except ImportError as exc:
        raise _missing_extra(exc) from exc


def _missing_extra(exc: ImportError) -> InvalidStoreLocation:
    return InvalidStoreLocation(
        f"a PostgreSQL store needs the postgres extra ({exc.name} is missing): "
        "pip install 'parley[postgres]'"
    )

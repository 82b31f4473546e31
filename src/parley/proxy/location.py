"""Which store the calling proxy uses, from one setting: ``--store`` / ``PARLEY_PROXY_STORE``.

- a file path (or ``sqlite:PATH``, as the relay's ``--store`` spells it): SQLite in that
  file, created if missing; the commands default to ``<credentials stem>.proxy.db``;
- ``postgresql://USER@HOST:PORT/DB`` (or ``postgres://``): tables in that PostgreSQL
  database, which the proxy may share with a relay's store (needs the
  ``parley[postgres]`` extra).

This is the only place outside the backends that knows their names.
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path
from typing import Final, Literal
from urllib.parse import urlsplit, urlunsplit

from parley.errors import InvalidProxyStoreLocation
from parley.proxy.store import ProxyStore, SqliteProxyStore

STORE_VARIABLE: Final = "PARLEY_PROXY_STORE"
_POSTGRES_SCHEMES: Final = ("postgresql", "postgres")
_URL: Final = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")


def backend(location: str | Path) -> Literal["sqlite", "postgresql"]:
    """``sqlite`` (a file) or ``postgresql``."""
    if isinstance(location, Path) or not _URL.match(location):
        return "sqlite"
    if urlsplit(location).scheme in _POSTGRES_SCHEMES:
        return "postgresql"
    # Some other URL: taking it for a file name would create a strange file.
    raise InvalidProxyStoreLocation(
        f"--store {describe(location)!r}: expected a file path or postgresql://USER@HOST:PORT/DB"
    )


def sqlite_path(location: str | Path) -> Path | None:
    """The SQLite file ``location`` names; ``None`` for a database server."""
    if backend(location) != "sqlite":
        return None
    return Path(location.removeprefix("sqlite:") if isinstance(location, str) else location)


def describe(location: str | Path) -> str:
    """``location`` for messages and logs: a URL without its password."""
    if isinstance(location, Path):
        return str(location)
    parts = urlsplit(location)
    if parts.password is None:
        return location
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit(parts._replace(netloc=netloc))


def open_proxy_store(location: str | Path, *, poll_interval: float = 0.5) -> ProxyStore:
    """The store ``location`` names. SQLite opens the file now; PostgreSQL connects on
    first use. ``poll_interval``: how often SQLite looks for other processes' writes
    (PostgreSQL is told)."""
    path = sqlite_path(location)
    if path is not None:
        return SqliteProxyStore(path, poll_interval=poll_interval)
    assert isinstance(location, str)
    # Imported on use: asyncpg is an optional extra, and SQLite never needs it.
    try:
        module = importlib.import_module("parley.proxy.postgres")
    except ImportError as exc:
        raise InvalidProxyStoreLocation(
            f"a PostgreSQL proxy store needs the postgres extra ({exc.name} is missing): "
            "pip install 'parley[postgres]'"
        ) from exc
    store: ProxyStore = module.PostgresProxyStore(location)
    return store

"""A PostgreSQL server for the tests, and a fresh database for each test.

:func:`find_server` uses the server at ``PARLEY_TEST_POSTGRES`` (default
``postgresql://postgres@127.0.0.1:5432/postgres``, a maintenance database of a server
with trust auth) if one answers there; else it starts a private instance from the
installed binaries (``/usr/lib/postgresql/*/bin``) in a temporary directory, on a free
port and a unix socket, for the test session; else it says why not, for a skip.

The fixtures ``postgres_server`` (session) and ``postgres_dsn`` / ``empty_postgres_dsn``
(per test: a database of its own, migrated or not, dropped afterwards) are meant to be
imported by any ``conftest.py`` that needs them.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import pytest

from parley.relay.store.postgres import migrate

DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
NOT_INSTALLED = "PostgreSQL is not installed: apt-get install postgresql"
DATABASE_PREFIX = "parley_test_"


def dsn_with_database(dsn: str, database: str) -> str:
    return urlsplit(dsn)._replace(path="/" + database).geturl()


@dataclass
class PrivateInstance:
    """A PostgreSQL server of our own: started by :func:`start_private`, gone on stop()."""

    root: Path
    bindir: Path
    user: pwd.struct_passwd | None

    @property
    def data(self) -> Path:
        return self.root / "data"

    def stop(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError, OSError):
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.root, ignore_errors=True)

    def _run(self, tool: str, *args: str) -> None:
        subprocess.run(
            [str(self.bindir / tool), *args],
            check=True,
            capture_output=True,
            timeout=60,
            user=None if self.user is None else self.user.pw_uid,
            group=None if self.user is None else self.user.pw_gid,
        )


@dataclass
class PostgresServer:
    """Where the tests' databases are created: ``admin_dsn`` names its maintenance
    database."""

    admin_dsn: str
    private: PrivateInstance | None = None
    # A database at the current schema that the migrated ones are copied from: copying
    # skips running the migrations for every test.
    template: str | None = None

    async def create_database(self, *, migrated: bool = True) -> str:
        """A new empty database (at the current schema if ``migrated``); its DSN."""
        source = "template1"
        if migrated:
            if self.template is None:
                self.template = await self._create("parley_template_", "template1")
                await migrate(dsn_with_database(self.admin_dsn, self.template))
            source = self.template
        return dsn_with_database(self.admin_dsn, await self._create(DATABASE_PREFIX, source))

    async def drop_database(self, dsn: str) -> None:
        name = urlsplit(dsn).path.lstrip("/")
        assert name.startswith(DATABASE_PREFIX), name
        await self._drop(name)

    def stop(self) -> None:
        if self.private is not None:
            self.private.stop()
        elif self.template is not None:
            # Outside any test's event loop: the session is over.
            with concurrent.futures.ThreadPoolExecutor(1) as pool:
                pool.submit(asyncio.run, self._drop(self.template)).result()
        self.template = None

    async def _create(self, prefix: str, source: str) -> str:
        name = prefix + secrets.token_hex(6)
        admin = await asyncpg.connect(self.admin_dsn)
        try:
            await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{source}"')
        finally:
            await admin.close()
        return name

    async def _drop(self, name: str) -> None:
        admin = await asyncpg.connect(self.admin_dsn)
        try:
            # FORCE: a store a failing test left open must not keep its database alive.
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


class Unavailable(Exception):
    """No server answers and none can be started; the message says why."""


def find_server() -> PostgresServer:
    """The configured server if it answers, else a private instance; Unavailable if
    neither."""
    dsn = os.environ.get("PARLEY_TEST_POSTGRES", DEFAULT_DSN)
    if _answers(dsn):
        return PostgresServer(dsn)
    private = start_private()
    return PostgresServer(private_dsn(private), private)


def _answers(dsn: str) -> bool:
    parts = urlsplit(dsn)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 5432), 2):
            return True
    except OSError:
        return False


def _bindir() -> Path | None:
    candidates = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
        reverse=True,
    )
    on_path = shutil.which("pg_ctl")
    if on_path is not None:
        candidates.append(Path(on_path).parent)
    for bindir in candidates:
        if (bindir / "initdb").exists() and (bindir / "pg_ctl").exists():
            return bindir
    return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


_PORT_FILE = "port"


def start_private() -> PrivateInstance:
    """Start a throwaway server: trust auth, no fsync (its data dies with it)."""
    bindir = _bindir()
    if bindir is None:
        raise Unavailable(NOT_INSTALLED)
    user = None
    if os.geteuid() == 0:
        # initdb and postgres refuse to run as root.
        try:
            user = pwd.getpwnam("postgres")
        except KeyError:
            raise Unavailable("running as root, and there is no postgres user to run it") from None
    # Not under pytest's tmp dirs: those are private to this user, and the server may
    # run as another.
    root = Path(tempfile.mkdtemp(prefix="parley-pg-"))
    (root / "sock").mkdir()
    if user is not None:
        for path in (root, root / "sock"):
            os.chown(path, user.pw_uid, user.pw_gid)
    instance = PrivateInstance(root, bindir, user)
    port = free_port()
    (root / _PORT_FILE).write_text(str(port))
    options = (
        f"-p {port} -k {root / 'sock'} -c listen_addresses=127.0.0.1"
        " -c fsync=off -c full_page_writes=off"
    )
    try:
        instance._run(
            "initdb", "-D", str(instance.data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "-N"
        )
        instance._run(
            "pg_ctl", "-D", str(instance.data), "-l", str(root / "log"), "-o", options,
            "-w", "-t", "60", "start",
        )  # fmt: skip
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as exc:
        instance.stop()
        detail = getattr(exc, "stderr", b"") or b""
        raise Unavailable(f"could not start PostgreSQL from {bindir}: {exc} {detail!r}") from exc
    return instance


def private_dsn(instance: PrivateInstance) -> str:
    port = (instance.root / _PORT_FILE).read_text()
    return f"postgresql://postgres@127.0.0.1:{port}/postgres"


# -- fixtures ---------------------------------------------------------------------------


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    try:
        server = find_server()
    except Unavailable as exc:
        pytest.skip(str(exc))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def postgres_dsn(postgres_server: PostgresServer) -> AsyncIterator[str]:
    """A database of this test's own, at the current schema."""
    dsn = await postgres_server.create_database()
    yield dsn
    await postgres_server.drop_database(dsn)


@pytest.fixture
async def empty_postgres_dsn(postgres_server: PostgresServer) -> AsyncIterator[str]:
    """A database of this test's own, with no schema at all."""
    dsn = await postgres_server.create_database(migrated=False)
    yield dsn
    await postgres_server.drop_database(dsn)

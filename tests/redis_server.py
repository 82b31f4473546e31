"""Redis for tests: the shared server on 127.0.0.1:6379 (``PARLEY_TEST_REDIS`` names
another), each test under a key prefix of its own, or a private ``redis-server`` on a
free port, without persistence, for a test that stops and restarts it (or when no
shared server answers). A test is skipped, saying what to install, only when neither
is there.

    with redis_for_test(tmp_path, "my-test") as target:   # target.url, target.prefix
        ...
    with RedisServer(tmp_path / "redis") as server:       # server.url; stop(), start()
        ...
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import pytest
import redis

SHARED_URL = os.environ.get("PARLEY_TEST_REDIS", "redis://127.0.0.1:6379/0")
START_TIMEOUT = 10.0


def answers(url: str, timeout: float = 0.5) -> bool:
    """Whether a Redis server answers PING at ``url``."""
    client = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()


def redis_server_binary() -> str:
    """The path of ``redis-server``, or skip the test saying how to get it."""
    path = shutil.which("redis-server")
    if path is None:
        pytest.skip("redis-server is not installed: apt-get install redis-server")
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """A ``redis-server`` of the test's own on 127.0.0.1, with no persistence (so a
    restart starts empty, as a real one without persistence does). ``stop()`` and
    ``start()`` again keep the port, so clients reconnect to the same URL."""

    def __init__(self, directory: Path, port: int | None = None) -> None:
        self.directory = directory
        self.port = port or free_port()
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        """Start it and wait until it answers (at most 10 s)."""
        if self.running:
            return
        binary = redis_server_binary()
        self.directory.mkdir(parents=True, exist_ok=True)
        log = self.directory / "redis.log"
        with log.open("ab") as out:
            self._process = subprocess.Popen(
                [
                    binary,
                    "--port", str(self.port),
                    "--bind", "127.0.0.1",
                    "--save", "",
                    "--appendonly", "no",
                    "--dir", str(self.directory),
                    "--daemonize", "no",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
            )  # fmt: skip
        deadline = time.monotonic() + START_TIMEOUT
        while not answers(self.url, timeout=0.2):
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"redis-server did not start on {self.port}:\n{log.read_text()}")
            time.sleep(0.02)

    def stop(self, *, kill: bool = False) -> None:
        """Stop it (``kill``: SIGKILL, as a crash) and wait until it is gone."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        if kill:
            process.kill()
        else:
            process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


@dataclass(frozen=True)
class RedisTarget:
    """Where a test keeps its keys: a server, and a prefix nobody else uses."""

    url: str
    prefix: str

    def existing_keys(self) -> list[str]:
        """The test's keys that exist now."""
        client = redis.Redis.from_url(self.url, decode_responses=True)
        try:
            return sorted(client.scan_iter(match=f"{self.prefix}:*"))
        finally:
            client.close()


def unique_prefix(name: str) -> str:
    """A key prefix for one test: readable, unique, and free of glob characters."""
    return f"test:{re.sub(r'[^A-Za-z0-9_-]', '-', name)[:40]}:{secrets.token_hex(4)}"


def delete_prefix(url: str, prefix: str) -> None:
    client = redis.Redis.from_url(url)
    try:
        with contextlib.suppress(redis.RedisError, OSError):
            keys = list(client.scan_iter(match=f"{prefix}:*"))
            if keys:
                client.delete(*keys)
    finally:
        client.close()


@contextlib.contextmanager
def redis_for_test(directory: Path, name: str) -> Iterator[RedisTarget]:
    """The shared server if it answers, else a private one in ``directory``; a fresh
    prefix either way, whose keys are deleted afterwards."""
    server: RedisServer | None = None
    url = SHARED_URL
    if not answers(url):
        server = RedisServer(directory)
        server.start()
        url = server.url
    target = RedisTarget(url, unique_prefix(name))
    try:
        yield target
    finally:
        delete_prefix(url, target.prefix)
        if server is not None:
            server.stop()

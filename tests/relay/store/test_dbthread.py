"""The SQLite thread: group commit, per-job rollback, lifecycle."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from tests.relay.helpers import WAIT

from parley.relay.store.dbthread import SqliteThread


async def _run_as_one_group(
    db: SqliteThread, jobs: list[Callable[[sqlite3.Connection], object]]
) -> list[object]:
    """Results (or exceptions) of ``jobs``, queued while the thread is busy: one group."""
    started, release = threading.Event(), threading.Event()

    def blocker(conn: sqlite3.Connection) -> None:
        started.set()
        release.wait(WAIT)

    first = asyncio.create_task(db.run(blocker))
    await asyncio.to_thread(started.wait, WAIT)
    tasks = [asyncio.create_task(db.run(job)) for job in jobs]
    await asyncio.sleep(0)
    release.set()
    await first
    return await asyncio.gather(*tasks, return_exceptions=True)


async def test_jobs_queued_together_share_one_commit_without_savepoints(tmp_path: Path) -> None:
    statements: list[str] = []

    def setup(conn: sqlite3.Connection) -> None:
        conn.execute("CREATE TABLE t (v INTEGER)")
        conn.set_trace_callback(statements.append)

    db = SqliteThread(tmp_path / "db", setup)
    await db.start()

    def insert(value: int) -> Callable[[sqlite3.Connection], object]:
        def job(conn: sqlite3.Connection) -> int:
            conn.execute("INSERT INTO t VALUES (?)", (value,))
            return value

        return job

    assert await _run_as_one_group(db, [insert(i) for i in range(10)]) == list(range(10))
    await db.stop()
    assert statements.count("COMMIT") == 2  # the blocker's group, then the ten
    # Nothing failed, so no job needed a savepoint of its own.
    assert not [s for s in statements if "SAVEPOINT" in s or "ROLLBACK" in s]


async def test_a_failing_job_is_rolled_back_alone(tmp_path: Path) -> None:
    def setup(conn: sqlite3.Connection) -> None:
        conn.execute("CREATE TABLE t (v INTEGER)")

    db = SqliteThread(tmp_path / "db", setup)
    await db.start()

    def bad(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO t VALUES (1)")
        raise ValueError("job failed")

    def good(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO t VALUES (2)")

    def read(conn: sqlite3.Connection) -> list[int]:
        return [v for (v,) in conn.execute("SELECT v FROM t ORDER BY v")]

    failed, passed = await _run_as_one_group(db, [bad, good])
    assert isinstance(failed, ValueError) and str(failed) == "job failed"
    assert passed is None
    assert await db.run(read) == [2]
    await db.stop()


async def test_lifecycle(tmp_path: Path) -> None:
    def setup(conn: sqlite3.Connection) -> None:
        pass

    missing = SqliteThread(tmp_path / "no-such-dir" / "db", setup)
    with pytest.raises(sqlite3.OperationalError):
        await missing.start()

    db = SqliteThread(tmp_path / "db", setup)
    with pytest.raises(RuntimeError, match="not open"):
        await db.run(lambda conn: None)
    await db.start()
    assert await db.run(lambda conn: conn.execute("SELECT 41 + 1").fetchone()[0]) == 42
    await db.stop()
    with pytest.raises(RuntimeError, match="not open"):
        await db.run(lambda conn: None)
    await db.stop()  # idempotent


async def test_jobs_before_a_failing_one_are_run_again_and_happen_once(tmp_path: Path) -> None:
    def setup(conn: sqlite3.Connection) -> None:
        conn.execute("CREATE TABLE t (v INTEGER PRIMARY KEY AUTOINCREMENT, w TEXT)")

    db = SqliteThread(tmp_path / "db", setup)
    await db.start()

    def insert(label: str) -> Callable[[sqlite3.Connection], object]:
        def job(conn: sqlite3.Connection) -> object:
            return conn.execute("INSERT INTO t (w) VALUES (?) RETURNING v", (label,)).fetchone()[0]

        return job

    def bad(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO t (w) VALUES ('bad')")
        raise ValueError("job failed")

    def read(conn: sqlite3.Connection) -> list[tuple[int, str]]:
        return list(conn.execute("SELECT v, w FROM t ORDER BY v"))

    results = await _run_as_one_group(db, [insert("a"), insert("b"), bad, insert("c")])
    assert results[:2] == [1, 2] and results[3] == 3
    assert isinstance(results[2], ValueError)
    # The first run's rows (and its AUTOINCREMENT steps) were rolled back with it.
    assert await db.run(read) == [(1, "a"), (2, "b"), (3, "c")]
    await db.stop()

"""The SQLite thread: group commit, per-job rollback, lifecycle."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from tests.relay.helpers import WAIT

from parley.relay.store.dbthread import Batch, SqliteThread

Job = Callable[[sqlite3.Connection], object]


async def _run_as_one_group(
    db: SqliteThread, jobs: Sequence[Job | tuple[Batch[Any, Any], object]]
) -> list[object]:
    """Results (or exceptions) of ``jobs`` (a job, or a batch function and its argument),
    queued while the thread is busy: one group."""
    started, release = threading.Event(), threading.Event()

    def blocker(conn: sqlite3.Connection) -> None:
        started.set()
        release.wait(WAIT)

    first = asyncio.create_task(db.run(blocker))
    await asyncio.to_thread(started.wait, WAIT)

    async def submit(job: Job | tuple[Batch[Any, Any], object]) -> object:
        return await (db.submit_batched(*job) if isinstance(job, tuple) else db.run(job))

    tasks = [asyncio.create_task(submit(job)) for job in jobs]  # queued in this order
    await asyncio.sleep(0)
    release.set()
    await first
    results: list[object] = await asyncio.gather(*tasks, return_exceptions=True)
    return results


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


async def test_batched_jobs_between_two_ordinary_ones_take_one_call(tmp_path: Path) -> None:
    calls: list[tuple[str, list[int]]] = []

    def setup(conn: sqlite3.Connection) -> None:
        conn.execute("CREATE TABLE t (v INTEGER)")

    def double(conn: sqlite3.Connection, args: list[int]) -> list[int]:
        calls.append(("double", args))
        conn.executemany("INSERT INTO t VALUES (?)", [(a,) for a in args])
        return [a * 2 for a in args]

    def negate(conn: sqlite3.Connection, args: list[int]) -> list[int]:
        calls.append(("negate", args))
        return [-a for a in args]

    def ordinary(conn: sqlite3.Connection) -> int:
        calls.append(("ordinary", []))
        # It sees every batched job queued before it, and none queued after it.
        return int(conn.execute("SELECT COUNT(*) FROM t").fetchone()[0])

    db = SqliteThread(tmp_path / "db", setup)
    await db.start()
    jobs: list[Job | tuple[Batch[Any, Any], object]] = [
        (double, 1),
        (negate, 2),
        (double, 3),
        ordinary,
        (double, 4),
        (double, 5),
    ]
    assert await _run_as_one_group(db, jobs) == [2, -2, 6, 2, 8, 10]
    await db.stop()
    assert calls == [
        ("double", [1, 3]),
        ("negate", [2]),
        ("ordinary", []),
        ("double", [4, 5]),
    ]


async def test_a_failing_batch_is_run_again_one_job_at_a_time(tmp_path: Path) -> None:
    calls: list[list[int]] = []

    def setup(conn: sqlite3.Connection) -> None:
        conn.execute("CREATE TABLE t (v INTEGER)")

    def insert(conn: sqlite3.Connection, args: list[int]) -> list[int]:
        calls.append(args)
        conn.executemany("INSERT INTO t VALUES (?)", [(a,) for a in args])
        if 13 in args:
            raise ValueError("unlucky")
        return args

    def read(conn: sqlite3.Connection) -> list[int]:
        return [v for (v,) in conn.execute("SELECT v FROM t ORDER BY v")]

    db = SqliteThread(tmp_path / "db", setup)
    await db.start()
    results = await _run_as_one_group(db, [(insert, 1), (insert, 13), (insert, 2)])
    assert results[0] == 1 and results[2] == 2
    assert isinstance(results[1], ValueError)
    assert calls == [[1, 13, 2], [1], [13], [2]]
    # The batch's rows were rolled back; the reruns of the others were kept once each.
    assert await db.run(read) == [1, 2]
    await db.stop()

"""One thread owning one sqlite3 connection, committing queued work in groups.

sqlite3 calls block, so none of them run on the event loop: coroutines hand a job (a
function of the connection) to this thread and await its result. The thread takes
every job queued at that moment, runs them in a single transaction and commits once.
The commit, and with ``synchronous=FULL`` its fsync, is the expensive part of a durable
write, so a burst of concurrent Sends costs one fsync instead of one each; results are
handed back only after the commit, so nothing is reported stored before it is.

A job that many requests make (storing an envelope, a confirm) can also be queued as
an argument to a *batch* function, which does the work of all such jobs of a group with
a few statements, whatever their number. This is for the GIL, not for SQLite: each
statement hands the GIL to the event loop and waits to get it back, so statements per
job, not their SQL, set how long a group takes under load. The batched jobs queued
between two ordinary ones are done with one call per batch function, so they must
commute with each other (a store batches only such); an ordinary job keeps its place,
and no batched job moves across it.

One failing job must not undo the others. Wrapping every job in a savepoint would cost
two statements per job for a case that almost never happens, so a group runs without
them first; only when a job raises is the whole group rolled back and run again, each
job inside its own savepoint. A job therefore may run twice: it must act only through
the connection (a rolled-back run then leaves no trace).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import queue
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, cast

logger = logging.getLogger(__name__)

A = TypeVar("A")
T = TypeVar("T")
Outcome = tuple["asyncio.Future[Any]", Any, BaseException | None]
# Does the work of several jobs at once: one result per argument, in their order.
Batch = Callable[[sqlite3.Connection, list[A]], list[T]]


@dataclass(frozen=True, slots=True)
class _Job:
    future: asyncio.Future[Any]
    fn: Callable[[sqlite3.Connection], Any] | None = None  # an ordinary job
    batch: Batch[Any, Any] | None = None  # a batched one, for ``arg``
    arg: Any = None

    def run_alone(self, conn: sqlite3.Connection) -> Any:
        if self.batch is not None:
            return self.batch(conn, [self.arg])[0]
        assert self.fn is not None
        return self.fn(conn)


class SqliteThread:
    def __init__(
        self,
        path: Path,
        setup: Callable[[sqlite3.Connection], None],
        *,
        batch_limit: int = 1024,
    ) -> None:
        self._path = path
        self._setup = setup
        self._batch_limit = batch_limit
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stopped: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._accepting = False

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        ready: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._thread = threading.Thread(
            target=self._main, args=(ready,), name=f"sqlite:{self._path.name}"
        )
        self._thread.start()
        try:
            await asyncio.wrap_future(ready)
        except BaseException:
            await asyncio.wrap_future(self._stopped)
            raise
        self._accepting = True

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` on the database thread; returns once its group is committed."""
        future: asyncio.Future[T] = self._new_future()
        self._queue.put(_Job(future, fn=fn))
        return await future

    def submit_batched(self, batch: Batch[A, T], arg: A) -> asyncio.Future[T]:
        """The future of ``batch``'s result for ``arg``, computed together with the
        other calls of ``batch`` in the same group (see the module docstring). A future,
        not a coroutine: the relay waits on it with a callback, without a task."""
        future: asyncio.Future[T] = self._new_future()
        self._queue.put(_Job(future, batch=batch, arg=arg))
        return future

    def _new_future(self) -> asyncio.Future[Any]:
        if not self._accepting or self._loop is None:
            raise RuntimeError("the SQLite store is not open")
        return self._loop.create_future()

    async def stop(self) -> None:
        """Finish the jobs already queued, then close the connection and the thread."""
        if self._thread is None:
            return
        self._accepting = False
        self._queue.put(None)
        await asyncio.wrap_future(self._stopped)
        self._thread.join()
        self._thread = None

    # -- on the database thread -------------------------------------------------------

    def _main(self, ready: concurrent.futures.Future[None]) -> None:
        try:
            try:
                conn = sqlite3.connect(self._path, isolation_level=None)
                self._setup(conn)
            except BaseException as exc:
                ready.set_exception(exc)
                return
            ready.set_result(None)
            try:
                self._serve(conn)
            finally:
                conn.close()
        finally:
            self._stopped.set_result(None)

    def _serve(self, conn: sqlite3.Connection) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            stop = False
            while len(batch) < self._batch_limit:
                try:
                    job = self._queue.get_nowait()
                except queue.Empty:
                    break
                if job is None:
                    stop = True
                    break
                batch.append(job)
            self._hand_back(self._execute(conn, batch))
            if stop:
                return

    def _execute(self, conn: sqlite3.Connection, batch: list[_Job]) -> list[Outcome]:
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                outcomes = _run_together(conn, batch)
            except Exception:
                if conn.in_transaction:  # SQLite has rolled back already on some errors
                    conn.execute("ROLLBACK")
                conn.execute("BEGIN IMMEDIATE")
                outcomes = [_isolated(conn, job) for job in batch]
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            # The group did not commit, so no job in it happened.
            logger.exception("SQLite transaction failed; %d jobs fail with it", len(batch))
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            return [(job.future, None, exc) for job in batch]
        return outcomes

    def _hand_back(self, outcomes: list[Outcome]) -> None:
        loop = cast(asyncio.AbstractEventLoop, self._loop)
        try:
            loop.call_soon_threadsafe(_resolve, outcomes)
        except RuntimeError:
            # The loop closed under us: nobody is waiting for these results any more.
            logger.debug("event loop closed; dropping %d results", len(outcomes))


def _run_together(conn: sqlite3.Connection, jobs: list[_Job]) -> list[Outcome]:
    """Every job's outcome, in queue order: an ordinary job alone, in its place; each
    run of batched jobs between two ordinary ones with one call per batch function."""
    results: list[Any] = [None] * len(jobs)
    pending: dict[Batch[Any, Any], list[int]] = {}

    def flush() -> None:
        for batch, indexes in pending.items():
            values = batch(conn, [jobs[i].arg for i in indexes])
            for i, value in zip(indexes, values, strict=True):
                results[i] = value
        pending.clear()

    for index, job in enumerate(jobs):
        if job.batch is None:
            flush()
            results[index] = job.run_alone(conn)
        else:
            pending.setdefault(job.batch, []).append(index)
    flush()
    return [(job.future, value, None) for job, value in zip(jobs, results, strict=True)]


def _isolated(conn: sqlite3.Connection, job: _Job) -> Outcome:
    """Run ``job`` inside a savepoint of its own: if it fails, only its work is undone."""
    conn.execute("SAVEPOINT job")
    try:
        outcome: Outcome = (job.future, job.run_alone(conn), None)
    except Exception as exc:
        conn.execute("ROLLBACK TO job")
        outcome = (job.future, None, exc)
    conn.execute("RELEASE job")
    return outcome


def _resolve(outcomes: list[Outcome]) -> None:
    # In job order, which is commit order: waiters wake in the order their rows were
    # written, so deliveries are pushed in offset order.
    for future, value, exc in outcomes:
        if future.done():
            continue
        if exc is None:
            future.set_result(value)
        else:
            future.set_exception(exc)

"""The state's thread: every CHECKPOINT_EVERY + 1-th transaction checkpoints the WAL into
the database there, while the loop goes on; what is committed meanwhile waits for it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.waits import WAIT

from parley.client.state import CHECKPOINT_EVERY, OlmChanges, Seen, SessionRow, State
from parley.crypto.keys import SigningKey
from parley.errors import StateFileError
from parley.protocol.keychain import genesis_entry


def _open(path: Path) -> State:
    return State(path, identity="bob", device="d-1")


async def _on_the_loop(state: State, count: int) -> None:
    for _ in range(count):
        state.record(state.offset + 1)
        await state.commit()


async def _to_the_thread(state: State) -> asyncio.Task[None]:
    """After CHECKPOINT_EVERY transactions on the loop, commit the next, which goes to
    the thread; return once it is there. The thread reports back through the loop: what
    the caller does before it next awaits happens while that transaction is written."""
    state.record(state.offset + 1)
    commit = asyncio.create_task(state.commit())
    await asyncio.sleep(0)  # the commit asks for a transaction at the end of this turn
    await asyncio.sleep(0)  # formed and handed to the thread
    return commit


@contextlib.contextmanager
def _write_lock(path: Path) -> Iterator[None]:
    """Another connection holds the write lock: a transaction on the thread waits for it
    (SQLite's busy timeout), one on the loop would hold the loop up."""
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        yield
    finally:
        other.execute("ROLLBACK")
        other.close()


@pytest.mark.parametrize("name", ["absolute", "relative"])  # either side of ":memory:"
async def test_the_wal_is_checkpointed_after_64_transactions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "s.db" if name == "absolute" else Path("s.db")
    state = _open(path)
    opened = path.stat().st_size  # the header: the rest is in the WAL
    await _on_the_loop(state, 64)
    assert path.stat().st_size == opened
    await _on_the_loop(state, 1)
    assert path.stat().st_size > opened  # the WAL copied into the database
    state.close()


async def test_a_commit_while_the_thread_writes_is_written_after_it(tmp_path: Path) -> None:
    state = _open(tmp_path / "s.db")
    async with asyncio.timeout(WAIT):
        await _on_the_loop(state, CHECKPOINT_EVERY)
        with _write_lock(tmp_path / "s.db"):
            first = await _to_the_thread(state)
            state.record(1000)
            second = asyncio.create_task(state.commit())
            # Turns enough for a second transaction to start on the loop: it must not.
            await asyncio.sleep(0)
            await asyncio.sleep(0)
        await first
        await second
    state.close()
    state = _open(tmp_path / "s.db")
    assert state.offset == 1000
    state.close()


async def test_a_chain_saved_while_one_is_written_is_the_answer(tmp_path: Path) -> None:
    old = [genesis_entry("alice", "d-a", SigningKey.generate())]
    new = [genesis_entry("alice", "d-b", SigningKey.generate())]
    state = _open(tmp_path / "s.db")
    async with asyncio.timeout(WAIT):
        await _on_the_loop(state, CHECKPOINT_EVERY)
        state.save_chain("alice", old)
        first = await _to_the_thread(state)  # with old
        state.save_chain("alice", new)
        await first  # old is written; new is not yet
        assert state.load_chain("alice") == new
        await state.commit()
    state.close()
    state = _open(tmp_path / "s.db")
    assert state.load_chain("alice") == new
    state.close()


async def test_a_failed_write_on_the_thread_fails_its_waiters_and_later_commits(
    tmp_path: Path,
) -> None:
    state = _open(tmp_path / "s.db")
    async with asyncio.timeout(WAIT):
        await _on_the_loop(state, CHECKPOINT_EVERY)
        (pages,) = state._writer.execute("PRAGMA page_count").fetchone()
        state._writer.execute(f"PRAGMA max_page_count = {pages}")  # a full disk
        state.record(1000, Seen("alice", "j" * 4000, 100))
        with pytest.raises(StateFileError, match="full"):
            await state.commit()
        state.record(1001)
        with pytest.raises(StateFileError, match="full"):
            await state.commit()
    state.close()
    state = _open(tmp_path / "s.db")
    assert (state.offset, state.is_seen("alice", "j" * 4000)) == (CHECKPOINT_EVERY, False)
    state.close()


async def test_any_error_of_a_write_on_the_thread_is_a_state_file_error(tmp_path: Path) -> None:
    state = _open(tmp_path / "s.db")
    async with asyncio.timeout(WAIT):
        await _on_the_loop(state, CHECKPOINT_EVERY)
        # Not an error of SQLite's: Python refuses to bind it.
        state.save_olm(OlmChanges(sessions=[SessionRow("a", "d", "s", b"k", 2**64, "p")]))
        with pytest.raises(StateFileError, match="too large"):
            await state.commit()
    state.close()


async def test_any_error_of_a_write_on_the_loop_is_a_state_file_error() -> None:
    state = State(":memory:", identity="alice", device="d-1")  # written on the loop
    state.save_olm(OlmChanges(sessions=[SessionRow("a", "d", "s", b"k", 2**64, "p")]))
    async with asyncio.timeout(WAIT):
        with pytest.raises(StateFileError, match="too large"):
            await state.commit()
        with pytest.raises(StateFileError):  # and it stays failed: nothing is lost quietly
            await state.commit()
    state.close()


def test_a_loop_closed_while_the_thread_writes_ends_it_quietly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    uncaught: list[threading.ExceptHookArgs] = []
    monkeypatch.setattr(threading, "excepthook", uncaught.append)
    state = _open(tmp_path / "s.db")

    locked = contextlib.ExitStack()

    async def main() -> None:
        await _on_the_loop(state, CHECKPOINT_EVERY)
        locked.enter_context(_write_lock(tmp_path / "s.db"))
        await _to_the_thread(state)  # left pending: asyncio.run cancels it

    with locked:
        asyncio.run(main())  # the loop is closed before the thread can report back
    state.close()  # waits for the thread
    assert uncaught == []
    state = _open(tmp_path / "s.db")
    assert state.offset == CHECKPOINT_EVERY + 1  # written all the same
    state.close()


def test_a_state_never_closed_lets_the_interpreter_exit(tmp_path: Path) -> None:
    script = f"""
import asyncio
from parley.client.state import CHECKPOINT_EVERY, State

async def main() -> None:
    state = State({str(tmp_path / "s.db")!r}, identity="bob", device="d-1")
    for offset in range(1, CHECKPOINT_EVERY + 2):  # the last on its thread
        state.record(offset)
        await state.commit()

asyncio.run(main())
"""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run([sys.executable, "-c", script], env=env, timeout=WAIT, check=False)
    assert done.returncode == 0

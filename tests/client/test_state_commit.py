"""The state file's group commit: queued writes, one transaction at a time on the
state's thread, answers from memory until written, failures for every waiter."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from parley.client.state import CHECKPOINT_EVERY, OlmChanges, Seen, SessionRow, State
from parley.crypto.keys import SigningKey
from parley.errors import StateFileError
from parley.protocol.keychain import genesis_entry


def _open(path: Path) -> State:
    return State(path, identity="bob", device="d-1")


def _session(pickle: str) -> OlmChanges:
    return OlmChanges(sessions=[SessionRow("alice", "d-a", "s1", b"k" * 32, 1, pickle)])


async def test_what_is_queued_is_answered_at_once_and_written_by_commit(tmp_path: Path) -> None:
    entry = genesis_entry("alice", "d-a", SigningKey.generate())
    state = _open(tmp_path / "s.db")
    state.record(5, Seen("alice", "j5", 100))
    state.save_chain("alice", [entry])
    # Not written yet, and already the state's answer.
    assert state.offset == 5
    assert state.is_seen("alice", "j5")
    assert state.load_chain("alice") == [entry]
    await state.commit()
    other = _open(tmp_path / "s.db")  # another reader sees it on disk
    assert (other.offset, other.is_seen("alice", "j5")) == (5, True)
    assert other.load_chain("alice") == [entry]
    other.close()
    state.close()


async def test_the_olm_state_is_taken_when_the_transaction_forms(tmp_path: Path) -> None:
    state = _open(tmp_path / "s.db")
    taken: list[str] = []
    current = {"pickle": "one"}

    def changes() -> OlmChanges:
        taken.append(current["pickle"])
        return _session(current["pickle"])

    state.track_olm(changes)
    committing = asyncio.gather(state.commit(), state.commit(), state.commit())
    current["pickle"] = "two"  # changed in the same turn, before the transaction forms
    await committing
    assert taken == ["two"]  # one transaction for the three commits, pickled once
    state.close()
    state = _open(tmp_path / "s.db")
    assert [row.pickle for row in state.load_olm_sessions()] == ["two"]
    state.close()


async def test_a_cancelled_commit_leaves_the_others_waiting_for_the_write(
    tmp_path: Path,
) -> None:
    state = _open(tmp_path / "s.db")
    state.record(1)
    cancelled = asyncio.create_task(state.commit())
    kept = asyncio.create_task(state.commit())
    await asyncio.sleep(0)
    cancelled.cancel()
    await kept
    assert cancelled.cancelled()
    reader = _open(tmp_path / "s.db")
    assert reader.offset == 1
    reader.close()
    state.close()


async def test_a_kept_payload_is_written_with_olm_state_until_its_record(tmp_path: Path) -> None:
    state = _open(tmp_path / "s.db")
    state.track_olm(lambda: _session("spent"))
    # Decrypted (its key spent), waiting for its record; a send commits Olm state.
    state.keep_opened(7, lambda: b"sealed at rest")
    await state.commit()
    state.close()

    # A crash now: the restart finds the payload beside the session that spent it.
    state = _open(tmp_path / "s.db")
    assert state.load_opened(7) == b"sealed at rest"
    state.record(7, Seen("alice", "j7", 100))
    assert state.load_opened(7) is None
    await state.commit()
    state.close()
    state = _open(tmp_path / "s.db")
    assert (state.offset, state.load_opened(7)) == (7, None)
    state.close()


async def test_recording_an_offset_keeps_the_payloads_of_later_ones(tmp_path: Path) -> None:
    # A batch decrypted 7 and 8; 7 is recorded before a crash, 8 is not yet: 8's
    # payload (its key spent) must still be written with the Olm state.
    state = _open(tmp_path / "s.db")
    state.track_olm(lambda: _session("spent"))
    state.keep_opened(7, lambda: b"seven")
    state.keep_opened(8, lambda: b"eight")
    state.record(7, Seen("alice", "j7", 100))
    await state.commit()
    state.close()
    state = _open(tmp_path / "s.db")
    assert (state.offset, state.load_opened(7), state.load_opened(8)) == (7, None, b"eight")
    state.close()


async def test_a_failed_write_fails_its_waiters_and_every_later_commit(tmp_path: Path) -> None:
    state = _open(tmp_path / "s.db")
    state.record(1)
    await state.commit()
    # A full disk, as SQLite sees it: no page can be added to the file.
    (pages,) = state._writer.execute("PRAGMA page_count").fetchone()
    state._writer.execute(f"PRAGMA max_page_count = {pages}")
    state.record(2, Seen("alice", "j" * 4000, 100))
    state.save_olm(_session("x" * 20000))
    waiters = [asyncio.create_task(state.commit()) for _ in range(2)]
    for waiter in waiters:
        with pytest.raises(StateFileError, match="full"):
            await waiter
    state.record(3)
    with pytest.raises(StateFileError, match="full"):
        await state.commit()
    state.close()
    # All or nothing: the file holds the transaction before the failed one.
    state = _open(tmp_path / "s.db")
    assert (state.offset, state.is_seen("alice", "j" * 4000)) == (1, False)
    assert state.load_olm_sessions() == []
    state.close()


async def test_transactions_stay_in_order_across_the_checkpoints(tmp_path: Path) -> None:
    state = _open(tmp_path / "s.db")
    state.track_olm(lambda: _session(f"after {state.offset}"))
    # Some written on the loop, every CHECKPOINT_EVERY-th on the thread, after a
    # checkpoint; commits made meanwhile wait for it and go into the next.
    for offset in range(1, 3 * CHECKPOINT_EVERY):
        state.record(offset, Seen("alice", f"j{offset}", 100))
        committing = asyncio.gather(state.commit(), state.commit())
        state.record(offset + 1000)  # queued behind the write in progress
        await committing
        await state.commit()
    state.close()
    state = _open(tmp_path / "s.db")
    last = 3 * CHECKPOINT_EVERY - 1
    assert state.offset == last + 1000
    assert all(state.is_seen("alice", f"j{offset}") for offset in range(1, last + 1))
    assert [row.pickle for row in state.load_olm_sessions()] == [f"after {last + 1000}"]
    state.close()


async def test_a_burst_of_ids_in_one_transaction_is_written_whole(tmp_path: Path) -> None:
    # More than one multi-row INSERT's worth, and not a multiple of one.
    state = _open(tmp_path / "s.db")
    for offset in range(1, 601):
        state.record(offset, Seen("alice", f"j{offset}", 100))
    await state.commit()
    state.close()
    state = _open(tmp_path / "s.db")
    assert [o for o in range(1, 601) if not state.is_seen("alice", f"j{o}")] == []
    state.close()


async def test_commits_after_close_return_and_write_nothing(tmp_path: Path) -> None:
    # Tasks still finishing as a client shuts down: no error, the file as close() left it.
    state = _open(tmp_path / "s.db")
    state.record(1)
    state.close()
    state.record(2)
    await state.commit()
    state.close()  # again: nothing more to do
    state = _open(tmp_path / "s.db")
    assert state.offset == 1
    state.close()


async def test_a_failed_write_at_close_is_logged_not_raised(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    state = _open(tmp_path / "s.db")
    state.record(1)
    await state.commit()
    (pages,) = state._writer.execute("PRAGMA page_count").fetchone()
    state._writer.execute(f"PRAGMA max_page_count = {pages}")  # a full disk
    state.record(2, Seen("alice", "j" * 4000, 100))
    state.close()  # does not raise: the caller is shutting down
    assert "s.db: not all was written" in caplog.text
    state = _open(tmp_path / "s.db")
    assert (state.offset, state.is_seen("alice", "j" * 4000)) == (1, False)
    state.close()

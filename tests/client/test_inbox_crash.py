"""Exactly-once across a crash of the receiving client, with its records group-committed.

A backlog of starts waits at a real relay; a real client process drains it and kills
itself (SIGKILL: no cleanup) at an exact point, then a new process resumes from the
same state file. Every start handled at most once, in order, and the only ones never
handled are those of the batch that was written and not yet handed on when the
process died: none when it died while writing.
"""

from __future__ import annotations

import asyncio
import re
import sys
from pathlib import Path

import pytest
from tests.conftest import Register

from parley.client import Client
from parley.client.inbox import BATCH
from parley.processes import ChildProcess

pytestmark = pytest.mark.e2e

CRASHING_CLIENT = Path(__file__).with_name("crashing_client.py")
BACKLOG = 150


async def _run(credentials: Path, handled: Path, sentinel: str, *kill: str) -> int | None:
    """Run the client until it exits or kills itself; its exit code."""
    child = ChildProcess(
        [sys.executable, str(CRASHING_CLIENT), str(credentials), str(handled), sentinel, *kill],
        re.compile("connected"),
        name="receiving client",
    )
    await child.start()
    async with asyncio.timeout(60):
        return await child.wait()


async def _crash_and_resume(register: Register, tmp_path: Path, *kill: str) -> list[str]:
    (alice, alice_path), (bob, bob_path) = await register("alice"), await register("bob")
    async with Client.from_credentials(bob_path) as setup:
        await setup.connections.permit(alice.identity)
    handled = tmp_path / "handled.txt"
    handled.touch()
    async with Client.from_credentials(alice_path) as sender:
        voice = sender.voice()
        for n in range(BACKLOG):
            await voice.start(bob.identity, "cid", f"call-{n:03}", "offer", {})
        # Killed: SIGKILL's exit code, the process never reached the sentinel.
        assert await _run(bob_path, handled, "sentinel", *kill) == -9
        await voice.start(bob.identity, "cid", "sentinel", "offer", {})
        assert await _run(bob_path, handled, "sentinel") == 0
    return handled.read_text().splitlines()


def _split(lines: list[str]) -> tuple[list[int], list[int]]:
    """The starts handled (as numbers, in order), and those never handled."""
    assert lines[-1] == "sentinel"
    numbers = [int(line.removeprefix("call-")) for line in lines[:-1]]
    assert len(numbers) == len(set(numbers)), "a start was handled twice"
    assert numbers == sorted(numbers), "starts were handled out of order"
    return numbers, sorted(set(range(BACKLOG)) - set(numbers))


@pytest.mark.parametrize("nth", [1, 2])
async def test_a_crash_while_the_batch_is_written_hands_every_start_once(
    register: Register, tmp_path: Path, nth: int
) -> None:
    numbers, missing = _split(
        await _crash_and_resume(register, tmp_path, f"--kill-at-commit={nth}")
    )
    # The batch being written when the process died was not written: it came again.
    assert numbers == list(range(BACKLOG))
    assert missing == []


async def test_a_crash_in_a_handler_loses_only_the_rest_of_its_written_batch(
    register: Register, tmp_path: Path
) -> None:
    killed_at = 40
    lines = await _crash_and_resume(register, tmp_path, f"--kill-in-handler=call-{killed_at:03}")
    numbers, missing = _split(lines)
    assert set(range(killed_at + 1)) <= set(numbers)
    # Written before its handlers ran: what the crash cut off was not delivered again.
    # It is the rest of that one batch: right after the start being handled, fewer than
    # BATCH, and every start after it was handled by the next process.
    if missing:
        assert missing == list(range(killed_at + 1, missing[-1] + 1))
        assert len(missing) < BATCH
    assert set(numbers) | set(missing) == set(range(BACKLOG))

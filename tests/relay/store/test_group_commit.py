"""GroupCommit: which calls are written together, in what order, and what a failure
fails."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from parley.relay.store.group_commit import GroupCommit


class Writer:
    """A ``write`` that records each group and holds it until released."""

    def __init__(self, *, hold: bool = False) -> None:
        self.groups: list[list[int]] = []
        self.writing = 0
        self.most_at_once = 0
        self.release = asyncio.Event()
        if not hold:
            self.release.set()

    async def __call__(self, args: list[int]) -> list[int | BaseException]:
        self.groups.append(args)
        self.writing += 1
        self.most_at_once = max(self.most_at_once, self.writing)
        try:
            await self.release.wait()
        finally:
            self.writing -= 1
        return [ValueError(f"odd {a}") if a < 0 else a * 10 for a in args]


async def test_calls_made_in_one_turn_are_one_group_in_order() -> None:
    writer = Writer()
    commit = GroupCommit(writer, size=100)
    results = await asyncio.gather(*(commit(n) for n in range(5)))
    assert results == [0, 10, 20, 30, 40]
    assert writer.groups == [[0, 1, 2, 3, 4]]


async def test_calls_made_while_groups_are_written_form_the_next_group() -> None:
    writer = Writer(hold=True)
    commit = GroupCommit(writer, size=100)
    first = commit(1)
    await asyncio.sleep(0)  # the first group is formed and being written
    later = [commit(n) for n in (2, 3, 4)]
    await asyncio.sleep(0.01)
    assert writer.groups == [[1]]  # the others wait for it
    writer.release.set()
    assert await asyncio.gather(first, *later) == [10, 20, 30, 40]
    assert writer.groups == [[1], [2, 3, 4]]


async def test_one_group_is_written_at_a_time_of_at_most_size_calls() -> None:
    writer = Writer(hold=True)
    commit = GroupCommit(writer, size=3)
    futures = [commit(n) for n in range(10)]
    await asyncio.sleep(0.01)
    assert writer.groups == [[0, 1, 2]]
    writer.release.set()
    assert await asyncio.gather(*futures) == [n * 10 for n in range(10)]
    assert writer.groups == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9]]
    assert writer.most_at_once == 1


async def test_a_failed_call_fails_alone() -> None:
    commit = GroupCommit(Writer(), size=100)
    results = await asyncio.gather(commit(1), commit(-2), commit(3), return_exceptions=True)
    assert results[0] == 10 and results[2] == 30
    assert isinstance(results[1], ValueError) and str(results[1]) == "odd -2"


Write = Callable[[list[int]], Awaitable[list[int | BaseException]]]


def failing_first(exc: BaseException) -> Write:
    """A ``write`` that raises ``exc`` for its first group and answers each later call
    with its argument."""
    calls = 0

    async def write(args: list[int]) -> list[int | BaseException]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise exc
        return list(args)

    return write


async def test_a_failed_write_fails_its_group_and_the_next_groups_go_on() -> None:
    commit = GroupCommit(failing_first(ConnectionError("lost")), size=2)
    results = await asyncio.gather(*(commit(n) for n in range(4)), return_exceptions=True)
    assert [type(r) for r in results[:2]] == [ConnectionError, ConnectionError]
    assert results[2:] == [2, 3]


async def test_drain_returns_once_every_call_is_written() -> None:
    writer = Writer(hold=True)
    commit = GroupCommit(writer, size=2)
    futures = [commit(n) for n in range(5)]
    drained = asyncio.create_task(commit.drain())
    await asyncio.sleep(0.01)
    assert not drained.done()
    writer.release.set()
    await drained
    assert all(f.done() for f in futures)
    assert writer.groups == [[0, 1], [2, 3], [4]]


async def test_a_cancelled_caller_leaves_the_others_their_results() -> None:
    writer = Writer(hold=True)
    commit = GroupCommit(writer, size=100)
    dropped, kept, also_kept = commit(1), commit(2), commit(3)
    await asyncio.sleep(0)
    dropped.cancel()
    writer.release.set()
    assert list(await asyncio.gather(kept, also_kept)) == [20, 30]
    with pytest.raises(asyncio.CancelledError):
        await dropped


async def test_a_call_made_once_the_writer_is_idle_again_is_written() -> None:
    writer = Writer()
    commit = GroupCommit(writer, size=100)
    assert await commit(1) == 10
    await asyncio.sleep(0.01)  # nothing left to write
    assert await commit(2) == 20
    assert writer.groups == [[1], [2]]


async def test_drain_waits_for_calls_not_yet_grouped_and_returns_at_once_when_idle() -> None:
    writer = Writer()
    commit = GroupCommit(writer, size=100)
    async with asyncio.timeout(1):
        await commit.drain()  # nothing asked for
        futures = [commit(n) for n in range(3)]  # grouped at the end of this turn
        await commit.drain()
    assert [f.result() for f in futures] == [0, 10, 20]


async def test_a_cancelled_drain_cancels_no_write() -> None:
    writer = Writer(hold=True)
    commit = GroupCommit(writer, size=100)
    future = commit(1)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.01):
            await commit.drain()
    writer.release.set()
    assert await future == 10


@pytest.mark.parametrize("extra", [-1, 1])
async def test_a_write_that_answers_the_wrong_number_of_calls_fails_them_all(extra: int) -> None:
    async def write(args: list[int]) -> list[int | BaseException]:
        return list[int | BaseException](range(len(args) + extra))

    commit = GroupCommit(write, size=100)
    results = await asyncio.gather(commit(1), commit(2), return_exceptions=True)
    assert all(isinstance(r, RuntimeError) for r in results), results


async def test_a_cancelled_write_cancels_the_calls_of_its_group_and_the_next_goes_on() -> None:
    commit = GroupCommit(failing_first(asyncio.CancelledError()), size=1)
    first, second = commit(1), commit(2)
    with pytest.raises(asyncio.CancelledError):
        await first
    assert await second == 2

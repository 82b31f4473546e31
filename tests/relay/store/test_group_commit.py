"""GroupCommit: which calls are written together, in what order, and what a failure
fails."""

from __future__ import annotations

import asyncio

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


async def test_a_failed_write_fails_its_group_and_the_next_groups_go_on() -> None:
    calls = 0

    async def write(args: list[int]) -> list[int | BaseException]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ConnectionError("lost")
        return list(args)

    commit = GroupCommit(write, size=2)
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
    kept, dropped = commit(1), commit(2)
    await asyncio.sleep(0)
    dropped.cancel()
    writer.release.set()
    assert await kept == 10
    with pytest.raises(asyncio.CancelledError):
        await dropped

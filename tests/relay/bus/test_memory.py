"""LocalBus, and MemoryHub / MemoryBus: several nodes in one process, which must behave as
RedisBus does across processes (test_redis.py has the same cases over Redis)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from parley.relay.bus import Bus, LocalBus, MemoryHub
from parley.relay.bus.events import (
    BusEvent,
    ChainChanged,
    KeysLow,
    PermitsChanged,
    PresenceChanged,
    Revoked,
    Rows,
    SessionOpened,
)
from parley.relay.bus.memory import MemoryBus

from .helpers import Recorder

Node = tuple[MemoryBus, Recorder]
MakeNode = Callable[[str], Awaitable[Node]]


@pytest.fixture
def hub() -> MemoryHub:
    return MemoryHub()


@pytest.fixture
async def make_node(hub: MemoryHub) -> AsyncIterator[MakeNode]:
    """Started nodes on one hub, all closed at the end."""
    opened: list[MemoryBus] = []

    async def make(node: str) -> Node:
        bus = hub.bus(node)
        recorder = Recorder()
        await bus.start(recorder.on_event, recorder.on_gap)
        opened.append(bus)
        return bus, recorder

    yield make
    for bus in opened:
        await bus.close()


def rows(n: int) -> Rows:
    return Rows(identity="alice", device="d-1", offset=n)


def memory_tasks() -> set[asyncio.Task[object]]:
    return {task for task in asyncio.all_tasks() if task.get_name().startswith("memory-bus:")}


async def test_local_bus_is_a_bus_with_nobody_to_tell() -> None:
    bus: Bus = LocalBus("solo")
    recorder = Recorder()
    await bus.start(recorder.on_event, recorder.on_gap)
    bus.publish(PresenceChanged(identity="alice", node="solo", devices=("d-1",)))
    bus.publish(rows(1))
    assert bus.node == "solo"
    assert bus.present("alice") == frozenset()
    await bus.close()
    assert recorder.events == [] and recorder.gaps == 0
    assert LocalBus().node != LocalBus().node  # a random id each


async def test_memory_bus_is_a_bus(hub: MemoryHub) -> None:
    bus: Bus = hub.bus("a")  # mypy checks MemoryBus against the protocol here
    assert bus.node == "a"


async def test_events_flow_both_ways_and_never_back_to_their_node(make_node: MakeNode) -> None:
    a, heard_by_a = await make_node("a")
    b, heard_by_b = await make_node("b")
    a.publish(rows(1))
    assert heard_by_b.events == []  # through the event loop, as over a network
    assert await heard_by_b.count(1) == [rows(1)]
    b.publish(rows(2))
    assert await heard_by_a.count(1) == [rows(2)]
    assert heard_by_b.events == [rows(1)]


async def test_a_thousand_events_arrive_in_publishing_order(make_node: MakeNode) -> None:
    a, _ = await make_node("a")
    _, heard_by_b = await make_node("b")
    _, heard_by_c = await make_node("c")
    for n in range(1, 1001):
        a.publish(rows(n))
    expected = [rows(n) for n in range(1, 1001)]
    assert await heard_by_b.count(1000) == expected
    assert await heard_by_c.count(1000) == expected


async def test_every_event_type_reaches_the_others(make_node: MakeNode) -> None:
    events: list[BusEvent] = [
        Rows(identity="alice", device="d-1", offset=42),
        Revoked(identity="alice", device="d-2"),
        ChainChanged(identity="bob"),
        PermitsChanged(owner="carol"),
        KeysLow(identity="alice", device="d-1", one_time_keys=3, fallback_key=True),
        SessionOpened(identity="alice", device="d-1", node="a"),
        PresenceChanged(identity="dave", node="a", devices=("d-1", "d-2")),
    ]
    a, _ = await make_node("a")
    _, heard = await make_node("b")
    for event in events:
        a.publish(event)
    assert await heard.count(len(events)) == events


async def test_a_nodes_presence_is_seen_by_the_others(make_node: MakeNode) -> None:
    a, heard_by_a = await make_node("a")
    b, heard_by_b = await make_node("b")
    a.publish(PresenceChanged(identity="alice", node="a", devices=("d-1", "d-2")))
    b.publish(PresenceChanged(identity="alice", node="b", devices=("d-3",)))
    await heard_by_b.until(lambda: b.present("alice") == {"d-1", "d-2"})
    await heard_by_a.until(lambda: a.present("alice") == {"d-3"})  # others' only
    assert b.present("bob") == frozenset()

    a.publish(PresenceChanged(identity="alice", node="a", devices=()))
    await heard_by_b.until(lambda: b.present("alice") == frozenset())
    assert heard_by_b.presence() == [
        PresenceChanged(identity="alice", node="a", devices=("d-1", "d-2")),
        PresenceChanged(identity="alice", node="a", devices=()),
    ]


async def test_close_says_the_devices_are_gone_and_leaves_no_task(make_node: MakeNode) -> None:
    before = memory_tasks()
    a, _ = await make_node("a")
    b, heard = await make_node("b")
    a.publish(PresenceChanged(identity="alice", node="a", devices=("d-1",)))
    a.publish(PresenceChanged(identity="bob", node="a", devices=("d-9",)))
    await heard.until(lambda: b.present("bob") == {"d-9"})

    await a.close()
    await heard.count(4)
    assert set(heard.events[2:]) == {
        PresenceChanged(identity="alice", node="a", devices=()),
        PresenceChanged(identity="bob", node="a", devices=()),
    }
    assert b.present("alice") == b.present("bob") == frozenset()
    await a.close()  # twice is fine
    await b.close()
    assert memory_tasks() == before


async def test_gap_calls_on_gap(make_node: MakeNode) -> None:
    a, heard = await make_node("a")
    a.gap()
    assert heard.gaps == 1


# Where MemoryBus once differed from a bus between processes (RedisBus does each).


async def test_a_node_that_joins_late_sees_the_presence_already_there(
    make_node: MakeNode,
) -> None:
    a, _ = await make_node("a")
    a.publish(PresenceChanged(identity="alice", node="a", devices=("d-1",)))
    await asyncio.sleep(0)  # delivered to nobody: b is not there yet
    b, _ = await make_node("b")
    assert b.present("alice") == {"d-1"}  # RedisBus loads it from Redis at start


async def test_a_closed_node_publishes_nothing(make_node: MakeNode) -> None:
    a, _ = await make_node("a")
    _, heard = await make_node("b")
    await a.close()
    a.publish(rows(1))
    c, _ = await make_node("c")
    c.publish(rows(2))  # after a's, if a's went anywhere
    await heard.until(lambda: rows(2) in heard.events)
    assert rows(1) not in heard.events


async def test_a_failing_handler_does_not_stop_the_bus(hub: MemoryHub) -> None:
    a = hub.bus("a")
    b = hub.bus("b")
    heard = Recorder()

    def on_event(event: BusEvent) -> None:
        heard.on_event(event)
        if len(heard.events) == 1:
            raise RuntimeError("handler bug")

    await a.start(Recorder().on_event, lambda: None)
    await b.start(on_event, heard.on_gap)
    try:
        a.publish(rows(1))
        a.publish(rows(2))
        assert await heard.count(2, timeout=0.5) == [rows(1), rows(2)]
    finally:
        await a.close()
        await b.close()

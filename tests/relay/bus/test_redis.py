"""RedisBus against a real Redis: the shared server under a prefix of each test's own,
or a private redis-server for the tests that stop it (see tests/redis_server.py)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import msgspec
import pytest
import redis.asyncio
from tests.redis_server import RedisServer, RedisTarget, free_port

from parley.errors import BusError, ParleyError
from parley.relay.bus import Bus
from parley.relay.bus.events import (
    BusEvent,
    ChainChanged,
    KeysLow,
    PermitsChanged,
    PresenceChanged,
    Revoked,
    Rows,
    SessionOpened,
    encode,
)
from parley.relay.bus.redis import RedisBus

from .helpers import WAIT, Recorder, eventually

TTL = 0.6  # short, so expiry shows within a test; the heartbeat runs every TTL / 3
NODE_PROCESS = Path(__file__).with_name("node_process.py")

Node = tuple[RedisBus, Recorder]
MakeNode = Callable[..., Awaitable[Node]]


def node_factory(target: RedisTarget, opened: list[RedisBus]) -> MakeNode:
    async def make(node: str, **options: object) -> Node:
        options.setdefault("presence_ttl", TTL)
        bus = RedisBus(target.url, node=node, prefix=target.prefix, **options)  # type: ignore[arg-type]
        recorder = Recorder()
        await bus.start(recorder.on_event, recorder.on_gap)
        opened.append(bus)
        return bus, recorder

    return make


@pytest.fixture
async def make_node(redis_target: RedisTarget) -> AsyncIterator[MakeNode]:
    """Started buses on the shared Redis, all closed at the end."""
    opened: list[RedisBus] = []
    yield node_factory(redis_target, opened)
    for bus in opened:
        await bus.close()


@pytest.fixture
async def make_private_node(private_target: RedisTarget) -> AsyncIterator[MakeNode]:
    """The same on a private redis-server (``private_redis`` stops and starts it)."""
    opened: list[RedisBus] = []
    yield node_factory(private_target, opened)
    for bus in opened:
        await bus.close()


def bus_tasks() -> set[asyncio.Task[object]]:
    return {task for task in asyncio.all_tasks() if task.get_name().startswith("bus-")}


def rows(n: int, identity: str = "alice") -> Rows:
    return Rows(identity=identity, device="d-1", offset=n)


# -- events ------------------------------------------------------------------------------


async def test_events_flow_both_ways_and_never_back_to_their_node(make_node: MakeNode) -> None:
    a, heard_by_a = await make_node("a")
    b, heard_by_b = await make_node("b")

    a.publish(rows(1))
    assert await heard_by_b.count(1) == [rows(1)]
    b.publish(rows(2))
    # Redis orders one channel for every subscriber: had a's own event come back to a,
    # it would be before b's.
    assert await heard_by_a.count(1) == [rows(2)]
    assert heard_by_b.events == [rows(1)]
    assert a.node == "a" and b.node == "b"


async def test_a_thousand_events_arrive_in_publishing_order(make_node: MakeNode) -> None:
    a, _ = await make_node("a")
    _, heard = await make_node("b")
    started = time.monotonic()
    for n in range(1, 1001):
        a.publish(rows(n))  # never waits: all queued before anything is sent
    assert time.monotonic() - started < 0.5
    assert await heard.count(1000) == [rows(n) for n in range(1, 1001)]
    assert heard.gaps == 0


ALL_EVENTS: list[BusEvent] = [
    Rows(identity="alice", device="d-1", offset=42),
    Revoked(identity="alice", device="d-2"),
    ChainChanged(identity="bob"),
    PermitsChanged(owner="carol"),
    KeysLow(identity="alice", device="d-1", one_time_keys=3, fallback_key=True),
    SessionOpened(identity="alice", device="d-1", node="a"),
    PresenceChanged(identity="dave", node="a", devices=("d-1", "d-2")),
]


async def test_every_event_type_round_trips(make_node: MakeNode) -> None:
    a, _ = await make_node("a")
    _, heard = await make_node("b")
    for event in ALL_EVENTS:
        a.publish(event)
    assert await heard.count(len(ALL_EVENTS)) == ALL_EVENTS


async def test_a_failing_handler_does_not_stop_the_bus(
    make_node: MakeNode, redis_target: RedisTarget, caplog: pytest.LogCaptureFixture
) -> None:
    a, _ = await make_node("a")
    b = RedisBus(redis_target.url, node="b", prefix=redis_target.prefix, presence_ttl=TTL)
    heard = Recorder()

    def on_event(event: BusEvent) -> None:
        heard.on_event(event)
        if len(heard.events) == 1:
            raise RuntimeError("handler bug")

    await b.start(on_event, heard.on_gap)
    try:
        a.publish(rows(1))
        a.publish(rows(2))
        assert await heard.count(2) == [rows(1), rows(2)]
        assert "the event handler failed" in caplog.text
    finally:
        await b.close()


async def test_a_missing_number_is_a_gap_and_foreign_messages_are_ignored(
    redis_target: RedisTarget, make_node: MakeNode, caplog: pytest.LogCaptureFixture
) -> None:
    _, heard = await make_node("b")
    client = redis.asyncio.Redis.from_url(redis_target.url)
    channel = f"{redis_target.prefix}:events"

    async def send(*events: tuple[int, BusEvent | bytes], incarnation: int = 7) -> None:
        # The wire format, written out: [node, incarnation, [[seq, event], ...]].
        batch = [(seq, msgspec.Raw(e if isinstance(e, bytes) else encode(e))) for seq, e in events]
        await client.publish(channel, msgspec.msgpack.encode(["x", incarnation, batch]))

    try:
        await send((1, rows(1)))
        await send((2, rows(2)))
        await client.publish(channel, b"not a parley event")
        await send((4, rows(4)))  # 3 went missing
        await heard.until(lambda: heard.gaps == 1)
        assert heard.events == [rows(1), rows(2), rows(4)]
        assert "no Parley event" in caplog.text
        await send((1, rows(10)), (2, rows(11)), incarnation=8)  # x restarted: no gap
        await heard.count(5)
        assert heard.events[3:] == [rows(10), rows(11)]
        assert heard.gaps == 1
        # In one message, an event of no known kind (4): a gap, and the events around it
        # are handed on, in order.
        unknown = msgspec.msgpack.encode(["no such event", 1])
        await send((3, rows(13)), (4, unknown), (5, rows(15)), (6, rows(16)), incarnation=8)
        await heard.until(lambda: heard.gaps == 2 and len(heard.events) == 8)
        assert heard.events[5:] == [rows(13), rows(15), rows(16)]
        assert "an event that is no Parley event" in caplog.text
    finally:
        await client.aclose()


async def test_redis_bus_is_a_bus(redis_target: RedisTarget) -> None:
    bus: Bus = RedisBus(redis_target.url)  # mypy checks RedisBus against the protocol here
    assert not bus.connected  # not started
    await bus.close()


async def test_start_fails_clearly_when_redis_is_not_there() -> None:
    bus = RedisBus(f"redis://:secret@127.0.0.1:{free_port()}/0")
    recorder = Recorder()
    with pytest.raises(BusError, match=r"cannot use Redis at redis://:\*\*\*@127\.0\.0\.1") as info:
        await bus.start(recorder.on_event, recorder.on_gap)
    assert isinstance(info.value, ParleyError)
    assert "secret" not in str(info.value)
    assert not bus_tasks()
    await bus.close()  # nothing to do, and no error


# -- presence ----------------------------------------------------------------------------


async def test_a_nodes_presence_is_seen_by_the_others(
    make_node: MakeNode, redis_target: RedisTarget
) -> None:
    a, heard_by_a = await make_node("a")
    b, heard_by_b = await make_node("b")

    a.publish(PresenceChanged(identity="alice", node="a", devices=("d-1", "d-2")))
    b.publish(PresenceChanged(identity="alice", node="b", devices=("d-3",)))
    await heard_by_b.until(lambda: b.present("alice") == {"d-1", "d-2"})
    await heard_by_a.until(lambda: a.present("alice") == {"d-3"})  # others' only
    assert heard_by_b.presence() == [
        PresenceChanged(identity="alice", node="a", devices=("d-1", "d-2"))
    ]
    assert b.present("bob") == frozenset()

    a.publish(PresenceChanged(identity="alice", node="a", devices=("d-2",)))
    await heard_by_b.until(lambda: b.present("alice") == {"d-2"})
    # The same again changes nothing, and is not news.
    a.publish(PresenceChanged(identity="alice", node="a", devices=("d-2",)))
    a.publish(rows(1))
    await heard_by_b.until(lambda: rows(1) in heard_by_b.events)
    assert len(heard_by_b.presence()) == 2

    # A node that starts later finds it in Redis.
    c, _ = await make_node("c")
    assert c.present("alice") == {"d-2", "d-3"}
    assert set(redis_target.existing_keys()) == {
        f"{redis_target.prefix}:nodes",
        f"{redis_target.prefix}:presence:a",
        f"{redis_target.prefix}:presence:b",
        f"{redis_target.prefix}:presence:c",
    }


async def test_close_says_the_devices_are_gone_and_leaves_nothing_behind(
    make_node: MakeNode, redis_target: RedisTarget
) -> None:
    before = bus_tasks()
    a, _ = await make_node("a")
    b, heard = await make_node("b")
    a.publish(PresenceChanged(identity="alice", node="a", devices=("d-1",)))
    a.publish(PresenceChanged(identity="bob", node="a", devices=("d-9",)))
    await heard.until(lambda: b.present("bob") == {"d-9"})
    a.publish(rows(1))  # queued at close: published before the goodbyes

    await a.close()
    await heard.until(lambda: len(heard.events) == 5)
    assert heard.events[2] == rows(1)
    assert set(heard.events[3:]) == {
        PresenceChanged(identity="alice", node="a", devices=()),
        PresenceChanged(identity="bob", node="a", devices=()),
    }
    assert b.present("alice") == b.present("bob") == frozenset()
    assert not any(key.endswith(":a") for key in redis_target.existing_keys())
    a.publish(rows(2))  # after close: nothing, and no error

    await b.close()
    assert redis_target.existing_keys() == []
    assert bus_tasks() == before


@contextlib.asynccontextmanager
async def node_process(
    target: RedisTarget, node: str, ttl: float, identity: str, device: str
) -> AsyncIterator[asyncio.subprocess.Process]:
    """A node in a process of its own (node_process.py) that has ``identity``'s
    ``device``; killed at the end if the test has not."""
    process = await asyncio.create_subprocess_exec(
        *(sys.executable, str(NODE_PROCESS), target.url, target.prefix),
        *(node, str(ttl), identity, device),
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        async with asyncio.timeout(WAIT):
            assert await process.stdout.readline() == b"ready\n"
        yield process
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGCONT)  # in case it was stopped
            process.kill()
        await process.wait()


async def test_a_killed_node_s_devices_expire_within_the_ttl(
    make_node: MakeNode, redis_target: RedisTarget
) -> None:
    b, heard = await make_node("b")
    async with node_process(redis_target, "doomed", TTL, "alice", "d-1") as process:
        await heard.until(lambda: b.present("alice") == {"d-1"})
        process.kill()  # SIGKILL: no close(), no goodbye
        await process.wait()
        killed = time.monotonic()

    await heard.until(lambda: b.present("alice") == frozenset())
    expired_after = time.monotonic() - killed
    assert heard.presence()[-1] == PresenceChanged(identity="alice", node="doomed", devices=())
    # Its deadline is at most TTL after its last heartbeat, and b checks every TTL / 3.
    assert expired_after < 2.5 * TTL, expired_after
    await eventually(lambda: not any("doomed" in key for key in redis_target.existing_keys()))


async def test_a_node_restarted_under_its_id_clears_what_it_had(
    make_node: MakeNode, redis_target: RedisTarget
) -> None:
    b, heard = await make_node("b")
    # A 30 s ttl: its devices gone sooner means the restart cleared them, not expiry.
    async with node_process(redis_target, "n1", 30.0, "alice", "d-1") as process:
        await heard.until(lambda: b.present("alice") == {"d-1"})
        process.kill()
        await process.wait()

    again, _ = await make_node("n1", presence_ttl=30.0)
    await heard.until(lambda: b.present("alice") == frozenset(), timeout=5)
    again.publish(PresenceChanged(identity="alice", node="n1", devices=("d-2",)))
    await heard.until(lambda: b.present("alice") == {"d-2"})


async def test_a_node_late_past_the_ttl_is_given_up_then_comes_back(
    make_node: MakeNode, redis_target: RedisTarget
) -> None:
    b, heard = await make_node("b")
    async with node_process(redis_target, "late", TTL, "alice", "d-1") as process:
        await heard.until(lambda: b.present("alice") == {"d-1"})
        process.send_signal(signal.SIGSTOP)  # frozen: its heartbeats stop
        await heard.until(lambda: b.present("alice") == frozenset())
        process.send_signal(signal.SIGCONT)  # its next heartbeat finds it forgotten
        await heard.until(lambda: b.present("alice") == {"d-1"})
    assert heard.presence() == [
        PresenceChanged(identity="alice", node="late", devices=("d-1",)),
        PresenceChanged(identity="alice", node="late", devices=()),
        PresenceChanged(identity="alice", node="late", devices=("d-1",)),
    ]


# -- outages -----------------------------------------------------------------------------


async def test_a_redis_restart_is_a_gap_and_everything_comes_back(
    make_private_node: MakeNode, private_redis: RedisServer, private_target: RedisTarget
) -> None:
    a, heard_by_a = await make_private_node("a")
    b, heard_by_b = await make_private_node("b")
    a.publish(PresenceChanged(identity="alice", node="a", devices=("d-1",)))
    b.publish(PresenceChanged(identity="bob", node="b", devices=("d-2",)))
    await heard_by_b.until(lambda: b.present("alice") == {"d-1"})
    await heard_by_a.until(lambda: a.present("bob") == {"d-2"})

    assert a.connected and b.connected
    private_redis.stop()  # without persistence: it comes back empty
    await eventually(lambda: not a.connected and not b.connected)
    private_redis.start()

    await heard_by_a.until(lambda: heard_by_a.gaps == 1)
    await heard_by_b.until(lambda: heard_by_b.gaps == 1)
    # Each node wrote its own presence again, and the other reloaded it.
    await heard_by_b.until(lambda: b.present("alice") == {"d-1"})
    await heard_by_a.until(lambda: a.present("bob") == {"d-2"})
    await eventually(
        lambda: (
            {f"{private_target.prefix}:presence:a", f"{private_target.prefix}:presence:b"}
            <= set(private_target.existing_keys())
        )
    )
    a.publish(rows(1))
    b.publish(rows(2))
    await heard_by_b.until(lambda: rows(1) in heard_by_b.events)
    await heard_by_a.until(lambda: rows(2) in heard_by_a.events)
    assert heard_by_a.gaps == heard_by_b.gaps == 1
    assert a.connected and b.connected
    # Nobody's devices went away meanwhile: a node forgotten by the restarted Redis is
    # given a ttl to say it again before it counts as gone.
    assert heard_by_b.presence() == [PresenceChanged(identity="alice", node="a", devices=("d-1",))]
    assert heard_by_a.presence() == [PresenceChanged(identity="bob", node="b", devices=("d-2",))]


async def test_events_wait_for_redis_in_a_bounded_queue(
    make_private_node: MakeNode,
    private_redis: RedisServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="parley.relay.bus.redis")
    a, _ = await make_private_node("a", queue_limit=5)
    _, heard = await make_private_node("b")
    a.publish(rows(0))
    await heard.count(1)

    private_redis.stop()
    started = time.monotonic()
    for n in range(1, 21):
        a.publish(rows(n))  # Redis is away: still never waits
    assert time.monotonic() - started < 0.1
    private_redis.start()

    await heard.until(lambda: heard.gaps == 1)
    a.publish(rows(21))
    await heard.until(lambda: rows(21) in heard.events)
    offsets = [event.offset for event in heard.events if isinstance(event, Rows)]
    assert offsets == sorted(offsets)  # what arrived, arrived in order
    assert len(offsets) < 22  # the queue held 5: the rest were dropped, and said so
    await eventually(lambda: "dropped" in caplog.text)
    # One line per node and outage, however many attempts it took to come back.
    assert len([r for r in caplog.records if "lost Redis" in r.getMessage()]) == 2
    assert len([r for r in caplog.records if "back on Redis" in r.getMessage()]) == 2

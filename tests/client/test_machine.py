"""MachineRunner: what goes into a call machine and what it does with the outputs, with a
scripted machine on real clients over an in-memory relay."""

from __future__ import annotations

import asyncio
from typing import TypeAlias, TypeVar

import msgspec

from parley.client import Client, add_device
from parley.client.machine import Event, EventSink, MachineRunner
from parley.ids import DeviceId, IdentityId
from parley.protocol.call import CallRecord, EndReason, Role
from parley.protocol.call_io import (
    Connected,
    Ended,
    Fail,
    Output,
    PeerBack,
    PeerGone,
    ProxyInput,
    Received,
    Send,
    Tick,
)
from parley.protocol.messages import MessageType

from .helpers import World, eventually


class Go(msgspec.Struct, frozen=True):
    """The scripted machine's one command: return ``outputs``."""

    outputs: list[Output]


Input: TypeAlias = Go | ProxyInput
In = TypeVar("In", bound=Input)


class Script:
    """A call machine that records its inputs and returns what a ``Go`` says; a tick at
    the deadline clears it."""

    def __init__(self) -> None:
        self.inputs: list[Input] = []
        self.deadline: float | None = None

    def handle(self, event: Input) -> list[Output]:
        self.inputs.append(event)
        if isinstance(event, Tick) and self.deadline is not None and event.now >= self.deadline:
            self.deadline = None
        return event.outputs if isinstance(event, Go) else []

    def next_deadline(self) -> float | None:
        return self.deadline

    def seen(self, kind: type[In]) -> list[In]:
        return [event for event in self.inputs if isinstance(event, kind)]


class Events:
    def __init__(self) -> None:
        self.items: list[Event] = []

    def __call__(self, event: Event) -> None:
        self.items.append(event)


async def runner_on(
    client: Client, sink: EventSink | None = None
) -> tuple[MachineRunner[Go], Script, Events]:
    script, events = Script(), Events()
    runner: MachineRunner[Go] = MachineRunner(client, script, sink or events)
    runner.start()
    return runner, script, events


def start(recipient: str, call_id: str = "k1") -> Send:
    return Send(
        kind=MessageType.VOICE_START,
        recipient=IdentityId(recipient),
        cid="cid",
        call_id=call_id,
        peer_info="offer",
    )


def stop(recipient: str, call_id: str = "k1") -> Send:
    return Send(
        kind=MessageType.VOICE_STOP, recipient=IdentityId(recipient), cid="cid", call_id=call_id
    )


def ended(peer: str, call_id: str = "k1") -> Ended:
    return Ended(
        CallRecord(
            call_id=call_id,
            cid="cid",
            role=Role.CALLER,
            peer=IdentityId(peer),
            peer_device=None,
            started=0.0,
            ringing=None,
            answered=None,
            ended=1.0,
            reason=EndReason.HANGUP,
        )
    )


async def test_a_refused_start_feeds_fail_and_a_refused_stop_does_not(world: World) -> None:
    alice, bob = await world.identity("alice"), await world.identity("bob")
    runner, script, _ = await runner_on(await world.connected(alice))
    await runner.feed(Go([stop(bob.identity, "k0")]))  # bob has not permitted alice
    assert script.seen(Fail) == []
    await runner.feed(Go([start(bob.identity)]))
    assert [fail.call_id for fail in script.seen(Fail)] == ["k1"]
    await runner.close()


async def test_sends_go_out_and_events_reach_the_sink_in_order(world: World) -> None:
    alice, bob = await world.identity("alice"), await world.identity("bob")
    await world.permit(bob, alice)
    starts: list[str] = []
    callee = world.client(bob)
    callee.voice().on_start(lambda issuer, payload: starts.append(payload["call_id"]))
    await callee.connect()
    runner, script, events = await runner_on(await world.connected(alice))
    up = Connected(
        call_id="k1", cid="cid", peer=bob.identity, peer_device=bob.device, peer_info="answer"
    )
    await runner.feed(Go([start(bob.identity), up, ended(bob.identity)]))
    assert events.items == [up, ended(bob.identity)]
    await eventually(lambda: starts == ["k1"])
    assert script.seen(Fail) == []
    await runner.close()


async def test_a_raising_sink_does_not_stop_the_runner(world: World) -> None:
    alice = await world.identity("alice")
    calls: list[Event] = []

    def explode(event: Event) -> None:
        calls.append(event)
        raise RuntimeError("app bug")

    runner, _, _ = await runner_on(await world.connected(alice), explode)
    await runner.feed(Go([ended("bob", "k1"), ended("bob", "k2")]))
    assert [event.call_id for event in calls if isinstance(event, Ended)] == ["k1", "k2"]
    await runner.close()


async def test_observed_voice_messages_are_fed_with_their_signing_device(world: World) -> None:
    alice, bob = await world.identity("alice"), await world.identity("bob")
    alice2 = await add_device(alice, connector=world.link)
    await world.permit(alice, bob)
    await world.permit(bob, alice)
    runner, script, _ = await runner_on(await world.connected(alice))
    await (await world.connected(bob)).voice().stop(alice.identity, "cid", "from-bob")
    # Another device of alice's: its copy is fed too, with that device.
    await (await world.connected(alice2)).voice().busy(bob.identity, "cid", "from-alice2")
    await eventually(lambda: len(script.seen(Received)) == 2)
    got = [(r.kind, r.issuer, r.device, r.call_id) for r in script.seen(Received)]
    assert got == [
        (MessageType.VOICE_STOP, bob.identity, bob.device, "from-bob"),
        (MessageType.VOICE_BUSY, alice.identity, alice2.device, "from-alice2"),
    ]
    await runner.close()


async def test_presence_changes_become_peer_gone_and_peer_back(world: World) -> None:
    alice, bob = await world.identity("alice"), await world.identity("bob")
    await world.permit(bob, alice)
    runner, script, _ = await runner_on(await world.connected(alice))
    await runner.watch(bob.identity)
    await runner.watch(alice.identity)  # its own identity: nothing to follow
    callee = await world.connected(bob)
    await eventually(lambda: script.seen(PeerBack))
    await callee.close()
    await eventually(lambda: script.seen(PeerGone))
    back, gone = script.seen(PeerBack), script.seen(PeerGone)
    assert back == [PeerBack(now=back[0].now, identity=bob.identity, device=bob.device)]
    assert gone == [PeerGone(now=gone[0].now, identity=bob.identity, device=bob.device)]
    await runner.close()


async def test_watching_a_peer_that_does_not_permit_us_is_only_logged(world: World) -> None:
    alice, bob = await world.identity("alice"), await world.identity("bob")
    runner, _, events = await runner_on(await world.connected(alice))
    up = Connected(
        call_id="k1", cid="cid", peer=bob.identity, peer_device=DeviceId("d"), peer_info=""
    )
    await runner.feed(Go([up]))  # the runner tries to watch bob, who refuses
    assert events.items == [up]
    await runner.close()


async def test_ticks_come_at_the_deadline_and_new_inputs_move_it(world: World) -> None:
    alice = await world.identity("alice")
    runner, script, _ = await runner_on(await world.connected(alice))
    # The ticker sleeps with no deadline; an input that sets one must wake it.
    await runner.feed(Go([]))
    deadline = script.deadline = runner.now() + 0.2
    await runner.feed(Go([]))
    await eventually(lambda: script.deadline is None)
    assert script.seen(Tick)[-1].now >= deadline
    await runner.close()


async def test_a_peer_device_that_left_before_the_first_report_is_gone(world: World) -> None:
    alice, bob = await world.identity("alice"), await world.identity("bob")
    await world.permit(bob, alice)
    runner, script, _ = await runner_on(await world.connected(alice))
    # bob's device answered, then left before we followed bob: the first report is empty.
    up = Connected(call_id="k1", cid="cid", peer=bob.identity, peer_device=bob.device, peer_info="")
    await runner.feed(Go([up]))
    await eventually(lambda: script.seen(PeerGone))
    # Answering again while the last report leaves it out: gone again, at once.
    await runner.feed(Go([msgspec.structs.replace(up, call_id="k2")]))
    await eventually(lambda: len(script.seen(PeerGone)) == 2)
    assert {(g.identity, g.device) for g in script.seen(PeerGone)} == {(bob.identity, bob.device)}
    assert script.seen(PeerBack) == []
    await runner.close()


async def test_close_right_after_an_input_woke_the_ticker_returns(world: World) -> None:
    """A cancel that comes as the ticker's wait ends is not lost (Python 3.11's wait_for
    lost it, and close() waited forever)."""
    alice = await world.identity("alice")
    runner, script, _ = await runner_on(await world.connected(alice))
    script.deadline = runner.now() + 60
    await runner.feed(Go([]))  # the ticker now waits for the deadline, with a timeout
    for _ in range(3):
        await asyncio.sleep(0)
    ticker = runner._ticker
    assert ticker is not None
    runner._wake.set()  # what every input does; the ticker is woken but has not run yet
    closing = asyncio.ensure_future(runner.close())
    done, _ = await asyncio.wait([closing], timeout=5)  # no cancel: it would hide the bug
    if not done:
        ticker.cancel()  # let the test end cleanly, then fail it
        await closing
    assert done, "close() waited on a ticker that swallowed its cancel"

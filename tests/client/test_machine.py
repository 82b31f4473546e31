"""MachineRunner: what goes into a call machine and what it does with the outputs, with a
scripted machine on real clients over an in-memory relay."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypeAlias, TypeVar

import msgspec
import pytest

from parley.client import Client, add_device
from parley.client.machine import Event, EventSink, MachineRunner
from parley.ids import DeviceId, IdentityId
from parley.protocol import frames
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
from parley.protocol.messages import Message, MessageType, VoiceStart, VoiceStop

from .helpers import RelayLink, World, Wrapper, eventually


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


class PipelinedRunner(MachineRunner[Go]):
    pipelined = True


RUNNERS = [MachineRunner, PipelinedRunner]


async def runner_on(
    client: Client,
    sink: EventSink | None = None,
    kind: type[MachineRunner[Go]] = MachineRunner,
) -> tuple[MachineRunner[Go], Script, Events]:
    script, events = Script(), Events()
    runner = kind(client, script, sink or events)
    runner.start()
    return runner, script, events


def _hearing(into: list[str]) -> Callable[[str, VoiceStart | VoiceStop], None]:
    """A handler that notes each message's kind and call, in arrival order."""

    def hear(_: str, payload: VoiceStart | VoiceStop) -> None:
        into.append(f"{payload.typ.value.removeprefix('chat.voice.')} {payload.call_id}")

    return hear


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


@pytest.mark.parametrize("kind", RUNNERS)
async def test_a_refused_start_feeds_fail_and_a_refused_stop_does_not(
    world: World, kind: type[MachineRunner[Go]]
) -> None:
    alice, bob = await world.identity("alice"), await world.identity("bob")
    runner, script, _ = await runner_on(await world.connected(alice), kind=kind)
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


@pytest.mark.parametrize("kind", RUNNERS)
async def test_sends_to_one_recipient_arrive_in_the_order_the_machine_made_them(
    world: World, kind: type[MachineRunner[Go]]
) -> None:
    """Guarantee 2 of the module: across inputs fed at once, each recipient gets its
    messages in the machine's order (a lane per recipient, one send at a time)."""
    alice, bob, carol = [await world.identity(n) for n in ("alice", "bob", "carol")]
    await world.permit(bob, alice)
    await world.permit(carol, alice)
    heard: dict[str, list[str]] = {"bob": [], "carol": []}
    for name, who in (("bob", bob), ("carol", carol)):
        callee = world.client(who)
        hear = _hearing(heard[name])
        callee.voice().on_start(hear)
        callee.voice().on_stop(hear)
        await callee.connect()
    runner, _, _ = await runner_on(await world.connected(alice), kind=kind)
    inputs = [
        Go(
            [
                start(bob.identity, f"k{n}"),
                start(carol.identity, f"k{n}"),
                stop(bob.identity, f"k{n}"),
            ]
        )
        for n in range(8)
    ]
    await asyncio.gather(*(runner.feed(go) for go in inputs))
    bob_order = [line for n in range(8) for line in (f"start k{n}", f"stop k{n}")]
    await eventually(
        lambda: heard == {"bob": bob_order, "carol": [f"start k{n}" for n in range(8)]}
    )
    await runner.close()


@pytest.mark.parametrize("kind", RUNNERS)
async def test_events_follow_the_sends_before_them_in_order_across_inputs(
    world: World, kind: type[MachineRunner[Go]]
) -> None:
    """Guarantee 3: an event is emitted once the sends its input produced before it are
    out, and events keep the machine's order across inputs, even an input's event that
    has no send before it."""
    alice, bob = await world.identity("alice"), await world.identity("bob")
    await world.permit(bob, alice)
    await (await world.connected(bob)).close()  # bob has keys; he need not be online
    caller = await world.connected(alice)
    log: list[str] = []

    def sent(message: Message) -> None:
        log.append(f"sent {message.get('call_id')}")

    caller.observe_sent(sent)
    runner, _, _ = await runner_on(
        caller, lambda event: log.append(f"event {event.call_id}"), kind=kind
    )
    await asyncio.gather(
        runner.feed(Go([start(bob.identity, "k1"), ended(bob.identity, "k1")])),
        runner.feed(Go([ended(bob.identity, "k2")])),
    )
    assert log == ["sent k1", "event k1", "event k2"]
    await runner.close()


@pytest.mark.parametrize(("kind", "handled_meanwhile"), [(PipelinedRunner, 2), (MachineRunner, 1)])
async def test_a_pipelined_runner_takes_the_next_input_while_sends_are_out(
    world: World, kind: type[MachineRunner[Go]], handled_meanwhile: int
) -> None:
    """The machine sees the second input while the first one's send is out (the relay
    never acknowledges it here); a plain runner holds the second back until the first
    is carried out."""
    alice, bob = await world.identity("alice"), await world.identity("bob")
    await world.permit(bob, alice)
    held: list[bytes] = []

    class Hold(Wrapper):
        """Relay side: Sends are kept here, never acknowledged."""

        async def recv(self) -> bytes:
            while True:
                data = await self.inner.recv()
                if not isinstance(frames.decode_client_frame(data), frames.Send):
                    return data
                held.append(data)

    client = world.client(alice, link=RelayLink(world.relay, relay_side=Hold))
    await client.connect()
    runner, script, _ = await runner_on(client, kind=kind)
    first = asyncio.ensure_future(runner.feed(Go([start(bob.identity, "k1")])))
    second = asyncio.ensure_future(runner.feed(Go([stop(bob.identity, "k1")])))
    await eventually(lambda: held)  # the start is out, and stays out
    assert len(script.seen(Go)) == handled_meanwhile
    await client.close()  # the send fails: the first input is carried out
    await asyncio.gather(first, second)
    assert len(script.seen(Go)) == 2
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

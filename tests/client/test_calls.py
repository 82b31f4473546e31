"""The call API over an in-memory relay: real clients, the real clock, short lifetimes.

Only outcomes are asserted (states, reasons, records), never how long anything took.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

import pytest

from parley.client import Call, Client, Dialing, IncomingCall, add_device
from parley.credentials import Credentials
from parley.errors import IllegalTransition, NotPermitted, StateError, UnknownIdentity
from parley.protocol.call import CallRecord, CallState, EndReason, Role
from parley.protocol.call_io import Connected, Ended
from parley.protocol.call_phone import PhoneConfig
from parley.protocol.messages import VoiceStart
from parley.transport import Transport

from .helpers import WAIT, Received, RelayLink, World, eventually

# Lifetimes count from the start's iat, whole seconds: under ~1.5 s a start could
# arrive already expired and never ring.
RING = 2.0
GRACE = 0.5


async def people(world: World, *names: str) -> list[Credentials]:
    """Identities that all permit one another."""
    creds = [await world.identity(name) for name in names]
    for owner in creds:
        await world.permit(owner, *[other for other in creds if other is not owner])
    return creds


async def phone(
    world: World,
    creds: Credentials,
    config: PhoneConfig | None = None,
    link: RelayLink | None = None,
) -> Client:
    client = world.client(creds, link=link)
    client.calls(config or PhoneConfig(grace=GRACE))
    await client.connect()
    return client


async def ringing(client: Client) -> IncomingCall:
    """The next call ringing on ``client``."""
    async with asyncio.timeout(WAIT), contextlib.aclosing(client.calls().incoming()) as calls:
        return await anext(calls)


async def connected(call: Call) -> Connected:
    async with asyncio.timeout(WAIT):
        async for update in call.events():
            if isinstance(update, Connected):
                return update
    raise AssertionError(f"{call} ended without connecting")


async def ended(call: Call) -> CallRecord:
    async with asyncio.timeout(WAIT):
        return await call.wait_ended()


async def updates(call: Call) -> list[type]:
    """The kinds of update ``call`` went through (it must have ended)."""
    return [type(update) async for update in call.events()]


async def test_place_accept_hangup_with_records_on_both_sides(world: World) -> None:
    alice, bob = await people(world, "alice", "bob")
    caller, callee = await phone(world, alice), await phone(world, bob)
    assert caller.calls() is caller.calls()

    call = await caller.calls().place(bob.identity, "offer", {"topic": "hi"}, cid="cid-1")
    assert call.state is CallState.DIALING and call.cid == "cid-1"
    incoming = await ringing(callee)
    assert (incoming.peer, incoming.peer_device) == (alice.identity, alice.device)
    assert (incoming.call_id, incoming.cid) == (call.call_id, "cid-1")
    assert incoming.peer_info == "offer" and incoming.data["topic"] == "hi"
    assert incoming.state is CallState.RINGING

    answered = await incoming.accept("answer")
    assert answered is incoming and answered.state is CallState.CONNECTED
    up = await connected(call)
    assert (up.peer_info, up.peer_device) == ("answer", bob.device)

    await call.hangup()
    mine, theirs = await ended(call), await ended(incoming)
    assert mine.reason is theirs.reason is EndReason.HANGUP
    assert (mine.role, mine.peer, mine.peer_device) == (Role.CALLER, bob.identity, bob.device)
    assert (theirs.role, theirs.peer, theirs.peer_device) == (
        Role.CALLEE,
        alice.identity,
        alice.device,
    )
    for record in (mine, theirs):
        assert record.call_id == call.call_id and record.cid == "cid-1"
        assert record.ringing is not None and record.answered is not None
        assert record.started <= record.ringing <= record.answered <= record.ended
        assert record.duration == record.ended - record.answered
    assert await updates(call) == [Dialing, Connected, Ended]
    assert await updates(incoming) == [Connected, Ended]
    assert call.record == mine
    assert caller.calls().live == [] == callee.calls().live
    await call.hangup()  # a second hang-up does nothing


@pytest.mark.parametrize(
    ("turn_down", "reason"), [("busy", EndReason.BUSY), ("decline", EndReason.DECLINED)]
)
async def test_a_call_turned_down_ends_with_that_reason_on_both_sides(
    world: World, turn_down: str, reason: EndReason
) -> None:
    alice, bob = await people(world, "alice", "bob")
    caller, callee = await phone(world, alice), await phone(world, bob)
    call = await caller.calls().place(bob.identity, "offer")
    incoming = await ringing(callee)
    await getattr(incoming, turn_down)()
    mine, theirs = await ended(call), await ended(incoming)
    assert mine.reason is theirs.reason is reason
    assert mine.answered is None and mine.duration == 0
    with pytest.raises(IllegalTransition):
        await incoming.accept("too late")


async def test_an_unanswered_call_times_out_on_both_sides(world: World) -> None:
    alice, bob = await people(world, "alice", "bob")
    caller, callee = await phone(world, alice), await phone(world, bob)
    call = await caller.calls().place(bob.identity, "offer", lifetime=RING)
    incoming = await ringing(callee)
    assert (await ended(call)).reason is EndReason.TIMEOUT
    assert (await ended(incoming)).reason is EndReason.TIMEOUT
    assert await updates(incoming) == [Ended]


async def test_a_start_older_than_its_lifetime_never_rings(world: World) -> None:
    alice, bob = await people(world, "alice", "bob")
    caller = await phone(world, alice)
    call = await caller.calls().place(bob.identity, "offer", lifetime=RING)
    assert (await ended(call)).reason is EndReason.TIMEOUT
    # bob comes online after the lifetime: the start and the stop are delivered to him
    # (his own handler sees both), but nothing rings.
    callee = world.client(bob)
    starts, stops = Received(), Received()
    callee.voice().on_start(starts)
    callee.voice().on_stop(stops)
    callee.calls()
    await callee.connect()
    await stops.next()
    assert starts.call_ids == [call.call_id]
    assert callee.calls().live == []


async def test_the_first_device_to_answer_has_the_call(world: World) -> None:
    alice, bob = await people(world, "alice", "bob")
    bob2 = await add_device(bob, connector=world.link)
    caller = await phone(world, alice)
    laptop, mobile = await phone(world, bob), await phone(world, bob2)
    call = await caller.calls().place(bob.identity, "offer")
    on_laptop, on_mobile = await ringing(laptop), await ringing(mobile)
    await on_mobile.accept("answer")
    assert (await connected(call)).peer_device == bob2.device
    assert (await ended(on_laptop)).reason is EndReason.ANSWERED_ELSEWHERE
    await on_mobile.hangup()
    assert (await ended(call)).reason is EndReason.HANGUP
    assert (await ended(on_mobile)).reason is EndReason.HANGUP


async def test_glare_connects_one_call(world: World) -> None:
    alice, bob = await people(world, "alice", "bob")
    a, b = await phone(world, alice), await phone(world, bob)
    a_call, b_call = await asyncio.gather(
        a.calls().place(bob.identity, "offer from alice"),
        b.calls().place(alice.identity, "offer from bob"),
    )
    a_up, b_up = await connected(a_call), await connected(b_call)
    # One call, the lower call_id; the loser answered it with its own offer.
    assert a_call.call_id == b_call.call_id == a_up.call_id == b_up.call_id
    assert {a_up.peer_info, b_up.peer_info} == {"offer from alice", "offer from bob"}
    assert a.calls().live == [a_call] and b.calls().live == [b_call]
    await a_call.hangup()
    assert (await ended(b_call)).reason is EndReason.HANGUP
    assert (await ended(a_call)).reason is EndReason.HANGUP
    assert await updates(a_call) == [Dialing, Connected, Ended] == await updates(b_call)


@pytest.mark.parametrize("auto_busy", [True, False])
async def test_a_second_call_while_in_a_call(world: World, auto_busy: bool) -> None:
    alice, bob, carol = await people(world, "alice", "bob", "carol")
    config = PhoneConfig(auto_busy=auto_busy)
    caller, callee, other = [await phone(world, c, config) for c in (alice, bob, carol)]
    first = await caller.calls().place(bob.identity, "offer")
    await (await ringing(callee)).accept("answer")
    await connected(first)

    second = await other.calls().place(bob.identity, "offer")
    if auto_busy:
        assert (await ended(second)).reason is EndReason.BUSY
        assert [c.call_id for c in callee.calls().live] == [first.call_id]
    else:
        waiting = await ringing(callee)
        assert waiting.call_id == second.call_id
        await waiting.decline()
        assert (await ended(second)).reason is EndReason.DECLINED
    assert first.state is CallState.CONNECTED


@dataclass
class Severable(RelayLink):
    """A link that can be cut: the transport drops and reconnecting fails until mended."""

    cut: bool = False

    async def __call__(self) -> Transport:
        if self.cut:
            raise OSError("the link is cut")
        return await super().__call__()

    async def sever(self) -> None:
        self.cut = True
        await self.drop()


async def test_a_peer_that_stays_away_past_the_grace_is_gone(world: World) -> None:
    alice, bob = await people(world, "alice", "bob")
    link = Severable(world.relay)
    caller, callee = await phone(world, alice), await phone(world, bob, link=link)
    call = await caller.calls().place(bob.identity, "offer")
    incoming = await ringing(callee)
    await incoming.accept("answer")
    await connected(call)
    # The caller follows the callee's presence once connected.
    await eventually(lambda: bob.device in caller.presence.devices(bob.identity))

    await link.sever()
    record = await ended(call)
    assert record.reason is EndReason.GONE and record.answered is not None
    # Back online, the callee hears from the stop the caller left why the call ended.
    link.cut = False
    assert (await ended(incoming)).reason is EndReason.GONE


async def test_app_handlers_and_calls_coexist(world: World) -> None:
    alice, bob = await people(world, "alice", "bob")
    callee = world.client(bob)
    starts = Received()
    callee.voice().on_start(starts)
    callee.calls()
    await callee.connect()
    caller = await phone(world, alice)
    call = await caller.calls().place(bob.identity, "offer")
    incoming = await ringing(callee)
    issuer, start = await starts.next()
    assert issuer == alice.identity and isinstance(start, VoiceStart)
    assert start.call_id == incoming.call_id == call.call_id
    await incoming.decline()
    assert (await ended(call)).reason is EndReason.DECLINED


async def test_a_refused_start_raises_the_refusal_and_nothing_rings(world: World) -> None:
    alice, bob = await world.identity("alice"), await world.identity("bob")
    caller = await phone(world, alice)  # bob has not permitted alice
    with pytest.raises(NotPermitted, match="does not accept messages"):
        await caller.calls().place(bob.identity, "offer")
    assert caller.calls().live == []
    with pytest.raises(UnknownIdentity):
        await caller.calls().place("nobody", "offer")
    assert caller.calls().live == []


async def test_an_accept_the_caller_does_not_permit_raises_and_ends_failed(world: World) -> None:
    alice, bob = await world.identity("alice"), await world.identity("bob")
    await world.permit(bob, alice)  # alice may call bob; bob may not answer her
    caller, callee = await phone(world, alice), await phone(world, bob)
    call = await caller.calls().place(bob.identity, "offer", lifetime=RING)
    incoming = await ringing(callee)
    with pytest.raises(NotPermitted, match="does not accept messages"):
        await incoming.accept("answer")
    record = await ended(incoming)
    assert record.reason is EndReason.FAILED and record.role is Role.CALLEE
    assert record.detail is not None
    assert record.detail.startswith(f"accept to {alice.identity} refused: ")
    assert await updates(incoming) == [Ended]  # it never connected
    assert (await ended(call)).reason is EndReason.TIMEOUT  # nothing reached the caller


async def test_closing_the_client_hangs_up_and_ends_the_iterators(world: World) -> None:
    alice, bob = await people(world, "alice", "bob")
    caller, callee = await phone(world, alice), await phone(world, bob)
    call = await caller.calls().place(bob.identity, "offer")
    incoming = await ringing(callee)
    await incoming.accept("answer")
    await connected(call)
    listening = asyncio.create_task(anext(callee.calls().incoming(), None))

    await callee.close()
    assert (await ended(incoming)).reason is EndReason.HANGUP
    assert (await ended(call)).reason is EndReason.HANGUP
    assert await asyncio.wait_for(listening, WAIT) is None
    with pytest.raises(StateError):
        await callee.calls().place(alice.identity, "offer")


async def test_a_second_configuration_is_refused(world: World) -> None:
    alice = await world.identity("alice")
    client = world.client(alice)
    calls = client.calls(PhoneConfig(ring_lifetime=30))
    assert client.calls(PhoneConfig(ring_lifetime=30)) is calls is client.calls()
    with pytest.raises(StateError):
        client.calls(PhoneConfig(ring_lifetime=45))


async def test_an_accept_whose_caller_gave_up_still_connects_and_hangs_up(world: World) -> None:
    alice, bob = await people(world, "alice", "bob")
    link = Severable(world.relay)
    caller = await phone(world, alice)
    callee = await phone(world, bob, link=link)
    call = await caller.calls().place(bob.identity, "offer", lifetime=30)
    incoming = await ringing(callee)
    await link.sever()
    with pytest.raises(TimeoutError):  # the app stops waiting; the accept goes on
        await asyncio.wait_for(incoming.accept("answer"), 0.5)
    link.cut = False
    async with asyncio.timeout(WAIT):
        await incoming.hangup()
        assert (await incoming.wait_ended()).reason is EndReason.HANGUP
        assert (await call.wait_ended()).reason is EndReason.HANGUP


async def test_a_hang_up_during_a_short_outage_still_reaches_the_peer(world: World) -> None:
    alice, bob = await people(world, "alice", "bob")
    link = Severable(world.relay)
    caller = world.client(alice, link=link, ack_timeout=1.0)
    caller.calls(PhoneConfig(grace=60))
    await caller.connect()
    callee = await phone(world, bob, PhoneConfig(grace=60))
    call = await caller.calls().place(bob.identity, "offer", lifetime=30)
    incoming = await ringing(callee)
    await incoming.accept("answer")
    await connected(call)
    await link.sever()
    await call.hangup()  # the stop cannot reach the relay: ended here, retried later
    assert call.record is not None and call.record.reason is EndReason.HANGUP
    link.cut = False
    async with asyncio.timeout(WAIT):
        assert (await incoming.wait_ended()).reason is EndReason.HANGUP

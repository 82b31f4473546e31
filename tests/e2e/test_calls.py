"""The call API between two clients over a real relay process on a real socket."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from tests.conftest import Register

from parley import Call, Client, Connected, EndReason, IncomingCall, PhoneConfig
from parley.errors import NotPermitted
from parley.protocol.call import Role

pytestmark = pytest.mark.e2e

WAIT = 20.0  # an upper bound for what a test awaits; never asserted on


async def ringing(client: Client) -> IncomingCall:
    async with asyncio.timeout(WAIT), contextlib.aclosing(client.calls().incoming()) as calls:
        return await anext(calls)


async def connected(call: Call) -> Connected:
    async with asyncio.timeout(WAIT):
        async for update in call.events():
            if isinstance(update, Connected):
                return update
    raise AssertionError(f"{call} ended without connecting")


async def test_a_direct_call_is_placed_answered_and_hung_up(register: Register) -> None:
    (alice, alice_path), (bob, bob_path) = await register("alice"), await register("bob")
    caller, callee = Client.from_credentials(alice_path), Client.from_credentials(bob_path)
    caller.calls()
    callee.calls()
    async with caller, callee:
        await caller.connections.permit(bob.identity)
        await callee.connections.permit(alice.identity)
        call = await caller.calls().place(bob.identity, "v=0 offer", lifetime=30)
        incoming = await ringing(callee)
        assert (incoming.call_id, incoming.peer_info) == (call.call_id, "v=0 offer")
        await incoming.accept("v=0 answer")
        assert (await connected(call)).peer_info == "v=0 answer"
        await call.hangup()
        async with asyncio.timeout(WAIT):
            mine, theirs = await call.wait_ended(), await incoming.wait_ended()
    assert mine.reason is theirs.reason is EndReason.HANGUP
    assert (mine.role, theirs.role) == (Role.CALLER, Role.CALLEE)
    assert mine.answered is not None and theirs.answered is not None
    assert mine.peer_device == bob.device and theirs.peer_device == alice.device


async def test_an_unanswered_call_times_out_on_both_sides(register: Register) -> None:
    (alice, alice_path), (bob, bob_path) = await register("alice"), await register("bob")
    caller = Client.from_credentials(alice_path)
    callee = Client.from_credentials(bob_path)
    # The lifetime is whole seconds from the start's iat: 2 s always leaves time to ring.
    caller.calls(PhoneConfig(ring_lifetime=2))
    callee.calls()
    async with caller, callee:
        await callee.connections.permit(alice.identity)
        call = await caller.calls().place(bob.identity, "v=0 offer")
        incoming = await ringing(callee)
        async with asyncio.timeout(WAIT):
            mine, theirs = await call.wait_ended(), await incoming.wait_ended()
    assert mine.reason is theirs.reason is EndReason.TIMEOUT
    assert mine.answered is None is theirs.answered


async def test_calls_the_relay_refuses_raise_the_refusal(register: Register) -> None:
    (alice, alice_path), (bob, bob_path) = await register("alice"), await register("bob")
    caller, callee = Client.from_credentials(alice_path), Client.from_credentials(bob_path)
    caller.calls(PhoneConfig(ring_lifetime=2))
    callee.calls()
    async with caller, callee:
        with pytest.raises(NotPermitted, match="does not accept messages"):
            await caller.calls().place(bob.identity, "v=0 offer")  # bob permits nobody
        assert caller.calls().live == []
        # bob lets alice call him, but alice does not let bob answer.
        await callee.connections.permit(alice.identity)
        call = await caller.calls().place(bob.identity, "v=0 offer")
        incoming = await ringing(callee)
        with pytest.raises(NotPermitted):
            await incoming.accept("v=0 answer")
        async with asyncio.timeout(WAIT):
            theirs, mine = await incoming.wait_ended(), await call.wait_ended()
    assert theirs.reason is EndReason.FAILED
    assert theirs.detail == (
        f"accept to {alice.identity} refused: "
        f"{alice.identity!r} does not accept messages from {bob.identity!r}"
    )
    assert mine.reason is EndReason.TIMEOUT

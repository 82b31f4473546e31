"""Observers: every verified message with its signing device, own-device copies too;
the app's handlers never see those copies. An observer before the record sees a message
again after a stop while it ran, and never once the record is written."""

from __future__ import annotations

import asyncio

import pytest

from parley.client import Client, add_device
from parley.client.handlers import Observed

from .helpers import DropConfirms, ForgetResume, Received, World, eventually


class Seen:
    def __init__(self) -> None:
        self.items: list[Observed] = []

    def __call__(self, observed: Observed) -> None:
        self.items.append(observed)

    def summary(self) -> list[tuple[str, str, str, bool]]:
        return [(o.message["call_id"], o.issuer, o.device, o.own_copy) for o in self.items]


async def test_observers_see_own_device_copies_and_handlers_do_not(world: World) -> None:
    alice, bob = await world.identity("alice"), await world.identity("bob")
    alice2 = await add_device(alice, connector=world.link)
    await world.permit(alice, bob)
    await world.permit(bob, alice)
    seen, handled = Seen(), Received()
    watcher = world.client(alice2)
    watcher.observe(seen)
    watcher.voice().on_stop(handled)
    await watcher.connect()

    # alice's first device calls bob: alice2 gets the copy, signed by that device.
    await (await world.connected(alice)).voice().stop(bob.identity, "cid", "copy")
    await (await world.connected(bob)).voice().stop(alice.identity, "cid", "for-alice")
    await eventually(lambda: len(seen.items) == 2)
    assert seen.summary() == [
        ("copy", alice.identity, alice.device, True),
        ("for-alice", bob.identity, bob.device, False),
    ]
    await handled.next()
    assert handled.call_ids == ["for-alice"]


async def test_an_observer_without_a_handler_still_sees_and_can_stop(world: World) -> None:
    alice, bob = await world.identity("alice"), await world.identity("bob")
    await world.permit(bob, alice)
    first, second = Seen(), Seen()
    receiver = world.client(bob)
    stop_first = receiver.observe(first)
    receiver.observe(second)
    await receiver.connect()
    sender = (await world.connected(alice)).voice()

    await sender.busy(bob.identity, "cid", "k1")  # no handler subscribed for busy
    await eventually(lambda: len(first.items) == 1 == len(second.items))
    stop_first()
    await sender.busy(bob.identity, "cid", "k2")
    await eventually(lambda: len(second.items) == 2)
    assert [o.message["call_id"] for o in first.items] == ["k1"]
    assert second.summary()[1] == ("k2", alice.identity, alice.device, False)


class Held:
    """An observer that runs before the record and, for the first message, does not
    return: it is still running when the client stops (a crash between it and the
    record). ``reply``: first send a message back, which writes the Olm state that
    opening the held message spent (so a restart must open it from the kept payload)."""

    def __init__(self, client: Client, reply_to: str | None = None) -> None:
        self.items: list[Observed] = []
        self.running = asyncio.Event()
        self._client = client
        self._reply_to = reply_to

    async def __call__(self, observed: Observed) -> None:
        self.items.append(observed)
        if len(self.items) > 1:
            return
        if self._reply_to is not None:
            await self._client.voice().stop(self._reply_to, "cid", "reply")
        self.running.set()
        await asyncio.Event().wait()  # until the client stops: cancelled


@pytest.mark.parametrize("reply", [False, True], ids=["keys-unspent", "keys-spent"])
async def test_an_observer_before_the_record_sees_the_message_again_after_a_stop_mid_way(
    world: World, reply: bool
) -> None:
    alice, bob = await world.identity("alice"), await world.identity("bob")
    await world.permit(bob, alice)
    await world.permit(alice, bob)
    state = world.tmp_path / "bob.state.db"
    bob_client = world.client(bob, state_path=state)
    held = Held(bob_client, alice.identity if reply else None)
    handled, after = Received(), Seen()
    bob_client.observe(held, before_record=True)
    bob_client.observe(after)
    bob_client.voice().on_stop(handled)
    await bob_client.connect()
    alice_voice = (await world.connected(alice)).voice()
    await alice_voice.stop(bob.identity, "cid", "call-1")
    await held.running.wait()
    await bob_client.close()  # the observer ran, the record was never written
    assert (handled.call_ids, after.items) == ([], [])

    again, handled_again = Seen(), Received()
    restarted = world.client(bob, state_path=state)
    restarted.observe(again, before_record=True)
    restarted.voice().on_stop(handled_again)
    await restarted.connect()
    await handled_again.next()
    assert [o.message["call_id"] for o in again.items] == ["call-1"]
    assert handled_again.call_ids == ["call-1"]
    assert restarted.rejected == {}


async def test_an_observer_before_the_record_never_sees_a_recorded_message_again(
    world: World,
) -> None:
    alice, bob = await world.identity("alice"), await world.identity("bob")
    await world.permit(bob, alice)
    state = world.tmp_path / "bob.state.db"
    # Confirms never reach the relay, which redelivers from the start: only the record
    # in the state file keeps the message from the observer.
    first = Seen()
    bob_client = world.client(bob, state_path=state, link=world.link.with_client_side(DropConfirms))
    bob_client.observe(first, before_record=True)
    await bob_client.connect()
    alice_voice = (await world.connected(alice)).voice()
    await alice_voice.stop(bob.identity, "cid", "call-1")
    await eventually(lambda: first.items)
    await bob_client.close()

    again = Seen()
    restarted = world.client(bob, state_path=state, link=world.link.with_client_side(ForgetResume))
    restarted.observe(again, before_record=True)
    await restarted.connect()
    await alice_voice.stop(bob.identity, "cid", "sentinel")
    await eventually(lambda: again.items)
    assert [o.message["call_id"] for o in again.items] == ["sentinel"]

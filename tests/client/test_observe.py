"""Observers: every verified message with its signing device, own-device copies too;
the app's handlers never see those copies. An observer before the record sees a message
again after a stop while it ran, and never once the record is written. One that saves
what it takes in saves a burst at once, and nothing is recorded before it has."""

from __future__ import annotations

import asyncio

import pytest

from parley.client import Client, add_device
from parley.client.handlers import Observed
from parley.errors import ConfigurationError
from parley.protocol.messages import Message

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


class Saving:
    """An observer before the record that saves what it takes in (``until_saved``):
    each save takes the call ids observed since the one before. With ``hold`` the first
    save waits until ``release`` is set."""

    def __init__(self, *, hold: bool = False) -> None:
        self.items: list[str] = []
        self.saves: list[list[str]] = []
        self.saving = asyncio.Event()
        self.release = asyncio.Event()
        if not hold:
            self.release.set()
        self._taken: list[str] = []

    def __call__(self, observed: Observed) -> None:
        self.items.append(observed.message["call_id"])
        self._taken.append(observed.message["call_id"])

    async def save(self) -> None:
        self.saving.set()
        await self.release.wait()
        taken, self._taken = self._taken, []
        self.saves.append(taken)

    def saved(self) -> list[str]:
        return [call_id for save in self.saves for call_id in save]


class AfterSaves:
    """A handler (it runs after the record) noting what had been saved by then."""

    def __init__(self, saving: Saving) -> None:
        self.handled: list[tuple[str, bool]] = []
        self._saving = saving

    def __call__(self, issuer: str, message: Message) -> None:
        self.handled.append((message["call_id"], message["call_id"] in self._saving.saved()))


async def test_messages_are_recorded_only_once_their_observer_saved_them_a_burst_at_once(
    world: World,
) -> None:
    alice, bob = await world.identity("alice"), await world.identity("bob")
    await world.permit(bob, alice)
    saving = Saving(hold=True)
    receiver = world.client(bob)
    receiver.observe(saving, before_record=True, until_saved=saving.save)
    handled = AfterSaves(saving)
    receiver.voice().on_stop(handled)
    await receiver.connect()
    sender = (await world.connected(alice)).voice()

    await sender.stop(bob.identity, "cid", "k1")
    await saving.saving.wait()  # k1 taken in; its save waits, so nothing is recorded
    for call_id in ("k2", "k3", "k4"):
        await sender.stop(bob.identity, "cid", call_id)
    # Delivered meanwhile (no signal for that: the inbox waits on the save), so they
    # are queued together behind it.
    await asyncio.sleep(0.2)
    assert (saving.items, handled.handled) == (["k1"], [])
    saving.release.set()
    await eventually(lambda: len(handled.handled) == 4)
    # Every message was saved before its record (the handler runs after the record),
    # and the three that came together were saved at once.
    assert saving.saves == [["k1"], ["k2", "k3", "k4"]]
    assert handled.handled == [(call_id, True) for call_id in ("k1", "k2", "k3", "k4")]


async def test_a_stop_while_the_observer_saves_leaves_the_messages_unrecorded(
    world: World,
) -> None:
    alice, bob = await world.identity("alice"), await world.identity("bob")
    await world.permit(bob, alice)
    state = world.tmp_path / "bob.state.db"
    saving = Saving(hold=True)  # never released: the save is cut short by the stop
    bob_client = world.client(bob, state_path=state)
    bob_client.observe(saving, before_record=True, until_saved=saving.save)
    handled = Received()
    bob_client.voice().on_stop(handled)
    await bob_client.connect()
    await (await world.connected(alice)).voice().stop(bob.identity, "cid", "k1")
    await saving.saving.wait()
    await bob_client.close()
    assert (saving.saves, handled.call_ids) == ([], [])

    again = Saving()
    restarted = world.client(bob, state_path=state)
    restarted.observe(again, before_record=True, until_saved=again.save)
    handled_again = Received()
    restarted.voice().on_stop(handled_again)
    await restarted.connect()
    await handled_again.next()
    assert (again.saves, handled_again.call_ids) == ([["k1"]], ["k1"])


async def test_until_saved_is_only_for_an_observer_before_the_record(world: World) -> None:
    bob = await world.identity("bob")
    saving = Saving()
    with pytest.raises(ConfigurationError, match="before the record"):
        world.client(bob).observe(saving, until_saved=saving.save)

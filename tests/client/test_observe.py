"""Observers: every verified message with its signing device, own-device copies too;
the app's handlers never see those copies."""

from __future__ import annotations

from parley.client import add_device
from parley.client.handlers import Observed

from .helpers import Received, World, eventually


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

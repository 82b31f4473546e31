"""Presence: a client follows which devices of a permitting identity are online."""

from __future__ import annotations

import asyncio

import pytest

from parley.errors import NotPermitted

from .helpers import WAIT, RelayLink, World


class Changes:
    def __init__(self) -> None:
        self.items: asyncio.Queue[tuple[str, frozenset[str]]] = asyncio.Queue()

    def __call__(self, identity: str, devices: frozenset[str]) -> None:
        self.items.put_nowait((identity, devices))

    async def next(self) -> tuple[str, frozenset[str]]:
        return await asyncio.wait_for(self.items.get(), WAIT)


async def test_watch_follows_devices_and_survives_a_reconnect(world: World) -> None:
    alice, bob = await world.identity("alice"), await world.identity("bob")
    bob_link = RelayLink(world.relay)
    bob_client = world.client(bob, link=bob_link)
    changes = Changes()
    bob_client.presence.on_change(changes)
    await bob_client.connect()
    with pytest.raises(NotPermitted):
        await bob_client.presence.watch(alice.identity)

    await world.permit(alice, bob)
    await bob_client.presence.watch(alice.identity)
    assert await changes.next() == (alice.identity, frozenset())
    alice_client = await world.connected(alice)
    assert await changes.next() == (alice.identity, frozenset({alice.device}))
    assert bob_client.presence.devices(alice.identity) == {alice.device}

    # Bob's own connection drops; after reconnecting his watch is renewed.
    await bob_link.drop()
    assert await changes.next() == (alice.identity, frozenset({alice.device}))
    await alice_client.close()
    assert await changes.next() == (alice.identity, frozenset())

    await bob_client.presence.unwatch(alice.identity)
    assert bob_client.presence.devices(alice.identity) == frozenset()

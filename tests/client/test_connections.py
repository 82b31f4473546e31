"""Permissions: permit, list, revoke."""

from __future__ import annotations

import pytest

from parley.errors import NotPermitted

from .helpers import Received, World


async def test_permit_list_revoke(world: World) -> None:
    alice, bob, carol = [await world.identity(n) for n in ("alice", "bob", "carol")]
    bob_client = await world.connected(bob)
    await bob_client.connections.permit(alice.identity)
    await bob_client.connections.permit(carol.identity)
    assert sorted(await bob_client.connections.list()) == sorted([alice.identity, carol.identity])
    await bob_client.connections.revoke(carol.identity)
    assert await bob_client.connections.list() == [alice.identity]


async def test_revoking_a_permission_refuses_later_messages(world: World) -> None:
    alice, bob = await world.identity("alice"), await world.identity("bob")
    received = Received()
    bob_client = world.client(bob)
    bob_client.voice().on_stop(received)
    await bob_client.connect()
    await bob_client.connections.permit(alice.identity)
    alice_voice = (await world.connected(alice)).voice()
    await alice_voice.stop(bob.identity, "cid", "call-1")
    await received.next()
    await bob_client.connections.revoke(alice.identity)
    with pytest.raises(NotPermitted):
        await alice_voice.stop(bob.identity, "cid", "call-2")

"""Permissions: permit, list, revoke."""

from __future__ import annotations

from pathlib import Path

import pytest

from parley.errors import NotPermitted, RateLimited
from parley.relay import Relay, RelayConfig, SqliteStore

from .helpers import Received, RelayLink, World


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


async def test_a_request_over_the_relay_s_budget_raises_rate_limited_with_retry_after(
    tmp_path: Path,
) -> None:
    relay = Relay(SqliteStore(tmp_path / "relay.db"), RelayConfig(device_rate=2, device_burst=20))
    await relay.start()
    world = World(relay, RelayLink(relay), tmp_path)
    try:
        client = await world.connected(await world.identity("alice"))
        with pytest.raises(RateLimited) as refused:
            for _ in range(40):  # more than the burst: one of these is refused
                await client.connections.list()
        assert refused.value.retry_after is not None
        assert 0 < refused.value.retry_after <= 0.5
    finally:
        await world.aclose()
        await relay.close()

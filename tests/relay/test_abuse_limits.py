"""The relay's limits on one node: per device, per identity, per network address."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from parley.protocol import frames
from parley.protocol.frames import ErrorCode
from parley.protocol.keychain import KeyOp
from parley.relay import Relay, RelayConfig, SqliteStore

from .helpers import FakeClock, Identity, Peer, enroll, online

CLOSE_REPLACED = 4009
CLOSE_TRY_AGAIN_LATER = 1013


def limited(relay: Relay, limit: str) -> float:
    value = relay.metrics.registry.get_sample_value("parley_relay_limited_total", {"limit": limit})
    return value or 0.0


@pytest.fixture
async def make_relay(tmp_path: Path, clock: FakeClock) -> AsyncIterator[type[Relay]]:
    relays: list[Relay] = []

    class Started(Relay):
        def __init__(self, config: RelayConfig) -> None:
            super().__init__(SqliteStore(tmp_path / f"r{len(relays)}.db"), config, clock=clock)
            relays.append(self)

    yield Started
    for relay in relays:
        await relay.close()


async def started(make_relay: type[Relay], **limits: float) -> Relay:
    relay = make_relay(RelayConfig(**limits))  # type: ignore[arg-type]
    await relay.start()
    return relay


async def test_a_device_s_connections_share_one_budget(
    make_relay: type[Relay], clock: FakeClock
) -> None:
    relay = await started(make_relay, device_rate=1, device_burst=2)
    alice = Identity.create("alice")
    await enroll(relay, alice)
    first, second = await online(relay, alice), await online(relay, alice)
    assert isinstance(await first.request(frames.ListConnections), frames.Connections)
    assert isinstance(await second.request(frames.ListConnections), frames.Connections)
    refused = await first.request(frames.GetKeys, identity="alice")
    assert isinstance(refused, frames.Error) and refused.code is ErrorCode.RATE_LIMITED
    assert refused.retry_after == pytest.approx(1.0)
    assert limited(relay, "device") == 1
    clock.advance(1)
    assert isinstance(await second.request(frames.GetKeys, identity="alice"), frames.KeyChainFrame)
    await first.close()
    await second.close()


async def test_an_identity_s_devices_share_one_budget(
    make_relay: type[Relay], clock: FakeClock
) -> None:
    relay = await started(make_relay, identity_rate=2, identity_burst=2)
    alice = Identity.create("alice")
    await enroll(relay, alice)
    d1 = await online(relay, alice)
    entry = alice.next_entry(KeyOp.ADD, "d2", signer="d1")
    assert isinstance(await d1.request(frames.AppendKey, entry=entry), frames.Done)
    alice.chain.append(entry)
    d2 = await online(relay, alice, "d2")
    assert isinstance(await d2.request(frames.ListConnections), frames.Connections)
    refused = await d2.request(frames.ListConnections)
    assert isinstance(refused, frames.Error) and refused.code is ErrorCode.RATE_LIMITED
    assert refused.retry_after == pytest.approx(0.5)
    assert limited(relay, "identity") == 1
    # Another identity is not held back by alice's budget.
    bob = Identity.create("bob")
    await enroll(relay, bob)
    other = await online(relay, bob)
    assert isinstance(await other.request(frames.ListConnections), frames.Connections)
    for peer in (d1, d2, other):
        await peer.close()


async def test_a_new_connection_past_the_cap_closes_the_device_s_oldest(
    make_relay: type[Relay], clock: FakeClock
) -> None:
    relay = await started(make_relay, connections_per_device=2)
    alice, bob = Identity.create("alice"), Identity.create("bob")
    await enroll(relay, alice)
    await enroll(relay, bob)
    permit = await online(relay, alice)
    assert isinstance(await permit.request(frames.Permit, identity="bob"), frames.Done)
    await permit.close()
    watcher = await online(relay, bob)
    oldest = await online(relay, alice)
    clock.advance(1)
    middle = await online(relay, alice)
    assert isinstance(await watcher.request(frames.Watch, identities=["alice"]), frames.Done)
    assert await watcher.expect(frames.Presence) == frames.Presence(
        identity="alice", devices=["d1"]
    )
    clock.advance(1)
    newest = await online(relay, alice)
    assert await oldest.closed() == CLOSE_REPLACED
    assert limited(relay, "connections") == 1
    assert relay.connection_count == 3  # bob, and alice's two newest
    for peer in (middle, newest):
        assert isinstance(await peer.request(frames.ListConnections), frames.Connections)
    # The device never looked gone: the next presence bob hears is alice leaving.
    await middle.close()
    await newest.close()
    assert await watcher.expect(frames.Presence) == frames.Presence(identity="alice", devices=[])
    await watcher.close()


async def test_unauthenticated_connections_per_address_are_capped(
    make_relay: type[Relay],
) -> None:
    relay = await started(make_relay, preauth_per_source=2)
    alice = Identity.create("alice")
    await enroll(relay, alice)
    waiting = [Peer(relay, "w1"), Peer(relay, "w2")]
    for peer in waiting:
        await peer.start()
    turned_away = Peer(relay, "w3")
    refusal = await turned_away.recv()
    assert isinstance(refusal, frames.Error) and refusal.code is ErrorCode.RATE_LIMITED
    assert refusal.retry_after == RelayConfig().auth_timeout
    assert await turned_away.closed() == CLOSE_TRY_AGAIN_LATER
    assert limited(relay, "preauth") == 1
    # Authenticating frees a place; so does closing.
    assert isinstance(await waiting[0].authenticate(alice), frames.Welcome)
    await waiting[1].close()
    again = [Peer(relay, "w4"), Peer(relay, "w5")]
    for peer in again:
        assert isinstance(await peer.start(), frames.Challenge)
        await peer.close()
    await waiting[0].close()


async def test_registrations_per_address_are_rate_limited(
    make_relay: type[Relay], clock: FakeClock
) -> None:
    relay = await started(make_relay, registration_rate=0.5, registration_burst=2)
    peer = Peer(relay)
    await peer.start()
    for name in ("a1", "a2"):
        assert isinstance(await peer.register(Identity.create(name)), frames.Registered)
    refused = await peer.register(Identity.create("a3"))
    assert isinstance(refused, frames.Error) and refused.code is ErrorCode.RATE_LIMITED
    assert refused.retry_after == pytest.approx(2.0)
    assert limited(relay, "registration") == 1
    clock.advance(2)
    assert isinstance(await peer.register(Identity.create("a3")), frames.Registered)
    await peer.close()


async def test_a_name_past_the_bound_is_refused_and_nothing_registered(
    make_relay: type[Relay],
) -> None:
    relay = await started(make_relay, max_name=16)
    peer = Peer(relay)
    await peer.start()
    alice = Identity.create("alice")
    refused = await peer.register(alice, name="x" * 17)
    assert isinstance(refused, frames.Error) and refused.code is ErrorCode.MALFORMED
    unknown = Peer(relay)
    failed = await unknown.authenticate(alice)
    assert isinstance(failed, frames.Error) and failed.code is ErrorCode.AUTH_FAILED
    assert isinstance(await peer.register(alice, name="x" * 16), frames.Registered)
    await peer.close()

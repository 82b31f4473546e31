"""What a node does on hearing the others, seen by the devices connected to it: two
relay nodes on one store and a MemoryHub bus. Keys running low on a claim made on the
other node, a device added or revoked there (with its events lost, and after a bus
gap), a device connected to both, presence republished after a gap, and permits
withdrawn there. Several identities are connected on each side of the one changed (in
sort order), and those must not be affected."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import cast

import pytest

from parley.protocol import frames
from parley.protocol.frames import ONE_TIME_KEYS_LOW, ErrorCode
from parley.protocol.keychain import KeyOp
from parley.relay import Relay, RelayConfig, SqliteStore
from parley.relay.bus import MemoryHub
from parley.relay.bus.events import BusEvent, PresenceChanged, Revoked, SessionOpened
from parley.relay.session import CLOSE_REPLACED, CLOSE_REVOKED
from parley.relay.store import RelayStore

from .helpers import WAIT, FakeClock, Identity, Peer, enroll, online
from .test_cluster import SharedStore

CONFIG = RelayConfig(sweep_interval=3600, ping_interval=None, connections_per_device=32)


class Nodes:
    """Two relays, n1 and n2, sharing a store and a MemoryHub; ``drop`` loses the bus
    events it is true for (from the node named) until it is set back to None."""

    def __init__(self, tmp_path: Path, clock: FakeClock) -> None:
        self.hub = MemoryHub()
        store = cast(RelayStore, SharedStore(SqliteStore(tmp_path / "relay.db")))
        self.n1 = Relay(store, CONFIG, clock=clock, bus=self.hub.bus("n1"))
        self.n2 = Relay(store, CONFIG, clock=clock, bus=self.hub.bus("n2"))
        self.drop: Callable[[str, BusEvent], bool] | None = None
        deliver = self.hub._deliver

        def filtered(sender: str, event: BusEvent) -> None:
            if self.drop is None or not self.drop(sender, event):
                deliver(sender, event)

        self.hub._deliver = filtered  # type: ignore[method-assign]

    def gap(self, node: str) -> None:
        """``node``'s bus says it may have lost events."""
        self.hub._buses[node].gap()


@pytest.fixture
async def nodes(tmp_path: Path, clock: FakeClock) -> AsyncIterator[Nodes]:
    cluster = Nodes(tmp_path, clock)
    await cluster.n1.start()
    await cluster.n2.start()
    yield cluster
    await cluster.n2.close()
    await cluster.n1.close()


async def everyone(relay: Relay, *names: str) -> dict[str, Identity]:
    """Registered identities, each permitting all the others."""
    people = {name: Identity.create(name) for name in names}
    for ident in people.values():
        await enroll(relay, ident)
    for name, ident in people.items():
        peer = await online(relay, ident)
        for other in names:
            if other != name:
                assert isinstance(await peer.request(frames.Permit, identity=other), frames.Done)
        await peer.close()
    return people


async def add_device(peer: Peer, ident: Identity, device: str) -> None:
    """Add ``device`` to ``ident``'s chain over ``peer`` (a connection of its d1)."""
    entry = ident.next_entry(KeyOp.ADD, device, signer="d1")
    assert isinstance(await peer.request(frames.AppendKey, entry=entry), frames.Done)
    ident.chain.append(entry)


async def revoke_device(peer: Peer, ident: Identity, device: str) -> None:
    entry = ident.next_entry(KeyOp.REVOKE, device, signer="d1")
    assert isinstance(await peer.request(frames.AppendKey, entry=entry), frames.Done)
    ident.chain.append(entry)


async def until_connections(peer: Peer) -> list[frames.RelayFrame]:
    """Ask for a ListConnections and return what came before its reply: a sentinel, as
    everything queued for ``peer`` before the request is written before the reply."""
    ref = next(peer.refs)
    await peer.send(frames.ListConnections(ref=ref))
    before: list[frames.RelayFrame] = []
    while True:
        frame = await peer.recv()
        if isinstance(frame, frames.Connections) and frame.ref == ref:
            return before
        before.append(frame)


async def still_open(peer: Peer) -> None:
    """``peer``'s connection is served, and was sent nothing in the meantime."""
    assert await until_connections(peer) == []


async def eventually(check: Callable[[], Awaitable[bool]]) -> None:
    """Until ``check`` holds (another node's background work is done), at most WAIT."""
    async with asyncio.timeout(WAIT):
        while True:
            if await check():
                return
            await asyncio.sleep(0.01)  # a poll interval: what is awaited is positive


async def publish_keys(peer: Peer, ident: Identity, device: str, count: int) -> None:
    identity_key = secrets.token_bytes(32)
    message = frames.identity_key_message(ident.id, device, identity_key)
    reply = await peer.request(
        frames.PublishKeys,
        identity_key=identity_key,
        signature=ident.keys[device].sign(message),
        one_time_keys=[secrets.token_bytes(32) for _ in range(count)],
        fallback_key=secrets.token_bytes(32),
    )
    assert isinstance(reply, frames.KeyCount) and reply.one_time_keys == count, reply


async def presence_until(peer: Peer, identity: str, devices: list[str]) -> None:
    """Read ``peer``'s Presence frames until one says ``identity`` has ``devices``."""
    async with asyncio.timeout(WAIT):
        while True:
            frame = await peer.expect(frames.Presence)
            if frame == frames.Presence(identity=identity, devices=devices):
                return


def presences(told: list[frames.Presence]) -> set[tuple[str, tuple[str, ...]]]:
    return {(p.identity, tuple(p.devices)) for p in told}


# -- keys low -------------------------------------------------------------------------


async def test_a_claim_on_one_node_tells_the_claimed_devices_on_both_that_they_run_low(
    nodes: Nodes,
) -> None:
    people = await everyone(nodes.n1, "alice", "bob", "carol")
    alice = people["alice"]
    phone = await online(nodes.n1, alice)
    await add_device(phone, alice, "d2")
    laptop = await online(nodes.n2, alice, "d2")
    await publish_keys(phone, alice, "d1", ONE_TIME_KEYS_LOW)
    await publish_keys(laptop, alice, "d2", ONE_TIME_KEYS_LOW)
    bystander = await online(nodes.n2, people["carol"])
    claimer = await online(nodes.n1, people["bob"])
    reply = await claimer.request(frames.ClaimKeys, identity="alice", sessions={})
    assert isinstance(reply, frames.ClaimedKeys)
    assert sorted(d.device for d in reply.devices) == ["d1", "d2"]
    low = frames.KeyCount(one_time_keys=ONE_TIME_KEYS_LOW - 1)
    assert await phone.recv() == low  # on the claimer's node
    assert await laptop.recv() == low  # on the other: told over the bus
    await still_open(bystander)
    await still_open(claimer)
    for peer in (phone, laptop, claimer, bystander):
        await peer.close()


# -- a chain changed on the other node ------------------------------------------------


async def test_a_device_added_on_one_node_is_known_where_its_chain_was_cached(
    nodes: Nodes,
) -> None:
    people = await everyone(nodes.n1, "alice", "bob")
    alice = people["alice"]
    phone = await online(nodes.n1, alice)
    bob_phone = await online(nodes.n2, people["bob"])

    async def entries() -> int:
        reply = await bob_phone.request(frames.GetKeys, identity="alice")
        assert isinstance(reply, frames.KeyChainFrame), reply
        return len(reply.entries)

    assert await entries() == 1  # n2 has alice's chain cached now
    await add_device(phone, alice, "d2")

    async def added() -> bool:
        return await entries() == 2

    await eventually(added)
    laptop = await online(nodes.n2, alice, "d2")  # n2 knows the new device
    for peer in (phone, bob_phone, laptop):
        await peer.close()


@pytest.mark.parametrize("theirs", ["d2", "d3"])
async def test_a_revocation_whose_revoked_event_was_lost_closes_only_that_device(
    nodes: Nodes, theirs: str
) -> None:
    """n2 hears only that bob's chain changed: reading it, it closes bob's revoked d2,
    and not the devices of alice or carol (sorting before and after bob) connected
    there, which bob's chain does not list either: named as bob's (d2), or not (d3,
    so that nothing but bob's own d2 can make n2 close it)."""
    people = await everyone(nodes.n1, "alice", "bob", "carol")
    for name in ("alice", "carol"):
        phone = await online(nodes.n1, people[name])
        await add_device(phone, people[name], theirs)
        await phone.close()
    bob = people["bob"]
    bob_phone = await online(nodes.n1, bob)
    await add_device(bob_phone, bob, "d2")
    laptops = {
        name: await online(nodes.n2, ident, "d2" if name == "bob" else theirs)
        for name, ident in people.items()
    }
    nodes.drop = lambda _sender, event: isinstance(event, Revoked)
    await revoke_device(bob_phone, bob, "d2")
    revoked = await laptops["bob"].recv()
    assert isinstance(revoked, frames.Error) and revoked.code is ErrorCode.DEVICE_REVOKED
    assert await laptops["bob"].closed() == CLOSE_REVOKED
    for name in ("alice", "carol"):
        await still_open(laptops[name])
        await laptops[name].close()
    await bob_phone.close()


@pytest.mark.parametrize("theirs", ["d2", "d3"])
async def test_after_a_gap_a_node_rereads_the_chains_it_caches_and_closes_revoked_devices(
    nodes: Nodes, theirs: str
) -> None:
    """As above, but n2 heard nothing: it reads bob's chain again after a gap. (n2
    first read bob's chain as his d2 connected there.)"""
    people = await everyone(nodes.n1, "alice", "bob", "carol")
    phones: dict[str, Peer] = {}
    devices = {name: "d2" if name == "bob" else theirs for name in people}
    for name, ident in people.items():
        phones[name] = await online(nodes.n1, ident)
        await add_device(phones[name], ident, devices[name])
    laptops = {name: await online(nodes.n2, ident, devices[name]) for name, ident in people.items()}
    nodes.drop = lambda _sender, _event: True  # n2 hears nothing of the revocation
    await revoke_device(phones["bob"], people["bob"], "d2")
    nodes.drop = None
    await still_open(laptops["bob"])  # n2 does not know yet
    nodes.gap("n2")
    revoked = await laptops["bob"].recv()
    assert isinstance(revoked, frames.Error) and revoked.code is ErrorCode.DEVICE_REVOKED
    assert await laptops["bob"].closed() == CLOSE_REVOKED
    for name in ("alice", "carol"):
        await still_open(laptops[name])
        await laptops[name].close()
    for phone in phones.values():
        await phone.close()


# -- a device connected to both nodes -------------------------------------------------


async def test_a_device_connecting_to_n1_closes_its_older_connection_on_n2(
    nodes: Nodes,
) -> None:
    people = await everyone(nodes.n1, "alice", "bob")
    first = await online(nodes.n2, people["alice"])
    bob_phone = await online(nodes.n2, people["bob"])
    second = await online(nodes.n1, people["alice"])
    assert await first.closed() == CLOSE_REPLACED
    assert nodes.n2.connection_count == 1 and nodes.n1.connection_count == 1
    await still_open(bob_phone)
    for peer in (second, bob_phone):
        await peer.close()


async def test_a_connection_elsewhere_closes_every_older_connection_here_and_no_newer_one(
    nodes: Nodes, clock: FakeClock
) -> None:
    """alice's d1 has several connections on n1, some older and some newer than its
    connection on n2 (whose announcement n1 hears only after a gap): all the older ones
    go, whatever order n1 finds them in, and none of the newer ones."""
    alice = (await everyone(nodes.n1, "alice", "bob"))["alice"]
    nodes.drop = lambda _sender, event: isinstance(event, SessionOpened)
    older = [await online(nodes.n1, alice) for _ in range(8)]
    clock.advance(1)
    elsewhere = await online(nodes.n2, alice)
    clock.advance(1)
    newer = [await online(nodes.n1, alice) for _ in range(8)]
    nodes.drop = None
    assert nodes.n1.connection_count == 16 and nodes.n2.connection_count == 1
    nodes.gap("n2")  # n2 says again when its connection began
    for peer in older:
        assert await peer.closed() == CLOSE_REPLACED
    for peer in newer:
        await still_open(peer)
    assert nodes.n1.connection_count == 8
    for peer in (*newer, elsewhere):
        await peer.close()


# -- presence after a gap -------------------------------------------------------------


async def test_after_a_gap_a_node_says_again_which_devices_are_connected_to_it(
    nodes: Nodes,
) -> None:
    people = await everyone(nodes.n1, "alice", "bob", "carol")
    watcher = await online(nodes.n1, people["alice"])
    assert isinstance(await watcher.request(frames.Watch, identities=["bob", "carol"]), frames.Done)
    told = [await watcher.expect(frames.Presence) for _ in range(2)]
    assert presences(told) == {("bob", ()), ("carol", ())}
    nodes.drop = lambda _sender, event: isinstance(event, PresenceChanged)
    phones = [await online(nodes.n2, people[name]) for name in ("bob", "carol")]
    nodes.drop = None
    assert await until_connections(watcher) == []  # n1 has not heard of them
    nodes.gap("n2")
    told = [await watcher.expect(frames.Presence) for _ in range(2)]
    assert presences(told) == {("bob", ("d1",)), ("carol", ("d1",))}
    for peer in (watcher, *phones):
        await peer.close()


# -- permits withdrawn on the other node ----------------------------------------------


async def test_a_permit_withdrawn_on_one_node_stops_that_watchers_presence_on_the_other(
    nodes: Nodes,
) -> None:
    """bob (on n1) withdraws the permits of alice and carol, who sort before and after
    him and watch him from n2: they are told no more of his devices; dave, still
    permitted, and bob's own d2 watching bob, are."""
    people = await everyone(nodes.n1, "alice", "bob", "carol", "dave")
    bob = people["bob"]
    bob_phone = await online(nodes.n1, bob)
    await add_device(bob_phone, bob, "d2")
    watchers = {name: await online(nodes.n2, people[name]) for name in ("alice", "carol", "dave")}
    watchers["bob"] = await online(nodes.n2, bob, "d2")
    for peer in watchers.values():
        assert isinstance(await peer.request(frames.Watch, identities=["bob"]), frames.Done)
        await presence_until(peer, "bob", ["d1", "d2"])
    for name in ("alice", "carol"):
        assert isinstance(await bob_phone.request(frames.Unpermit, identity=name), frames.Done)
    d2_only = frames.Presence(identity="bob", devices=["d2"])
    both = frames.Presence(identity="bob", devices=["d1", "d2"])
    seen: dict[str, list[frames.RelayFrame]] = {}

    async def unwatched() -> bool:
        """bob's d1 leaves n1 and comes back; once dave has heard both, so has every
        watcher of bob on n2 (one announcement): alice and carol must not have."""
        nonlocal bob_phone
        await bob_phone.close()
        assert await watchers["dave"].recv() == d2_only
        bob_phone = await online(nodes.n1, bob)
        assert await watchers["dave"].recv() == both
        for name in ("alice", "carol", "bob"):
            seen[name] = await until_connections(watchers[name])
        # Until n2 has read bob's permits again, they may still be told.
        return seen["alice"] == [] and seen["carol"] == []

    await eventually(unwatched)
    assert seen["bob"] == [d2_only, both]
    for peer in (bob_phone, *watchers.values()):
        await peer.close()

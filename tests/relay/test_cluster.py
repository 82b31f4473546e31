"""Two relay nodes on one store and a bus (MemoryHub): what one node does reaches the
devices connected to the other — deliveries, revocation, presence, permissions, a
device moving between nodes — and a node that lost bus events re-reads the store."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import pytest

from parley.errors import StoreUnavailable
from parley.protocol import frames
from parley.protocol.frames import ErrorCode
from parley.protocol.keychain import KeyOp
from parley.relay import Relay, RelayConfig, SqliteStore
from parley.relay.bus import MemoryHub
from parley.relay.bus.events import BusEvent, Rows, SessionOpened
from parley.relay.session import CLOSE_REPLACED, CLOSE_REVOKED
from parley.relay.store import RelayStore

from .helpers import WAIT, FakeClock, Identity, Peer, enroll, online

HOUR = 3600.0


class SharedStore:
    """One store opened once for several relays in one process, as a database server
    is shared by several nodes."""

    def __init__(self, store: SqliteStore) -> None:
        self._store = store
        self._opened = 0

    async def open(self) -> None:
        if self._opened == 0:
            await self._store.open()
        self._opened += 1

    async def close(self) -> None:
        self._opened -= 1
        if self._opened == 0:
            await self._store.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


class Cluster:
    def __init__(self, tmp_path: Path, clock: FakeClock) -> None:
        self.hub = MemoryHub()
        store = cast(RelayStore, SharedStore(SqliteStore(tmp_path / "relay.db")))
        config = RelayConfig(sweep_interval=3600)
        self.n1 = Relay(store, config, clock=clock, bus=self.hub.bus("n1"))
        self.n2 = Relay(store, config, clock=clock, bus=self.hub.bus("n2"))


@pytest.fixture
async def cluster(tmp_path: Path, clock: FakeClock) -> AsyncIterator[Cluster]:
    nodes = Cluster(tmp_path, clock)
    await nodes.n1.start()
    await nodes.n2.start()
    yield nodes
    await nodes.n2.close()
    await nodes.n1.close()


async def people(relay: Relay) -> tuple[Identity, Identity]:
    """alice and bob, each accepting messages from the other."""
    alice, bob = Identity.create("alice"), Identity.create("bob")
    await enroll(relay, alice)
    await enroll(relay, bob)
    for me, other in ((alice, "bob"), (bob, "alice")):
        peer = await online(relay, me)
        assert isinstance(await peer.request(frames.Permit, identity=other), frames.Done)
        await peer.close()
    return alice, bob


async def next_presence(peer: Peer, devices: list[str]) -> None:
    async with asyncio.timeout(WAIT):
        while True:
            frame = await peer.recv()
            if isinstance(frame, frames.Presence) and frame.devices == devices:
                return


async def test_a_message_stored_on_one_node_reaches_a_device_on_the_other(
    cluster: Cluster, clock: FakeClock
) -> None:
    alice, bob = await people(cluster.n1)
    alice_phone = await online(cluster.n2, alice)
    bob_phone = await online(cluster.n1, bob)
    for n in range(3):
        reply = await bob_phone.send_to("alice", b"hi %d" % n, f"e{n}", clock() + HOUR)
        assert isinstance(reply, frames.Ack)
    bodies = [(await alice_phone.expect(frames.Deliver)).envelope.body for _ in range(3)]
    assert bodies == [b"hi 0", b"hi 1", b"hi 2"]
    await alice_phone.close()
    await bob_phone.close()


async def test_a_device_connecting_to_another_node_closes_its_older_connection(
    cluster: Cluster,
) -> None:
    alice, _ = await people(cluster.n1)
    first = await online(cluster.n1, alice)
    second = await online(cluster.n2, alice)
    assert await first.closed() == CLOSE_REPLACED
    assert cluster.n1.connection_count == 0 and cluster.n2.connection_count == 1
    await second.close()


async def test_a_revocation_on_one_node_closes_the_device_on_the_other(
    cluster: Cluster,
) -> None:
    alice, _ = await people(cluster.n1)
    phone = await online(cluster.n1, alice)
    add = alice.next_entry(KeyOp.ADD, "d2", signer="d1")
    assert isinstance(await phone.request(frames.AppendKey, entry=add), frames.Done)
    alice.chain.append(add)
    laptop = await online(cluster.n2, alice, "d2")
    revoke = alice.next_entry(KeyOp.REVOKE, "d2", signer="d1")
    assert isinstance(await phone.request(frames.AppendKey, entry=revoke), frames.Done)
    assert await laptop.closed() == CLOSE_REVOKED
    await phone.close()


async def test_presence_spans_the_nodes(cluster: Cluster) -> None:
    alice, bob = await people(cluster.n1)
    watcher = await online(cluster.n1, alice)
    assert isinstance(await watcher.request(frames.Watch, identities=["bob"]), frames.Done)
    await next_presence(watcher, [])
    bob_phone = await online(cluster.n2, bob)
    await next_presence(watcher, ["d1"])
    await bob_phone.close()
    await next_presence(watcher, [])
    await watcher.close()


async def test_a_permit_given_on_one_node_holds_on_the_other(
    cluster: Cluster, clock: FakeClock
) -> None:
    alice, _ = await people(cluster.n1)
    carol = Identity.create("carol")
    await enroll(cluster.n1, carol)
    carol_phone = await online(cluster.n2, carol)
    refused = await carol_phone.send_to("alice", b"x", "c1", clock() + HOUR)
    assert isinstance(refused, frames.Error) and refused.code is ErrorCode.NOT_PERMITTED
    alice_phone = await online(cluster.n1, alice)
    assert isinstance(await alice_phone.request(frames.Permit, identity="carol"), frames.Done)
    for _ in range(500):  # until n2 has heard of the permit (milliseconds)
        reply = await carol_phone.send_to("alice", b"x", "c1", clock() + HOUR)
        if isinstance(reply, frames.Ack):
            break
        await asyncio.sleep(0.01)
    else:
        raise AssertionError("n2 never heard of the permit")
    assert (await alice_phone.expect(frames.Deliver)).envelope.sender == "carol"
    await alice_phone.close()
    await carol_phone.close()


async def test_a_node_that_lost_bus_events_reads_the_store_again(
    cluster: Cluster, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    alice, bob = await people(cluster.n1)
    alice_phone = await online(cluster.n2, alice)
    bob_phone = await online(cluster.n1, bob)
    deliver = cluster.hub._deliver

    def lose_rows(sender: str, event: BusEvent) -> None:
        if not isinstance(event, Rows):
            deliver(sender, event)

    monkeypatch.setattr(cluster.hub, "_deliver", lose_rows)
    assert isinstance(await bob_phone.send_to("alice", b"lost", "e1", clock() + HOUR), frames.Ack)
    monkeypatch.setattr(cluster.hub, "_deliver", deliver)
    cluster.hub._buses["n2"].gap()  # the bus says it may have lost events
    assert (await alice_phone.expect(frames.Deliver)).envelope.body == b"lost"
    await alice_phone.close()
    await bob_phone.close()


async def test_store_operations_and_bus_events_are_measured(
    cluster: Cluster, clock: FakeClock
) -> None:
    alice, bob = await people(cluster.n1)
    alice_phone = await online(cluster.n2, alice)
    bob_phone = await online(cluster.n1, bob)
    assert isinstance(await bob_phone.send_to("alice", b"m", "e1", clock() + HOUR), frames.Ack)
    await alice_phone.expect(frames.Deliver)
    n1, n2 = cluster.n1.metrics.registry, cluster.n2.metrics.registry
    stored = n1.get_sample_value(
        "parley_relay_store_seconds_count", {"backend": "sqlite", "operation": "store_envelope"}
    )
    assert stored == 1
    read = n2.get_sample_value(
        "parley_relay_store_seconds_count", {"backend": "sqlite", "operation": "read_inbox"}
    )
    assert read is not None and read >= 1  # n2 read the row n1 stored
    sent = {"direction": "published", "kind": "Rows"}
    got = {"direction": "received", "kind": "Rows"}
    assert (n1.get_sample_value("parley_relay_bus_events_total", sent) or 0) >= 1
    assert (n2.get_sample_value("parley_relay_bus_events_total", got) or 0) >= 1
    await alice_phone.close()
    await bob_phone.close()


async def test_a_push_never_overtakes_a_row_another_node_committed_first(
    cluster: Cluster, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """n1 stores a row for alice, but its wake-up has not reached n2 when n2 stores the
    next one and would push it to alice's connection there: alice must still get both,
    in offset order (a push straight through would move her cursor past n1's row)."""
    alice, bob = await people(cluster.n1)
    carol = Identity.create("carol")
    await enroll(cluster.n1, carol)
    alice_phone = await online(cluster.n2, alice)
    assert isinstance(await alice_phone.request(frames.Permit, identity="carol"), frames.Done)
    bob_phone = await online(cluster.n1, bob)
    carol_phone = await online(cluster.n2, carol)
    deliver = cluster.hub._deliver
    held: list[tuple[str, BusEvent]] = []

    def hold_n1(sender: str, event: BusEvent) -> None:
        if sender == "n1":
            held.append((sender, event))
        else:
            deliver(sender, event)

    monkeypatch.setattr(cluster.hub, "_deliver", hold_n1)
    assert isinstance(await bob_phone.send_to("alice", b"first", "e1", clock() + HOUR), frames.Ack)
    assert isinstance(
        await carol_phone.send_to("alice", b"second", "e2", clock() + HOUR), frames.Ack
    )
    first = await alice_phone.expect(frames.Deliver)
    second = await alice_phone.expect(frames.Deliver)
    assert [first.envelope.body, second.envelope.body] == [b"first", b"second"]
    assert first.offset < second.offset
    monkeypatch.setattr(cluster.hub, "_deliver", deliver)
    for sender, event in held:
        deliver(sender, event)
    for peer in (alice_phone, bob_phone, carol_phone):
        await peer.close()


async def test_health_says_whether_store_and_bus_answer(tmp_path: Path) -> None:
    class Unreachable(SharedStore):
        down = False

        async def ping(self) -> None:
            if self.down:
                raise StoreUnavailable("the database went away")
            await self._store.ping()

    store = Unreachable(SqliteStore(tmp_path / "relay.db"))
    relay = Relay(
        cast(RelayStore, store), RelayConfig(sweep_interval=3600), bus=MemoryHub().bus("n1")
    )
    await relay.start()
    try:
        report = await relay.health()
        assert report["status"] == "ok" and report["node"] == "n1"
        assert report["store_reachable"] is True and report["bus_reachable"] is True
        store.down = True
        report = await relay.health()
        assert report["status"] == "degraded" and report["store_reachable"] is False
        assert report["store_error"] == "the database went away"
    finally:
        await relay.close()


async def test_after_a_gap_a_device_on_two_nodes_keeps_only_its_newer_connection(
    cluster: Cluster, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    alice, _ = await people(cluster.n1)
    older = await online(cluster.n1, alice)
    deliver = cluster.hub._deliver

    def lose_sessions(sender: str, event: BusEvent) -> None:
        if not isinstance(event, SessionOpened):
            deliver(sender, event)

    monkeypatch.setattr(cluster.hub, "_deliver", lose_sessions)
    clock.advance(1)
    newer = await online(cluster.n2, alice)  # n1 never hears of it
    monkeypatch.setattr(cluster.hub, "_deliver", deliver)
    assert cluster.n1.connection_count == 1 and cluster.n2.connection_count == 1
    for bus in cluster.hub._buses.values():
        bus.gap()  # both nodes say again when their connections began
    assert await older.closed() == CLOSE_REPLACED
    assert cluster.n2.connection_count == 1
    await newer.close()

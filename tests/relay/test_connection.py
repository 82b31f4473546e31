"""Per-connection writers: a slow or dead client blocks nobody else, and catches up."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from parley.protocol import frames
from parley.relay import Relay, RelayConfig, SqliteStore
from parley.relay.connection import Connection, Context
from parley.relay.directory import Directory
from parley.relay.metrics import RelayMetrics
from parley.transport.memory import MemoryTransport, memory_pair

from .helpers import WAIT, FakeClock, Identity, Peer, enroll, online

HOUR = 3600.0
COUNT = 20


class Gate:
    """The relay's end of a connection whose client stops reading while ``open`` is clear."""

    def __init__(self, inner: MemoryTransport) -> None:
        self.inner = inner
        self.open = asyncio.Event()
        self.open.set()
        self.sent: list[frames.RelayFrame] = []

    @property
    def remote(self) -> str:
        return self.inner.remote

    @property
    def source(self) -> str:
        return self.inner.source

    async def send(self, data: bytes) -> None:
        await self.open.wait()
        self.sent.append(frames.decode_relay_frame(data))
        await self.inner.send(data)

    def write_now(self, data: bytes) -> bool:
        # A closed gate is a full socket: the relay must queue, and wait in send().
        if not self.open.is_set():
            return False
        self.sent.append(frames.decode_relay_frame(data))
        return self.inner.write_now(data)

    async def recv(self) -> bytes:
        return await self.inner.recv()

    async def close(self, code: int = 1000, reason: str = "") -> None:
        await self.inner.close(code, reason)


@pytest.fixture
async def relay(tmp_path: Path, clock: FakeClock) -> AsyncIterator[Relay]:
    config = RelayConfig(send_queue=4, catchup_batch=3, close_timeout=0.1, sweep_interval=3600)
    relay = Relay(SqliteStore(tmp_path / "relay.db"), config, clock=clock)
    await relay.start()
    yield relay
    await relay.close()


async def setup(relay: Relay) -> tuple[Identity, Identity, Identity]:
    """bob may write to alice and to carol."""
    alice, bob, carol = (Identity.create(n) for n in ("alice", "bob", "carol"))
    for ident in (alice, bob, carol):
        await enroll(relay, ident)
    for ident in (alice, carol):
        peer = await online(relay, ident)
        assert isinstance(await peer.request(frames.Permit, identity="bob"), frames.Done)
        await peer.close()
    return alice, bob, carol


async def stalled_online(relay: Relay, ident: Identity) -> tuple[Peer, Gate]:
    """An authenticated connection of ``ident`` whose client has stopped reading (until
    ``gate.open`` is set again)."""
    gates: list[Gate] = []

    def gated(inner: MemoryTransport) -> Gate:
        gates.append(Gate(inner))
        return gates[-1]

    peer = await online(relay, ident, wrap=gated)
    gates[0].open.clear()
    return peer, gates[0]


async def send_many(sender: Peer, recipient: str, clock: FakeClock) -> None:
    """Pipeline COUNT sends, then collect every Ack."""
    for i in range(COUNT):
        await sender.send(
            frames.Send(
                ref=next(sender.refs),
                envelope_id=f"{recipient}-{i}",
                recipient=recipient,
                body=b"m",
                expires_at=clock() + HOUR,
            )
        )
    acks = [await sender.expect(frames.Ack) for _ in range(COUNT)]
    assert sorted(a.envelope_id for a in acks) == sorted(f"{recipient}-{i}" for i in range(COUNT))


async def test_a_stalled_client_catches_up_in_order_without_duplicates(
    relay: Relay, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="parley.relay.connection")
    alice, bob, carol = await setup(relay)
    slow, gate = await stalled_online(relay, alice)
    fast = await online(relay, carol)
    sender = await online(relay, bob)

    # Nobody waits for alice: bob's acks and carol's deliveries all arrive.
    await send_many(sender, "alice", clock)
    await send_many(sender, "carol", clock)
    got = [await fast.expect(frames.Deliver) for _ in range(COUNT)]
    assert [d.envelope.id for d in got] == [f"carol-{i}" for i in range(COUNT)]
    assert "switching to catch-up reads" in caplog.text

    gate.open.set()
    delivered = [await slow.expect(frames.Deliver) for _ in range(COUNT)]
    assert [d.envelope.id for d in delivered] == [f"alice-{i}" for i in range(COUNT)]
    offsets = [d.offset for d in delivered]
    assert offsets == sorted(set(offsets))
    # Nothing else was written to alice (no duplicates still in flight).
    assert isinstance(await slow.request(frames.ListConnections), frames.Connections)
    for peer in (slow, fast, sender):
        await peer.close()


async def test_a_dead_client_does_not_hold_up_shutdown(relay: Relay, clock: FakeClock) -> None:
    alice, bob, _ = await setup(relay)
    dead, _ = await stalled_online(relay, alice)
    sender = await online(relay, bob)
    await send_many(sender, "alice", clock)
    await asyncio.wait_for(relay.close(), WAIT)
    await asyncio.wait_for(dead.task, WAIT)
    await asyncio.wait_for(sender.task, WAIT)


@pytest.fixture
async def impatient(tmp_path: Path, clock: FakeClock) -> AsyncIterator[Relay]:
    """A relay that gives each write 0.2 s."""
    config = RelayConfig(write_timeout=0.2, close_timeout=0.1, sweep_interval=3600)
    relay = Relay(SqliteStore(tmp_path / "relay.db"), config, clock=clock)
    await relay.start()
    yield relay
    await relay.close()


def slow_readers(relay: Relay) -> float:
    found = relay.metrics.registry.get_sample_value(
        "parley_relay_limited_total", {"limit": "slow_reader"}
    )
    return found or 0.0


async def test_a_client_that_stops_reading_is_closed_and_keeps_its_messages(
    impatient: Relay, clock: FakeClock
) -> None:
    alice, bob, _ = await setup(impatient)
    stalled, _ = await stalled_online(impatient, alice)
    sender = await online(impatient, bob)
    await send_many(sender, "alice", clock)
    assert await stalled.closed() == 1008
    assert slow_readers(impatient) == 1
    again = await online(impatient, alice)
    delivered = [await again.expect(frames.Deliver) for _ in range(COUNT)]
    assert [d.envelope.id for d in delivered] == [f"alice-{i}" for i in range(COUNT)]
    await again.close()
    await sender.close()


async def _settled(conn: Connection) -> None:
    """Until the connection's writer task has ended (nothing left to write)."""
    async with asyncio.timeout(WAIT):
        while (writer := conn._writer) is not None:
            await asyncio.wait({writer})


class Counting(Gate):
    """A gate that tells which frames went out at once (``write_now``) and which the
    writer task had to wait to send."""

    def __init__(self, inner: MemoryTransport) -> None:
        super().__init__(inner)
        self.at_once: list[type[frames.RelayFrame]] = []
        self.waited: list[type[frames.RelayFrame]] = []

    async def send(self, data: bytes) -> None:
        await super().send(data)
        self.waited.append(type(self.sent[-1]))

    def write_now(self, data: bytes) -> bool:
        if not super().write_now(data):
            return False
        self.at_once.append(type(self.sent[-1]))
        return True


async def test_a_client_that_reads_gets_replies_and_deliveries_without_a_writer(
    relay: Relay, clock: FakeClock
) -> None:
    alice, bob, _ = await setup(relay)
    ends: list[Counting] = []

    def counted(inner: MemoryTransport) -> Counting:
        ends.append(Counting(inner))
        return ends[-1]

    receiver = await online(relay, alice, wrap=counted)
    sender = await online(relay, bob, wrap=counted)
    receiving, sending = ends
    for conns in relay._sessions.values():  # the catch-up after authenticating is done
        for conn in conns:
            await _settled(conn)
    receiving.at_once.clear()
    sending.at_once.clear()
    for i in range(3):
        assert isinstance(
            await sender.send_to("alice", b"m", f"now-{i}", clock() + HOUR), frames.Ack
        )
    assert [d.envelope.id for d in [await receiver.expect(frames.Deliver) for _ in range(3)]] == [
        "now-0",
        "now-1",
        "now-2",
    ]
    assert sending.at_once == [frames.Ack] * 3 and receiving.at_once == [frames.Deliver] * 3

    # A client that stops reading: the writer queues, in order, and once it has caught
    # up (nothing queued) frames go out at once again.
    receiving.open.clear()
    for i in range(3):
        await sender.send_to("alice", b"m", f"later-{i}", clock() + HOUR)
    receiving.open.set()
    later = [await receiver.expect(frames.Deliver) for _ in range(3)]
    assert [d.envelope.id for d in later] == ["later-0", "later-1", "later-2"]
    assert receiving.waited[-3:] == [frames.Deliver] * 3
    offsets = [d.offset for d in later]
    assert offsets == sorted(set(offsets))
    for conn in relay._sessions[("alice", "d1")]:
        await _settled(conn)
    await sender.send_to("alice", b"m", "again", clock() + HOUR)
    assert (await receiver.expect(frames.Deliver)).envelope.id == "again"
    assert receiving.at_once[-1] is frames.Deliver
    await receiver.close()
    await sender.close()


class SlowReading(Gate):
    """A client that reads, but takes a while over each frame."""

    async def send(self, data: bytes) -> None:
        await asyncio.sleep(0.03)
        await super().send(data)

    def write_now(self, data: bytes) -> bool:
        return False  # never at once: each frame takes a while


async def test_a_client_reading_slowly_is_not_taken_for_one_that_stopped(
    impatient: Relay, clock: FakeClock
) -> None:
    # Every write finishes within write_timeout, while the writer runs for many times it.
    alice, bob, _ = await setup(impatient)
    peer = await online(impatient, alice, wrap=SlowReading)
    sender = await online(impatient, bob)
    await send_many(sender, "alice", clock)  # 20 deliveries: about 0.6 s of writing
    delivered = [await peer.expect(frames.Deliver) for _ in range(COUNT)]
    assert [d.envelope.id for d in delivered] == [f"alice-{i}" for i in range(COUNT)]
    assert slow_readers(impatient) == 0
    await peer.close()
    await sender.close()


async def test_live_deliveries_past_the_byte_cap_are_read_from_the_store_instead(
    tmp_path: Path, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="parley.relay.connection")
    # Room for a thousand deliveries by count, but only 100 bytes of bodies (3 of 30).
    config = RelayConfig(send_queue=1000, send_queue_bytes=100, catchup_bytes=64)
    relay = Relay(SqliteStore(tmp_path / "relay.db"), config, clock=clock)
    await relay.start()
    try:
        alice, bob, _ = await setup(relay)
        slow, gate = await stalled_online(relay, alice)
        sender = await online(relay, bob)
        for i in range(COUNT):
            reply = await sender.send_to("alice", b"x" * 30, f"alice-{i}", clock() + HOUR)
            assert isinstance(reply, frames.Ack)
        assert "switching to catch-up reads" in caplog.text
        gate.open.set()
        delivered = [await slow.expect(frames.Deliver) for _ in range(COUNT)]
        assert [d.envelope.id for d in delivered] == [f"alice-{i}" for i in range(COUNT)]
        await slow.close()
        await sender.close()
    finally:
        await relay.close()


async def _offset(end: MemoryTransport) -> int:
    frame = frames.decode_relay_frame(await asyncio.wait_for(end.recv(), WAIT))
    assert isinstance(frame, frames.Deliver)
    return frame.offset


async def _quiet(end: MemoryTransport) -> bool:
    """Whether nothing more reaches ``end`` once the relay's side has settled."""
    try:
        await asyncio.wait_for(end.recv(), 0.2)
    except TimeoutError:
        return True
    return False


@asynccontextmanager
async def _direct(
    tmp_path: Path, clock: FakeClock, config: RelayConfig, *, push_in_sequence: bool = False
) -> AsyncIterator[tuple[Connection, Gate, MemoryTransport]]:
    """A relay-side connection on its own (no Relay around it), behind a gate, and the
    client's end; finished, and its store closed, at the end."""
    store = SqliteStore(tmp_path / "relay.db")
    await store.open()
    metrics = RelayMetrics()
    context = Context(config, store, Directory(store), metrics, clock, push_in_sequence)
    client, relay_end = memory_pair()
    gate = Gate(relay_end)
    conn = Connection(gate, context)
    try:
        yield conn, gate, client
    finally:
        await conn.finish()
        await store.close()


async def test_a_push_goes_out_at_once_only_as_the_offset_the_writer_would_write(
    tmp_path: Path, clock: FakeClock
) -> None:
    # Several nodes on one store: only the next offset may be written from a push.
    async with _direct(tmp_path, clock, RelayConfig(), push_in_sequence=True) as (conn, _, client):
        conn.attach("alice", "d1", resume_after=5)
        await _settled(conn)

        def deliver(offset: int, expires_at: float) -> frames.Deliver:
            envelope = frames.Envelope(
                id=f"e{offset}",
                sender="bob",
                sender_device="d1",
                recipient="alice",
                body=b"m",
                sent_at=clock(),
                expires_at=expires_at,
            )
            return frames.Deliver(offset=offset, envelope=envelope, sender_keys_version=1)

        live = clock() + HOUR
        conn.push(deliver(5, live))  # written before (the resume point): never again
        assert await _quiet(client)
        await _settled(conn)
        conn.push(deliver(7, live))  # overtook 6: the store is read instead (it has neither)
        assert await _quiet(client)
        await _settled(conn)
        conn.push(deliver(6, live))
        assert conn._writer is None  # written at once, not by a writer task
        assert await _offset(client) == 6
        conn.push(deliver(7, clock() - 1))  # expired: dropped, and skipped past
        assert await _quiet(client)
        await _settled(conn)
        assert conn.cursor == 7
        conn.push(deliver(8, live))
        assert conn._writer is None
        assert await _offset(client) == 8


async def test_a_client_not_reading_its_replies_holds_back_its_next_requests(
    tmp_path: Path, clock: FakeClock
) -> None:
    async with _direct(tmp_path, clock, RelayConfig(reply_queue=2)) as (conn, gate, client):
        gate.open.clear()
        for ref in range(4):  # the writer holds the first, two wait behind it
            conn.reply(frames.Ack(ref=ref, envelope_id=f"e{ref}"))
        await asyncio.sleep(0)
        assert not conn.ready
        room = asyncio.ensure_future(conn.wait_for_room())
        await asyncio.sleep(0.05)
        assert not room.done()
        gate.open.set()
        await asyncio.wait_for(room, WAIT)
        acks = [frames.decode_relay_frame(await client.recv()) for _ in range(4)]
        assert [a.ref for a in acks if isinstance(a, frames.Ack)] == [0, 1, 2, 3]
        await _settled(conn)
        assert conn.ready


async def test_a_paused_client_is_not_read_until_the_pause_ends(
    tmp_path: Path, clock: FakeClock
) -> None:
    async with _direct(tmp_path, clock, RelayConfig()) as (conn, _, _):
        conn.pause_reading(0.1)
        assert not conn.ready
        await asyncio.wait_for(conn.wait_unpaused(), WAIT)
        assert conn.ready
        conn.close_soon(1000, "")
        conn.pause_reading(10.0)  # closing: not held back any more
        assert conn.ready


async def test_finish_writes_what_is_queued_then_closes_normally(
    tmp_path: Path, clock: FakeClock
) -> None:
    async with _direct(tmp_path, clock, RelayConfig()) as (conn, gate, client):
        gate.open.clear()
        for ref in range(3):
            conn.reply(frames.Ack(ref=ref, envelope_id=f"e{ref}"))
        finishing = asyncio.ensure_future(conn.finish())
        await asyncio.sleep(0.05)
        assert not finishing.done()  # waiting for the writer, which waits for the client
        gate.open.set()
        await asyncio.wait_for(finishing, WAIT)
        acks = [frames.decode_relay_frame(await client.recv()) for _ in range(3)]
        assert [a.ref for a in acks if isinstance(a, frames.Ack)] == [0, 1, 2]
        assert gate.inner.close_code == 1000

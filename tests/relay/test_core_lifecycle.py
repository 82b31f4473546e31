"""The relay core's life and its guards: start and close, the expiry sweeps, a store
that fails, the log limit on bad input, connections not authenticated yet."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from parley.protocol import frames
from parley.protocol.frames import ErrorCode
from parley.relay import Relay, RelayConfig, SqliteStore
from parley.relay.bus import LocalBus
from parley.transport.memory import MemoryTransport

from .helpers import WAIT, FakeClock, Identity, Peer, counter, enroll, online, rejected

HOUR = 3600.0


class FlakyStore:
    """A real store whose named operations fail (``fail``: how many more times each) or
    hang once until cancelled (``hang``) or take long once (``slow``), and that says
    whether it was closed."""

    def __init__(self, store: SqliteStore) -> None:
        self._store = store
        self.fail: dict[str, int] = {}
        self.hang: set[str] = set()
        self.slow: dict[str, float] = {}  # seconds an operation takes, once
        self.closed = False

    def __getattr__(self, name: str) -> Any:
        operation = getattr(self._store, name)
        if not callable(operation):
            return operation

        async def maybe_failing(*args: Any, **kwargs: Any) -> Any:
            if self.fail.get(name, 0) > 0:
                self.fail[name] -= 1
                raise OSError(f"{name}: the disk is on fire")
            if name in self.slow:
                await asyncio.sleep(self.slow.pop(name))
            if name in self.hang:
                self.hang.discard(name)
                await asyncio.Event().wait()
            return await operation(*args, **kwargs)

        return maybe_failing

    async def close(self) -> None:
        self.closed = True
        await self._store.close()


@pytest.fixture
def store(tmp_path: Path) -> FlakyStore:
    return FlakyStore(SqliteStore(tmp_path / "relay.db"))


@pytest.fixture
async def flaky(store: FlakyStore, config: RelayConfig, clock: FakeClock) -> AsyncIterator[Relay]:
    relay = Relay(store, config, clock=clock)
    await relay.start()
    yield relay
    await relay.close()


async def enrolled(relay: Relay, *names: str) -> list[Identity]:
    """Identities of these names, registered."""
    identities = [Identity.create(name) for name in names]
    for identity in identities:
        await enroll(relay, identity)
    return identities


def warnings_about(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING and text in r.getMessage()
    ]


# -- start and close -------------------------------------------------------------------


class BrokenBus(LocalBus):
    async def start(self, *args: Any, **kwargs: Any) -> None:
        raise ConnectionRefusedError("no bus here")


async def test_a_relay_whose_bus_cannot_start_closes_its_store(store: FlakyStore) -> None:
    relay = Relay(store, RelayConfig(), bus=BrokenBus())
    with pytest.raises(ConnectionRefusedError):
        await relay.start()
    assert store.closed


async def test_close_closes_every_connection_and_turns_new_ones_away(
    store: FlakyStore, clock: FakeClock
) -> None:
    relay = Relay(store, RelayConfig(), clock=clock)
    await relay.start()
    (alice,) = await enrolled(relay, "alice")
    peer = await online(relay, alice)
    waiting = Peer(relay)  # not authenticated
    await waiting.start()
    await relay.close()
    # Closed by the time close() returns: their handlers have ended.
    assert peer.task.done() and waiting.task.done()
    assert peer.relay_end.close_code == 1001 == waiting.relay_end.close_code
    assert not [t for t in asyncio.all_tasks() if t.get_name() == "relay-sweeper"]
    assert store.closed
    late = Peer(relay)
    assert await late.closed() == 1001  # going away, without a challenge


class SlowToClose:
    """The relay's end of a connection whose closing handshake takes a second (a slow
    client's): longer than anything else close() waits for."""

    def __init__(self, inner: MemoryTransport) -> None:
        self.inner = inner
        self.remote, self.source = inner.remote, inner.source
        self.closed = False

    async def send(self, data: bytes) -> None:
        await self.inner.send(data)

    def write_now(self, data: bytes) -> bool:
        return self.inner.write_now(data)

    async def recv(self) -> bytes:
        return await self.inner.recv()

    async def close(self, code: int = 1000, reason: str = "") -> None:
        await asyncio.sleep(1.0)
        await self.inner.close(code, reason)
        self.closed = True


async def test_close_waits_for_a_connection_slow_to_close(
    tmp_path: Path, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    relay = Relay(SqliteStore(tmp_path / "relay.db"), RelayConfig(), clock=clock)
    await relay.start()
    (alice,) = await enrolled(relay, "alice")
    ends: list[SlowToClose] = []

    def slow(inner: MemoryTransport) -> SlowToClose:
        ends.append(SlowToClose(inner))
        return ends[-1]

    peer = await online(relay, alice, wrap=slow)
    await relay.close()
    assert ends[0].closed and peer.task.done()  # waited for, within close_timeout
    assert warnings_about(caplog, "did not close in time") == []


async def test_a_relay_keeps_nothing_of_connections_that_ended(relay: Relay) -> None:
    (alice,) = await enrolled(relay, "alice")
    peers = [await online(relay, alice, device="d1") for _ in range(2)]
    waiting = Peer(relay, "waiting")
    await waiting.start()
    for peer in [*peers, waiting]:
        await peer.close()
    # What a connection took while open, per connection and per address, is given back.
    assert relay.connection_count == 0
    assert not relay._handlers and not relay._connections and not relay._preauth


async def test_a_request_served_across_the_login_deadline_is_answered(
    store: FlakyStore, clock: FakeClock
) -> None:
    # The deadline bounds the login only: what an authenticated device asks is not cut
    # short when it passes.
    relay = Relay(store, RelayConfig(auth_timeout=1.0), clock=clock)
    await relay.start()
    try:
        alice, _ = await enrolled(relay, "alice", "bob")
        peer = Peer(relay)
        assert isinstance(await peer.authenticate(alice), frames.Welcome)
        store.slow["permit"] = 1.5  # still writing when the deadline passes
        assert isinstance(await peer.request(frames.Permit, identity="bob"), frames.Done)
        await peer.close()
    finally:
        await relay.close()


# -- the sweeps ------------------------------------------------------------------------


async def test_the_sweeper_drops_expired_messages_by_itself_and_survives_a_failure(
    tmp_path: Path, clock: FakeClock
) -> None:
    store = FlakyStore(SqliteStore(tmp_path / "relay.db"))
    store.fail["expire"] = 1  # the first sweep fails; the next ones go on
    relay = Relay(store, RelayConfig(sweep_interval=0.01), clock=clock)
    await relay.start()
    try:
        alice, bob = await enrolled(relay, "alice", "bob")
        owner = await online(relay, alice)
        assert isinstance(await owner.request(frames.Permit, identity="bob"), frames.Done)
        sender = await online(relay, bob)
        assert isinstance(await sender.send_to("alice", b"m", "short", clock() + 10), frames.Ack)
        await owner.expect(frames.Deliver)
        await owner.close()  # not confirmed: it stays in alice's inbox until it expires
        clock.advance(11)
        for _ in range(int(WAIT / 0.01)):
            if counter(relay, "parley_relay_messages_expired_total") == 1:
                break
            await asyncio.sleep(0.01)
        assert counter(relay, "parley_relay_messages_expired_total") == 1
        assert store.fail["expire"] == 0
        await sender.close()
    finally:
        await relay.close()


async def test_a_sweep_forgets_the_budgets_that_have_refilled(
    relay: Relay, clock: FakeClock
) -> None:
    # Every address that registered and every device that sent holds a budget while it
    # is spending; once full again it takes no memory.
    alice, _ = await enrolled(relay, "alice", "bob")
    peer = await online(relay, alice)
    assert isinstance(await peer.request(frames.ListConnections), frames.Connections)
    budgets = (relay._registrations, relay._device_budgets, relay._identity_budgets)
    assert all(len(b) == 1 for b in budgets)
    await relay.sweep()
    assert all(len(b) == 1 for b in budgets)  # still spending: kept
    clock.advance(HOUR)
    await relay.sweep()
    assert [len(b) for b in budgets] == [0, 0, 0]
    await peer.close()


# -- a failing store -------------------------------------------------------------------


async def test_a_store_failure_is_an_internal_error_and_the_connection_goes_on(
    flaky: Relay, store: FlakyStore
) -> None:
    alice, _ = await enrolled(flaky, "alice", "bob")
    peer = await online(flaky, alice)
    store.fail["permit"] = 1
    answer = await peer.request(frames.Permit, identity="bob")
    assert isinstance(answer, frames.Error)
    assert (answer.code, answer.ref) == (ErrorCode.INTERNAL, 1)
    assert answer.code.value == "internal"
    assert isinstance(await peer.request(frames.Permit, identity="bob"), frames.Done)
    await peer.close()


async def test_background_store_work_that_fails_is_logged(
    store: FlakyStore, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    flaky = Relay(store, RelayConfig(), clock=clock)
    await flaky.start()
    alice, bob = await enrolled(flaky, "alice", "bob")
    owner = await online(flaky, alice)
    assert isinstance(await owner.request(frames.Permit, identity="bob"), frames.Done)
    sender = await online(flaky, bob)
    assert isinstance(await sender.send_to("alice", b"m", "e1", 2e9 + HOUR), frames.Ack)
    deliver = await owner.expect(frames.Deliver)
    store.fail["confirm"] = 1
    await owner.send(frames.Confirm(offset=deliver.offset))
    await owner.close()
    await sender.close()
    await flaky.close()  # which waits for the confirm's write
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR] == [
        "background store work failed"
    ]


async def test_a_failure_of_the_relay_itself_closes_the_connection_with_1011(
    relay: Relay, caplog: pytest.LogCaptureFixture
) -> None:
    def failing_reads(transport: MemoryTransport) -> MemoryTransport:
        async def recv() -> bytes:
            raise RuntimeError("a bug of the relay's")

        setattr(transport, "recv", recv)  # noqa: B010 - a method replaced on one object
        return transport

    peer = Peer(relay, wrap=failing_reads)
    await peer.start()
    assert await peer.closed() == 1011  # internal error: not the client's fault
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR] == [
        f"{peer.relay_end.remote} (unauthenticated): unexpected failure; closing the connection"
    ]


# -- bad input in the log --------------------------------------------------------------


async def test_bad_input_is_logged_20_lines_at_once_then_5_a_second(
    relay: Relay, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    # Anyone can send garbage; the log must not fill up with it.
    peer = Peer(relay)
    await peer.start()
    for _ in range(25):
        await peer.transport.send(b"\xc1 not msgpack")
        assert (await peer.expect(frames.Error)).code is ErrorCode.MALFORMED
    assert len(warnings_about(caplog, "malformed")) == 20
    caplog.clear()
    clock.advance(1.0)
    for _ in range(6):
        await peer.transport.send(b"\xc1 not msgpack")
        await peer.expect(frames.Error)
    lines = warnings_about(caplog, "malformed")
    assert len(lines) == 5 and lines[0].endswith("(5 similar lines held back)")
    await peer.close()


async def test_refusals_that_are_not_bad_input_are_not_warnings(
    relay: Relay, caplog: pytest.LogCaptureFixture
) -> None:
    (alice,) = await enrolled(relay, "alice")
    peer = await online(relay, alice)
    refused = await peer.send_to("nobody", b"m", "e1", 2e9)
    assert isinstance(refused, frames.Error) and refused.code is ErrorCode.UNKNOWN_RECIPIENT
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []
    await peer.close()


async def test_a_connection_authenticated_as_its_deadline_passes_stays_open(
    store: FlakyStore, clock: FakeClock
) -> None:
    # The deadline may pass while the relay still finishes the login (here: a slow
    # store, looking up the device's keys after the Welcome): the device is in.
    relay = Relay(store, RelayConfig(auth_timeout=0.2), clock=clock)
    await relay.start()
    try:
        (alice,) = await enrolled(relay, "alice")
        store.hang.add("load_identity_keys")
        peer = Peer(relay)
        assert isinstance(await peer.authenticate(alice), frames.Welcome)
        assert isinstance(await peer.request(frames.ListConnections), frames.Connections)
        assert not store.hang  # the lookup did hang until the deadline
        assert rejected(relay, "auth_timeout") == 0
        await peer.close()
    finally:
        await relay.close()


# -- not authenticated yet -------------------------------------------------------------


async def test_an_authenticated_connection_frees_its_place_among_the_unauthenticated(
    tmp_path: Path, clock: FakeClock
) -> None:
    relay = Relay(SqliteStore(tmp_path / "r.db"), RelayConfig(preauth_per_source=2), clock=clock)
    await relay.start()
    try:
        (alice,) = await enrolled(relay, "alice")
        first, second = Peer(relay), Peer(relay)
        await first.start()
        await second.start()
        assert isinstance(await first.authenticate(alice), frames.Welcome)
        third, fourth = Peer(relay), Peer(relay)
        await third.start()  # second and third: two waiting, the limit
        refused = await fourth.expect(frames.Error)
        assert refused.code is ErrorCode.RATE_LIMITED
        assert await fourth.closed() == 1013
        for peer in (first, second, third):
            await peer.close()
        again = Peer(relay)
        await again.start()  # all gone: room again
        await again.close()
    finally:
        await relay.close()

"""The blocking facade against a relay served over a real WebSocket."""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.waits import WAIT

from parley import Credentials, VoiceStart, VoiceStop, register_identity
from parley.client import Dialing
from parley.errors import NotConnected, NotPermitted, StateError
from parley.protocol.call import CallState, EndReason, Role
from parley.protocol.call_io import Connected, Ended
from parley.protocol.call_phone import PhoneConfig
from parley.relay import RelayServer
from parley.sync import Client, IncomingCall


@pytest.fixture
def relay_url(tmp_path: Path) -> Iterator[str]:
    """A relay on port 0, on its own loop in its own thread (the test thread blocks)."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="test-relay")
    thread.start()
    server = RelayServer(tmp_path / "relay")
    asyncio.run_coroutine_threadsafe(server.start(), loop).result(WAIT)
    try:
        yield server.url
    finally:
        asyncio.run_coroutine_threadsafe(server.close(), loop).result(WAIT)
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()


def _register(url: str, name: str) -> Credentials:
    return asyncio.run(register_identity(url, name=name))


def _client_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "parley-client"]


def test_round_trip_with_blocking_calls(relay_url: str, tmp_path: Path) -> None:
    alice, bob = _register(relay_url, "alice"), _register(relay_url, "bob")
    bob_path = tmp_path / "bob.json"
    bob.save(bob_path)
    got: queue.Queue[tuple[str, str, str]] = queue.Queue()
    errors: queue.Queue[BaseException] = queue.Queue()

    bob_client = Client.from_credentials(bob_path)
    assert _client_threads() == []  # the constructor starts nothing
    voice = bob_client.voice()

    @voice.on_stop
    def on_stop(issuer: str, payload: VoiceStop) -> None:
        got.put((issuer, payload["call_id"], threading.current_thread().name))
        try:
            voice.busy(issuer, payload.cid, payload.call_id)
        except StateError as exc:  # a blocking call from the client's own thread
            errors.put(exc)

    with bob_client:
        assert bob_client.id == bob.identity
        assert len(_client_threads()) == 1
        bob_client.connections.permit(alice.identity)
        assert bob_client.connections.list() == [alice.identity]
        with Client(alice) as alice_client:
            alice_client.voice().stop(bob.identity, "cid", "call-1")
        assert got.get(timeout=WAIT) == (alice.identity, "call-1", "parley-client")
        assert isinstance(errors.get(timeout=WAIT), StateError)
        assert bob_client.rejected == {}

    assert _client_threads() == []  # joined on close
    with pytest.raises(NotConnected):
        bob_client.connections.list()


def test_async_handlers_send_through_aio(relay_url: str) -> None:
    alice, bob = _register(relay_url, "alice"), _register(relay_url, "bob")
    replies: queue.Queue[str] = queue.Queue()
    with Client(alice) as alice_client, Client(bob) as bob_client:
        alice_client.connections.permit(bob.identity)
        bob_client.connections.permit(alice.identity)
        bob_voice = bob_client.voice()

        @bob_voice.on_stop
        async def forward(issuer: str, payload: VoiceStop) -> None:
            await bob_voice.aio.busy(issuer, payload.cid, payload.call_id)

        alice_client.voice().on_busy(lambda issuer, payload: replies.put(payload.call_id))
        alice_client.voice().stop(bob.identity, "cid", "call-7")
        assert replies.get(timeout=WAIT) == "call-7"


def _callers(relay_url: str) -> tuple[Client, Client]:
    """Alice and Bob, permitting each other, with a short ring lifetime."""
    alice, bob = _register(relay_url, "alice"), _register(relay_url, "bob")
    alice_client, bob_client = Client(alice), Client(bob)
    for each in (alice_client, bob_client):
        each.calls(PhoneConfig(ring_lifetime=3, grace=1))  # before connect
    return alice_client, bob_client


def test_calls_place_accept_events_hangup_and_records(relay_url: str) -> None:
    alice_client, bob_client = _callers(relay_url)
    with alice_client, bob_client:
        alice_client.connections.permit(bob_client.id)
        bob_client.connections.permit(alice_client.id)
        calls = alice_client.calls()
        assert calls is alice_client.calls(PhoneConfig(ring_lifetime=3, grace=1))
        with pytest.raises(StateError):
            alice_client.calls(PhoneConfig(ring_lifetime=30))

        call = calls.place(bob_client.id, "offer", {"topic": "hi"}, lifetime=30, cid="c1")
        assert call.state is CallState.DIALING and calls.live == [call]
        incoming = next(bob_client.calls().incoming(timeout=WAIT))
        assert isinstance(incoming, IncomingCall)
        assert (incoming.call_id, incoming.cid) == (call.call_id, "c1")
        assert (incoming.peer, call.peer) == (alice_client.id, bob_client.id)
        assert incoming.peer_info == "offer" and incoming.data["topic"] == "hi"
        assert incoming.accept("answer") is incoming
        assert incoming.state is CallState.CONNECTED

        updates = call.events(timeout=WAIT)
        assert isinstance(next(updates), Dialing)
        connected = next(updates)
        assert isinstance(connected, Connected) and connected.peer_info == "answer"
        call.hangup()
        assert isinstance(next(updates), Ended)
        assert list(updates) == []  # over after Ended
        mine, theirs = call.wait_ended(WAIT), incoming.wait_ended(WAIT)
        assert mine.reason is theirs.reason is EndReason.HANGUP
        assert (mine.role, theirs.role) == (Role.CALLER, Role.CALLEE)
        assert call.record is mine and calls.live == []


def test_calls_busy_decline_and_a_refusal(relay_url: str) -> None:
    alice_client, bob_client = _callers(relay_url)
    with alice_client, bob_client:
        with pytest.raises(NotPermitted):  # bob does not accept alice's messages yet
            alice_client.calls().place(bob_client.id, "offer")
        bob_client.connections.permit(alice_client.id)
        alice_client.connections.permit(bob_client.id)
        ringing = bob_client.calls().incoming(timeout=WAIT)
        answers = ((IncomingCall.busy, EndReason.BUSY), (IncomingCall.decline, EndReason.DECLINED))
        for answer, reason in answers:
            call = alice_client.calls().place(bob_client.id, "offer", lifetime=30)
            incoming = next(ringing)
            assert incoming.call_id == call.call_id
            answer(incoming)
            assert call.wait_ended(WAIT).reason is reason
            assert incoming.record is not None and incoming.record.reason is reason


def test_calls_iterators_time_out_end_on_close_and_refuse_the_client_thread(
    relay_url: str,
) -> None:
    alice_client, bob_client = _callers(relay_url)
    errors: queue.Queue[BaseException] = queue.Queue()
    with alice_client, bob_client:
        with pytest.raises(TimeoutError):
            next(bob_client.calls().incoming(timeout=0.05))
        alice_client.connections.permit(bob_client.id)
        bob_client.connections.permit(alice_client.id)

        @bob_client.voice().on_start
        def on_start(issuer: str, payload: VoiceStart) -> None:
            try:  # a blocking call from the client's own thread
                next(bob_client.calls().incoming())
            except StateError as exc:
                errors.put(exc)

        call = alice_client.calls().place(bob_client.id, "offer")  # nobody answers
        assert isinstance(errors.get(timeout=WAIT), StateError)
        assert call.wait_ended(WAIT).reason is EndReason.TIMEOUT
        taken: queue.Queue[IncomingCall | None] = queue.Queue()

        def listen() -> None:
            for incoming in alice_client.calls().incoming():
                taken.put(incoming)
            taken.put(None)  # the iteration ended

        listener = threading.Thread(target=listen)
        listener.start()
        back = bob_client.calls().place(alice_client.id, "offer", lifetime=30)
        first = taken.get(timeout=WAIT)
        assert first is not None and first.call_id == back.call_id
    listener.join(WAIT)
    assert taken.get(timeout=WAIT) is None  # it ended when the client closed
    assert _client_threads() == []

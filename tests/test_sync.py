"""The blocking facade against a relay served over a real WebSocket."""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from parley import Credentials, VoiceStop, register_identity
from parley.errors import NotConnected, StateError
from parley.relay import RelayServer
from parley.sync import Client

WAIT = 10.0


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

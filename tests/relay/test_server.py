"""The relay on a real socket: WebSocket sessions, /health, /metrics, restarts, signals."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from websockets.asyncio.client import connect

from parley.errors import TransportClosed
from parley.protocol import frames
from parley.relay import RelayConfig, RelayServer
from parley.relay.server import run_relay
from parley.transport.websocket import WebSocketTransport, connect_websocket

from .helpers import WAIT, Identity


def http_get(url: str) -> tuple[int, str, str]:
    """(status, content type, body) of a GET; run it in a thread."""
    try:
        with urllib.request.urlopen(url, timeout=WAIT) as response:
            return response.status, response.headers["Content-Type"], response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read().decode()


async def recv(transport: WebSocketTransport) -> frames.RelayFrame:
    return frames.decode_relay_frame(await asyncio.wait_for(transport.recv(), WAIT))


async def session(url: str, ident: Identity, register: bool) -> WebSocketTransport:
    transport = await connect_websocket(url)
    challenge = await recv(transport)
    assert isinstance(challenge, frames.Challenge)
    if register:
        await transport.send(frames.encode(frames.Register(ref=1, entry=ident.genesis)))
        assert isinstance(await recv(transport), frames.Registered)
    signature = ident.keys["d1"].sign(frames.auth_message(challenge.nonce, ident.id, "d1"))
    await transport.send(
        frames.encode(frames.Authenticate(identity=ident.id, device="d1", signature=signature))
    )
    assert isinstance(await recv(transport), frames.Welcome)
    return transport


async def test_websocket_session_health_and_metrics(tmp_path: Path) -> None:
    alice = Identity.create("alice")
    async with RelayServer(tmp_path / "data") as server:
        assert server.url == f"ws://127.0.0.1:{server.port}"
        assert server.http_url == f"http://127.0.0.1:{server.port}"
        assert (tmp_path / "data" / "relay.db").exists()
        transport = await session(server.url, alice, register=True)
        send = frames.Send(
            ref=2, envelope_id="e1", recipient="alice", body=b"hi", expires_at=time.time() + 60
        )
        await transport.send(frames.encode(send))
        replies = [await recv(transport), await recv(transport)]
        assert {type(r) for r in replies} == {frames.Ack, frames.Deliver}

        status, kind, body = await asyncio.to_thread(http_get, server.http_url + "/health")
        assert (status, kind) == (200, "application/json")
        assert json.loads(body) == {
            "status": "ok",
            "node": server.node_id,
            "store": "sqlite",
            "bus": "local",
            "store_reachable": True,
            "bus_reachable": True,
            "connections": 1,
        }
        status, kind, body = await asyncio.to_thread(http_get, server.http_url + "/metrics")
        assert status == 200
        assert kind.startswith("text/plain")
        assert "parley_relay_messages_stored_total 1.0" in body
        status, _, _ = await asyncio.to_thread(http_get, server.http_url + "/elsewhere")
        assert status == 404
        await transport.close()


async def test_oversized_bodies_get_a_typed_error(tmp_path: Path) -> None:
    alice = Identity.create("alice")
    async with RelayServer(tmp_path, config=RelayConfig(max_body=1024)) as server:
        transport = await session(server.url, alice, register=True)
        send = frames.Send(
            ref=2, envelope_id="e1", recipient="alice", body=b"x" * 2000, expires_at=1e12
        )
        await transport.send(frames.encode(send))
        reply = await recv(transport)
        assert isinstance(reply, frames.Error)
        assert (reply.ref, reply.code) == (2, frames.ErrorCode.TOO_LARGE)
        await transport.close()


async def test_a_restarted_server_keeps_the_inbox(tmp_path: Path) -> None:
    alice = Identity.create("alice")
    async with RelayServer(tmp_path) as server:
        transport = await session(server.url, alice, register=True)
        send = frames.Send(
            ref=2, envelope_id="e1", recipient="alice", body=b"hi", expires_at=time.time() + 60
        )
        await transport.send(frames.encode(send))
        assert {type(await recv(transport)) for _ in range(2)} == {frames.Ack, frames.Deliver}
    async with RelayServer(tmp_path) as server:
        transport = await session(server.url, alice, register=False)
        deliver = await recv(transport)
        assert isinstance(deliver, frames.Deliver)
        assert deliver.envelope.id == "e1"
        await transport.close()


async def test_run_relay_stops_on_sigterm(tmp_path: Path) -> None:
    ready: asyncio.Future[RelayServer] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(run_relay(tmp_path, "127.0.0.1", 0, RelayConfig(), ready.set_result))
    url = (await asyncio.wait_for(ready, WAIT)).url
    assert url.startswith("ws://127.0.0.1:")
    os.kill(os.getpid(), signal.SIGTERM)
    await asyncio.wait_for(task, WAIT)
    with pytest.raises(TransportClosed):
        await connect_websocket(url, open_timeout=WAIT)


async def test_an_oversized_frame_is_answered_too_large_before_the_close(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = RelayConfig(max_body=1000)
    async with RelayServer(tmp_path / "data", config=config) as server:
        async with connect(server.url, max_size=None) as ws:
            challenge = frames.decode_relay_frame(
                await asyncio.wait_for(ws.recv(decode=False), WAIT)
            )
            assert isinstance(challenge, frames.Challenge)
            await ws.send(b"\x00" * (1000 + frames.FRAME_OVERHEAD + 1))
            reply = frames.decode_relay_frame(await asyncio.wait_for(ws.recv(decode=False), WAIT))
            assert isinstance(reply, frames.Error)
            assert reply.code is frames.ErrorCode.TOO_LARGE
            assert reply.ref is None
            await asyncio.wait_for(ws.wait_closed(), WAIT)
            assert ws.close_code == 1009
        # Still serving everyone else.
        await (await session(server.url, Identity.create("bob"), register=True)).close()
        rejected = server.relay.metrics.registry.get_sample_value(
            "parley_relay_rejected_total", {"reason": "too_large"}
        )
        assert rejected == 1
    warnings = [r for r in caplog.records if r.levelname == "WARNING" and "too_large" in r.message]
    assert len(warnings) == 1 and "127.0.0.1:" in warnings[0].message
    assert not any(r.exc_info for r in caplog.records)


async def _read_ws_frame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """(opcode, payload) of one unmasked server frame, read off a raw socket."""
    first, second = await reader.readexactly(2)
    length = second & 0x7F
    if length == 126:
        length = int.from_bytes(await reader.readexactly(2), "big")
    elif length == 127:
        length = int.from_bytes(await reader.readexactly(8), "big")
    return first & 0x0F, await reader.readexactly(length)


async def test_keepalive_closes_a_peer_that_stops_answering_pings(tmp_path: Path) -> None:
    # A raw socket that completes the opening handshake and then never writes again
    # (no pong), next to a websockets client that answers every ping.
    config = RelayConfig(ping_interval=0.2)
    async with RelayServer(tmp_path, config=config) as server:
        answering = await connect_websocket(server.url)
        assert isinstance(await recv(answering), frames.Challenge)
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(
            b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            b"Sec-WebSocket-Version: 13\r\n\r\n"
        )
        assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 101")
        opcodes = []
        async with asyncio.timeout(WAIT):
            while (frame := await _read_ws_frame(reader))[0] != 0x8:
                opcodes.append(frame[0])
        assert 0x9 in opcodes  # it was pinged
        assert int.from_bytes(frame[1][:2], "big") == 1011
        assert frame[1][2:] == b"keepalive ping timeout"
        writer.close()
        # Rounds later the answering client is still served.
        await asyncio.sleep(1.0)
        alice = Identity.create("alice")
        await answering.send(frames.encode(frames.Register(ref=1, entry=alice.genesis)))
        assert isinstance(await recv(answering), frames.Registered)
        await answering.close()

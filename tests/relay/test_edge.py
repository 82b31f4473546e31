"""The relay's WebSocket edge on a real socket: whole messages out of fragments, text
refused, plain HTTP answered, a handshake that never comes, the closing handshake, and
a reader that falls behind holding the socket back."""

from __future__ import annotations

import asyncio
import http
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from tests.waits import WAIT
from websockets.asyncio.client import connect

from parley.errors import MalformedFrame, TransportClosed
from parley.relay.edge import READ_AHEAD, Edge, EdgeConnection, HttpAnswer


class Served:
    def __init__(self) -> None:
        self.connections: asyncio.Queue[EdgeConnection] = asyncio.Queue()
        self.done: asyncio.Event = asyncio.Event()
        self.too_large: list[str] = []

    async def handler(self, conn: EdgeConnection) -> None:
        await self.connections.put(conn)
        await self.done.wait()

    async def http(self, path: str, upgrade: bool) -> HttpAnswer | None:
        if path == "/hello":
            return http.HTTPStatus.OK, "hi\n", "text/plain"
        return None if upgrade else (http.HTTPStatus.NOT_FOUND, "no\n", "text/plain")


@asynccontextmanager
async def edge_server(open_timeout: float = 10.0) -> AsyncIterator[tuple[Served, Edge, int]]:
    served = Served()
    edge = Edge(
        handler=served.handler,
        http=served.http,
        max_size=1024,
        too_large=b"too large",
        on_too_large=lambda peer, reason: served.too_large.append(reason),
        open_timeout=open_timeout,
        close_timeout=1.0,
    )
    server = await asyncio.get_running_loop().create_server(
        lambda: EdgeConnection(edge), "127.0.0.1", 0
    )
    try:
        yield served, edge, int(server.sockets[0].getsockname()[1])
    finally:
        served.done.set()
        server.close()
        edge.abort_all()
        await server.wait_closed()


async def test_fragments_become_one_message_and_text_is_refused() -> None:
    async with edge_server() as (served, _, port):
        ws = await connect(f"ws://127.0.0.1:{port}", compression=None)
        conn = await asyncio.wait_for(served.connections.get(), WAIT)
        await ws.send([b"ab", b"cd", b"ef"])  # three fragments of one binary message
        assert await asyncio.wait_for(conn.recv(), WAIT) == b"abcdef"
        await ws.send("text")
        with pytest.raises(MalformedFrame):
            await asyncio.wait_for(conn.recv(), WAIT)
        await conn.send(b"back")
        assert await asyncio.wait_for(ws.recv(), WAIT) == b"back"
        assert conn.source == "127.0.0.1" and conn.remote.startswith("127.0.0.1:")
        await ws.close()


async def test_an_oversized_message_is_named_before_the_close() -> None:
    async with edge_server() as (served, _, port):
        ws = await connect(f"ws://127.0.0.1:{port}", compression=None, max_size=None)
        conn = await asyncio.wait_for(served.connections.get(), WAIT)
        await ws.send(b"x" * 2048)
        assert await asyncio.wait_for(ws.recv(), WAIT) == b"too large"
        await asyncio.wait_for(ws.wait_closed(), WAIT)
        assert ws.close_code == 1009 and served.too_large
        with pytest.raises(TransportClosed):
            await asyncio.wait_for(conn.recv(), WAIT)


async def test_plain_http_is_answered_and_the_connection_ends() -> None:
    async with edge_server() as (_, edge, port):
        for path, status in (("/hello", b"200"), ("/elsewhere", b"404")):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            reply = await asyncio.wait_for(reader.read(), WAIT)  # to EOF: it closes
            assert reply.split()[1] == status, reply
            assert b"Content-Type: text/plain" in reply
            writer.close()
        for _ in range(1000):  # the server side sees the TCP end a moment later
            if not edge.connections:
                break
            await asyncio.sleep(0.01)
        assert not edge.connections


async def test_a_connection_that_never_sends_its_handshake_is_dropped() -> None:
    async with edge_server(open_timeout=0.3) as (_, _, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        assert await asyncio.wait_for(reader.read(), WAIT) == b""
        writer.close()


async def test_close_completes_the_closing_handshake() -> None:
    async with edge_server() as (served, edge, port):
        ws = await connect(f"ws://127.0.0.1:{port}", compression=None)
        conn = await asyncio.wait_for(served.connections.get(), WAIT)
        await asyncio.wait_for(conn.close(4001, "bye"), WAIT)
        await asyncio.wait_for(ws.wait_closed(), WAIT)
        assert (ws.close_code, ws.close_reason) == (4001, "bye")
        with pytest.raises(TransportClosed):
            await conn.send(b"late")
        assert conn not in edge.connections


async def test_a_reader_behind_stops_reading_the_socket_and_loses_nothing() -> None:
    async with edge_server() as (served, _, port):
        ws = await connect(f"ws://127.0.0.1:{port}", compression=None)
        conn = await asyncio.wait_for(served.connections.get(), WAIT)
        count = READ_AHEAD * 20
        for n in range(count):
            await ws.send(n.to_bytes(4, "big") + b"y" * 900)
        got = [int.from_bytes((await asyncio.wait_for(conn.recv(), WAIT))[:4], "big")]
        got += [int.from_bytes((await conn.recv())[:4], "big") for _ in range(count - 1)]
        assert got == list(range(count))
        await ws.close()


async def test_a_reader_held_back_keeps_its_socket_unread_while_it_takes_a_few() -> None:
    # A flooder over its budget: the relay takes one message now and then. Its socket
    # is read again only once the queue is nearly empty, so what waits in memory stays
    # about one read of the socket, however much it sends.
    async with edge_server() as (served, _, port):
        ws = await connect(f"ws://127.0.0.1:{port}", compression=None)
        conn = await asyncio.wait_for(served.connections.get(), WAIT)

        async def flood() -> None:
            for _ in range(20_000):
                await ws.send(b"z" * 1000)

        flooding = asyncio.create_task(flood())
        most = 0
        for _ in range(40):
            await asyncio.sleep(0.02)
            most = max(most, conn.queued)
            await asyncio.wait_for(conn.recv(), WAIT)
        assert READ_AHEAD <= most < 1000, most  # 20 MB sent; a read is at most 256 KB
        flooding.cancel()
        ws.transport.abort()

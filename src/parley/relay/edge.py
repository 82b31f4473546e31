"""The relay's WebSocket edge: an asyncio Protocol around websockets' sans-I/O protocol.

websockets' own protocol layer does the WebSocket work (the opening handshake, RFC 6455
framing, pings answered, the closing handshake, size limits); this module only moves
bytes between it and the socket and hands whole messages to the relay. Why not
websockets' asyncio server: an idle connection there costs about 13 KB (a connection
object with its message assembler, queues, locks and waiters, a keepalive task), and a
relay for phones holds tens of thousands of idle connections. Here an idle one is the
socket's transport, the protocol object and one handler task waiting on one future
(about 4 KB with a bare handler, measured the same way); what a connection needs while
it is busy (a message queue, a waiter for the socket to drain) exists only then.

Each :class:`EdgeConnection` is also the relay's :class:`~parley.transport.Transport`
for that client.
"""

from __future__ import annotations

import asyncio
import contextlib
import http
import logging
import os
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import cast

from websockets.frames import CloseCode, Frame, Opcode
from websockets.http11 import Request, Response
from websockets.protocol import State
from websockets.server import ServerProtocol

from parley.errors import MalformedFrame, TransportClosed

logger = logging.getLogger(__name__)

# Messages read ahead of the relay before the socket stops being read (the relay takes
# one at a time, so more only means memory), and how few must be left before it is read
# again. One read of the socket may carry many messages; without the low mark a reader
# held back (a flooder over its budget) would have its socket read again after every
# message it is allowed, and its queue would grow by a read's worth each time.
READ_AHEAD = 16
RESUME_BELOW = 4

HttpAnswer = tuple[http.HTTPStatus, str, str]  # status, body, content type


@dataclass(eq=False)
class Edge:
    """What every connection of one listener shares."""

    # Serve one open WebSocket until it closes.
    handler: Callable[[EdgeConnection], Awaitable[None]]
    # Answer a plain HTTP request (path without the query), or None: upgrade it.
    http: Callable[[str, bool], Awaitable[HttpAnswer | None]]
    max_size: int
    # A message over max_size arrived: the bytes to send first (a typed error), and a
    # callback (peer, reason) to count and log it.
    too_large: bytes
    on_too_large: Callable[[str, str], None]
    open_timeout: float = 10.0
    close_timeout: float = 5.0
    connections: set[EdgeConnection] = field(default_factory=set)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)

    def spawn(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def ping_all(self) -> None:
        """One keepalive round: close (1011) every open connection that has not answered
        the previous round's ping, ping the others."""
        for conn in list(self.connections):
            conn.keepalive()

    def abort_all(self) -> None:
        for conn in list(self.connections):
            conn.abort()


class _Protocol(ServerProtocol):
    """Says ``too_large`` (a typed Error) before failing the connection with 1009:
    websockets refuses an oversized message from its header, before reading it, and
    fails the connection there with no hook for a last message."""

    def __init__(self, edge: Edge, peer: str) -> None:
        super().__init__(max_size=edge.max_size, logger=logger)
        self._edge = edge
        self._peer = peer

    def fail(self, code: CloseCode | int, reason: str = "") -> None:
        if code == CloseCode.MESSAGE_TOO_BIG and self.state is State.OPEN:
            self.send_binary(self._edge.too_large)
            self._edge.on_too_large(self._peer, reason)
        super().fail(code, reason)


class EdgeConnection(asyncio.Protocol):
    __slots__ = (
        "_closed",
        "_drain",
        "_edge",
        "_flush_soon",
        "_fragments",
        "_lost",
        "_messages",
        "_ping",
        "_reader",
        "_reading_paused",
        "_tcp",
        "_timer",
        "_writing_paused",
        "protocol",
        "remote",
        "source",
    )

    def __init__(self, edge: Edge) -> None:
        self._edge = edge
        self._tcp: asyncio.Transport | None = None
        self.protocol: _Protocol | None = None
        self.remote = "?"
        self.source = "?"
        # Created when needed, dropped when done (see the module docstring).
        self._messages: deque[bytes | None] | None = None  # None: a text message
        self._fragments: list[bytes] | None = None
        self._reader: asyncio.Future[None] | None = None
        self._drain: asyncio.Future[None] | None = None
        self._lost: asyncio.Future[None] | None = None
        # The handshake deadline until open; the close deadline once closing.
        self._timer: asyncio.TimerHandle | None = None
        self._ping: bytes | None = None
        self._reading_paused = False
        self._writing_paused = False
        self._flush_soon = False
        self._closed: str | None = None  # why, once the TCP connection is gone

    # -- asyncio.Protocol --------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport (uvloop's are not asyncio.Transport subclasses).
        self._tcp = cast(asyncio.Transport, transport)
        peer = self._tcp.get_extra_info("peername")
        if isinstance(peer, tuple) and len(peer) >= 2:
            host = str(peer[0])
            self.source, self.remote = host, f"{host}:{peer[1]}"
        self.protocol = _Protocol(self._edge, self.remote)
        self._edge.connections.add(self)
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self._edge.open_timeout, self.abort)

    def data_received(self, data: bytes) -> None:
        protocol = self._open_protocol()
        protocol.receive_data(data)
        self._process(protocol)

    def eof_received(self) -> bool:
        protocol = self._open_protocol()
        protocol.receive_eof()
        self._process(protocol)
        return False  # asyncio closes the transport

    def pause_writing(self) -> None:
        self._writing_paused = True

    def resume_writing(self) -> None:
        self._writing_paused = False
        _wake(self._drain)
        self._drain = None

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = str(exc) if exc is not None else "connection closed"
        if self.protocol is not None:
            with contextlib.suppress(Exception):
                self.protocol.receive_eof()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._edge.connections.discard(self)
        for waiter in (self._reader, self._drain, self._lost):
            _wake(waiter)
        self._reader = self._drain = self._lost = None

    @property
    def queued(self) -> int:
        """Messages read from the socket that the relay has not taken yet."""
        return 0 if self._messages is None else len(self._messages)

    # -- the relay's Transport ---------------------------------------------------------

    async def recv(self) -> bytes:
        while True:
            if self._messages:
                message = self._messages.popleft()
                left = len(self._messages)
                if not left:
                    self._messages = None
                if self._reading_paused and left <= RESUME_BELOW and self._tcp is not None:
                    self._reading_paused = False
                    self._tcp.resume_reading()
                if message is None:
                    raise MalformedFrame("frames are binary WebSocket messages, got text")
                return message
            if self._closed is not None or not self._is_open():
                raise TransportClosed(self._closed or "the WebSocket is closing")
            self._reader = waiter = asyncio.get_running_loop().create_future()
            await waiter

    async def send(self, data: bytes) -> None:
        protocol = self.protocol
        if self._closed is not None or protocol is None or protocol.state is not State.OPEN:
            raise TransportClosed(self._closed or "the WebSocket is closing")
        self._queue_frame(protocol, data)
        if self._writing_paused and self._closed is None:
            if self._drain is None:
                self._drain = asyncio.get_running_loop().create_future()
            await asyncio.shield(self._drain)  # several writers may wait on it
            if self._closed is not None:
                raise TransportClosed(self._closed)

    def write_now(self, data: bytes) -> bool:
        protocol = self.protocol
        if (
            self._writing_paused
            or self._closed is not None
            or protocol is None
            or protocol.state is not State.OPEN
        ):
            return False
        self._queue_frame(protocol, data)
        return True

    def _queue_frame(self, protocol: _Protocol, data: bytes) -> None:
        protocol.send_binary(data)
        if not self._flush_soon:
            # Everything sent in this turn of the loop goes out in one write: a reply
            # burst (acks, deliveries) costs one system call, not one each.
            self._flush_soon = True
            asyncio.get_running_loop().call_soon(self._flush, protocol)

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Start the closing handshake and wait (at most ``close_timeout``) for the TCP
        connection to end."""
        protocol = self.protocol
        if self._closed is not None or protocol is None:
            return
        if protocol.state is State.OPEN:
            protocol.send_close(code, reason)
            self._write_out(protocol)
        if self._closed is not None:
            return
        if self._lost is None:
            self._lost = asyncio.get_running_loop().create_future()
        try:
            async with asyncio.timeout(self._edge.close_timeout):
                await asyncio.shield(self._lost)
        except TimeoutError:
            self.abort()

    def abort(self) -> None:
        if self._tcp is not None:
            self._tcp.abort()

    def keepalive(self) -> None:
        protocol = self.protocol
        if protocol is None or protocol.state is not State.OPEN or self._writing_paused:
            return  # one not reading its writes is closed by the relay's write timeout
        if self._ping is not None:
            protocol.fail(CloseCode.INTERNAL_ERROR, "keepalive ping timeout")
        else:
            self._ping = os.urandom(4)
            protocol.send_ping(self._ping)
        self._write_out(protocol)

    # -- bytes in, events out ------------------------------------------------------------

    def _open_protocol(self) -> _Protocol:
        assert self.protocol is not None, "data before connection_made"
        return self.protocol

    def _is_open(self) -> bool:
        return self.protocol is not None and self.protocol.state is State.OPEN

    def _process(self, protocol: _Protocol) -> None:
        for event in protocol.events_received():
            if isinstance(event, Request):
                self._edge.spawn(self._serve(protocol, event))
            elif isinstance(event, Frame):
                self._frame(event)
        self._write_out(protocol)
        if protocol.state is not State.OPEN and self._reader is not None:
            _wake(self._reader)  # closing: the relay's reader must see it
            self._reader = None

    def _frame(self, frame: Frame) -> None:
        if frame.opcode is Opcode.PONG:
            if frame.data == self._ping:
                self._ping = None
            return
        if frame.opcode not in (Opcode.BINARY, Opcode.TEXT, Opcode.CONT):
            return  # pings are answered and closes handled by the protocol itself
        if not frame.fin:
            if self._fragments is None:
                # The first fragment's opcode says text or binary; keep it as a marker.
                self._fragments = [b"t" if frame.opcode is Opcode.TEXT else b"b"]
            self._fragments.append(bytes(frame.data))
            return
        if self._fragments is not None:
            kind, *parts = self._fragments
            self._fragments = None
            text = kind == b"t"
            data = b"".join(parts) + bytes(frame.data)
        else:
            text = frame.opcode is Opcode.TEXT
            data = bytes(frame.data)
        if self._messages is None:
            self._messages = deque()
        self._messages.append(None if text else data)
        _wake(self._reader)
        self._reader = None
        if len(self._messages) >= READ_AHEAD and self._tcp is not None:
            self._reading_paused = True
            self._tcp.pause_reading()

    async def _serve(self, protocol: _Protocol, request: Request) -> None:
        # The handshake's frame (the request, the response) is gone before the
        # connection is served: this task lives as long as the connection.
        if await self._answer(protocol, request):
            await self._edge.handler(self)

    async def _answer(self, protocol: _Protocol, request: Request) -> bool:
        """The opening handshake: a plain HTTP answer, an upgrade, or a refusal; True
        once the WebSocket is open."""
        path = request.path.split("?", 1)[0]
        upgrade = "websocket" in request.headers.get("Upgrade", "").lower()
        try:
            answer = await self._edge.http(path, upgrade)
        except Exception:
            logger.exception("%s: answering %s failed", self.remote, path)
            answer = (http.HTTPStatus.INTERNAL_SERVER_ERROR, "internal error\n", "text/plain")
        if self._closed is not None:
            return False
        if answer is not None:
            status, text, content_type = answer
            response = protocol.reject(status, text)
            _content_type(response, content_type)
            protocol.send_response(response)
            self._write_out(protocol)
            return False
        protocol.send_response(protocol.accept(request))
        request.headers.clear()  # the parser keeps the request; nothing reads it again
        self._write_out(protocol)
        if protocol.state is not State.OPEN:
            return False  # refused (a bad upgrade request): the response says why
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        return True

    def _flush(self, protocol: _Protocol) -> None:
        self._flush_soon = False
        self._write_out(protocol)

    def _write_out(self, protocol: _Protocol) -> None:
        tcp = self._tcp
        if tcp is None or tcp.is_closing():
            return
        chunks = protocol.data_to_send()
        if not chunks:
            return
        eof = not chunks[-1]  # b"": the protocol is done sending (always last)
        data = b"".join(chunks)
        if data:
            tcp.write(data)
        if eof:
            if tcp.can_write_eof():
                tcp.write_eof()
            else:
                tcp.close()  # TLS cannot half-close
        if protocol.close_expected() and self._timer is None:
            # The peer should close now; if it does not, do it for it.
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(self._edge.close_timeout, self.abort)


def _wake(waiter: asyncio.Future[None] | None) -> None:
    if waiter is not None and not waiter.done():
        waiter.set_result(None)


def _content_type(response: Response, content_type: str) -> None:
    del response.headers["Content-Type"]
    response.headers["Content-Type"] = content_type

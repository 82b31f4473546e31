"""The relay on the network: a WebSocket endpoint plus ``/health`` and ``/metrics``.

Both are served on one port: websockets' ``process_request`` hook answers plain HTTP
requests before the WebSocket handshake, so probes and Prometheus need no second
listener.
"""

from __future__ import annotations

import asyncio
import contextlib
import http
import json
import logging
import secrets
import signal
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.frames import CloseCode
from websockets.http11 import Request, Response
from websockets.protocol import State
from websockets.server import ServerProtocol

from parley.errors import InvalidBusLocation
from parley.protocol.frames import FRAME_OVERHEAD, Error, ErrorCode, encode
from parley.relay.bus.location import backend as bus_backend
from parley.relay.bus.location import open_bus
from parley.relay.config import RelayConfig
from parley.relay.core import Relay
from parley.relay.metrics import CONTENT_TYPE_LATEST
from parley.relay.store.location import DB_NAME, backend, open_store, redacted
from parley.transport.websocket import WebSocketTransport, authority, bound_port, peer_name

logger = logging.getLogger(__name__)


class RelayServer:
    """One relay node. ``store``: where it keeps everything (``parley.relay.store
    .location``; default SQLite in ``data_dir``); ``node_id``: its name in logs,
    ``/health`` and metrics (default: a new random one)."""

    def __init__(
        self,
        data_dir: Path,
        host: str = "127.0.0.1",
        port: int = 0,
        config: RelayConfig | None = None,
        *,
        store: str | None = None,
        bus: str | None = None,
        node_id: str | None = None,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.host = host
        self.config = config or RelayConfig()
        self.node_id = node_id or secrets.token_hex(4)
        self.store_backend = backend(store)
        self._store_description = str(self.data_dir / DB_NAME) if store is None else redacted(store)
        self.bus_backend = bus_backend(bus)
        if self.bus_backend != "local" and self.store_backend == "sqlite":
            raise InvalidBusLocation(
                "several relay nodes share one PostgreSQL store: --bus needs "
                "--store postgresql://..."
            )
        self._port = port
        self.relay = Relay(
            open_store(store, self.data_dir), self.config, bus=open_bus(bus, self.node_id)
        )
        self._server: Server | None = None
        self._closed = False

    @property
    def port(self) -> int:
        """The bound port (the real one when constructed with port 0)."""
        if self._server is None:
            raise RuntimeError("the relay server is not started")
        return bound_port(self._server)

    @property
    def url(self) -> str:
        return f"ws://{self._authority()}"

    @property
    def http_url(self) -> str:
        return f"http://{self._authority()}"

    async def start(self) -> None:
        if self.store_backend == "sqlite":
            self.data_dir.mkdir(parents=True, exist_ok=True)
        await self.relay.start()
        try:
            self._server = await serve(
                self._serve_connection,
                self.host,
                self._port,
                process_request=self._process_request,
                # A little more than a body, so an oversized body gets a typed
                # too_large error rather than a closed connection.
                max_size=self.config.max_body + FRAME_OVERHEAD,
                compression=None,
                create_connection=self._connection_class(),
            )
        except BaseException:
            await self.relay.close()
            raise
        logger.info(
            "relay %s listening on %s (%s store: %s; %s bus)",
            self.node_id,
            self.url,
            self.store_backend,
            self._store_description,
            self.bus_backend,
        )
        if self.store_backend != "sqlite" and self.bus_backend == "local":
            logger.warning(
                "no --bus: this node assumes it is the only one on its store; run "
                "several nodes on one store with --bus redis://..."
            )

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._server is not None:
            # Stop accepting, let the relay close its connections with "going away",
            # then wait for the handlers to return.
            self._server.close(close_connections=False)
        await self.relay.close()
        if self._server is not None:
            await self._server.wait_closed()
        logger.info("relay stopped")

    async def serve_forever(self) -> None:
        """Serve until cancelled, then close."""
        if self._server is None:
            await self.start()
        try:
            await asyncio.Event().wait()
        finally:
            await self.close()

    async def __aenter__(self) -> RelayServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def _authority(self) -> str:
        return authority(self.host, self.port)

    def _connection_class(self) -> type[ServerConnection]:
        limit = self.config.max_body + FRAME_OVERHEAD
        too_large = encode(
            Error(code=ErrorCode.TOO_LARGE, message=f"a frame is at most {limit} bytes")
        )
        relay = self.relay

        class RelayConnection(ServerConnection):
            """Says ``too_large`` in a typed Error before websockets closes with 1009.

            websockets refuses an oversized message in its protocol layer (from the
            frame header, before reading the payload) and fails the connection there;
            it has no hook for a last message, so this wraps that protocol's ``fail``.
            """

            def __init__(self, protocol: ServerProtocol, *args: Any, **kwargs: Any) -> None:
                super().__init__(protocol, *args, **kwargs)
                fail = protocol.fail

                def fail_saying_why(code: int, reason: str = "") -> None:
                    if code == CloseCode.MESSAGE_TOO_BIG and protocol.state is State.OPEN:
                        protocol.send_binary(too_large)
                        relay.refused_too_large(peer_name(self), reason)
                    fail(code, reason)

                protocol.fail = fail_saying_why  # type: ignore[method-assign]

        return RelayConnection

    async def _serve_connection(self, ws: ServerConnection) -> None:
        await self.relay.handle(WebSocketTransport(ws))

    async def _process_request(self, conn: ServerConnection, request: Request) -> Response | None:
        path = request.path.split("?", 1)[0]
        if path == "/health":
            report = await self.relay.health()
            report["store"] = self.store_backend
            report["bus"] = self.bus_backend
            ok = report["status"] == "ok"
            status = http.HTTPStatus.OK if ok else http.HTTPStatus.SERVICE_UNAVAILABLE
            return _respond(conn, status, json.dumps(report), "application/json")
        if path == "/metrics":
            text = self.relay.metrics.render().decode()
            return _respond(conn, http.HTTPStatus.OK, text, CONTENT_TYPE_LATEST)
        if "websocket" in request.headers.get("Upgrade", "").lower():
            return None
        return _respond(conn, http.HTTPStatus.NOT_FOUND, "not found\n", "text/plain")


def _respond(
    conn: ServerConnection, status: http.HTTPStatus, text: str, content_type: str
) -> Response:
    response = conn.respond(status, text)
    del response.headers["Content-Type"]
    response.headers["Content-Type"] = content_type
    return response


async def run_relay(
    data_dir: Path,
    host: str,
    port: int,
    config: RelayConfig,
    on_ready: Callable[[RelayServer], None],
    *,
    store: str | None = None,
    bus: str | None = None,
) -> None:
    """Run a relay until SIGINT or SIGTERM, then shut it down cleanly.

    ``on_ready`` gets the server once it is listening (its ``url``, ``node_id``).
    """
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    installed: list[signal.Signals] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        # Not every platform's loop has signal handlers (Windows); there Ctrl-C still
        # arrives as KeyboardInterrupt and the context manager below closes the relay.
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)
    try:
        async with RelayServer(data_dir, host, port, config, store=store, bus=bus) as server:
            on_ready(server)
            await stop.wait()
            logger.info("signal received; shutting down")
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)

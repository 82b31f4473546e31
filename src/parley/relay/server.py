"""The relay on the network: a WebSocket endpoint plus ``/health`` and ``/metrics``.

Both are served on one port (:mod:`parley.relay.edge` answers a plain HTTP request
instead of upgrading it), so probes and Prometheus need no second listener. With a
certificate and key the port speaks TLS (``wss://``, ``https://``); ``metrics=HOST:PORT``
moves ``/metrics`` to a plain-HTTP listener of its own (say, on loopback or an internal
network), off the port strangers reach.
"""

from __future__ import annotations

import asyncio
import contextlib
import http
import json
import logging
import os
import secrets
import signal
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import TracebackType
from urllib.parse import urlsplit

from parley.errors import InvalidBusLocation, InvalidMetricsAddress, InvalidTlsConfig
from parley.loops import loop_name
from parley.protocol.frames import FRAME_OVERHEAD, Error, ErrorCode, encode
from parley.relay.bus.location import backend as bus_backend
from parley.relay.bus.location import open_bus
from parley.relay.config import RelayConfig
from parley.relay.core import Relay
from parley.relay.edge import Edge, EdgeConnection, HttpAnswer
from parley.relay.metrics import CONTENT_TYPE_LATEST
from parley.relay.store.location import DB_NAME, backend, open_store, redacted
from parley.transport.tls import server_context
from parley.transport.websocket import authority, bound_port

logger = logging.getLogger(__name__)

_NOT_FOUND: HttpAnswer = (http.HTTPStatus.NOT_FOUND, "not found\n", "text/plain")


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
        tls_cert: str | os.PathLike[str] | None = None,
        tls_key: str | os.PathLike[str] | None = None,
        metrics: str | None = None,
    ) -> None:
        # Files and addresses first: a bad one is refused before the store is opened.
        self._tls = _tls_context(tls_cert, tls_key)
        self._metrics_address = None if metrics is None else parse_listen_address(metrics)
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
        self._server: asyncio.Server | None = None
        self._edge: Edge | None = None
        self._metrics_server: asyncio.Server | None = None
        self._keepalive: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def port(self) -> int:
        """The bound port (the real one when constructed with port 0)."""
        if self._server is None:
            raise RuntimeError("the relay server is not started")
        return bound_port(self._server)

    @property
    def url(self) -> str:
        """The WebSocket URL clients connect to (``ws://`` or, with TLS, ``wss://``)."""
        return f"{'wss' if self._tls else 'ws'}://{self._authority()}"

    @property
    def http_url(self) -> str:
        """The HTTP(S) URL of ``/health`` (and ``/metrics`` without a listener of its own)."""
        return f"{'https' if self._tls else 'http'}://{self._authority()}"

    @property
    def metrics_url(self) -> str:
        """Where ``/metrics`` is served: its own listener's, else the main port's."""
        if self._metrics_server is None:
            return f"{self.http_url}/metrics"
        assert self._metrics_address is not None
        host = self._metrics_address[0]
        return f"http://{authority(host, bound_port(self._metrics_server))}/metrics"

    async def start(self) -> None:
        """Open the store and start listening (the port is known from then on)."""
        if self.store_backend == "sqlite":
            self.data_dir.mkdir(parents=True, exist_ok=True)
        await self.relay.start()
        try:
            self._edge = self._make_edge()
            edge = self._edge
            self._server = await asyncio.get_running_loop().create_server(
                lambda: EdgeConnection(edge), self.host, self._port, ssl=self._tls
            )
            if self.config.ping_interval is not None:
                self._keepalive = asyncio.create_task(
                    _keepalive_loop(edge, self.config.ping_interval), name="relay-keepalive"
                )
            if self._metrics_address is not None:
                metrics_edge = self._make_edge(self._metrics_only)
                self._metrics_server = await asyncio.get_running_loop().create_server(
                    lambda: EdgeConnection(metrics_edge), *self._metrics_address
                )
        except BaseException:
            if self._server is not None:
                self._server.close()
                await self._server.wait_closed()
            await self.relay.close()
            raise
        logger.info(
            "relay %s listening on %s (%s store: %s; %s bus; %s event loop)",
            self.node_id,
            self.url,
            self.store_backend,
            self._store_description,
            self.bus_backend,
            loop_name(),
        )
        if self._metrics_server is not None:
            logger.info("metrics on %s", self.metrics_url)
        if self.store_backend != "sqlite" and self.bus_backend == "local":
            logger.warning(
                "no --bus: this node assumes it is the only one on its store; run "
                "several nodes on one store with --bus redis://..."
            )

    async def close(self) -> None:
        """Stop listening, close every connection and the relay."""
        if self._closed:
            return
        self._closed = True
        if self._keepalive is not None:
            self._keepalive.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._keepalive
        if self._metrics_server is not None:
            self._metrics_server.close()
            await self._metrics_server.wait_closed()
        if self._server is not None:
            # Stop accepting, let the relay close its connections with "going away",
            # then drop whatever is left (connections still in their handshake).
            self._server.close()
        await self.relay.close()
        if self._edge is not None:
            self._edge.abort_all()
            if self._edge.tasks:
                await asyncio.wait(set(self._edge.tasks), timeout=self.config.close_timeout)
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

    def _make_edge(
        self, answer: Callable[[str, bool], Awaitable[HttpAnswer | None]] | None = None
    ) -> Edge:
        limit = self.config.max_body + FRAME_OVERHEAD
        too_large = encode(
            Error(code=ErrorCode.TOO_LARGE, message=f"a frame is at most {limit} bytes")
        )
        return Edge(
            handler=self.relay.handle,
            http=answer or self._http,
            # A little more than a body, so an oversized body gets a typed too_large
            # error rather than a closed connection.
            max_size=limit,
            too_large=too_large,
            on_too_large=self.relay.refused_too_large,
            close_timeout=self.config.close_timeout,
        )

    async def _http(self, path: str, upgrade: bool) -> HttpAnswer | None:
        if path == "/health":
            report = await self.relay.health()
            report["store"] = self.store_backend
            report["bus"] = self.bus_backend
            ok = report["status"] == "ok"
            status = http.HTTPStatus.OK if ok else http.HTTPStatus.SERVICE_UNAVAILABLE
            return status, json.dumps(report), "application/json"
        if path == "/metrics" and self._metrics_address is None:
            return self._metrics()
        return None if upgrade else _NOT_FOUND

    async def _metrics_only(self, path: str, upgrade: bool) -> HttpAnswer:
        # The metrics listener: /metrics, and nothing else (no WebSocket either).
        if path == "/metrics":
            return self._metrics()
        return _NOT_FOUND

    def _metrics(self) -> HttpAnswer:
        return http.HTTPStatus.OK, self.relay.metrics.render().decode(), CONTENT_TYPE_LATEST


async def _keepalive_loop(edge: Edge, interval: float) -> None:
    """One loop pings every connection of the node each ``interval`` seconds (one that
    missed the last round is closed 1011, as websockets' own keepalive does); a task
    and a timer per connection would be most of an idle connection's memory."""
    while True:
        await asyncio.sleep(interval)
        edge.ping_all()


def parse_listen_address(value: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:PORT`` for IPv6; port 0 picks a free one) as (host, port);
    :class:`InvalidMetricsAddress` if it is not one."""
    shape = f"{value!r} is not HOST:PORT (e.g. 127.0.0.1:9100, [::1]:9100)"
    try:
        parts = urlsplit(f"//{value}")
        host, port = parts.hostname, parts.port
    except ValueError:
        raise InvalidMetricsAddress(shape) from None
    if not host or port is None or parts.netloc != value or parts.username is not None:
        raise InvalidMetricsAddress(shape)
    return host, port


def _tls_context(
    cert: str | os.PathLike[str] | None, key: str | os.PathLike[str] | None
) -> ssl.SSLContext | None:
    if cert is None and key is None:
        return None
    if cert is None or key is None:
        raise InvalidTlsConfig("TLS needs both a certificate and its key (--tls-cert, --tls-key)")
    return server_context(cert, key)


async def run_relay(
    data_dir: Path,
    host: str,
    port: int,
    config: RelayConfig,
    on_ready: Callable[[RelayServer], None],
    *,
    store: str | None = None,
    bus: str | None = None,
    tls_cert: str | os.PathLike[str] | None = None,
    tls_key: str | os.PathLike[str] | None = None,
    metrics: str | None = None,
) -> None:
    """Run a relay until SIGINT or SIGTERM, then shut it down cleanly.

    ``on_ready`` gets the server once it is listening (its ``url``, ``node_id``); the
    keyword arguments are :class:`RelayServer`'s.
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
        server = RelayServer(
            data_dir,
            host,
            port,
            config,
            store=store,
            bus=bus,
            tls_cert=tls_cert,
            tls_key=tls_key,
            metrics=metrics,
        )
        async with server:
            on_ready(server)
            await stop.wait()
            logger.info("signal received; shutting down")
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)

"""The client's WebSocket transport (python-websockets, asyncio implementation).

The relay's side is :mod:`parley.relay.edge`."""

from __future__ import annotations

import asyncio
import ssl

import websockets
from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import Server

from parley.errors import CertificateVerifyFailed, MalformedFrame, TransportClosed
from parley.protocol.frames import DEFAULT_MAX_BODY, FRAME_OVERHEAD

MAX_MESSAGE = DEFAULT_MAX_BODY + FRAME_OVERHEAD


class WebSocketTransport:
    def __init__(self, ws: ClientConnection) -> None:
        self._ws = ws

    @property
    def remote(self) -> str:
        """``host:port`` of the relay, for logs."""
        address = self._ws.remote_address
        if isinstance(address, tuple) and len(address) >= 2:
            return f"{address[0]}:{address[1]}"
        return str(address)

    @property
    def source(self) -> str:
        address = self._ws.remote_address
        return str(address[0]) if isinstance(address, tuple) and address else str(address)

    async def send(self, data: bytes) -> None:
        try:
            await self._ws.send(data)
        except websockets.ConnectionClosed as exc:
            raise TransportClosed(str(exc)) from None

    def write_now(self, data: bytes) -> bool:
        # websockets' asyncio connection sends only through its coroutine (it holds a
        # lock across fragments), so nothing goes out without waiting here.
        return False

    async def recv(self) -> bytes:
        try:
            data = await self._ws.recv()
        except websockets.ConnectionClosed as exc:
            raise TransportClosed(str(exc)) from None
        if isinstance(data, str):
            raise MalformedFrame("frames are binary WebSocket messages, got text")
        return data

    async def close(self, code: int = 1000, reason: str = "") -> None:
        await self._ws.close(code, reason)


async def connect_websocket(
    url: str, *, open_timeout: float = 10.0, ssl_context: ssl.SSLContext | None = None
) -> WebSocketTransport:
    """Open a WebSocket to a relay; :class:`TransportClosed` if it cannot,
    :class:`CertificateVerifyFailed` if a ``wss://`` relay's certificate does not verify.

    ``ssl_context`` is for ``wss://`` URLs (default: the system's trusted CAs); a
    ``ws://`` URL ignores it, so one context serves a list of mixed URLs.
    """
    tls = ssl_context if url.startswith("wss://") else None
    try:
        ws = await connect(
            url, max_size=MAX_MESSAGE, open_timeout=open_timeout, compression=None, ssl=tls
        )
    except ssl.SSLCertVerificationError as exc:
        raise CertificateVerifyFailed(
            f"certificate verify failed for {url}: {exc.verify_message or exc.reason}"
        ) from None
    except (OSError, TimeoutError, websockets.InvalidHandshake, websockets.InvalidURI) as exc:
        raise TransportClosed(f"cannot connect to {url}: {exc}") from None
    return WebSocketTransport(ws)


def bound_port(server: Server | asyncio.Server) -> int:
    """The port a started server listens on (the real one when it was asked for 0)."""
    return int(server.sockets[0].getsockname()[1])


def authority(host: str, port: int) -> str:
    """``host:port`` as it goes in a URL (an IPv6 address in brackets)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

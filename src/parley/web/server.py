"""The browser softphone's server: the page and its WebSocket on one loopback port.

::

    client = Client.from_credentials("me.json")
    phone = WebPhone(client)             # before connecting, like client.calls()
    await client.connect()
    async with phone:                    # serves until the block ends
        print(phone.url)                 # http://127.0.0.1:PORT/?token=SECRET

websockets' ``process_request`` hook answers the plain HTTP requests (the page, its
script and style) and checks every WebSocket handshake before it completes
(:mod:`parley.web.guard`: Host, Origin, token). The Python process keeps the identity,
its keys and the relay connection; the page gets only what it needs to be the media
endpoint (:mod:`parley.web.messages`), and :class:`~parley.web.bridge.PhoneBridge` turns
what it says into calls.

One page drives the phone at a time: a second one (another tab) is refused while the
first is open.
"""

from __future__ import annotations

import asyncio
import contextlib
import http
import logging
import secrets
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Final
from urllib.parse import urlsplit

from websockets.asyncio.server import Server, ServerConnection
from websockets.asyncio.server import serve as serve_websockets
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from parley.client.client import Client
from parley.errors import MediaError, StateError
from parley.ice import IceConfig
from parley.transport.websocket import authority, bound_port
from parley.web import assets
from parley.web import messages as wire
from parley.web.bridge import PhoneBridge
from parley.web.guard import Guard, is_loopback

log = logging.getLogger(__name__)

WEBSOCKET_PATH: Final = "/ws"
ANOTHER_PAGE: Final = 4001  # WebSocket close code: another page drives this phone
PAGE_HANDOVER: Final = 2.0  # seconds a new page waits for the previous one to go (reload)


class WebPhoneError(MediaError):
    """The browser softphone cannot run as asked: an address that is not loopback, a
    port that is taken."""


class WebPhone:
    """The browser softphone of ``client``, served on ``host`` (loopback only) and
    ``port`` (0: a free one). ``ice``: STUN/TURN servers and allowed host addresses
    (default: from the environment, see :mod:`parley.ice`).

    Construct it before connecting the client, or right after without awaiting in
    between (it takes the client's :meth:`~parley.client.Client.calls` service, which
    must not miss a start that arrived while offline); connecting the client is the
    caller's part, and so is closing it. :meth:`__aexit__` hangs up the call in progress
    and closes the server.
    """

    def __init__(
        self,
        client: Client,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        ice: IceConfig | None = None,
    ) -> None:
        if not is_loopback(host):
            raise WebPhoneError(
                f"the phone page is served on a loopback address only, not {host!r}"
            )
        self.host = host
        self.token = secrets.token_urlsafe(32)
        self.ice = IceConfig.from_env() if ice is None else ice
        self._port = port
        self._bridge = PhoneBridge(client, self.ice)
        self._guard: Guard | None = None
        self._server: Server | None = None
        self._page: ServerConnection | None = None
        self._page_gone = asyncio.Event()
        self._page_gone.set()

    @property
    def port(self) -> int:
        """The port the page is served on; StateError before it is served."""
        if self._server is None:
            raise StateError("the phone page is not served yet")
        return bound_port(self._server)

    @property
    def url(self) -> str:
        """The page's address, with its secret token: whoever has it drives the phone."""
        return f"http://{self._authority()}/?token={self.token}"

    async def __aenter__(self) -> WebPhone:
        try:
            self._server = await serve_websockets(
                self._serve_page,
                self.host,
                self._port,
                process_request=self._process_request,
                max_size=wire.MAX_MESSAGE_BYTES,
                compression=None,
                server_header=None,
            )
        except OSError as exc:
            raise WebPhoneError(
                f"cannot serve the phone page on {self.host} port {self._port}: {exc.strerror}"
            ) from None
        self._guard = Guard(self.host, self.port, self.token)
        self._bridge.start()
        log.info("phone page served on http://%s/ for %s", self._authority(), self._bridge.identity)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # The page hears the hang-up before its socket closes.
        await self._bridge.close()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        log.info("phone page closed")

    def _authority(self) -> str:
        return authority(self.host, self.port)

    # -- HTTP ---------------------------------------------------------------------------------

    def _process_request(self, conn: ServerConnection, request: Request) -> Response | None:
        """Answer a plain request, or let a WebSocket handshake through; refuse what the
        guard refuses (every refusal says why, for the person reading the console)."""
        assert self._guard is not None
        host = _single(request.headers, "Host")
        if host is None or not self._guard.host_allowed(host):
            log.warning("phone page: refused a request for Host %r (DNS rebinding?)", host)
            return assets.respond(
                conn,
                http.HTTPStatus.FORBIDDEN,
                f"this phone answers to 127.0.0.1:{self.port} and localhost:{self.port} only\n",
            )
        path = urlsplit(request.path).path
        if path == WEBSOCKET_PATH:
            return self._check_websocket(conn, request, host)
        if path == "/":
            if not self._guard.token_allowed(request.path):
                log.warning("phone page: refused the page without its token")
                return assets.respond(
                    conn,
                    http.HTTPStatus.FORBIDDEN,
                    assets.FORBIDDEN_PAGE,
                    assets.PHONE.content_type,
                )
            return assets.respond(
                conn,
                http.HTTPStatus.OK,
                assets.text(assets.PHONE),
                assets.PHONE.content_type,
                websocket=f"ws://{host}{WEBSOCKET_PATH}",
            )
        public = assets.PUBLIC.get(path)
        if public is not None:
            return assets.respond(
                conn, http.HTTPStatus.OK, assets.text(public), public.content_type
            )
        return assets.respond(conn, http.HTTPStatus.NOT_FOUND, "not found\n")

    def _check_websocket(
        self, conn: ServerConnection, request: Request, host: str
    ) -> Response | None:
        assert self._guard is not None
        if "websocket" not in (_single(request.headers, "Upgrade") or "").lower():
            return assets.respond(conn, http.HTTPStatus.UPGRADE_REQUIRED, "a WebSocket only\n")
        origin = _single(request.headers, "Origin")
        if not self._guard.origin_allowed(origin, host):
            log.warning("phone page: refused a WebSocket from origin %r", origin)
            return assets.respond(
                conn, http.HTTPStatus.FORBIDDEN, "only this phone's own page may connect\n"
            )
        if not self._guard.token_allowed(request.path):
            log.warning("phone page: refused a WebSocket without the phone's token")
            return assets.respond(
                conn, http.HTTPStatus.FORBIDDEN, "this phone's token is missing or wrong\n"
            )
        return None  # the handshake goes on

    # -- the page's WebSocket -----------------------------------------------------------------

    async def _serve_page(self, ws: ServerConnection) -> None:
        if self._page is not None:
            # A reloaded page connects again while the old socket may still be closing.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(PAGE_HANDOVER):
                    await self._page_gone.wait()
        if self._page is not None:
            log.warning("phone page: refused a second page while one is open")
            await ws.close(ANOTHER_PAGE, "this phone is open in another page")
            return
        self._page = ws
        self._page_gone.clear()

        async def send(message: wire.ServerMessage) -> None:
            with contextlib.suppress(ConnectionClosed):
                await ws.send(wire.encode(message))

        log.info("phone page connected")
        try:
            await self._bridge.attach(send)
            async for data in ws:
                await self._bridge.handle(data)
        except ConnectionClosed:
            pass
        finally:
            await self._bridge.detach()
            self._page = None
            self._page_gone.set()
            log.info("phone page disconnected")


def _single(headers: Headers, name: str) -> str | None:
    """A header sent exactly once; a repeated one counts as missing (and is refused)."""
    values = headers.get_all(name)
    return values[0] if len(values) == 1 else None


async def serve(
    credentials: Path,
    *,
    port: int = 0,
    ice: IceConfig | None = None,
    on_ready: Callable[[str], None],
) -> None:
    """Connect the identity of ``credentials`` and serve its phone page until cancelled;
    ``on_ready`` gets the page's URL (with its token) once it is served."""
    client = Client.from_credentials(credentials)
    phone = WebPhone(client, port=port, ice=ice)
    try:
        await client.connect()
        async with phone:
            on_ready(phone.url)
            await asyncio.Event().wait()
    finally:
        await client.close()

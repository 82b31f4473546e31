"""One logical relay session over a sequence of transports.

:class:`Connection` answers the relay's challenge, matches replies to requests by
``ref``, times requests out, and after a dropped transport (not after :meth:`close`)
reconnects with exponential backoff and jitter. Requests still waiting for a reply are
resent on the new transport with the same bytes: a ``Send`` keeps its ``envelope_id``
so the relay stores it once however often it arrives, and the caller keeps waiting
until its own timeout.

If the relay refuses the device (``auth_failed``, ``device_revoked``) the connection
stops for good: waiting and later requests raise that error.

Incoming :class:`~parley.protocol.frames.Deliver` frames go to ``on_deliver`` in arrival
order; the callback must not block (the client queues them for its inbox task), because
this task must keep reading replies while handlers run.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeAlias, TypeVar
from urllib.parse import urlsplit

from parley.client.backoff import Backoff
from parley.credentials import Credentials
from parley.errors import (
    AuthenticationFailed,
    CertificateVerifyFailed,
    DeliveryTimeout,
    DeviceRevoked,
    InvalidRelayUrl,
    MalformedFrame,
    NotConnected,
    ProtocolError,
    RelayConnectionError,
    RelayError,
    StateError,
    TransportClosed,
)
from parley.protocol.frames import (
    PROTOCOL_VERSION,
    Ack,
    Authenticate,
    Challenge,
    ClaimedKeys,
    ClientFrame,
    Confirm,
    Connections,
    Deliver,
    Done,
    Error,
    ErrorCode,
    KeyChainFrame,
    KeyCount,
    Presence,
    Registered,
    RelayFrame,
    Welcome,
    auth_message,
    decode_relay_frame,
    encode,
)
from parley.transport import Transport
from parley.transport.tls import client_context
from parley.transport.websocket import connect_websocket

log = logging.getLogger(__name__)

Connector: TypeAlias = Callable[[], Awaitable[Transport]]
Reply: TypeAlias = Ack | Done | Connections | KeyChainFrame | Registered | KeyCount | ClaimedKeys
ReplyT = TypeVar("ReplyT", Ack, Done, Connections, KeyChainFrame, Registered, KeyCount, ClaimedKeys)

# The relay refuses these for good; retrying would only be refused again.
_FATAL_CODES = frozenset({ErrorCode.AUTH_FAILED, ErrorCode.DEVICE_REVOKED})


def relay_urls(relay_url: str) -> list[str]:
    """The relay nodes ``relay_url`` names: one URL, or several separated by commas
    (``ws://a:8765,ws://b:8765``) for a relay of several nodes without a load balancer.

    Each is ``ws://HOST[:PORT]`` or ``wss://HOST[:PORT]``: anything else (no scheme, a
    path, a query, a port out of range) raises :class:`InvalidRelayUrl` saying what to
    fix. This is the one place relay URLs are checked.
    """
    urls = [url.strip() for url in relay_url.split(",") if url.strip()]
    if not urls:
        raise InvalidRelayUrl("no relay URL given")
    for url in urls:
        _check_relay_url(url)
    return urls


def _check_relay_url(url: str) -> None:
    shape = "a relay URL is ws://HOST:PORT or wss://HOST:PORT"
    if "://" not in url:
        raise InvalidRelayUrl(f"relay URL {url!r} has no scheme: write ws://{url}")
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss"):
        raise InvalidRelayUrl(f"relay URL {url!r} is not ws:// or wss://; {shape}")
    try:
        port = parts.port
    except ValueError:
        raise InvalidRelayUrl(f"relay URL {url!r} has an invalid port; {shape}") from None
    if not parts.hostname:
        raise InvalidRelayUrl(f"relay URL {url!r} names no host; {shape}")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        extra = url[len(f"{parts.scheme}://{parts.netloc}") :]
        raise InvalidRelayUrl(
            f"relay URL {url!r} has a path ({extra}); {shape}, e.g. {parts.scheme}://{parts.netloc}"
        )
    if port == 0:
        raise InvalidRelayUrl(f"relay URL {url!r} has port 0; {shape}")


def websocket_connector(
    relay_url: str, *, ca_file: str | os.PathLike[str] | None = None
) -> Connector:
    """The default connector: a new WebSocket per attempt, to the node that answered
    last; if it does not answer, to the next one of ``relay_url``'s (failover), each
    tried once per attempt. A device resumes after its offset on whichever node it
    reaches, so moving between nodes loses nothing.

    ``wss://`` nodes must present a certificate that verifies against ``ca_file`` (PEM)
    if given, else the system's trusted CAs; every node of the list alike.
    """
    urls = relay_urls(relay_url)
    current = 0
    context: ssl.SSLContext | None = None
    attempts = 0

    async def connect() -> Transport:
        nonlocal current, context, attempts
        if context is None and any(url.startswith("wss://") for url in urls):
            # Once, on first use: a bad CA file is an error of the first connect.
            context = client_context(ca_file)
        attempts += 1
        failure: RelayConnectionError | None = None
        for step in range(len(urls)):
            index = (current + step) % len(urls)
            try:
                transport = await connect_websocket(urls[index], ssl_context=context)
            except CertificateVerifyFailed as exc:
                # Not a node that is away: reconnecting will not help until someone
                # fixes the certificate or the CA, so say so at every reconnect (the
                # first attempt's error goes to the caller, who says it).
                if attempts > 1:
                    log.warning("%s", exc)
                failure = exc
                continue
            except RelayConnectionError as exc:
                if not isinstance(failure, CertificateVerifyFailed):
                    failure = exc
                if len(urls) > 1:
                    log.info("relay node %s unreachable: %s", urls[index], exc)
                continue
            current = index
            return transport
        assert failure is not None
        raise failure

    return connect


def credentials_connector(credentials: Credentials) -> Connector:
    """The default connector of a device: its relay URL(s) and CA file."""
    return websocket_connector(credentials.relay_url, ca_file=credentials.ca_file)


@dataclass
class _Pending:
    data: bytes
    future: asyncio.Future[Reply]


async def recv_frame(transport: Transport) -> RelayFrame:
    return decode_relay_frame(await transport.recv())


async def expect_challenge(transport: Transport) -> Challenge:
    """The first frame of every session; a typed error if the relay speaks otherwise."""
    frame = await recv_frame(transport)
    if not isinstance(frame, Challenge):
        raise MalformedFrame(f"expected a challenge, got {type(frame).__name__}")
    if frame.version != PROTOCOL_VERSION:
        raise RelayError.from_code(
            ErrorCode.UNSUPPORTED,
            f"relay speaks protocol {frame.version}, this client {PROTOCOL_VERSION}",
        )
    return frame


class Connection:
    def __init__(
        self,
        credentials: Credentials,
        connector: Connector,
        *,
        on_deliver: Callable[[Deliver], None],
        resume_after: Callable[[], int],
        on_presence: Callable[[Presence], None] = lambda frame: None,
        on_key_count: Callable[[KeyCount], None] = lambda frame: None,
        on_reconnect: Callable[[], None] = lambda: None,
        ack_timeout: float,
        backoff: Backoff | None = None,
    ) -> None:
        self._credentials = credentials
        self._connector = connector
        self._on_deliver = on_deliver
        self._on_presence = on_presence
        self._on_key_count = on_key_count
        self._on_reconnect = on_reconnect
        self._resume_after = resume_after
        self._ack_timeout = ack_timeout
        self._backoff = backoff or Backoff()
        self._refs = itertools.count(1)
        self._pending: dict[int, _Pending] = {}
        self._transport: Transport | None = None
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._failure: RelayError | None = None

    @property
    def connected(self) -> bool:
        return self._transport is not None

    @property
    def failure(self) -> RelayError | None:
        """Why the relay refused this device for good, if it did."""
        return self._failure

    async def open(self) -> Welcome:
        """Connect and authenticate once; errors of this first attempt are raised."""
        if self._task is not None or self._closing:
            raise StateError("a connection is opened once")
        transport = await self._connector()
        try:
            welcome = await self._handshake(transport)
        except BaseException:
            await transport.close()
            raise
        await self._attach(transport)
        self._task = asyncio.create_task(self._run(transport), name="parley-connection")
        return welcome

    async def close(self) -> None:
        """Stop reconnecting, close the transport, fail whatever still waits."""
        if self._closing:
            return
        self._closing = True
        transport, self._transport = self._transport, None
        if transport is not None:
            await transport.close()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._fail_pending(lambda: NotConnected("the client was closed"))

    async def request(self, make: Callable[[int], ClientFrame], expect: type[ReplyT]) -> ReplyT:
        """Send ``make(ref)`` and return the relay's reply of type ``expect``.

        Raises the typed :class:`RelayError` for an ``Error`` reply and
        :class:`DeliveryTimeout` when no reply comes within the ack timeout, across
        reconnects.
        """
        if self._failure is not None:
            raise _copy(self._failure)
        if self._closing or self._task is None:
            raise NotConnected("the client is not connected")
        ref = next(self._refs)
        data = encode(make(ref))
        future: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        self._pending[ref] = _Pending(data, future)
        try:
            async with asyncio.timeout(self._ack_timeout):
                if self._transport is not None:
                    # A closed transport is fine: the request is resent after reconnecting.
                    with contextlib.suppress(TransportClosed):
                        await self._transport.send(data)
                reply = await future
        except TimeoutError:
            raise DeliveryTimeout(
                f"the relay did not answer within {self._ack_timeout:g} s"
            ) from None
        finally:
            self._pending.pop(ref, None)
        if not isinstance(reply, expect):
            raise MalformedFrame(f"expected {expect.__name__}, got {type(reply).__name__}")
        return reply

    async def confirm(self, offset: int) -> None:
        """Tell the relay everything up to ``offset`` is processed; best effort.

        A confirm lost with a dropped transport costs nothing: reconnecting resumes
        after the offset stored locally, which is at least as far.
        """
        if self._transport is not None:
            with contextlib.suppress(TransportClosed):
                await self._transport.send(encode(Confirm(offset=offset)))

    # -- session -----------------------------------------------------------------

    async def _handshake(self, transport: Transport) -> Welcome:
        try:
            async with asyncio.timeout(self._ack_timeout):
                challenge = await expect_challenge(transport)
                identity, device = self._credentials.identity, self._credentials.device
                signature = self._credentials.secret_key.sign(
                    auth_message(challenge.nonce, identity, device)
                )
                resume_after = self._resume_after()
                await transport.send(
                    encode(
                        Authenticate(
                            identity=identity,
                            device=device,
                            signature=signature,
                            resume_after=resume_after,
                        )
                    )
                )
                reply = await recv_frame(transport)
        except TimeoutError:
            raise DeliveryTimeout("the relay did not complete the handshake in time") from None
        if isinstance(reply, Error):
            raise relay_error(reply)
        if not isinstance(reply, Welcome):
            raise MalformedFrame(f"expected welcome, got {type(reply).__name__}")
        log.info(
            "authenticated as %s:%s, resuming after offset %d",
            reply.identity,
            reply.device,
            reply.resume_after,
        )
        return reply

    async def _attach(self, transport: Transport) -> None:
        # Snapshot first: a request made while resending sees the transport and sends
        # itself, so nothing goes out twice from this side.
        waiting = list(self._pending.values())
        self._transport = transport
        for pending in waiting:
            if not pending.future.done():
                await transport.send(pending.data)
        if waiting:
            log.info("resent %d unanswered requests", len(waiting))

    async def _run(self, transport: Transport) -> None:
        while True:
            await self._serve(transport)
            self._transport = None
            if self._closing or self._failure is not None:
                return
            log.warning("lost the relay connection; reconnecting")
            reconnected = await self._reconnect()
            if reconnected is None:
                return
            transport = reconnected

    async def _serve(self, transport: Transport) -> None:
        try:
            while True:
                self._dispatch(await recv_frame(transport))
        except TransportClosed:
            pass
        except ProtocolError as exc:
            # A relay that sends garbage is as good as gone: start a fresh session.
            log.warning("closing the relay connection: %s", exc)
            await transport.close(1002, "protocol error")

    async def _reconnect(self) -> Transport | None:
        self._backoff.reset()
        while not self._closing:
            await asyncio.sleep(self._backoff.next_delay())
            try:
                transport = await self._connector()
            except (RelayConnectionError, OSError) as exc:
                log.info("reconnect failed: %s", exc)
                continue
            except Exception:
                # A custom connector's bug must not end reconnecting silently.
                log.exception("the connector raised; retrying")
                continue
            try:
                await self._handshake(transport)
                await self._attach(transport)
            except (AuthenticationFailed, DeviceRevoked) as exc:
                await transport.close()
                self._fail(exc)
                return None
            except (RelayError, RelayConnectionError, DeliveryTimeout, ProtocolError) as exc:
                log.info("reconnect failed: %s", exc)
                self._transport = None
                await transport.close()
                continue
            self._on_reconnect()
            return transport
        return None

    def _dispatch(self, frame: RelayFrame) -> None:
        if isinstance(frame, Deliver):
            self._on_deliver(frame)
        elif isinstance(frame, Presence):
            self._on_presence(frame)
        elif isinstance(frame, KeyCount):
            # With a ref it answers a PublishKeys; without, the relay says keys run low.
            if frame.ref is None:
                self._on_key_count(frame)
            else:
                self._resolve(frame.ref, frame)
        elif isinstance(frame, Ack | Done | Connections | KeyChainFrame | Registered | ClaimedKeys):
            self._resolve(frame.ref, frame)
        elif isinstance(frame, Error):
            self._on_error(frame)
        else:
            log.warning("ignoring unexpected %s from the relay", type(frame).__name__)

    def _resolve(self, ref: int, reply: Reply) -> None:
        pending = self._pending.pop(ref, None)
        if pending is not None and not pending.future.done():
            pending.future.set_result(reply)

    def _on_error(self, frame: Error) -> None:
        error = relay_error(frame)
        if frame.code in _FATAL_CODES:
            # About the session, whatever request it answers: everything waiting fails.
            self._fail(error)
            return
        pending = self._pending.pop(frame.ref, None) if frame.ref is not None else None
        if pending is None:
            log.warning("relay error: %s (%s)", frame.message, frame.code)
        elif not pending.future.done():
            pending.future.set_exception(error)

    def _fail(self, error: RelayError) -> None:
        log.error("the relay refused this device; not reconnecting: %s", error)
        self._failure = error
        self._fail_pending(lambda: _copy(error))

    def _fail_pending(self, make_error: Callable[[], Exception]) -> None:
        pending, self._pending = self._pending, {}
        for item in pending.values():
            if not item.future.done():
                item.future.set_exception(make_error())


def relay_error(frame: Error) -> RelayError:
    """The exception that an Error frame from the relay stands for."""
    return RelayError.from_code(frame.code, frame.message, frame.retry_after)


def _copy(error: RelayError) -> RelayError:
    # A fresh instance per raise, so tracebacks of different callers do not pile up.
    return RelayError.from_code(error.code, str(error), error.retry_after)

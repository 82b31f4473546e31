"""The relay: authenticates connections, routes envelopes, keeps the directory.

Transport-agnostic: :meth:`Relay.handle` serves one :class:`~parley.transport.Transport`,
whether a WebSocket (see :mod:`parley.relay.server`) or an in-memory pair in tests.
A client's mistakes are answered with a typed :class:`~parley.protocol.frames.Error`
(counted in ``parley_relay_rejected_total`` by code) and never end the relay's work;
only authentication failures and revocation close a connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Callable, Coroutine
from typing import Any, get_args

import msgspec

from parley.crypto.keys import VerifyKey
from parley.errors import BadSignature, KeyChainError, MalformedFrame, TransportClosed
from parley.protocol import frames
from parley.protocol.frames import (
    ONE_TIME_KEYS_LOW,
    Ack,
    AppendKey,
    Authenticate,
    Challenge,
    ClaimedKeys,
    ClaimKeys,
    ClientFrame,
    Confirm,
    Connections,
    Deliver,
    Done,
    Envelope,
    ErrorCode,
    GetKeys,
    KeyChainFrame,
    KeyCount,
    ListConnections,
    Permit,
    PublishKeys,
    Register,
    Registered,
    Send,
    Unpermit,
    Unwatch,
    Watch,
    Welcome,
)
from parley.protocol.keychain import ChainEntry, KeyOp
from parley.relay.bus import Bus, LocalBus
from parley.relay.bus.events import (
    BusEvent,
    ChainChanged,
    KeysLow,
    PermitsChanged,
    PresenceChanged,
    Revoked,
    Rows,
    SessionOpened,
)
from parley.relay.config import RelayConfig
from parley.relay.connection import Connection, Context
from parley.relay.directory import Directory, Registration
from parley.relay.metrics import RelayMetrics
from parley.relay.prekeys import InvalidKeys, KeyDirectory, check_publish
from parley.relay.presence import PresenceBoard
from parley.relay.store import IdentityKey, InboxRow, RelayStore, StoreStatus
from parley.relay.store.timed import timed_store
from parley.transport import Transport

logger = logging.getLogger(__name__)

# WebSocket close codes (4000-4999 is the private-use range of RFC 6455 §7.4.2).
CLOSE_REVOKED = 4001
CLOSE_AUTH_FAILED = 4003
CLOSE_AUTH_TIMEOUT = 4008
CLOSE_REPLACED = 4009  # the device connected to another relay node
CLOSE_GOING_AWAY = 1001  # RFC 6455 §7.4.1: the server is going down

MAX_ENVELOPE_ID = 128
_CLIENT_TAGS = frozenset(cls.__struct_config__.tag for cls in get_args(ClientFrame))
_raw_decoder = msgspec.msgpack.Decoder()


class Relay:
    def __init__(
        self,
        store: RelayStore,
        config: RelayConfig | None = None,
        *,
        clock: Callable[[], float] = time.time,
        bus: Bus | None = None,
    ) -> None:
        self.config = config or RelayConfig()
        self.metrics = RelayMetrics()
        store = timed_store(store, self.metrics)
        self._store = store
        self._bus: Bus = bus or LocalBus()
        self._clock = clock
        self._directory = Directory(store)
        self._keys = KeyDirectory(store, self._directory)
        self._ctx = Context(
            self.config,
            store,
            self._directory,
            self.metrics,
            clock,
            push_in_sequence=not isinstance(self._bus, LocalBus),
        )
        # Authenticated connections by (identity, device): where deliveries are pushed.
        self._sessions: dict[tuple[str, str], set[Connection]] = {}
        self._presence = PresenceBoard(self._bus.present)
        self._handlers: set[asyncio.Task[Any]] = set()
        self._connections: set[Connection] = set()
        # Store writes started by a connection's requests; they finish even if the
        # connection goes away, and close() waits for them before closing the store.
        self._inflight: set[asyncio.Task[None]] = set()
        self._sweeper: asyncio.Task[None] | None = None
        self._closing = False

    @property
    def node(self) -> str:
        """This node's id on the bus."""
        return self._bus.node

    @property
    def connection_count(self) -> int:
        """Authenticated connections open now."""
        return sum(len(conns) for conns in self._sessions.values())

    async def start(self) -> None:
        await self._store.open()
        try:
            await self._bus.start(self._on_bus_event, self._on_bus_gap)
        except BaseException:
            await self._store.close()
            raise
        self._sweeper = asyncio.create_task(self._sweep_loop(), name="relay-sweeper")

    async def close(self) -> None:
        self._closing = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        for conn in list(self._connections):
            conn.close_soon(CLOSE_GOING_AWAY, "relay shutting down")
        if self._handlers:
            # Each connection aborts its own writer after close_timeout, which closes
            # its transport and ends its handler; the margin covers that close itself.
            _, pending = await asyncio.wait(
                set(self._handlers), timeout=self.config.close_timeout + 1
            )
            if pending:
                logger.warning("%d connections did not close in time", len(pending))
        await asyncio.gather(*self._inflight, return_exceptions=True)
        await self._bus.close()
        await self._store.close()

    async def health(self, timeout: float = 2.0) -> dict[str, object]:
        """What ``/health`` says: this node, its store and bus, and whether each answers."""
        try:
            async with asyncio.timeout(timeout):
                await self._store.ping()
            store_ok, store_error = True, None
        except Exception as exc:  # a probe: whatever went wrong, the store did not answer
            store_ok, store_error = False, str(exc) or type(exc).__name__
        bus_ok = self._bus.connected
        report: dict[str, object] = {
            "status": "ok" if store_ok and bus_ok else "degraded",
            "node": self.node,
            "store_reachable": store_ok,
            "bus_reachable": bus_ok,
            "connections": self.connection_count,
        }
        if store_error is not None:
            report["store_error"] = store_error
        return report

    async def sweep(self) -> int:
        """Delete expired inbox rows and envelopes now; returns the rows deleted."""
        expired = await self._store.expire(self._clock())
        self.metrics.messages_expired.inc(expired)
        return expired

    # -- one connection ---------------------------------------------------------------

    async def handle(self, transport: Transport) -> None:
        """Serve one connection until it closes. Never raises for client misbehaviour."""
        if self._closing:
            with contextlib.suppress(TransportClosed, OSError):
                await transport.close(CLOSE_GOING_AWAY, "relay shutting down")
            return
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
        conn = Connection(transport, self._ctx)
        self._connections.add(conn)
        conn.start()
        try:
            if await self._handshake(conn):
                await self._serve(conn)
        except TransportClosed:
            logger.debug("%s: closed by the client", conn)
        except Exception:
            logger.exception("%s: unexpected failure; closing the connection", conn)
            conn.close_soon(1011, "internal error")
        finally:
            self._detach(conn)
            self._presence.forget(conn)
            self._connections.discard(conn)
            await conn.finish()
            if task is not None:
                self._handlers.discard(task)

    async def _handshake(self, conn: Connection) -> bool:
        nonce = secrets.token_bytes(32)
        conn.reply(Challenge(nonce=nonce, max_body=self.config.max_body))
        try:
            async with asyncio.timeout(self.config.auth_timeout):
                while not conn.closing:
                    frame = await self._next_frame(conn)
                    if isinstance(frame, Authenticate):
                        return await self._authenticate(conn, nonce, frame)
                    if isinstance(frame, Register):
                        await self._register(conn, frame)
                    elif frame is not None:
                        self._reject(
                            conn,
                            getattr(frame, "ref", None),
                            ErrorCode.NOT_AUTHENTICATED,
                            "authenticate first",
                        )
        except TimeoutError:
            self.metrics.rejected.labels("auth_timeout").inc()
            logger.info("%s: not authenticated in time; closing", conn)
            conn.close_soon(CLOSE_AUTH_TIMEOUT, "authentication timeout")
        return False

    async def _serve(self, conn: Connection) -> None:
        while not conn.closing:
            frame = await self._next_frame(conn)
            if frame is None:
                continue
            try:
                await self._dispatch(conn, frame)
            except Exception:
                # The store failed, not the client: say so and keep the connection.
                logger.exception("%s: %s failed", conn, type(frame).__name__)
                ref = getattr(frame, "ref", None)
                self._reject(conn, ref, ErrorCode.INTERNAL, "the relay failed; retry later")

    async def _next_frame(self, conn: Connection) -> ClientFrame | None:
        """The next frame, or None after answering one that does not decode."""
        await conn.wait_for_room()
        try:
            data = await conn.transport.recv()
        except MalformedFrame as exc:  # e.g. a text WebSocket message
            self._reject(conn, None, ErrorCode.MALFORMED, str(exc))
            return None
        try:
            return frames.decode_client_frame(data)
        except MalformedFrame as exc:
            code, ref = _diagnose(data)
            self._reject(conn, ref, code, str(exc))
            return None

    async def _dispatch(self, conn: Connection, frame: ClientFrame) -> None:
        identity = conn.identity
        assert identity is not None
        if not self._still_active(identity, conn.device):
            # A frame read just before this device was revoked: refuse, do nothing.
            self._reject(
                conn,
                getattr(frame, "ref", None),
                ErrorCode.DEVICE_REVOKED,
                "this device was revoked",
            )
            return
        match frame:
            case Send():
                await self._send(conn, identity, frame)
            case Confirm(offset=offset):
                self._confirm(conn, identity, offset)
            case Permit(ref=ref, identity=peer):
                if await self._directory.chain(peer) is None:
                    self._reject(conn, ref, ErrorCode.UNKNOWN_IDENTITY, f"no identity {peer!r}")
                    return
                await self._directory.permit(identity, peer)
                self._publish(PermitsChanged(owner=identity))
                conn.reply(Done(ref=ref))
            case Unpermit(ref=ref, identity=peer):
                await self._directory.unpermit(identity, peer)
                self._publish(PermitsChanged(owner=identity))
                self._presence.unwatch_by(peer, identity)
                conn.reply(Done(ref=ref))
            case Watch(ref=ref, identities=watched):
                await self._watch(conn, identity, ref, watched)
            case Unwatch(ref=ref, identities=watched):
                for whose in watched:
                    self._presence.unwatch(conn, whose)
                conn.reply(Done(ref=ref))
            case ListConnections(ref=ref):
                peers = sorted(await self._directory.permits(identity))
                conn.reply(Connections(ref=ref, identities=peers))
            case GetKeys(ref=ref, identity=whose):
                chain = await self._directory.chain(whose)
                if chain is None:
                    self._reject(conn, ref, ErrorCode.UNKNOWN_IDENTITY, f"no identity {whose!r}")
                    return
                conn.reply(KeyChainFrame(ref=ref, identity=whose, entries=list(chain.entries)))
            case AppendKey(ref=ref, entry=entry):
                await self._append_key(conn, identity, ref, entry)
            case PublishKeys():
                await self._publish_keys(conn, identity, frame)
            case ClaimKeys():
                await self._claim_keys(conn, identity, frame)
            case Register():
                await self._register(conn, frame)
            case Authenticate():
                self._reject(conn, None, ErrorCode.UNSUPPORTED, "already authenticated")

    async def _watch(self, conn: Connection, watcher: str, ref: int, watched: list[str]) -> None:
        # All or nothing: check every identity before watching any.
        for whose in watched:
            if await self._directory.chain(whose) is None:
                self._reject(conn, ref, ErrorCode.UNKNOWN_IDENTITY, f"no identity {whose!r}")
                return
            if whose != watcher and watcher not in await self._directory.permits(whose):
                msg = f"{whose!r} does not accept messages from {watcher!r}"
                self._reject(conn, ref, ErrorCode.NOT_PERMITTED, msg)
                return
        # Done first, so the client knows the watch is on before the first Presence.
        conn.reply(Done(ref=ref))
        for whose in watched:
            self._presence.watch(conn, whose)

    def _still_active(self, identity: str, device: str | None) -> bool:
        chain = self._directory.cached_chain(identity)
        return chain is not None and device in chain.active

    # -- registration and authentication ------------------------------------------------

    async def _register(self, conn: Connection, frame: Register) -> None:
        try:
            outcome = await self._directory.register(frame.entry, frame.name, self._clock())
        except KeyChainError as exc:
            self._reject(conn, frame.ref, ErrorCode.INVALID_KEY_CHAIN, str(exc))
            return
        identity = frame.entry.decoded().identity
        if outcome is Registration.TAKEN:
            self._reject(conn, frame.ref, ErrorCode.IDENTITY_EXISTS, f"{identity!r} is taken")
            return
        if outcome is Registration.CREATED:
            logger.info("registered identity %s", identity)
        conn.reply(Registered(ref=frame.ref, identity=identity))

    async def _authenticate(self, conn: Connection, nonce: bytes, frame: Authenticate) -> bool:
        identity, device = frame.identity, frame.device
        message = frames.auth_message(nonce, identity, device)
        chain = await self._directory.chain(identity)
        if chain is None or device not in chain.active:
            # A revoked device learns that it is revoked only by proving it holds the key.
            revoked = chain.revoked.get(device) if chain is not None else None
            if revoked is not None and _verifies(revoked, message, frame.signature):
                return self._refuse(conn, ErrorCode.DEVICE_REVOKED, "this device was revoked")
            return self._refuse(conn, ErrorCode.AUTH_FAILED, "unknown identity or device")
        if not _verifies(chain.active[device], message, frame.signature):
            return self._refuse(conn, ErrorCode.AUTH_FAILED, "bad signature")
        confirmed = await self._store.confirmed_offset(identity, device)
        if device not in chain.active:  # revoked while we were reading
            return self._refuse(conn, ErrorCode.DEVICE_REVOKED, "this device was revoked")
        resume_after = max(frame.resume_after, confirmed)
        conn.reply(Welcome(identity=identity, device=device, resume_after=resume_after))
        conn.attach(identity, device, resume_after)
        self._sessions.setdefault((identity, device), set()).add(conn)
        self._publish(
            SessionOpened(
                identity=identity, device=device, node=self.node, since=conn.authenticated_at
            )
        )
        if self._presence.connected(identity, device):
            self._publish_presence(identity)
        self.metrics.connections.inc()
        logger.info("%s: authenticated, resuming after %d", conn, resume_after)
        # Keys claimed while the device was away may have left it low, or handed out its
        # fallback key (or it never published one): say so now.
        status = await self._keys.status(identity, device)
        if status is not None and (
            status.one_time_keys < ONE_TIME_KEYS_LOW or not status.fallback_key
        ):
            conn.reply(
                KeyCount(one_time_keys=status.one_time_keys, fallback_key=status.fallback_key)
            )
        return True

    def _refuse(self, conn: Connection, code: ErrorCode, message: str) -> bool:
        self._reject(conn, None, code, message)
        close_code = CLOSE_REVOKED if code is ErrorCode.DEVICE_REVOKED else CLOSE_AUTH_FAILED
        conn.close_soon(close_code, code.value)
        return False

    def _detach(self, conn: Connection) -> None:
        if conn.identity is None or conn.device is None:
            return
        key = (conn.identity, conn.device)
        conns = self._sessions.get(key)
        if conns is None or conn not in conns:
            return
        conns.discard(conn)
        if not conns:
            del self._sessions[key]
        if self._presence.disconnected(conn.identity, conn.device):
            self._publish_presence(conn.identity)
        self.metrics.connections.dec()

    # -- requests ---------------------------------------------------------------------

    async def _send(self, conn: Connection, sender: str, frame: Send) -> None:
        self.metrics.messages_in.inc()
        ref, recipient = frame.ref, frame.recipient
        now = self._clock()
        if len(frame.body) > self.config.max_body:
            limit = self.config.max_body
            self._reject(conn, ref, ErrorCode.TOO_LARGE, f"body is over {limit} bytes")
            return
        if not conn.bucket.take(now):
            self._reject(conn, ref, ErrorCode.RATE_LIMITED, "too many messages; slow down")
            return
        if not 0 < len(frame.envelope_id) <= MAX_ENVELOPE_ID:
            msg = f"envelope_id must be 1-{MAX_ENVELOPE_ID} characters"
            self._reject(conn, ref, ErrorCode.MALFORMED, msg)
            return
        refusal = await self._refusal(conn, sender, frame, now)
        if refusal is not None:
            # A retry of a Send stored before things changed (a permission revoked, a
            # device added, its expiry reached) was delivered: say so, not "refused".
            if refusal[0] is not ErrorCode.UNKNOWN_RECIPIENT and await self._store.stored_from(
                sender, frame.envelope_id
            ):
                conn.reply(Ack(ref=ref, envelope_id=frame.envelope_id))
            else:
                self._reject(conn, ref, *refusal)
            return
        assert conn.device is not None
        envelope = Envelope(
            id=frame.envelope_id,
            sender=sender,
            sender_device=conn.device,
            recipient=recipient,
            body=frame.body,
            sent_at=now,
            expires_at=min(frame.expires_at, now + self.config.max_lifetime),
        )
        # Stored in a task so the connection can pipeline Sends into one group commit;
        # tasks start in frame order, so one client's envelopes keep their order.
        self._spawn(self._store_and_route(conn, ref, envelope))

    async def _refusal(
        self, conn: Connection, sender: str, frame: Send, now: float
    ) -> tuple[ErrorCode, str] | None:
        """Why ``frame`` may not be stored now, if it may not."""
        recipient = frame.recipient
        if await self._directory.chain(recipient) is None:
            return ErrorCode.UNKNOWN_RECIPIENT, f"no identity {recipient!r}"
        if recipient != sender and sender not in await self._directory.permits(recipient):
            return (
                ErrorCode.NOT_PERMITTED,
                f"{recipient!r} does not accept messages from {sender!r}",
            )
        assert conn.device is not None
        if not await self._keys.covers(frame.devices, sender, conn.device, recipient):
            msg = "the message is not encrypted for the current devices; claim keys again"
            return ErrorCode.STALE_DEVICES, msg
        # Written as "not later than now" so that NaN counts as expired too.
        if not frame.expires_at > now:
            return ErrorCode.EXPIRED, "expires_at has passed"
        return None

    async def _store_and_route(self, conn: Connection, ref: int, envelope: Envelope) -> None:
        try:
            result = await self._store.store_envelope(envelope)
        except Exception:
            logger.exception("storing envelope %s failed", envelope.id)
            self._reject(conn, ref, ErrorCode.INTERNAL, "the relay could not store this")
            return
        # No await from here on: tasks resume in commit order, so pushes stay in
        # offset order for every device.
        if result.status is StoreStatus.CONFLICT:
            msg = "envelope_id is taken by another sender"
            self._reject(conn, ref, ErrorCode.CONFLICT, msg)
            return
        conn.reply(Ack(ref=ref, envelope_id=envelope.id))
        if result.status is StoreStatus.STORED:
            self.metrics.messages_stored.inc()
            self._route(envelope, result.rows)

    def _route(self, envelope: Envelope, rows: tuple[InboxRow, ...]) -> None:
        chain = self._directory.cached_chain(envelope.sender)
        version = chain.version if chain is not None else 0
        for row in rows:
            for target in self._sessions.get((row.identity, row.device), ()):
                target.push(
                    Deliver(offset=row.offset, envelope=envelope, sender_keys_version=version)
                )
            # The device may be connected to another node: that node reads the row.
            self._publish(Rows(identity=row.identity, device=row.device, offset=row.offset))

    def _confirm(self, conn: Connection, identity: str, offset: int) -> None:
        # A device cannot confirm (and so delete) what it has not been sent.
        offset = min(offset, conn.cursor)
        if offset <= 0:
            return
        assert conn.device is not None
        self._spawn(self._store.confirm(identity, conn.device, offset))

    async def _append_key(
        self, conn: Connection, identity: str, ref: int, entry: ChainEntry
    ) -> None:
        try:
            body = await self._directory.append(identity, entry)
        except KeyChainError as exc:
            self._reject(conn, ref, ErrorCode.INVALID_KEY_CHAIN, str(exc))
            return
        conn.reply(Done(ref=ref))
        logger.info("%s: key chain of %s now has %s %s", conn, identity, body.op, body.device)
        self._publish(ChainChanged(identity=identity))
        if body.op is KeyOp.REVOKE:
            self._publish(Revoked(identity=identity, device=body.device))
            self._revoked(identity, body.device)

    def _revoked(self, identity: str, device: str) -> None:
        self._keys.forget(identity, device)
        for target in list(self._sessions.get((identity, device), ())):
            self._detach(target)
            self._reject(target, None, ErrorCode.DEVICE_REVOKED, "this device was revoked")
            target.close_soon(CLOSE_REVOKED, "device revoked")

    async def _publish_keys(self, conn: Connection, identity: str, frame: PublishKeys) -> None:
        assert conn.device is not None
        chain = self._directory.cached_chain(identity)
        assert chain is not None  # _dispatch checked the device is active
        try:
            check_publish(identity, conn.device, chain.active[conn.device], frame)
            key = IdentityKey(frame.identity_key, frame.signature)
            status = await self._keys.publish(
                identity, conn.device, key, frame.one_time_keys, frame.fallback_key
            )
        except InvalidKeys as exc:
            self._reject(conn, frame.ref, ErrorCode.MALFORMED, str(exc))
            return
        self._publish(ChainChanged(identity=identity))  # its published keys changed
        conn.reply(
            KeyCount(
                ref=frame.ref,
                one_time_keys=status.one_time_keys,
                fallback_key=status.fallback_key,
            )
        )

    async def _claim_keys(self, conn: Connection, claimer: str, frame: ClaimKeys) -> None:
        ref, whose = frame.ref, frame.identity
        if await self._directory.chain(whose) is None:
            self._reject(conn, ref, ErrorCode.UNKNOWN_IDENTITY, f"no identity {whose!r}")
            return
        # Only those who may message an identity may use up its one-time keys.
        if whose != claimer and claimer not in await self._directory.permits(whose):
            msg = f"{whose!r} does not accept messages from {claimer!r}"
            self._reject(conn, ref, ErrorCode.NOT_PERMITTED, msg)
            return
        if not conn.bucket.take(self._clock()):
            self._reject(conn, ref, ErrorCode.RATE_LIMITED, "too many requests; slow down")
            return
        exclude = conn.device if whose == claimer else None
        devices, claims = await self._keys.claim(whose, frame.sessions, exclude)
        conn.reply(ClaimedKeys(ref=ref, identity=whose, devices=devices))
        for claim in claims:
            status = claim.status
            if status.one_time_keys < ONE_TIME_KEYS_LOW or claim.fallback:
                self._keys_low(whose, claim.device, status.one_time_keys, status.fallback_key)
                self._publish(
                    KeysLow(
                        identity=whose,
                        device=claim.device,
                        one_time_keys=status.one_time_keys,
                        fallback_key=status.fallback_key,
                    )
                )

    def _keys_low(self, identity: str, device: str, one_time_keys: int, fallback: bool) -> None:
        count = KeyCount(one_time_keys=one_time_keys, fallback_key=fallback)
        for target in self._sessions.get((identity, device), ()):
            target.reply(count)

    # -- other nodes ------------------------------------------------------------------

    def _publish(self, event: BusEvent) -> None:
        self.metrics.bus_events.labels("published", type(event).__name__).inc()
        self._bus.publish(event)

    def _publish_presence(self, identity: str) -> None:
        devices = self._presence.local(identity)
        self._publish(PresenceChanged(identity=identity, node=self.node, devices=devices))

    def _on_bus_event(self, event: BusEvent) -> None:
        """What another node said. Runs in the bus's task: nothing here may block."""
        self.metrics.bus_events.labels("received", type(event).__name__).inc()
        match event:
            case Rows(identity=identity, device=device):
                for target in self._sessions.get((identity, device), ()):
                    target.wake_read()
            case Revoked(identity=identity, device=device):
                self._spawn(self._refresh_then_revoke(identity, device))
            case ChainChanged(identity=identity):
                self._keys.invalidate(identity)
                if self._directory.cached_chain(identity) is not None:
                    self._spawn(self._refresh_chain(identity))
            case PermitsChanged(owner=owner):
                self._spawn(self._refresh_permits(owner))
            case KeysLow(identity=identity, device=device):
                self._keys_low(identity, device, event.one_time_keys, event.fallback_key)
            case SessionOpened(identity=identity, device=device, node=node, since=since):
                if node != self.node:
                    for target in list(self._sessions.get((identity, device), ())):
                        if target.authenticated_at > since:
                            continue  # ours is the newer connection: the other one goes
                        logger.info("%s: connected to node %s; closing this one", target, node)
                        self._detach(target)
                        target.close_soon(CLOSE_REPLACED, "connected to another relay node")
            case PresenceChanged(identity=identity):
                self._presence.remote_changed(identity)

    def _on_bus_gap(self) -> None:
        """The bus may have lost events: what we serve and cache comes from the store."""
        logger.warning("the bus may have lost events; re-reading from the store")
        self.metrics.bus_gaps.inc()
        for conns in list(self._sessions.values()):
            for target in conns:
                target.wake_read()
        self._keys.invalidate()
        self._directory.forget_permits()
        for identity in self._directory.cached_identities():
            self._spawn(self._refresh_chain(identity))
        for identity in {identity for identity, _ in self._sessions}:
            self._publish_presence(identity)
            self._presence.remote_changed(identity)
        # A lost SessionOpened would leave a device connected to two nodes: say again
        # when each connection here began; the older of two goes, wherever it is.
        for (identity, device), conns in list(self._sessions.items()):
            for target in conns:
                self._publish(
                    SessionOpened(
                        identity=identity,
                        device=device,
                        node=self.node,
                        since=target.authenticated_at,
                    )
                )

    async def _refresh_chain(self, identity: str) -> None:
        chain = await self._directory.refresh_chain(identity)
        if chain is None:
            return
        for (whose, device), _ in list(self._sessions.items()):
            if whose == identity and device not in chain.active:
                self._revoked(identity, device)

    async def _refresh_then_revoke(self, identity: str, device: str) -> None:
        await self._directory.refresh_chain(identity)
        self._revoked(identity, device)

    async def _refresh_permits(self, owner: str) -> None:
        self._directory.forget_permits(owner)
        permitted = await self._directory.permits(owner)
        for watcher in self._presence.watchers_of(owner):
            who = watcher.identity
            if who is not None and who != owner and who not in permitted:
                self._presence.unwatch_by(who, owner)

    # -- helpers ----------------------------------------------------------------------

    def _reject(self, conn: Connection, ref: int | None, code: ErrorCode, message: str) -> None:
        self.metrics.rejected.labels(code.value).inc()
        logger.debug("%s: %s (ref %s): %s", conn, code.value, ref, message)
        conn.reply(frames.Error(ref=ref, code=code, message=message))

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(_logged(work))
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)

    async def _sweep_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.sweep_interval)
            try:
                await self.sweep()
            except Exception:
                logger.exception("expiry sweep failed; retrying next interval")


async def _logged(work: Coroutine[Any, Any, None]) -> None:
    """Run background work, logging a failure instead of leaving it unretrieved."""
    try:
        await work
    except Exception:
        logger.exception("background store work failed")


def _verifies(key: VerifyKey, message: bytes, signature: bytes) -> bool:
    try:
        key.verify(message, signature)
    except BadSignature:
        return False
    return True


def _diagnose(data: bytes) -> tuple[ErrorCode, int | None]:
    """Why a frame did not decode, and its ``ref`` if one can be read to answer it."""
    try:
        raw = _raw_decoder.decode(data)
    except msgspec.DecodeError:
        return ErrorCode.MALFORMED, None
    if not isinstance(raw, dict):
        return ErrorCode.MALFORMED, None
    ref = raw.get("ref")
    ref = ref if isinstance(ref, int) and not isinstance(ref, bool) else None
    tag = raw.get("t")
    if isinstance(tag, str) and tag not in _CLIENT_TAGS:
        return ErrorCode.UNSUPPORTED, ref
    return ErrorCode.MALFORMED, ref

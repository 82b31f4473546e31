"""One relay node: the asyncio driver of its sessions, and what they share.

Each connection is a :class:`~parley.relay.session.Session` (sans I/O: it decides what a
frame is answered and what it costs) driven here: :meth:`Relay.handle` reads frames from a
:class:`~parley.transport.Transport` (a WebSocket, see :mod:`parley.relay.server`, or an
in-memory pair in tests), answers the session's queries from the directory caches and
the store, and applies its effects. What the sessions of a node share is kept here too:
which connections serve which device (where deliveries are pushed), presence, and the
bus to the other nodes, whose events wake connections, refresh caches and close
connections of revoked or moved devices. Rejections are counted in
``parley_relay_rejected_total`` by code.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import secrets
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from parley.errors import MalformedFrame, TransportClosed
from parley.protocol import frames
from parley.protocol.frames import Deliver, Envelope, ErrorCode, KeyCount, Send
from parley.relay import effects as fx
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
from parley.relay.directory import Directory
from parley.relay.effects import Effect, Query, Work
from parley.relay.limits import Buckets, LogLimiter, Quota
from parley.relay.metrics import RelayMetrics
from parley.relay.prekeys import KeyDirectory
from parley.relay.presence import PresenceBoard
from parley.relay.session import (
    CLOSE_GOING_AWAY,
    CLOSE_REPLACED,
    CLOSE_REVOKED,
    CLOSE_TRY_AGAIN_LATER,
    Phase,
    Session,
)
from parley.relay.store import InboxRow, RelayStore
from parley.relay.store.timed import timed_store
from parley.transport import Transport

logger = logging.getLogger(__name__)

_NOT_IN_MEMORY: Any = object()  # Relay._answer_now: the answer must be awaited

# Refusals that say a client sent something wrong or abusive: logged as warnings (with
# the peer), at most a few a second; the rest only at debug level.
_BAD_INPUT = frozenset(
    {
        ErrorCode.MALFORMED,
        ErrorCode.UNSUPPORTED,
        ErrorCode.TOO_LARGE,
        ErrorCode.AUTH_FAILED,
        ErrorCode.INVALID_KEY_CHAIN,
        ErrorCode.RATE_LIMITED,
    }
)


class Relay:
    """The relay's logic, without sockets: the directory, permissions, inboxes and routing over a
    :class:`RelayStore` and a bus between nodes. :class:`RelayServer` serves it over WebSockets."""

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
        # The only node: nobody hears what is published (and nothing is counted as sent).
        self._alone = isinstance(self._bus, LocalBus)
        self._ctx = Context(
            self.config,
            store,
            self._directory,
            self.metrics,
            clock,
            push_in_sequence=not self._alone,
        )
        # Authenticated connections by (identity, device): where deliveries are pushed.
        self._sessions: dict[tuple[str, str], set[Connection]] = {}
        self._presence = PresenceBoard(self._bus.present)
        self._handlers: set[asyncio.Task[Any]] = set()
        self._connections: set[Connection] = set()
        # Store work started by a connection's requests (or the bus); it finishes even
        # if the connection goes away, and close() waits for it before closing the store.
        self._inflight: set[asyncio.Future[Any]] = set()
        self._sweeper: asyncio.Task[None] | None = None
        # Per network address: connections not authenticated yet, and registrations.
        self._preauth: Counter[str] = Counter()
        self._registrations = Buckets(self.config.registration_rate, self.config.registration_burst)
        self._device_budgets = Buckets(self.config.device_rate, self.config.device_burst)
        self._identity_budgets = Buckets(self.config.identity_rate, self.config.identity_burst)
        self._bad_input = LogLimiter(logger, rate=5.0, burst=20, clock=clock)
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
        """Open the store and start the bus and the background sweeps."""
        await self._store.open()
        try:
            await self._bus.start(self._on_bus_event, self._on_bus_gap)
        except BaseException:
            await self._store.close()
            raise
        self._sweeper = asyncio.create_task(self._sweep_loop(), name="relay-sweeper")

    async def close(self) -> None:
        """Stop the sweeps and the bus, and close the store."""
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
        while self._inflight:  # work resumed from one of these may start more
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
        now = self._clock()
        for budgets in (self._registrations, self._device_budgets, self._identity_budgets):
            budgets.prune(now)
        expired = await self._store.expire(now)
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
        source = transport.source
        if self._preauth[source] >= self.config.preauth_per_source:
            await self._turn_away(transport)
            return
        self._preauth[source] += 1
        conn = Connection(transport, self._ctx)
        conn.preauth_source = source
        session = Session(self.config, self._clock, secrets.token_bytes(32))
        self._connections.add(conn)
        try:
            conn.reply(session.challenge())
            await self._serve(conn, session)
        except TransportClosed:
            logger.debug("%s: closed by the client", conn)
        except Exception:
            logger.exception("%s: unexpected failure; closing the connection", conn)
            conn.close_soon(1011, "internal error")
        finally:
            self._release_preauth(conn)
            self._detach(conn)
            self._presence.forget(conn)
            self._connections.discard(conn)
            await conn.finish()
            if task is not None:
                self._handlers.discard(task)

    async def _serve(self, conn: Connection, session: Session) -> None:
        try:
            async with asyncio.timeout(self.config.auth_timeout):
                while session.phase is Phase.HANDSHAKE and not conn.closing:
                    await self._next_frame(conn, session)
        except TimeoutError:
            if session.phase is Phase.HANDSHAKE:
                self.metrics.rejected.labels("auth_timeout").inc()
                logger.info("%s: not authenticated in time; closing", conn)
                for effect in session.timed_out():
                    self._apply(conn, session, effect)
        while session.phase is Phase.ACTIVE and not conn.closing:
            await self._next_frame(conn, session)

    async def _next_frame(self, conn: Connection, session: Session) -> None:
        """Read one frame and do what the session makes of it."""
        if not conn.ready:  # checked first: most frames wait for neither
            await conn.wait_for_room()
            await conn.wait_unpaused()
        try:
            data = await conn.transport.recv()
        except MalformedFrame as exc:  # e.g. a text WebSocket message
            self._apply(conn, session, session.undecodable(None, str(exc)))
            return
        try:
            frame = frames.decode_client_frame(data)
        except MalformedFrame as exc:
            self._apply(conn, session, session.undecodable(data, str(exc)))
            return
        if isinstance(frame, Send):
            self.metrics.messages_in.inc()
        try:
            await self._run(conn, session, session.receive(frame))
        except Exception:
            # The store failed, not the client: say so and keep the connection.
            logger.exception("%s: %s failed", conn, type(frame).__name__)
            ref = getattr(frame, "ref", None)
            self._reject(conn, ref, ErrorCode.INTERNAL, "the relay failed; retry later")

    async def _run(self, conn: Connection, session: Session, work: Work[None]) -> None:
        """Drive ``work`` to its end: answer its queries, apply its effects the moment
        they come."""
        query = self._advance(conn, session, work, None, None)
        while query is not None:
            try:
                answer = await self._answer(conn, query)
            except Exception as exc:
                query = self._advance(conn, session, work, None, exc)
            else:
                query = self._advance(conn, session, work, answer, None)

    def _advance(
        self,
        conn: Connection,
        session: Session,
        work: Work[None],
        answer: Any,
        error: Exception | None,
    ) -> Query[Any] | None:
        """Resume ``work`` with ``answer`` (or ``error``) and run it as far as it goes
        without waiting: the query it now waits on, or None once it is done."""
        try:
            step = work.send(answer) if error is None else work.throw(error)
            while True:
                if isinstance(step, Query):
                    found = self._answer_now(conn, step)
                    if found is _NOT_IN_MEMORY:
                        return step
                    step = work.send(found)
                else:
                    self._apply(conn, session, step)
                    step = work.send(None)
        except StopIteration:
            return None

    def _continue(
        self,
        conn: Connection,
        session: Session,
        work: Work[None],
        answer: Any = None,
        error: Exception | None = None,
    ) -> None:
        """Run spawned ``work`` (on, with ``answer`` or ``error``) beside the
        connection's next frames. It is driven from callbacks, not a task: a Send's
        store and a Confirm wait on the store's own futures, and a task, a coroutine and
        a future each were a large share of the relay's time per message. Spawned work
        starts at once, in order, so one client's envelopes are stored in the order they
        came."""
        while True:
            try:
                query = self._advance(conn, session, work, answer, error)
            except Exception:
                logger.exception("background store work failed")
                return
            if query is None:
                return
            try:
                pending = asyncio.ensure_future(self._answer(conn, query))
            except Exception as exc:  # e.g. the store is closed: the work hears it
                answer, error = None, exc
                continue
            self._inflight.add(pending)
            pending.add_done_callback(functools.partial(self._resume, conn, session, work))
            return

    def _resume(
        self, conn: Connection, session: Session, work: Work[None], pending: asyncio.Future[Any]
    ) -> None:
        self._inflight.discard(pending)
        if pending.cancelled():
            work.close()
            return
        error = pending.exception()
        if error is not None and not isinstance(error, Exception):
            work.close()  # KeyboardInterrupt and the like: not the work's to handle
            return
        self._continue(conn, session, work, None if error else pending.result(), error)

    def _answer_now(self, conn: Connection, query: Query[Any]) -> Any:
        """The answer if it needs no waiting (a cache hit), else ``_NOT_IN_MEMORY``.

        Most of a Send's queries are answered from memory; a coroutine for each of them
        was a large share of the relay's time per message."""
        found: Any
        match query:
            case fx.LoadChain(identity=identity):
                found = self._directory.cached_chain(identity)
            case fx.LoadPermits(owner=owner):
                found = self._directory.cached_permits(owner)
            case fx.LoadIdentityKeys(identity=identity):
                found = self._keys.cached_identity_keys(identity)
            case fx.DeliveredUpTo():
                return conn.cursor
            case fx.Charge(identity=identity, device=device):
                return self._charge(identity, device)
            case fx.ChargeRegistration():
                return self._charge_registration(conn.transport.source)
            case _:
                return _NOT_IN_MEMORY
        return _NOT_IN_MEMORY if found is None else found

    def _answer(self, conn: Connection, query: Query[Any]) -> Awaitable[Any]:
        """What answers ``query`` once awaited: a coroutine, or the store's own future
        where it hands one back (a Send's store, a confirm)."""
        match query:
            case fx.LoadChain(identity=identity):
                return self._directory.chain(identity)
            case fx.LoadPermits(owner=owner):
                return self._directory.permits(owner)
            case fx.LoadIdentityKeys(identity=identity):
                return self._keys.identity_keys(identity)
            case fx.LoadConfirmedOffset(identity=identity, device=device):
                return self._store.confirmed_offset(identity, device)
            case fx.LoadKeyStatus(identity=identity, device=device):
                return self._keys.status(identity, device)
            case fx.LoadStoredFrom(sender=sender, recipient=recipient, envelope_id=envelope_id):
                return self._store.stored_from(sender, recipient, envelope_id)
            case fx.CreateIdentity(genesis=genesis, name=name, now=now, invite=invite):
                return self._directory.register(genesis, name, now, invite)
            case fx.AppendEntry(identity=identity, entry=entry):
                return self._directory.append(identity, entry)
            case fx.SavePermit(owner=owner, peer=peer):
                return self._directory.permit(owner, peer)
            case fx.SaveUnpermit(owner=owner, peer=peer):
                return self._directory.unpermit(owner, peer)
            case fx.StoreEnvelope(envelope=envelope):
                return self._store.store_envelope(envelope)
            case fx.SaveConfirm(identity=identity, device=device, offset=offset):
                return self._store.confirm(identity, device, offset)
            case fx.SaveKeys():
                return self._keys.publish(
                    query.identity, query.device, query.key, query.one_time_keys, query.fallback_key
                )
            case fx.TakeKeys(identity=identity, sessions=sessions, exclude=exclude):
                return self._keys.claim(identity, sessions, exclude)
        raise TypeError(f"no answer for {query!r}")

    def _apply(self, conn: Connection, session: Session, effect: Effect) -> None:
        """Do what ``effect`` says. Nothing here may wait: effects keep their order."""
        match effect:
            case fx.Reply(frame=frame):
                conn.reply(frame)
            case fx.Reject(ref=ref, code=code, message=message, retry_after=retry_after):
                self._reject(conn, ref, code, message, retry_after)
            case fx.Close(code=code, reason=reason):
                conn.close_soon(code, reason)
            case fx.Attach(identity=identity, device=device, resume_after=resume_after):
                self._attach(conn, identity, device, resume_after)
            case fx.Publish(event=event):
                self._publish(event)
            case fx.Route(envelope=envelope, rows=rows):
                self.metrics.messages_stored.inc()
                self._route(envelope, rows)
            case fx.Revoke(identity=identity, device=device):
                self._revoked(identity, device)
            case fx.TellKeysLow(identity=identity, device=device, status=status):
                self._keys_low(identity, device, status.one_time_keys, status.fallback_key)
                self._publish(
                    KeysLow(
                        identity=identity,
                        device=device,
                        one_time_keys=status.one_time_keys,
                        fallback_key=status.fallback_key,
                    )
                )
            case fx.Watch(identity=identity):
                self._presence.watch(conn, identity)
            case fx.Unwatch(identity=identity):
                self._presence.unwatch(conn, identity)
            case fx.UnwatchBy(watcher=watcher, owner=owner):
                self._presence.unwatch_by(watcher, owner)
            case fx.Pause(seconds=seconds):
                conn.pause_reading(seconds)
            case fx.Spawn(work=work):
                self._continue(conn, session, work)
            case _:
                raise TypeError(f"no way to apply {effect!r}")

    def _attach(self, conn: Connection, identity: str, device: str, resume_after: int) -> None:
        self._release_preauth(conn)
        conn.attach(identity, device, resume_after)
        conns = self._sessions.setdefault((identity, device), set())
        older = sorted(conns, key=lambda c: c.authenticated_at)
        conns.add(conn)
        self._publish(
            SessionOpened(
                identity=identity, device=device, node=self.node, since=conn.authenticated_at
            )
        )
        if self._presence.connected(identity, device):
            self._publish_presence(identity)
        self.metrics.connections.inc()
        logger.info("%s: authenticated, resuming after %d", conn, resume_after)
        # A device keeps only so many connections here: the oldest go (after the new one
        # is counted, so the device never looks gone to those watching it).
        for oldest in older[: max(0, len(older) + 1 - self.config.connections_per_device)]:
            logger.info("%s: too many connections of this device; closing the oldest", oldest)
            self.metrics.limited.labels("connections").inc()
            self._detach(oldest)
            oldest.close_soon(CLOSE_REPLACED, "replaced by a newer connection of this device")

    def _charge(self, identity: str, device: str) -> float | None:
        now = self._clock()
        device_budget = self._device_budgets.get(f"{identity}:{device}", now)
        identity_budget = self._identity_budgets.get(identity, now)
        wait = Quota(device_budget, identity_budget).charge(now)
        if wait is not None:
            which = "device" if device_budget.wait(now) >= wait else "identity"
            self.metrics.limited.labels(which).inc()
        return wait

    def _charge_registration(self, source: str) -> float | None:
        now = self._clock()
        wait = Quota(self._registrations.get(source, now)).charge(now)
        if wait is not None:
            self.metrics.limited.labels("registration").inc()
        return wait

    def _release_preauth(self, conn: Connection) -> None:
        source, conn.preauth_source = conn.preauth_source, None
        if source is not None:
            self._preauth[source] -= 1
            if self._preauth[source] <= 0:
                del self._preauth[source]

    async def _turn_away(self, transport: Transport) -> None:
        """Too many connections from this address are not authenticated yet."""
        self.metrics.limited.labels("preauth").inc()
        self._bad_input.warning(
            "%s: too many unauthenticated connections from %s", transport.remote, transport.source
        )
        error = frames.Error(
            code=ErrorCode.RATE_LIMITED,
            message="too many connections from this address are not authenticated yet",
            retry_after=self.config.auth_timeout,
        )
        with contextlib.suppress(TransportClosed, OSError):
            await transport.send(frames.encode(error))
            await transport.close(CLOSE_TRY_AGAIN_LATER, "too many unauthenticated connections")

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

    def _revoked(self, identity: str, device: str) -> None:
        self._keys.forget(identity, device)
        for target in list(self._sessions.get((identity, device), ())):
            self._detach(target)
            self._reject(target, None, ErrorCode.DEVICE_REVOKED, "this device was revoked")
            target.close_soon(CLOSE_REVOKED, "device revoked")

    def _keys_low(self, identity: str, device: str, one_time_keys: int, fallback: bool) -> None:
        count = KeyCount(one_time_keys=one_time_keys, fallback_key=fallback)
        for target in self._sessions.get((identity, device), ()):
            target.reply(count)

    # -- other nodes ------------------------------------------------------------------

    def _publish(self, event: BusEvent) -> None:
        if self._alone:
            return
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

    def _reject(
        self,
        conn: Connection,
        ref: int | None,
        code: ErrorCode,
        message: str,
        retry_after: float | None = None,
    ) -> None:
        self.metrics.rejected.labels(code.value).inc()
        if code in _BAD_INPUT:
            self._bad_input.warning("%s: %s: %s", conn, code.value, message)
        else:
            logger.debug("%s: %s (ref %s): %s", conn, code.value, ref, message)
        conn.reply(frames.Error(ref=ref, code=code, message=message, retry_after=retry_after))

    def refused_too_large(self, peer: str, reason: str) -> None:
        """The WebSocket edge refused a message over the size limit (and closes)."""
        self.metrics.rejected.labels(ErrorCode.TOO_LARGE.value).inc()
        self._bad_input.warning("%s: %s: %s", peer, ErrorCode.TOO_LARGE.value, reason)

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

"""The calling proxy on a live client: the core, its bindings, presence and records.

:class:`CallProxy` runs :class:`~parley.protocol.proxy.Proxy` (which decides everything:
forwarding, both legs ending together, hunting) with a
:class:`~parley.client.machine.MachineRunner` (which carries messages, presence and time
in and out). Around that it only keeps the books:

- bindings and pools come from the store, and the parties are permitted (an identity
  only accepts messages from identities it permits) and their presence followed, so a
  leg whose party disappears ends ``gone`` and an away operator is not hunted;
- bindings written by another process (``parley proxy bind``) are picked up as soon as
  the store says someone else wrote (:meth:`ProxyStore.wait_changed`: SQLite within its
  poll interval, PostgreSQL when notified);
- the core's state is saved after every input, and every leg that ends is recorded,
  before anything is sent about it (:mod:`.durable`); a restarted proxy resumes its
  calls. :meth:`CallProxy.close` ends none of them; :meth:`CallProxy.drain` lets them end;
- messages reach the core before the client records them, and are saved with their id,
  so one delivered again after a crash is skipped (:attr:`CallProxy.repeats`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from types import TracebackType

from parley.client.client import Client
from parley.client.handlers import Observed, Saver
from parley.client.machine import Event, Gate, MachineRunner
from parley.errors import ParleyError, RelayError, StoreError
from parley.ids import DeviceId, IdentityId
from parley.protocol.call_io import Ended, Received, Send
from parley.protocol.proxy import Binding, Pool, Proxy, ProxyConfig
from parley.protocol.proxy_state import Heard, MessageId, Resume
from parley.proxy.durable import DurableCore
from parley.proxy.records import LegRecord, Route, parties
from parley.proxy.store import ProxyStore

log = logging.getLogger(__name__)


class CallProxy:
    """The app between operators and customers, for every ``cid`` bound in ``store``.

    Give it a client that is not connected yet: :meth:`start` subscribes first and then
    connects, so a start that arrived while the proxy was down is still handled.
    :meth:`close` closes the client; the store stays open (it is the caller's).
    ``on_leg`` hears of every leg recorded, ``on_route`` of every binding or pool taken
    up (at start and later). ``retry_interval``: how soon a party that could not be
    permitted (the relay unreachable), or a store that could not be read, is tried again.
    ``holder``: the lease (:mod:`.lease`) this proxy saves under, if it runs with one.
    """

    def __init__(
        self,
        client: Client,
        store: ProxyStore,
        config: ProxyConfig | None = None,
        *,
        on_leg: Callable[[LegRecord], None] | None = None,
        on_route: Callable[[Route], None] | None = None,
        retry_interval: float = 0.5,
        clock: Callable[[], float] = time.time,
        holder: str | None = None,
    ) -> None:
        self._client = client
        self._store = store
        self._on_leg = on_leg
        self._on_route = on_route
        self._retry_interval = retry_interval
        self.core = Proxy(client.id, client.device, config=config)
        self._durable = DurableCore(self.core, store, retry_interval=retry_interval, fence=holder)
        self._runner = _Runner(client, self._durable, self._event, clock=clock)
        self._routes: dict[str, Route] = {}
        self._permitted: set[IdentityId] = set()
        self._refused: set[IdentityId] = set()  # the relay will not permit them: no retries
        self._unobserve: Callable[[], None] | None = None
        self._follower: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Take up the stored bindings, connect, permit the parties, follow the store."""
        # The core has the routes before the inbox runs (a start that waited for us must
        # find its route); they are announced once their parties are permitted.
        routes = await self._store.routes()
        for route in routes:
            self._take_up(route, announce=False)
        await self._durable.restore()
        # The runner observes first: a message reaches the core (and its save) without
        # waiting on the presence watch below.
        self._runner.start()
        self._unobserve = self._client.observe(self._observed)
        try:
            await self._client.connect()
            await self._runner.feed(Resume(now=self._runner.now()))
            await self._permit_all(parties(routes), strict=False)
        except BaseException:
            await self.close()
            raise
        for route in routes:
            self._announce(route)
        self._follower = asyncio.create_task(self._follow(), name="parley-proxy-follow")

    async def close(self) -> None:
        """Stop following the store and close the client; the calls stay in the store and go on when
        a proxy starts again."""
        if self._follower is not None:
            self._follower.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._follower
            self._follower = None
        if self._unobserve is not None:
            self._unobserve()
            self._unobserve = None
        await self._runner.close()
        # The last input carried out: the outbox keeps only what was still retried.
        await self._runner.settled()
        await self._durable.close()
        await self._client.close()

    async def drain(self) -> None:
        """Take no new calls (a start gets busy) and return once no call is live."""
        self.core.drain()
        await self._durable.idle.wait()

    @property
    def repeats(self) -> int:
        """Messages the client delivered again after a restart (the proxy stopped after
        saving them, before the client recorded them) and the proxy skipped."""
        return self._durable.repeats

    async def __aenter__(self) -> CallProxy:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def bind(
        self,
        cid: str,
        *,
        operator: str,
        customer: str,
        operator_name: str | None = None,
    ) -> Binding:
        """Forward ``cid`` from ``operator`` to ``customer`` (with ``operator_name``, the
        operator's id if not given). Raises the relay's refusal (``UnknownIdentity``)
        before anything is stored."""
        binding = Binding(
            cid=cid,
            operator=IdentityId(operator),
            operator_name=operator if operator_name is None else operator_name,
            customer=IdentityId(customer),
        )
        await self._permit_all((binding.operator, binding.customer), strict=True)
        await self._store.bind(binding)
        self._take_up(binding)
        return binding

    async def bind_pool(self, cid: str, *, customer: str, operators: Iterable[str]) -> Pool:
        """Hunt ``operators`` for ``customer``'s starts on ``cid``."""
        pool = Pool(
            cid=cid,
            customer=IdentityId(customer),
            operators=tuple(IdentityId(op) for op in operators),
        )
        await self._permit_all((pool.customer, *pool.operators), strict=True)
        await self._store.bind_pool(pool)
        self._take_up(pool)
        return pool

    # -- routes and parties -------------------------------------------------------------

    def _take_up(self, route: Route, *, announce: bool = True) -> None:
        if self._routes.get(route.cid) == route:
            return
        self._routes[route.cid] = route
        if isinstance(route, Binding):
            self.core.bind(route)
        else:
            self.core.bind_pool(route)
        if announce:
            self._announce(route)

    def _announce(self, route: Route) -> None:
        if self._on_route is not None:
            self._on_route(route)

    async def _permit_all(self, parties: Iterable[IdentityId], *, strict: bool) -> None:
        """Permit and watch each new party. ``strict``: a refusal raises; otherwise it
        is logged, and a party that could not be reached is tried again (_follow)."""
        todo = set(parties) - self._permitted
        for party in sorted(todo if strict else todo - self._refused):
            try:
                await self._client.connections.permit(party)
            except RelayError as exc:
                if strict:
                    raise
                log.error("cannot permit %s, its calls cannot reach the proxy: %s", party, exc)
                self._refused.add(party)
                continue
            except ParleyError as exc:
                if strict:
                    raise
                log.warning("permitting %s failed, trying again: %s", party, exc)
                continue
            self._permitted.add(party)
            # Fails (logged) while the party does not permit the proxy; tried again on
            # its next message (_observed) and when a call with it connects.
            await self._runner.watch(party)

    async def _follow(self) -> None:
        """Take up routes as the store changes; retry parties not permitted yet."""
        stale = False  # a change whose routes could not be read: read without waiting
        while True:
            try:
                if stale or await self._next_change():
                    stale = True
                    new = [r for r in await self._store.routes() if self._routes.get(r.cid) != r]
                    # Permitted first: a route is live (and announced) only once its
                    # parties can reach the proxy, else a call right after is refused.
                    await self._permit_all(parties(new), strict=False)
                    for route in new:
                        self._take_up(route)
                    stale = False
                await self._permit_all(parties(self._routes.values()), strict=False)
            except StoreError as exc:  # its database away for a while: no traceback
                log.warning("reading the proxy store failed, trying again: %s", exc)
                await asyncio.sleep(self._retry_interval)
            except Exception:
                log.exception("reading the proxy store failed; trying again")
                await asyncio.sleep(self._retry_interval)

    async def _next_change(self) -> bool:
        """Wait for the store to change (True); while some party still waits to be
        permitted, at most ``retry_interval`` (False: time to try it again)."""
        if not parties(self._routes.values()) - self._permitted - self._refused:
            await self._store.wait_changed()
            return True
        try:
            async with asyncio.timeout(self._retry_interval):
                await self._store.wait_changed()
        except TimeoutError:
            return False
        return True

    # -- what the runner reports --------------------------------------------------------

    async def _observed(self, observed: Observed) -> None:
        if observed.issuer in self._permitted:
            await self._runner.watch(observed.issuer)

    async def _event(self, event: Event) -> None:
        if not isinstance(event, Ended):
            return
        leg = LegRecord.of(event.record, self._client.id)
        await self._durable.flushed()  # recorded with the input that ended it
        log.debug(
            "%s leg of %s (cid %s) with %s ended: %s",
            leg.leg,
            leg.call_id,
            leg.cid,
            leg.party,
            leg.reason,
        )
        if self._on_leg is not None:
            self._on_leg(leg)


class _Runner(MachineRunner[Resume | Heard]):
    """The client's runner, sending only what the store has: whatever a message says
    has been saved before it leaves, so a restart never contradicts it. Messages come
    in before the client records them, each with its id (exactly once: :mod:`.durable`);
    each send leaves the outbox once it is out or given up on.

    Pipelined: the next message reaches the core once the last one is handled, while
    its sends wait for its commit and go out (they are in the outbox: a crash re-sends
    them). The client records a burst of messages once it is committed, in one go."""

    # Before the client's record: a message it delivers again after a crash is one the
    # core skips if it was saved.
    observe_before_record = True
    pipelined = True

    def __init__(
        self,
        client: Client,
        durable: DurableCore,
        on_event: Callable[[Event], Awaitable[None]],
        *,
        clock: Callable[[], float],
    ) -> None:
        super().__init__(client, durable, on_event, clock=clock)
        self._durable = durable

    async def _observed(self, observed: Observed) -> None:
        message = observed.message
        if not message.typ.value.startswith("chat.voice."):
            return
        received = Received.from_payload(self.now(), message, DeviceId(observed.device))
        await self._put(
            Heard(received=received, id=MessageId(message.iss, message.jti, message.exp))
        )

    def _saver(self) -> Saver:
        return self._saved

    async def _saved(self) -> None:
        """Everything taken in is committed with what it caused before the client
        records it: one commit for a burst of messages."""
        await self._durable.flushed()
        # The sends it caused start (signed, sealed) before the client goes on to record
        # the burst: their Olm state and its records then share one write of its state.
        await asyncio.sleep(0)

    def _gate(self) -> Gate:
        # The input just handled is the last one queued: its sends wait for its commit.
        return functools.partial(self._durable.flushed, self._durable.queued)

    def _finished(self, send: Send) -> None:
        self._durable.sent(send)

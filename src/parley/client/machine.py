"""Runs a sans-I/O call machine (a ``Phone`` or a ``Proxy``) on a connected client.

The machine decides; this module only moves things in and out of it:

- verified voice messages (own-device copies too) from :meth:`Client.observe`;
- presence reports, turned into ``PeerGone`` / ``PeerBack`` per device (the peer of
  every call that rings or connects is watched);
- local commands, through :meth:`MachineRunner.feed`;
- time: a ``Tick`` whenever the machine's ``next_deadline()`` comes.

What the machine returns is carried out in order: each ``Send`` is signed and sent
(a refused start or accept feeds ``Fail`` for its call, the refusal as its detail),
each event goes to ``on_event``. One lock serialises it all, so the machine sees one
input at a time and its outputs leave in the order it produced them.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, ClassVar, Generic, Protocol, TypeAlias, TypeVar

from parley.client.handlers import Observed
from parley.errors import DeliveryTimeout, ParleyError, RelayConnectionError, RelayError
from parley.ids import DeviceId, IdentityId
from parley.protocol.call_io import (
    Connected,
    Ended,
    Fail,
    Output,
    PeerBack,
    PeerGone,
    ProxyInput,
    Received,
    Ringing,
    Send,
    Tick,
)
from parley.protocol.messages import MessageType

if TYPE_CHECKING:
    from parley.client.client import Client

log = logging.getLogger(__name__)

# Seconds between tries of an ending that could not reach the relay (about 2 minutes in
# all: past that the peer has ended the call as gone or timed out on its own).
RETRY_DELAYS = (0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0, 60.0)

# Messages without which their call cannot go on: a failure to send one fails the call.
_OPENINGS = (MessageType.VOICE_START, MessageType.VOICE_ACCEPT)

Event: TypeAlias = Ringing | Connected | Ended
EventSink: TypeAlias = Callable[[Event], Awaitable[None] | None]
E_contra = TypeVar("E_contra", contravariant=True)
E = TypeVar("E")


class CallMachine(Protocol[E_contra]):
    def handle(self, event: E_contra) -> list[Output]: ...

    def next_deadline(self) -> float | None: ...


class MachineRunner(Generic[E]):
    """``E``: the machine's own commands; it must also take every ``ProxyInput``."""

    # Whether messages reach the machine before the client records them (at least once:
    # for a machine that saves what it saw and skips repeats, as the proxy's does).
    observe_before_record: ClassVar[bool] = False

    def __init__(
        self,
        client: Client,
        machine: CallMachine[E | ProxyInput],
        on_event: EventSink,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._client = client
        self._machine = machine
        self._on_event = on_event
        self._clock = clock
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._ticker: asyncio.Task[None] | None = None
        self._unobserve: Callable[[], None] | None = None
        self._seen_devices: dict[str, frozenset[str]] = {}
        self._watching: set[str] = set()
        self._retries: set[asyncio.Task[None]] = set()
        self._presence_feed: asyncio.Task[None] | None = None
        self._presence_changes: list[PeerGone | PeerBack] = []
        self._closed = False

    def start(self) -> None:
        self._unobserve = self._client.observe(
            self._observed, before_record=self.observe_before_record
        )
        self._client.presence.on_change(self._presence)
        self._ticker = asyncio.create_task(self._tick_loop(), name="parley-call-ticker")

    async def close(self) -> None:
        # The presence service keeps its handlers: reports from now on are ignored.
        self._closed = True
        if self._unobserve is not None:
            self._unobserve()
            self._unobserve = None
        for retry in list(self._retries):
            retry.cancel()
        await asyncio.gather(*self._retries, return_exceptions=True)
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
            self._ticker = None
        if self._presence_feed is not None:
            self._presence_feed.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._presence_feed

    def now(self) -> float:
        return self._clock()

    async def feed(self, event: E | ProxyInput, *, raise_refusal: bool = False) -> None:
        """Give the machine one input and carry out what it returns.

        Carried out in full even if the caller is cancelled (``wait_for`` around an
        ``accept()``): the machine has moved on, so its messages and events must follow,
        or the app and the machine would disagree about the call.

        A start or accept that does not go out fails its call (``Fail`` with the refusal
        as its ``detail``); with ``raise_refusal`` the refusal is then raised here too
        (``NotPermitted``, ``UnknownIdentity``, ``DeliveryTimeout``...), for the command
        whose message it was."""
        work = asyncio.ensure_future(self._carry_out(event))
        work.add_done_callback(_retrieve)
        refusals = await asyncio.shield(work)
        if raise_refusal and refusals:
            raise refusals[0]

    async def _carry_out(self, event: E | ProxyInput) -> list[ParleyError]:
        failed: list[tuple[Send, ParleyError]] = []
        async with self._lock:
            outputs = self._machine.handle(event)
            for output in outputs:
                if isinstance(output, Send):
                    refusal = await self._send(output)
                    if refusal is not None:
                        failed.append((output, refusal))
                elif isinstance(output, Connected) and any(
                    send.call_id == output.call_id and send.recipient == output.peer
                    for send, _ in failed
                ):
                    continue  # its accept did not go out: it never connected
                else:
                    await self._emit(output)
        self._wake.set()
        for send, refusal in failed:
            await self._fail(send.call_id, send.recipient, _detail(send, refusal))
        return [refusal for _, refusal in failed]

    async def _fail(self, call_id: str, peer: IdentityId, detail: str) -> None:
        try:
            await self.feed(Fail(now=self.now(), call_id=call_id, peer=peer, detail=detail))
        except ParleyError as exc:  # the call ended meanwhile: nothing left to fail
            log.debug("not failing call %s: %s", call_id, exc)

    async def _send(self, send: Send) -> ParleyError | None:
        """Send; the error if a start or accept did not go out (its call cannot go on).

        An ending (stop, busy, summary) that could not reach the relay *now* is retried in
        the background: the call has ended here, and the peer must hear of it."""
        try:
            await self._deliver(send)
        except (DeliveryTimeout, RelayConnectionError) as exc:
            log.warning("%s: %s", _describe(send), exc)
            if send.kind in _OPENINGS:
                return exc
            self._retry(send)
        except ParleyError as exc:
            log.warning("%s refused: %s", _describe(send), exc)
            return exc if send.kind in _OPENINGS else None
        return None

    def _retry(self, send: Send) -> None:
        task = asyncio.create_task(self._retry_loop(send), name="parley-call-retry")
        self._retries.add(task)
        task.add_done_callback(self._retries.discard)

    async def _retry_loop(self, send: Send) -> None:
        for delay in RETRY_DELAYS:
            await asyncio.sleep(delay)
            try:
                await self._deliver(send)
            except (DeliveryTimeout, RelayConnectionError):
                continue
            except ParleyError as exc:
                log.warning("%s refused on retry: %s", _describe(send), exc)
                return
            log.info("%s delivered on retry", _describe(send))
            return
        log.error("%s: gave up", _describe(send))

    async def _deliver(self, send: Send) -> None:
        voice = self._client.voice()
        match send.kind:
            case MessageType.VOICE_START:
                await voice.start(send.recipient, send.cid, send.call_id, send.peer_info, send.data)
            case MessageType.VOICE_ACCEPT:
                await voice.accept(
                    send.recipient, send.cid, send.call_id, send.peer_info, send.data
                )
            case MessageType.VOICE_BUSY:
                await voice.busy(send.recipient, send.cid, send.call_id, send.data)
            case MessageType.VOICE_STOP:
                await voice.stop(send.recipient, send.cid, send.call_id, send.data)
            case MessageType.VOICE_SUMMARY:
                await voice.summary(send.recipient, send.cid, send.call_id, send.data)
            case MessageType.VOICE_SETUP:
                await voice.setup(send.recipient, str(send.data.get("name", "")), send.cid)

    async def watch(self, identity: str) -> None:
        """Follow ``identity``'s presence, so a call with it can end ``gone``."""
        if identity in self._watching or identity == self._client.id:
            return
        self._watching.add(identity)
        try:
            await self._client.presence.watch(identity)
        except ParleyError as exc:
            self._watching.discard(identity)
            log.warning("cannot follow the presence of %s: %s", identity, exc)

    async def _emit(self, event: Output) -> None:
        assert not isinstance(event, Send)
        if isinstance(event, Ringing | Connected):
            self._expect(event.peer, event.peer_device)
            await self.watch(event.peer)
        try:
            result = self._on_event(event)
            if inspect.isawaitable(result):
                await result
        except Exception:
            log.exception("call event handler failed on %s", type(event).__name__)

    async def _observed(self, observed: Observed) -> None:
        message = observed.message
        if not message.typ.value.startswith("chat.voice."):
            return
        await self.feed(Received.from_payload(self.now(), message, DeviceId(observed.device)))

    def _presence(self, identity: str, devices: frozenset[str]) -> None:
        if self._closed:
            return
        before = self._seen_devices.get(identity, frozenset())
        self._seen_devices[identity] = devices
        now, who = self.now(), IdentityId(identity)
        changes: list[PeerGone | PeerBack] = [
            PeerGone(now=now, identity=who, device=DeviceId(d)) for d in sorted(before - devices)
        ] + [PeerBack(now=now, identity=who, device=DeviceId(d)) for d in sorted(devices - before)]
        self._queue_presence(changes)

    def _expect(self, identity: IdentityId, device: DeviceId) -> None:
        """``device`` just rang or answered, so it was connected. With no report on its
        identity yet, count it in: a first report that comes after it left then says it
        left. A report that already left it out means it left since (or its message
        waited in our inbox while it was away)."""
        seen = self._seen_devices.get(identity)
        if seen is None:
            self._seen_devices[identity] = frozenset({device})
        elif device not in seen:
            self._queue_presence([PeerGone(now=self.now(), identity=identity, device=device)])

    def _queue_presence(self, changes: list[PeerGone | PeerBack]) -> None:
        # Fed in report order by one task; a presence callback itself must not block.
        self._presence_changes.extend(changes)
        if changes and (self._presence_feed is None or self._presence_feed.done()):
            self._presence_feed = asyncio.create_task(self._feed_presence())

    async def _feed_presence(self) -> None:
        while self._presence_changes:
            await self.feed(self._presence_changes.pop(0))

    async def _tick_loop(self) -> None:
        while True:
            deadline = self._machine.next_deadline()
            self._wake.clear()
            delay = None if deadline is None else max(0.0, deadline - self.now())
            # asyncio.timeout, not wait_for: Python 3.11's wait_for swallows a cancel
            # that comes as the wait ends, and close() would wait on this loop forever.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._wake.wait()
                continue  # woken by a new input: the deadline may have moved
            await self.feed(Tick(now=self.now()))


def _retrieve(work: asyncio.Future[list[ParleyError]]) -> None:
    """Mark a shielded input's error as seen when its caller was cancelled: the machine
    refused it (IllegalTransition and the like) and nobody is left to tell."""
    if not work.cancelled() and (exc := work.exception()) is not None:
        log.debug("an input whose caller was cancelled failed: %s", exc)


def _detail(send: Send, refusal: ParleyError) -> str:
    """For the record: "start to bob refused: 'bob' does not accept messages from ..." """
    what = send.kind.value.removeprefix("chat.voice.")
    verb = "refused" if isinstance(refusal, RelayError) else "not delivered"
    return f"{what} to {send.recipient} {verb}: {refusal}"


def _describe(send: Send) -> str:
    return f"{send.kind.value} for call {send.call_id} to {send.recipient}"

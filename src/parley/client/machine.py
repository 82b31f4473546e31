"""Runs a sans-I/O call machine (a ``Phone`` or a ``Proxy``) on a connected client.

The machine decides; this module only moves things in and out of it:

- verified voice messages (own-device copies too) from :meth:`Client.observe`;
- presence reports, turned into ``PeerGone`` / ``PeerBack`` per device (the peer of
  every call that rings or connects is watched);
- local commands, through :meth:`MachineRunner.feed`;
- time: a ``Tick`` whenever the machine's ``next_deadline()`` comes.

What the machine returns is carried out: each ``Send`` is built into its typed message
and handed to the client's sender (signed, sealed, sent; a refused start or accept feeds
``Fail`` for its call, the refusal as its detail), each event goes to ``on_event``.

Ordering, kept for every runner:

1. The machine sees one input at a time (a lock around ``handle``), each source's
   inputs in their order: messages in inbox order, presence in report order, ticks.
2. Sends to one recipient leave in the order the machine produced them, across
   inputs: one recipient's *lane* sends one message at a time, the next once the relay
   has stored (acknowledged) or refused the one before, and the relay delivers in
   commit order. Lanes of different recipients run side by side.
3. Events reach ``on_event`` in the order the machine produced them, across inputs, and
   each only once every send its input produced before it is out or refused; a
   ``Connected`` whose accept did not go out is dropped (that call never connected).
4. A refused start or accept is fed back as ``Fail`` once its input's sends and events
   are carried out.

One exception to 2: an ending (stop, busy, summary) that could not reach the relay is
retried in the background, and later sends to the same recipient may overtake it.

A plain runner (a phone's) holds its lock until an input is carried out in full, so
nothing else reaches the machine meanwhile. A ``pipelined`` one (the proxy's) lets the
next input in as soon as the machine has handled one: its sends and events follow in
the lanes, in the order above, while the machine goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, ClassVar, Generic, NamedTuple, Protocol, TypeAlias, TypeVar

from parley.client.handlers import Observed, Saver
from parley.client.sender import Claims
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
from parley.protocol.messages import (
    Message,
    MessageType,
    VoiceAccept,
    VoiceBusy,
    VoiceSetup,
    VoiceStart,
    VoiceStop,
    VoiceSummary,
)

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
Done: TypeAlias = "asyncio.Future[list[tuple[Send, ParleyError]]]"
"""An input carried out in full: the starts and accepts it could not send, and why."""
Gate: TypeAlias = Callable[[], Awaitable[None]]
"""What an input's sends wait for before they leave (the proxy: its input saved)."""
E_contra = TypeVar("E_contra", contravariant=True)
E = TypeVar("E")


class CallMachine(Protocol[E_contra]):
    def handle(self, event: E_contra) -> list[Output]: ...

    def next_deadline(self) -> float | None: ...


class _Queued(NamedTuple):
    """A send in its recipient's lane: what it waits for, and where its outcome goes (the
    refusal of a start or accept, else None)."""

    send: Send
    gate: Gate | None
    outcome: asyncio.Future[ParleyError | None]


class _Step(NamedTuple):
    """An event in the event lane, after the sends its input produced before it; or,
    with no event, the end of an input: ``done`` gets the refusals of all its sends."""

    event: Event | None
    after: list[tuple[Send, asyncio.Future[ParleyError | None]]]
    done: Done | None = None


class MachineRunner(Generic[E]):
    """``E``: the machine's own commands; it must also take every ``ProxyInput``."""

    # Whether messages reach the machine before the client records them (at least once:
    # for a machine that saves what it saw and skips repeats, as the proxy's does).
    observe_before_record: ClassVar[bool] = False
    # Whether the next input may reach the machine while an earlier one's sends are
    # still out (see the module). A phone's is not: its app sees a call dialling before
    # anything else happens to it.
    pipelined: ClassVar[bool] = False

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
        self._ticking_at: float | None = None  # the deadline the ticker sleeps until
        self._ticker: asyncio.Task[None] | None = None
        self._unobserve: Callable[[], None] | None = None
        self._seen_devices: dict[str, frozenset[str]] = {}
        self._watching: set[str] = set()
        self._retries: set[asyncio.Task[None]] = set()
        self._presence_feed: asyncio.Task[None] | None = None
        self._presence_changes: list[PeerGone | PeerBack] = []
        self._closed = False
        self._inputs: set[asyncio.Future[Any]] = set()  # being carried out
        self._lanes: dict[IdentityId, deque[_Queued]] = {}  # sends by recipient
        self._steps: deque[_Step] = deque()  # the event lane
        self._workers: set[asyncio.Task[None]] = set()  # lanes' tasks, while they have work

    def start(self) -> None:
        self._unobserve = self._client.observe(
            self._observed, before_record=self.observe_before_record, until_saved=self._saver()
        )
        self._client.presence.on_change(self._presence)
        self._ticker = asyncio.create_task(self._tick_loop(), name="parley-call-ticker")

    async def close(self) -> None:
        # The presence service keeps its handlers: reports from now on are ignored.
        # Inputs being carried out go on (settled() waits for them).
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

    async def settled(self) -> None:
        """Return once every input given so far is carried out (its sends out or
        refused, its events emitted), the ``Fail`` of a refused opening included."""
        while self._inputs:
            await asyncio.gather(*self._inputs, return_exceptions=True)

    def now(self) -> float:
        return self._clock()

    async def feed(self, event: E | ProxyInput, *, raise_refusal: bool = False) -> None:
        """Give the machine one input and return once what it returns is carried out.

        Carried out in full even if the caller is cancelled (``wait_for`` around an
        ``accept()``): the machine has moved on, so its messages and events must follow,
        or the app and the machine would disagree about the call.

        A start or accept that does not go out fails its call (``Fail`` with the refusal
        as its ``detail``); with ``raise_refusal`` the refusal is then raised here too
        (``NotPermitted``, ``UnknownIdentity``, ``DeliveryTimeout``...), for the command
        whose message it was."""
        if self.pipelined:
            work = self._track(self._finish(self._handle(event)))
        else:
            work = self._track(self._carry_out(event))
        refusals = await asyncio.shield(work)
        if raise_refusal and refusals:
            raise refusals[0]

    def _track(self, work: Awaitable[list[ParleyError]]) -> asyncio.Future[list[ParleyError]]:
        future = asyncio.ensure_future(work)
        future.add_done_callback(_retrieve)
        self._inputs.add(future)
        future.add_done_callback(self._inputs.discard)
        return future

    async def _carry_out(self, event: E | ProxyInput) -> list[ParleyError]:
        # Not pipelined: nothing else reaches the machine until this input is carried out.
        async with self._lock:
            done = self._handle(event)
            await done
        return await self._finish(done)

    def _handle(self, event: E | ProxyInput) -> Done:
        """Give ``event`` to the machine and queue what it returns (raises what the
        machine raised); the future resolves once all of it is carried out."""
        outputs = self._machine.handle(event)
        # The ticker sleeps until the deadline it last saw: only an earlier one wakes it
        # (a later one is seen when it wakes, and a tick before a deadline does nothing).
        deadline = self._machine.next_deadline()
        if deadline is not None and (self._ticking_at is None or deadline < self._ticking_at):
            self._wake.set()
        return self._dispatch(outputs, self._gate())

    async def _finish(self, done: Done) -> list[ParleyError]:
        failed = await done
        for send, refusal in failed:
            await self._fail(send.call_id, send.recipient, _detail(send, refusal))
        return [refusal for _, refusal in failed]

    async def _put(self, event: E | ProxyInput) -> None:
        """An input from the runner's own sources (messages, presence, time). A pipelined
        runner returns once the machine has handled it, its outputs on their way."""
        if not self.pipelined:
            await self.feed(event)
            return
        done = self._handle(event)
        self._inputs.add(done)
        done.add_done_callback(self._inputs.discard)
        done.add_done_callback(self._fail_refused)

    def _fail_refused(self, done: Done) -> None:
        for send, refusal in [] if done.cancelled() else done.result():
            self._track(self._fail_one(send, refusal))

    async def _fail_one(self, send: Send, refusal: ParleyError) -> list[ParleyError]:
        await self._fail(send.call_id, send.recipient, _detail(send, refusal))
        return [refusal]

    def _saver(self) -> Saver | None:
        """What the client awaits before it records the messages the machine took in
        (``Client.observe(until_saved=...)``): None, they are recorded as they come."""
        return None

    def _gate(self) -> Gate | None:
        """Called right after each ``handle``: what that input's sends must wait for."""
        return None

    def _dispatch(self, outputs: list[Output], gate: Gate | None) -> Done:
        """Put one input's sends in their lanes and its events in the event lane; the
        future gets the refusals of its openings once all of it is carried out."""
        done: Done = asyncio.get_running_loop().create_future()
        if not outputs:  # carried out already (most presence reports and ticks)
            done.set_result([])
            return done
        sends: list[tuple[Send, asyncio.Future[ParleyError | None]]] = []
        for output in outputs:
            if isinstance(output, Send):
                sends.append((output, self._queue_send(output, gate)))
            else:
                self._queue_step(_Step(output, list(sends)))  # after the sends so far
        self._queue_step(_Step(None, sends, done))
        return done

    def _queue_send(self, send: Send, gate: Gate | None) -> asyncio.Future[ParleyError | None]:
        outcome: asyncio.Future[ParleyError | None] = asyncio.get_running_loop().create_future()
        lane = self._lanes.get(send.recipient)
        if lane is None:
            lane = self._lanes[send.recipient] = deque()
            self._work(self._run_lane(send.recipient, lane), "parley-call-sends")
        lane.append(_Queued(send, gate, outcome))
        return outcome

    def _queue_step(self, step: _Step) -> None:
        self._steps.append(step)
        if len(self._steps) == 1:
            self._work(self._run_steps(), "parley-call-events")

    def _work(self, work: Awaitable[None], name: str) -> None:
        task = asyncio.ensure_future(work)
        task.set_name(name)
        self._workers.add(task)
        task.add_done_callback(self._workers.discard)

    async def _run_lane(self, recipient: IdentityId, lane: deque[_Queued]) -> None:
        """Send ``recipient``'s messages one at a time, until its lane is empty."""
        try:
            while lane:
                queued = lane[0]
                refusal = None
                try:
                    if queued.gate is not None:
                        await queued.gate()
                    refusal = await self._send(queued.send)
                except Exception:  # a bug here must not leave the lane's futures hanging
                    log.exception("%s failed", _describe(queued.send))
                lane.popleft()
                if not queued.outcome.done():
                    queued.outcome.set_result(refusal)
        finally:
            # No await between the last pop and here: a send queued meanwhile would
            # have found this lane and been sent by it.
            del self._lanes[recipient]
            for left in lane:  # cancelled: nobody sends them now
                left.outcome.cancel()

    async def _run_steps(self) -> None:
        """Emit the events in order, each after the sends before it, until none is left."""
        while self._steps:
            step = self._steps[0]
            refused = []
            for send, outcome in step.after:
                if not outcome.done():
                    await asyncio.wait([outcome])  # unlike await, leaves it be if cancelled
                if not outcome.cancelled() and (refusal := outcome.result()) is not None:
                    refused.append((send, refusal))
            if step.done is not None:
                if not step.done.done():
                    step.done.set_result(refused)
            elif step.event is not None and not (
                isinstance(step.event, Connected)
                and any(
                    send.call_id == step.event.call_id and send.recipient == step.event.peer
                    for send, _ in refused
                )
            ):  # a Connected whose accept did not go out never connected
                await self._emit(step.event)
            self._steps.popleft()

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
                self._finished(send)
                return exc
            self._retry(send)
            return None
        except ParleyError as exc:
            log.warning("%s refused: %s", _describe(send), exc)
            self._finished(send)
            return exc if send.kind in _OPENINGS else None
        self._finished(send)
        return None

    def _finished(self, send: Send) -> None:
        """``send`` is out, or never will be (refused, or given up on after retries)."""

    def _retry(self, send: Send) -> None:
        task = asyncio.create_task(self._retry_loop(send), name="parley-call-retry")
        self._retries.add(task)
        task.add_done_callback(self._retries.discard)

    async def _retry_loop(self, send: Send) -> None:
        # Cancelled (the runner closes): not finished, whoever kept it may send it later.
        for delay in RETRY_DELAYS:
            await asyncio.sleep(delay)
            try:
                await self._deliver(send)
            except (DeliveryTimeout, RelayConnectionError):
                continue
            except ParleyError as exc:
                log.warning("%s refused on retry: %s", _describe(send), exc)
            else:
                log.info("%s delivered on retry", _describe(send))
            self._finished(send)
            return
        log.error("%s: gave up", _describe(send))
        self._finished(send)

    async def _deliver(self, send: Send) -> None:
        sender = self._client.sender
        await sender.send(_message(send, sender.claims(send.recipient)))

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

    async def _emit(self, event: Event) -> None:
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
        await self._put(Received.from_payload(self.now(), message, DeviceId(observed.device)))

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
            await self._put(self._presence_changes.pop(0))

    async def _tick_loop(self) -> None:
        while True:
            deadline = self._ticking_at = self._machine.next_deadline()
            self._wake.clear()
            delay = None if deadline is None else max(0.0, deadline - self.now())
            # asyncio.timeout, not wait_for: Python 3.11's wait_for swallows a cancel
            # that comes as the wait ends, and close() would wait on this loop forever.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._wake.wait()
                continue  # woken by a new input: the deadline may have moved
            await self._put(Tick(now=self.now()))


def _message(send: Send, claims: Claims) -> Message:
    """The typed message ``send`` says to send, with its claims."""
    if send.kind is MessageType.VOICE_SETUP:
        return VoiceSetup(**claims, cid=send.cid, data={"name": str(send.data.get("name", ""))})
    if (opening := _OPENING_TYPES.get(send.kind)) is not None:
        return opening(
            **claims, cid=send.cid, call_id=send.call_id, peer_info=send.peer_info, data=send.data
        )
    return _ENDING_TYPES[send.kind](**claims, cid=send.cid, call_id=send.call_id, data=send.data)


_OPENING_TYPES: dict[MessageType, type[VoiceStart] | type[VoiceAccept]] = {
    MessageType.VOICE_START: VoiceStart,
    MessageType.VOICE_ACCEPT: VoiceAccept,
}
_ENDING_TYPES: dict[MessageType, type[VoiceBusy] | type[VoiceStop] | type[VoiceSummary]] = {
    MessageType.VOICE_BUSY: VoiceBusy,
    MessageType.VOICE_STOP: VoiceStop,
    MessageType.VOICE_SUMMARY: VoiceSummary,
}


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

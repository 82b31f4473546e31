"""The receive side: deliveries in offset order, opened, verified, recorded, handled,
confirmed.

One task processes deliveries strictly in arrival (= offset) order, so a handler that
awaits a send does not block the connection that reads the send's Ack. Per delivery:

1. an offset at or below the last one processed was processed already (redelivered
   after a reconnect): skip it;
2. open the sealed body (:mod:`.e2ee`): decrypt first, then verify; should any Olm
   state be written before the delivery is recorded, the payload (encrypted at rest)
   is written with it, so neither a retry nor a restart needs the spent keys again;
3. verify (:mod:`.verify`); a rejection (failing to open included) is counted in
   ``rejected`` by reason, logged with the sender, recorded and never reaches a handler;
4. run the observers that asked to run before the record (``before_record``): a crash
   or a stop while they run, or before 5 is written, leaves the offset unrecorded, so
   after the restart they see the message again (opened from the kept payload if its
   keys were spent on disk) — at least once, for observers that skip repeats themselves;
5. record the offset and ``jti`` (dropping the kept payload) in the state file's queue;
   with an observer that saves what it took in (``until_saved``), the record waits,
   in order with every record after it, until the batch is taken to its commit: the
   observer then saves the whole batch at once, and only then is it recorded.

While more deliveries are queued (up to :data:`BATCH`), the next one goes through 1-5
too; then the batch is group-committed (:meth:`State.commit`, one transaction on the
state's thread, with the Olm state the batch changed), and only once it is written:

6. call each delivery's handler in order (none subscribed: dropped, logged at debug),
   unless the message is a copy of what another device of this identity sent; then the
   other observers;
7. confirm the batch's last offset to the relay.

So a crash can lose a handler call but never repeat one, and the relay keeps every
delivery whose record is not on disk. A stop (``close()``) while a batch waits for its
commit still hands the batch to its handlers, as the commit goes through anyway. Within
a batch the ``before_record`` observers see the next deliveries before the handlers and
the other observers see the first: each kind sees them in order.

A delivery that cannot be opened or verified *yet* (the key fetch timed out, the
connection is down) is retried with backoff, never dropped: it says nothing about the
message. The batch before it is committed and handled first. Its decrypted payload is
kept in the state file across those retries (and restarts), since an Olm message key
can be used only once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter, deque
from collections.abc import Callable
from typing import NamedTuple

from parley.client.backoff import Backoff
from parley.client.connection import Connection
from parley.client.e2ee import EndToEnd
from parley.client.handlers import Handlers, Observed
from parley.client.state import Seen, State
from parley.client.verify import REJECTIONS, Verifier, rejection_reason
from parley.errors import DeliveryTimeout, RelayConnectionError, RelayError
from parley.protocol.frames import Deliver

log = logging.getLogger(__name__)

# Deliveries committed together at most; while a backlog drains, the relay hears a
# confirm at least this often, so it can trim the inbox.
BATCH = 64
PRUNE_EVERY = 256


class _Recorded(NamedTuple):
    """A delivery recorded in the state file's queue, its handlers still to run."""

    offset: int
    observed: Observed | None  # None: nothing to hand on (skipped, rejected, own send)


class _Held(NamedTuple):
    """A delivery processed and not recorded yet: an observer is still to save it."""

    offset: int
    seen: Seen | None
    observed: Observed | None


class Inbox:
    def __init__(
        self,
        *,
        identity: str,
        device: str,
        connection: Connection,
        state: State,
        e2ee: EndToEnd,
        verifier: Verifier,
        handlers: Handlers,
        rejected: Counter[str],
        clock: Callable[[], float],
    ) -> None:
        self._identity = identity
        self._device = device
        self._connection = connection
        self._state = state
        self._e2ee = e2ee
        self._verifier = verifier
        self._handlers = handlers
        self._rejected = rejected
        self._clock = clock
        self._queue: asyncio.Queue[Deliver] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._stopped = False
        self._backoff = Backoff()
        self._recorded = 0
        self._batch: deque[_Recorded] = deque()
        self._held: list[_Held] = []  # processed, in order, waiting for Handlers.saved()

    def put(self, deliver: Deliver) -> None:
        self._queue.put_nowait(deliver)

    def start(self) -> None:
        self._state.prune_seen(self._clock())
        self._task = asyncio.create_task(self._run(), name="parley-inbox")

    async def stop(self) -> None:
        self._stopped = True
        task, self._task = self._task, None
        # A handler may close the client: it runs inside this task, which must not await
        # itself; the loop sees ``_stopped`` and ends when the handler returns.
        if task is None or task is asyncio.current_task():
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def _run(self) -> None:
        try:
            while not self._stopped:
                deliver = await self._queue.get()
                if not await self._process_until_done(deliver):
                    return
                if self._queue.empty() or len(self._batch) + len(self._held) >= BATCH:
                    await self._flush()
        except asyncio.CancelledError:
            # Stopped with deliveries recorded: the state file writes them (now, or as
            # it closes), so their handlers run first rather than never. Nothing is held
            # then (held deliveries are recorded before any is in the batch); one
            # stopped while held stays unrecorded: delivered again, its observer skips
            # what it saved.
            if self._batch:
                await self._flush()
            raise

    async def _flush(self) -> None:
        """Record what is held once its observers saved it; commit the batch, then hand
        it to the handlers and confirm it. Cancelled while writing (close()), the write
        goes on, and ``_run`` flushes the batch again."""
        if self._held:
            await self._handlers.saved()
            held, self._held = self._held, []
            for offset, seen, observed in held:
                self._record(offset, seen, observed)
        if not self._batch:
            return
        await self._state.commit()
        await self._hand_on()

    async def _hand_on(self) -> None:
        # Taken one at a time: if a handler is cancelled, the rest are still handed on.
        last = self._batch[-1].offset
        while self._batch:
            recorded = self._batch.popleft()
            observed = recorded.observed
            if observed is None:
                continue
            message = observed.message
            if not observed.own_copy and not await self._handlers.dispatch(message.iss, message):
                log.debug("no handler for %s; dropped offset %d", message.typ, recorded.offset)
            await self._handlers.notify(observed)
        # Every offset in a batch is above the last one recorded, so above every confirm.
        await self._connection.confirm(last)

    async def _process_until_done(self, deliver: Deliver) -> bool:
        self._backoff.reset()
        while True:
            try:
                await self._process(deliver)
            except (DeliveryTimeout, RelayConnectionError, RelayError) as exc:
                # What was processed before it need not wait for its retries.
                await self._flush()
                if self._connection.failure is not None:
                    log.error("inbox stopped: %s", self._connection.failure)
                    return False
                delay = self._backoff.next_delay()
                log.warning(
                    "cannot verify offset %d yet (%s); retrying in %.1f s",
                    deliver.offset,
                    exc,
                    delay,
                )
                await asyncio.sleep(delay)
            else:
                return True

    async def _process(self, deliver: Deliver) -> None:
        offset, envelope = deliver.offset, deliver.envelope
        if offset <= (self._held[-1].offset if self._held else self._state.offset):
            log.debug("offset %d already processed", offset)
            return
        if envelope.sender == self._identity and envelope.sender_device == self._device:
            # What this very device sent to its own identity: nothing was sealed for it.
            self._processed(offset, None, None)
            return
        try:
            payload = await self._open(deliver)
            message, device = await self._verifier.verify(
                envelope, payload, deliver.sender_keys_version
            )
        except REJECTIONS as exc:
            reason = rejection_reason(exc)
            self._rejected[reason] += 1
            log.warning(
                "rejected envelope %s from %s:%s at offset %d: %s: %s",
                envelope.id,
                envelope.sender,
                envelope.sender_device,
                offset,
                reason,
                exc,
            )
            self._processed(offset, None, None)
            return
        # A copy of what another device of ours sent is not addressed to us: observers
        # (the call layer) see it, the app's handlers do not.
        own_copy = envelope.sender == self._identity and envelope.recipient != self._identity
        observed = Observed(message, message.iss, device, own_copy)
        await self._handlers.notify(observed, before_record=True)
        self._processed(offset, Seen(message.iss, message.jti, message.exp), observed)

    async def _open(self, deliver: Deliver) -> bytes:
        # Opened before (a retry, or a restart after decrypting): its keys are spent.
        kept = self._state.load_opened(deliver.offset)
        if kept is not None:
            return self._e2ee.unwrap_kept(kept)
        payload = await self._e2ee.open(deliver.envelope, deliver.sender_keys_version)
        # No await since decrypting: nothing has written the Olm state it spent yet.
        # Verifying may wait on the network while a send writes Olm state: that write
        # then takes the payload along (State.keep_opened).
        self._state.keep_opened(deliver.offset, self._e2ee.wrap_kept(payload))
        return payload

    def _processed(self, offset: int, seen: Seen | None, observed: Observed | None) -> None:
        if self._held or self._handlers.saving:
            self._held.append(_Held(offset, seen, observed))
        else:
            self._record(offset, seen, observed)

    def _record(self, offset: int, seen: Seen | None, observed: Observed | None) -> None:
        self._state.record(offset, seen)
        self._batch.append(_Recorded(offset, observed))
        self._recorded += 1
        if self._recorded % PRUNE_EVERY == 0:
            self._state.prune_seen(self._clock())

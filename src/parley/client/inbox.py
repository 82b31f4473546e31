"""The receive side: deliveries in offset order, opened, verified, recorded, handled,
confirmed.

One task processes deliveries strictly in arrival (= offset) order, so a handler that
awaits a send does not block the connection that reads the send's Ack. Per delivery:

1. an offset at or below the stored one was processed already (redelivered after a
   reconnect): skip it;
2. open the sealed body (:mod:`.e2ee`): decrypt first, then verify; should any Olm
   state be written before the delivery is recorded, the payload (encrypted at rest)
   is written with it, so neither a retry nor a restart needs the spent keys again;
3. verify (:mod:`.verify`); a rejection (failing to open included) is counted in
   ``rejected`` by reason, logged with the sender, recorded and never reaches a handler;
4. run the observers that asked to run before the record (``before_record``): a crash
   or a stop while they run, or before 5, leaves the offset unrecorded, so after the
   restart they see the message again (opened from the kept payload if its keys were
   spent on disk) — at least once, for observers that skip repeats themselves;
5. record the offset and ``jti`` (dropping the kept payload) *before*
   calling the handler, so a crash can lose a handler call but never repeat one;
6. call the handler (none subscribed: dropped, logged at debug), unless the message is
   a copy of what another device of this identity sent; then the other observers;
7. confirm to the relay, batched while more deliveries are queued.

A delivery that cannot be opened or verified *yet* (the key fetch timed out, the
connection is down) is retried with backoff, never dropped: it says nothing about the
message. Its decrypted payload is kept in the state file across those retries (and
restarts), since an Olm message key can be used only once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Callable

from parley.client.backoff import Backoff
from parley.client.connection import Connection
from parley.client.e2ee import EndToEnd
from parley.client.handlers import Handlers, Observed
from parley.client.state import Seen, State
from parley.client.verify import REJECTIONS, Verifier, rejection_reason
from parley.errors import DeliveryTimeout, RelayConnectionError, RelayError
from parley.protocol.frames import Deliver

log = logging.getLogger(__name__)

# Confirm at least this often while a backlog drains, so the relay can trim the inbox.
CONFIRM_BATCH = 64
PRUNE_EVERY = 256


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
        self._confirmed = state.offset
        self._recorded = 0

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
        while not self._stopped:
            deliver = await self._queue.get()
            if not await self._process_until_done(deliver):
                return
            offset = self._state.offset
            if offset > self._confirmed and (
                self._queue.empty() or offset - self._confirmed >= CONFIRM_BATCH
            ):
                await self._connection.confirm(offset)
                self._confirmed = offset

    async def _process_until_done(self, deliver: Deliver) -> bool:
        self._backoff.reset()
        while True:
            try:
                await self._process(deliver)
            except (DeliveryTimeout, RelayConnectionError, RelayError) as exc:
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
        if offset <= self._state.offset:
            log.debug("offset %d already processed", offset)
            return
        if envelope.sender == self._identity and envelope.sender_device == self._device:
            # What this very device sent to its own identity: nothing was sealed for it.
            self._record(offset, None)
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
            self._record(offset, None)
            return
        # A copy of what another device of ours sent is not addressed to us: observers
        # (the call layer) see it, the app's handlers do not.
        own_copy = envelope.sender == self._identity and envelope.recipient != self._identity
        observed = Observed(message, message.iss, device, own_copy)
        await self._handlers.notify(observed, before_record=True)
        self._record(offset, Seen(message.iss, message.jti, message.exp))
        if not own_copy and not await self._handlers.dispatch(message.iss, message):
            log.debug("no handler for %s; dropped envelope %s", message.typ, envelope.id)
        await self._handlers.notify(observed)

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

    def _record(self, offset: int, seen: Seen | None) -> None:
        self._state.record(offset, seen, self._e2ee.take_changes())
        self._recorded += 1
        if self._recorded % PRUNE_EVERY == 0:
            self._state.prune_seen(self._clock())

"""The proxy core made durable: saved after every input, resumed after a restart.

:class:`DurableCore` is the machine :class:`~parley.client.machine.MachineRunner` runs
for the proxy. Each input goes to the core; what it changed (the bridges touched, the
legs ended, presence), the messages not sent yet (the *outbox*) and the identity of the
message that was the input are queued as one :class:`~parley.proxy.records.Saved`, and
the queue is committed in order, one transaction for all that waits in it: by whoever
waits for it first (:meth:`DurableCore.flushed`), else by a writer task. Nothing is
sent, and no leg is reported, before the input behind it is committed, so a crash at
any moment leaves a store that either has not seen the input or has it with its sends:
a restart re-sends the outbox (stop, busy and a repeated start or accept are all
harmless twice) and goes on from the saved bridges. A message leaves the outbox once it
is out, or once the runner gave up on it (refused, or retried for minutes): one still
retried in the background at a crash is sent again by the restarted proxy.

Exactly once per message: the proxy observes before the client records a delivery
(``Client.observe(before_record=True)``), and the client records it only once it is
committed here with what it caused (``until_saved``: :meth:`DurableCore.flushed`, one
commit for the burst of deliveries the client took in). A crash before that commit
leaves the delivery unrecorded, so the client delivers it again; a crash after it and
before the client's record delivers it again too, and the core skips it, since its
:class:`~parley.protocol.proxy_state.MessageId` is saved
(:class:`~parley.protocol.proxy_state.Heard`). Those ids are forgotten a while after the
messages expire: the client refuses an expired message before the proxy sees it. Should
the store be away longer than ``flush_timeout``, the message is handled unsaved and the
client records it: at most once, as before.

On start (:meth:`DurableCore.restore`) every stored row is decoded: live bridges go back
to the core, ended ones and tombstones to its memory. A row that cannot be decoded is a
call nobody can resume: each of its parties is sent a stop with reason ``failed``, and
each leg is recorded from the row's plain columns, ended ``failed`` at the restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging

import msgspec

from parley.errors import ParleyError
from parley.ids import IdentityId
from parley.protocol import call_wire as wire
from parley.protocol.call import EndReason
from parley.protocol.call_io import Ended, Output, ProxyInput, Send
from parley.protocol.proxy import Proxy
from parley.protocol.proxy_state import (
    Away,
    Changes,
    Heard,
    Kept,
    MessageId,
    Resume,
    decode_away,
    decode_kept,
    encode_away,
    encode_kept,
)
from parley.proxy.records import BridgeRow, Leg, LegRecord, Saved
from parley.proxy.store import ProxyStore

log = logging.getLogger(__name__)

_outbox_encoder = msgspec.msgpack.Encoder()
_outbox_decoder = msgspec.msgpack.Decoder(list[Send])
_NOTHING = _outbox_encoder.encode([])

LOST = "the proxy could not resume this call (its saved state is unreadable)"

# Handled message ids are kept this long past their exp (a standby's clock may be
# behind the active one's), and forgotten every PRUNE_EVERY messages.
FORGET_MARGIN = 300
PRUNE_EVERY = 256


class DurableCore:
    """``core`` saved to ``store`` after every input. Until :class:`Resume` is handled
    it has no deadline: nothing ends before the client is connected to say so.
    ``fence``: the lease holder every save is made under (None: no lease).

    ``flush_timeout``: how long a send, or the client's record of a message, waits for
    its input to be committed; past it (the store away) the call goes on unsaved rather
    than stall, and the writer keeps trying, every ``retry_interval``. ``repeats``
    counts the messages delivered again after a restart and skipped."""

    def __init__(
        self,
        core: Proxy,
        store: ProxyStore,
        *,
        retry_interval: float = 0.5,
        flush_timeout: float = 5.0,
        fence: str | None = None,
    ) -> None:
        self.core = core
        self._fence = fence
        self._store = store
        self._retry_interval = retry_interval
        self._flush_timeout = flush_timeout
        self._queue: list[Saved] = []
        self._queued = 0  # inputs queued since start, and committed
        self._committed = 0
        self._writing = False  # a commit is under way (the writer's, or a flushed() caller's)
        self._progress = asyncio.Event()
        self._wake = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self._resumed = False
        self._pending: list[Send] = []  # to send on Resume: the outbox, lost calls' stops
        self._unsent: list[Send] = []  # the outbox: not out yet (pending ones included)
        self._outbox_stale = False  # the stored outbox holds sends that are out now
        self._handled: dict[tuple[str, str], int] = {}  # (issuer, jti) -> exp
        # The same ids by exp, soonest first: forgetting takes only what expired, where a
        # walk over all of them (a rate times ten minutes of ids) cost more per message
        # than the rest of the proxy's bookkeeping at a few hundred calls a second.
        self._expiries: list[tuple[int, str, str]] = []
        self._heard = 0
        self._lost: list[BridgeRow] = []  # live calls that cannot be resumed: recorded on Resume
        self.repeats = 0  # messages delivered again after a restart, and skipped
        self.idle = asyncio.Event()  # set while no bridge is live

    async def restore(self) -> None:
        """Load the store into the core (before the first input) and start writing."""
        stored = await self._store.load()
        self._handled = {(m.issuer, m.jti): m.exp for m in stored.handled}
        self._expiries = [(m.exp, m.issuer, m.jti) for m in stored.handled]
        heapq.heapify(self._expiries)
        kept: list[Kept] = []
        tombs: list[BridgeRow] = []
        for row in stored.rows:
            try:
                kept.append(decode_kept(row.state))
            except msgspec.MsgspecError as exc:
                log.error("call %s (cid %s) cannot be resumed: %s", row.call_id, row.cid, exc)
                self._pending.extend(
                    wire.end_to(party, row.cid, row.call_id, EndReason.FAILED, detail=LOST)
                    for party in row.parties
                )
                if row.live:
                    self._lost.append(row)
                tomb = Kept(call_id=row.call_id, rank=row.rank, live=False, bridge=None)
                kept.append(tomb)
                tombs.append(_row(tomb, row.cid, row.parties))
        away: tuple[Away, ...] = ()
        if stored.away is not None:
            try:
                away = decode_away(stored.away)
            except msgspec.MsgspecError as exc:  # presence is reported again anyway
                log.warning("who was away cannot be read: %s", exc)
        if stored.outbox is not None:
            try:
                self._pending[:0] = _outbox_decoder.decode(stored.outbox)
            except msgspec.MsgspecError as exc:
                log.error("the messages being sent at the last stop cannot be read: %s", exc)
        self.core.restore(kept, away)
        self._unsent = list(self._pending)
        if tombs:  # with the stops to their parties: a crash now still sends them
            self._put(Saved(rows=tuple(tombs), outbox=self._outbox(), fence=self._fence))
        if self.core.bridges:
            log.info("resuming %d calls", len(self.core.bridges))
        self._update_idle()
        self._writer = asyncio.create_task(self._write(), name="parley-proxy-writer")

    # -- the machine the runner runs ----------------------------------------------------

    def handle(self, event: ProxyInput | Resume | Heard) -> list[Output]:
        heard = None
        if isinstance(event, Heard):
            heard, event = event.id, event.received
            if (heard.issuer, heard.jti) in self._handled:
                self.repeats += 1
                log.info("message %s from %s was handled already", heard.jti, heard.issuer)
                return []
        out = self.core.handle(event)
        self._unsent.extend(o for o in out if isinstance(o, Send))
        lost: tuple[LegRecord, ...] = ()
        if isinstance(event, Resume):
            out[:0] = self._pending
            self._pending = []
            self._resumed = True
            lost = tuple(
                leg for row in self._lost for leg in _lost_legs(row, self.core.identity, event.now)
            )
            self._lost = []
        forget = 0
        if heard is not None:
            self._handled[heard.issuer, heard.jti] = heard.exp
            heapq.heappush(self._expiries, (heard.exp, heard.issuer, heard.jti))
            self._heard += 1
            if self._heard % PRUNE_EVERY == 0:
                forget = self._forget(int(event.now) - FORGET_MARGIN)
        self._save(out, heard, forget, lost)
        self._update_idle()
        return out

    def _forget(self, before: int) -> int:
        """Forget the ids of messages expired before ``before``; returns it."""
        expiries = self._expiries
        while expiries and expiries[0][0] < before:
            _, issuer, jti = heapq.heappop(expiries)
            self._handled.pop((issuer, jti), None)  # once, as each id is heard once
        return before

    def next_deadline(self) -> float | None:
        return self.core.next_deadline() if self._resumed else None

    # -- saving ---------------------------------------------------------------------------

    def _save(
        self,
        out: list[Output],
        heard: MessageId | None,
        forget: int,
        lost: tuple[LegRecord, ...],
    ) -> None:
        changes = self.core.take_changes()
        sends = any(isinstance(o, Send) for o in out)
        outbox = self._outbox() if sends or self._outbox_stale else None
        if not changes and outbox is None and heard is None and not lost:
            return
        me = self.core.identity
        ended = tuple(LegRecord.of(o.record, me) for o in out if isinstance(o, Ended))
        self._put(
            Saved(
                rows=_rows(changes),
                legs=(*lost, *ended),
                outbox=outbox,
                away=None if changes.away is None else encode_away(changes.away),
                handled=() if heard is None else (heard,),
                forget_before=forget,
                keep=self.core.config.memory,
                fence=self._fence,
            )
        )

    def _outbox(self) -> bytes:
        self._outbox_stale = False
        return _outbox_encoder.encode(self._unsent) if self._unsent else _NOTHING

    def sent(self, send: Send) -> None:
        """``send`` is out, or will never be (refused, given up): it leaves the outbox.
        The stored one is rewritten at once when that empties it, else with the next
        input (a restart sending one again is harmless)."""
        for i, unsent in enumerate(self._unsent):
            if unsent is send:
                del self._unsent[i]
                self._outbox_stale = True
                break
        if not self._unsent and self._outbox_stale:
            self._put(Saved(outbox=self._outbox(), keep=self.core.config.memory, fence=self._fence))

    def _put(self, saved: Saved) -> None:
        self._queue.append(saved)
        self._queued += 1
        self._wake.set()

    @property
    def queued(self) -> int:
        """How many saves were queued so far (the last one: the input just handled)."""
        return self._queued

    async def flushed(self, upto: int | None = None) -> None:
        """Return once the first ``upto`` saves queued (default: all so far) are
        committed, or ``flush_timeout`` passed.

        With nobody committing just now, the caller commits the queue itself: a store
        that writes without waiting (SQLite) then commits here and now, without a trip
        through the event loop to the writer task and back."""
        target = self._queued if upto is None else upto
        if self._committed >= target:
            return
        try:
            async with asyncio.timeout(self._flush_timeout):
                if not self._writing and self._queue:
                    await self._commit()
                while self._committed < target:
                    self._progress.clear()
                    await self._progress.wait()
        except TimeoutError:
            log.warning("the proxy store is slow or away: sending what it has not saved yet")

    async def _commit(self) -> bool:
        """Commit the queue in one transaction, in order. On a failure or a cancel the
        batch goes back to the front of the queue, for the writer to try again; False
        after a failure."""
        self._writing = True
        batch, count = self._queue, self._queued
        self._queue = []
        try:
            await self._store.save(Saved.of(batch))
        except ParleyError as exc:
            log.warning("saving the proxy's calls failed, trying again: %s", exc)
            self._queue[:0] = batch
            return False
        except BaseException:
            self._queue[:0] = batch
            raise
        else:
            self._committed = count
            self._progress.set()
            return True
        finally:
            self._writing = False
            if self._queue:  # queued meanwhile, or to try again
                self._wake.set()

    async def _write(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            if self._queue and not self._writing and not await self._commit():
                await asyncio.sleep(self._retry_interval)

    async def close(self) -> None:
        """Commit what is queued, with the outbox as it is now (what the runner still
        retried stays in it), within ``flush_timeout``; then stop writing."""
        if self._writer is None:
            return
        if self._outbox_stale:
            self._put(Saved(outbox=self._outbox(), keep=self.core.config.memory, fence=self._fence))
        await self.flushed()
        self._writer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._writer
        self._writer = None

    def _update_idle(self) -> None:
        if self.core.bridges:
            self.idle.clear()
        else:
            self.idle.set()


def _rows(changes: Changes) -> tuple[BridgeRow, ...]:
    rows = []
    for kept in changes.kept:
        if kept.bridge is None:
            rows.append(_row(kept, "", ()))
        else:
            parties = (kept.bridge.inbound.peer, *(leg.peer for leg in kept.bridge.outbound))
            rows.append(_row(kept, kept.bridge.inbound.cid, parties))
    return tuple(rows)


def _row(kept: Kept, cid: str, parties: tuple[IdentityId, ...]) -> BridgeRow:
    return BridgeRow(
        call_id=kept.call_id,
        cid=cid,
        parties=parties,
        live=kept.live,
        rank=kept.rank,
        state=encode_kept(kept),
    )


def _lost_legs(row: BridgeRow, proxy: IdentityId, now: float) -> list[LegRecord]:
    """The legs of a live call whose state cannot be read, from the plain columns: the
    inbound party first, ended ``failed`` now (when and whether it rang or was answered
    is in the state nobody can read)."""
    legs = []
    for i, party in enumerate(row.parties):
        inbound = i == 0
        legs.append(
            LegRecord(
                call_id=row.call_id,
                cid=row.cid,
                leg=Leg.INBOUND if inbound else Leg.OUTBOUND,
                caller=party if inbound else proxy,
                callee=proxy if inbound else party,
                peer_device=None,
                started=now,
                ringing=None,
                answered=None,
                ended=now,
                duration=0.0,
                reason=EndReason.FAILED,
            )
        )
    return legs

"""The proxy core made durable: saved after every input, resumed after a restart.

:class:`DurableCore` is the machine :class:`~parley.client.machine.MachineRunner` runs
for the proxy. Each input goes to the core; what it changed (the bridges touched, the
legs ended, presence) and the messages it is about to send (the *outbox*) are queued as
one :class:`~parley.proxy.records.Saved`, and a writer task commits the queue in order,
several inputs to a transaction when they come fast. Nothing is sent, and no leg is
reported, before the input behind it is committed (:meth:`DurableCore.flushed`), so a
crash at any moment leaves a store that either has not seen the input or has it with
its sends: a restart re-sends the outbox (stop, busy and a repeated start or accept are
all harmless twice) and goes on from the saved bridges. Once the last of an input's
messages is out, the outbox is cleared (in the next write), so a restart later repeats
nothing.

The store holds the offset of no message: the client records a message as processed
before the proxy sees it (:mod:`parley.client.inbox`: a crash there loses a handler call
and never repeats one). A message is therefore never handled twice; the one window
left, between the client's commit and ours, is kept short by saving before any send.

On start (:meth:`DurableCore.restore`) every stored row is decoded: live bridges go back
to the core, ended ones and tombstones to its memory. A row that cannot be decoded is a
call nobody can resume: each of its parties is sent a stop with reason ``failed``.
"""

from __future__ import annotations

import asyncio
import contextlib
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
    Kept,
    Resume,
    decode_away,
    decode_kept,
    encode_away,
    encode_kept,
)
from parley.proxy.records import BridgeRow, LegRecord, Saved
from parley.proxy.store import ProxyStore

log = logging.getLogger(__name__)

_outbox_encoder = msgspec.msgpack.Encoder()
_outbox_decoder = msgspec.msgpack.Decoder(list[Send])
_NOTHING = _outbox_encoder.encode([])

LOST = "the proxy could not resume this call (its saved state is unreadable)"


class DurableCore:
    """``core`` saved to ``store`` after every input. Until :class:`Resume` is handled
    it has no deadline: nothing ends before the client is connected to say so.
    ``fence``: the lease holder every save is made under (None: no lease).

    ``flush_timeout``: how long a send waits for its input to be committed; past it
    (the store away) the call goes on unsaved rather than stall, and the writer keeps
    trying, every ``retry_interval``."""

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
        self._progress = asyncio.Event()
        self._wake = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self._resumed = False
        self._pending: list[Send] = []  # to send on Resume: last outbox, lost calls' stops
        self._outbox_full = False  # the stored outbox holds sends
        self._outbox: list[Send] = []  # the current input's sends
        self.idle = asyncio.Event()  # set while no bridge is live

    async def restore(self) -> None:
        """Load the store into the core (before the first input) and start writing."""
        stored = await self._store.load()
        kept: list[Kept] = []
        lost: list[Saved] = []
        for row in stored.rows:
            try:
                kept.append(decode_kept(row.state))
            except msgspec.MsgspecError as exc:
                log.error("call %s (cid %s) cannot be resumed: %s", row.call_id, row.cid, exc)
                self._pending.extend(
                    wire.end_to(party, row.cid, row.call_id, EndReason.FAILED, detail=LOST)
                    for party in row.parties
                )
                tomb = Kept(call_id=row.call_id, rank=row.rank, live=False, bridge=None)
                kept.append(tomb)
                lost.append(Saved(rows=(_row(tomb, row.cid, row.parties),), fence=self._fence))
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
        self._outbox_full = bool(self._pending)
        for saved in lost:
            self._put(saved)
        if self.core.bridges:
            log.info("resuming %d calls", len(self.core.bridges))
        self._update_idle()
        self._writer = asyncio.create_task(self._write(), name="parley-proxy-writer")

    # -- the machine the runner runs ----------------------------------------------------

    def handle(self, event: ProxyInput | Resume) -> list[Output]:
        out = self.core.handle(event)
        if isinstance(event, Resume):
            out[:0] = self._pending
            self._pending = []
            self._resumed = True
        self._save(out)
        self._update_idle()
        return out

    def next_deadline(self) -> float | None:
        return self.core.next_deadline() if self._resumed else None

    # -- saving ---------------------------------------------------------------------------

    def _save(self, out: list[Output]) -> None:
        changes = self.core.take_changes()
        sends = [o for o in out if isinstance(o, Send)]
        # The runner hands the machine one input at a time, after carrying out the last
        # one's outputs: the outbox saved before is done with once this input is here.
        outbox = None
        if sends:
            outbox, self._outbox_full = _outbox_encoder.encode(sends), True
        elif self._outbox_full:
            outbox, self._outbox_full = _NOTHING, False
        self._outbox = sends
        if not changes and outbox is None:
            return
        me = self.core.identity
        self._put(
            Saved(
                rows=_rows(changes),
                legs=tuple(LegRecord.of(o.record, me) for o in out if isinstance(o, Ended)),
                outbox=outbox,
                away=None if changes.away is None else encode_away(changes.away),
                keep=self.core.config.memory,
                fence=self._fence,
            )
        )

    def sent(self, send: Send) -> None:
        """``send`` went out (or to the runner's retries). After the last of an input's,
        its outbox is done with: a restart need not send them again."""
        if self._outbox and send is self._outbox[-1]:
            self._outbox = []
            self._outbox_full = False
            self._put(Saved(outbox=_NOTHING, keep=self.core.config.memory, fence=self._fence))

    def _put(self, saved: Saved) -> None:
        self._queue.append(saved)
        self._queued += 1
        self._wake.set()

    async def flushed(self) -> None:
        """Return once every input so far is committed (or ``flush_timeout`` passed)."""
        target = self._queued
        try:
            async with asyncio.timeout(self._flush_timeout):
                while self._committed < target:
                    self._progress.clear()
                    await self._progress.wait()
        except TimeoutError:
            log.warning("the proxy store is slow or away: sending what it has not saved yet")

    async def _write(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            if not self._queue:
                continue
            batch, count = self._queue, self._queued
            self._queue = []
            merged = batch[0]
            for later in batch[1:]:
                merged = merged.then(later)
            while True:
                try:
                    await self._store.save(merged)
                    break
                except ParleyError as exc:
                    log.warning("saving the proxy's calls failed, trying again: %s", exc)
                    await asyncio.sleep(self._retry_interval)
            self._committed = count
            self._progress.set()

    async def close(self, *, sent: bool = False) -> None:
        """Commit what is queued (within ``flush_timeout``), then stop writing.
        ``sent``: the outputs of every input were carried out (a clean stop)."""
        if self._writer is None:
            return
        if sent and self._outbox_full:
            self._outbox_full = False
            self._put(Saved(outbox=_NOTHING, keep=self.core.config.memory, fence=self._fence))
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

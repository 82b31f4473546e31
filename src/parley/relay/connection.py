"""The outgoing side of one client connection: replies, live deliveries, catch-up.

Everything the relay writes to a client that cannot go out at once goes through one
writer task per connection, so a slow or dead client only ever blocks its own task. The
task runs only while there is something to write (an idle connection holds no task,
queue or waiter: with ten thousand of them that is most of the relay's memory). With no
writer running nothing is queued, so a reply or a live delivery is written straight to
the transport when it takes it without waiting (``write_now``), and in the writer's
order: no task, coroutine or timer per frame. Replies (Ack, Error, ...) go first.
Deliveries come from a bounded in-memory queue filled as envelopes are stored; when it
overflows, the queue is dropped and the writer reads the device's inbox from the store
instead, starting after ``cursor`` (the last offset written). Skipping every
offset at or below the cursor keeps deliveries in offset order and never sends one
twice, whichever of the two sources it comes from.

Why no offset is missed: a live push happens only after its row is committed, and the
store runs jobs in order. A catch-up read therefore either sees a row, or the row was
committed after the read was queued and its push lands in the queue (or overflows it,
which schedules another read). Where several nodes write one store, a push that is not
the next offset is not written: the writer reads the inbox instead
(``push_in_sequence``), since a lower offset another node committed first may not have
been announced yet.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from parley.errors import TransportClosed
from parley.protocol.frames import Deliver, Envelope, Frame, encode
from parley.relay.config import RelayConfig
from parley.relay.directory import Directory
from parley.relay.metrics import RelayMetrics
from parley.relay.store import RelayStore
from parley.transport import Transport

logger = logging.getLogger(__name__)

CLOSE_POLICY = 1008  # RFC 6455 §7.4.1: the client broke a rule (here: it stopped reading)


@dataclass(frozen=True, slots=True)
class Context:
    """What every connection of one relay shares."""

    config: RelayConfig
    store: RelayStore
    directory: Directory
    metrics: RelayMetrics
    clock: Callable[[], float]
    # Several nodes write the store: a push may overtake a lower offset that another
    # node committed first (its wake-up not heard yet). Then only the next offset is
    # written straight from a push; anything further on is read from the store, in
    # commit order. (One node alone pushes in commit order already.)
    push_in_sequence: bool = False


class Connection:
    def __init__(self, transport: Transport, context: Context) -> None:
        self.transport = transport
        self._ctx = context
        self.identity: str | None = None
        self.device: str | None = None
        self.authenticated_at = 0.0
        # The network address counted among the unauthenticated until this connection
        # authenticates or ends (None: not counted, or no longer).
        self.preauth_source: str | None = None
        # The highest offset written to this connection (or skipped as expired).
        self.cursor = 0
        # Created on first use and dropped when empty (see the module docstring).
        self._replies: deque[bytes] | None = None
        self._reply_bytes = 0
        self._deliveries: deque[Deliver] | None = None
        self._delivery_bytes = 0
        self._need_read = False
        self._attached = False
        self._closing: tuple[int, str] | None = None
        # The writer has stopped for good: nothing queued from now on would be written.
        self._gone = False
        # The reader waits on these; each exists only while someone waits.
        self._room: asyncio.Future[None] | None = None
        self._unpaused: asyncio.Future[None] | None = None
        self._resume: asyncio.TimerHandle | None = None
        self._writer: asyncio.Task[None] | None = None
        self._abort: asyncio.TimerHandle | None = None
        # When the write in progress began (None: none is), and the one timer per
        # writer run that checks it: a timeout around every frame cost more than the
        # frame's own writing.
        self._write_began: float | None = None
        self._watchdog: asyncio.TimerHandle | None = None

    @property
    def closing(self) -> bool:
        return self._closing is not None

    def _kick(self) -> None:
        """Make sure the writer runs: it ends by itself once everything is written."""
        if self._gone or (self._writer is not None and not self._writer.done()):
            return
        loop = asyncio.get_running_loop()
        self._writer = writer = loop.create_task(self._write_loop())
        writer.add_done_callback(self._writer_done)
        if self._watchdog is None:
            self._watchdog = loop.call_later(self._ctx.config.write_timeout, self._check_write)

    def _writer_done(self, writer: asyncio.Task[None]) -> None:
        if self._writer is writer and not self._gone:
            self._writer = None  # idle: not even a finished task kept
        if self._writer is None or self._writer.done():
            self._stop_watchdog()

    def _stop_watchdog(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None

    def _check_write(self) -> None:
        """The writer's watchdog: a write in progress for ``write_timeout`` means the
        client is not reading (see :meth:`_send`)."""
        self._watchdog = None
        writer = self._writer
        if writer is None or writer.done():
            return
        loop = asyncio.get_running_loop()
        timeout = self._ctx.config.write_timeout
        began = self._write_began
        if began is None or loop.time() - began < timeout:
            wait = timeout if began is None else began + timeout - loop.time()
            self._watchdog = loop.call_later(wait, self._check_write)
            return
        logger.info("%s: not reading; closing (its inbox keeps what it was sent)", self)
        self._ctx.metrics.limited.labels("slow_reader").inc()
        if self._closing is None:
            self._closing = (CLOSE_POLICY, "not reading")
        writer.cancel()  # its finally closes the transport

    def __str__(self) -> str:
        who = f"{self.identity}:{self.device}" if self.identity else "unauthenticated"
        return f"{self.transport.remote} ({who})"

    # -- called by the relay ----------------------------------------------------------

    def reply(self, frame: Frame) -> None:
        """Queue a reply; never blocks (the reader waits for room before reading more)."""
        if self._gone:
            return
        data = encode(frame)
        if self._writer is None and self.transport.write_now(data):
            return  # nothing queued ahead of it (see the module docstring)
        if self._replies is None:
            self._replies = deque()
        self._replies.append(data)
        self._reply_bytes += len(data)
        self._kick()

    def _has_room(self) -> bool:
        config = self._ctx.config
        queued = 0 if self._replies is None else len(self._replies)
        return queued < config.reply_queue and self._reply_bytes < config.reply_bytes

    @property
    def ready(self) -> bool:
        """Whether the next request may be read now (no wait below would wait)."""
        return self._resume is None and (self._gone or self._has_room())

    async def wait_for_room(self) -> None:
        """Wait until the client has read enough replies to take more requests."""
        if self._gone or self._has_room():
            return
        if self._room is None or self._room.done():  # done: its waiter was cancelled
            self._room = asyncio.get_running_loop().create_future()
        await self._room

    def _make_room(self) -> None:
        if self._room is not None and (self._gone or self._has_room()):
            if not self._room.done():
                self._room.set_result(None)
            self._room = None

    def pause_reading(self, seconds: float) -> None:
        """Take no request from this client for ``seconds`` (it is over a budget)."""
        if self.closing:
            return
        if self._resume is not None:
            self._resume.cancel()
        self._resume = asyncio.get_running_loop().call_later(seconds, self._end_pause)

    def _end_pause(self) -> None:
        self._resume = None
        if self._unpaused is not None:
            if not self._unpaused.done():
                self._unpaused.set_result(None)
            self._unpaused = None

    async def wait_unpaused(self) -> None:
        """Until a pause is over (at once if there is none, or the connection closes)."""
        if self._resume is None:
            return
        if self._unpaused is None or self._unpaused.done():
            self._unpaused = asyncio.get_running_loop().create_future()
        await self._unpaused

    def attach(self, identity: str, device: str, resume_after: int) -> None:
        """Start delivering this device's inbox after ``resume_after``, then live."""
        self.identity, self.device = identity, device
        self.authenticated_at = self._ctx.clock()
        self.cursor = resume_after
        self._attached = True
        self._need_read = True
        self._kick()

    def push(self, deliver: Deliver) -> None:
        """Offer a freshly stored delivery; never blocks."""
        if not self._attached:
            return
        if self._writer is None and self._push_now(deliver):
            return
        config = self._ctx.config
        size = len(deliver.envelope.body)
        if self._deliveries is None:
            self._deliveries = deque()
        if (
            len(self._deliveries) >= config.send_queue
            or self._delivery_bytes + size > config.send_queue_bytes
        ):
            logger.info("%s is behind; switching to catch-up reads from the store", self)
            self._clear_deliveries()
            self._need_read = True
        else:
            self._deliveries.append(deliver)
            self._delivery_bytes += size
        self._kick()

    def _push_now(self, deliver: Deliver) -> bool:
        """Write ``deliver`` at once if the writer would write it next, as it is."""
        offset = deliver.offset
        if (
            offset <= self.cursor
            or (self._ctx.push_in_sequence and offset > self.cursor + 1)
            or deliver.envelope.expires_at <= self._ctx.clock()
            or not self.transport.write_now(encode(deliver))
        ):
            return False  # the writer skips it, reads the store, or drops the rows
        self.cursor = offset
        self._ctx.metrics.messages_out.inc()
        return True

    def _clear_deliveries(self) -> None:
        self._deliveries = None
        self._delivery_bytes = 0

    def wake_read(self) -> None:
        """New rows may be in the store for this device (another node stored them, or
        the bus lost track): read the inbox after ``cursor``."""
        if not self._attached:
            return
        self._need_read = True
        self._kick()

    def close_soon(self, code: int, reason: str) -> None:
        """Stop deliveries, write the replies already queued, then close.

        A client that does not read would keep the writer waiting forever, so after
        ``close_timeout`` the writer is cancelled and the transport closed regardless.
        """
        self._attached = False
        self._clear_deliveries()
        if self._resume is not None:  # a reader held back must see the close
            self._resume.cancel()
            self._end_pause()
        if self._closing is None:
            self._closing = (code, reason)
        self._kick()
        writer = self._writer
        if self._abort is None and writer is not None and not writer.done():
            loop = asyncio.get_running_loop()
            self._abort = loop.call_later(self._ctx.config.close_timeout, writer.cancel)

    async def finish(self, code: int = 1000, reason: str = "") -> None:
        """Close (unless already closing with another code) and wait for the writer."""
        self.close_soon(code, reason)
        if self._writer is not None:
            await asyncio.wait({self._writer})
        if self._abort is not None:
            self._abort.cancel()
        if self._resume is not None:
            self._resume.cancel()
        await self._close_transport()

    # -- the writer task --------------------------------------------------------------

    async def _write_loop(self) -> None:
        idle = False
        try:
            while True:
                await self._flush_replies()
                if self._closing is not None:
                    break
                await self._deliver()
                if not self._replies and self._closing is None:
                    # Nothing left (_deliver returns only then): end; the next thing
                    # queued starts a new writer. No await since the check, so nothing
                    # was queued in between.
                    idle = True
                    return
        except TransportClosed:
            logger.debug("%s: transport closed", self)
        except Exception:
            logger.exception("%s: writer failed; closing the connection", self)
            if self._closing is None:
                self._closing = (1011, "internal error")
        finally:
            if not idle:
                self._attached = False
                self._gone = True
                self._replies = None
                self._reply_bytes = 0
                self._make_room()  # a reader waiting for room must see the close instead
                await self._close_transport()

    async def _flush_replies(self) -> None:
        while self._replies:
            data = self._replies.popleft()
            self._reply_bytes -= len(data)
            await self._send(data)
            self._make_room()
        self._replies = None

    async def _send(self, data: bytes) -> None:
        # A write that takes write_timeout is ended by the watchdog (_check_write).
        self._write_began = asyncio.get_running_loop().time()
        try:
            await self.transport.send(data)
        finally:
            self._write_began = None

    async def _deliver(self) -> None:
        config = self._ctx.config
        batch = config.catchup_batch
        while self._attached:
            if self._replies:
                await self._flush_replies()
            elif self._need_read:
                self._need_read = False
                assert self.identity is not None and self.device is not None
                items = await self._ctx.store.read_inbox(
                    self.identity, self.device, self.cursor, batch, config.catchup_bytes
                )
                if len(items) == batch or (
                    sum(len(i.envelope.body) for i in items) >= config.catchup_bytes
                ):
                    self._need_read = True  # there may be more
                for item in items:
                    if not self._attached:
                        return
                    await self._write(item.offset, item.envelope, None)
            elif self._deliveries:
                deliver = self._deliveries.popleft()
                if not self._deliveries:
                    self._deliveries = None
                self._delivery_bytes -= len(deliver.envelope.body)
                if self._ctx.push_in_sequence and deliver.offset > self.cursor + 1:
                    self._clear_deliveries()
                    self._need_read = True
                    continue
                await self._write(deliver.offset, deliver.envelope, deliver)
            else:
                return

    async def _write(self, offset: int, envelope: Envelope, frame: Deliver | None) -> None:
        if offset <= self.cursor:
            return
        assert self.identity is not None and self.device is not None
        if envelope.expires_at <= self._ctx.clock():
            dropped = await self._ctx.store.drop_rows(self.identity, self.device, [offset])
            self._ctx.metrics.messages_expired.inc(dropped)
            self.cursor = offset
            return
        if frame is None:
            chain = await self._ctx.directory.chain(envelope.sender)
            version = chain.version if chain is not None else 0
            frame = Deliver(offset=offset, envelope=envelope, sender_keys_version=version)
        await self._send(encode(frame))
        self.cursor = offset
        self._ctx.metrics.messages_out.inc()

    async def _close_transport(self) -> None:
        code, reason = self._closing or (1000, "")
        with contextlib.suppress(TransportClosed, OSError):
            await self.transport.close(code, reason)

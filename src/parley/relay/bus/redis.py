"""The bus over Redis, between relay nodes in several processes or on several machines.

What lives in Redis (``P`` is the prefix, ``parley`` by default):

- ``P:events``, a pub/sub channel: every event, in messages of a node's batch of events
  each (what its writer sends in one MULTI), as a msgpack array (node, incarnation,
  [[seq, event], ...]) where an event is ``events.encode``'s bytes. ``seq`` counts this
  bus instance's events from 1 (``incarnation`` is random per instance), so a receiver
  can tell when some went missing in between, and that a node restarted under the same
  id. One message per batch, not per event: every node reads every message, and a
  message costs each of them more than the event in it.
- ``P:presence:NODE``, a hash: identity -> JSON list of the devices connected to NODE,
  and ``@seq`` -> ``INCARNATION:SEQ`` of the last event NODE published with it. Written
  in the same MULTI as the PUBLISH of each batch of events, so a reader of the hashes
  gets an exact cut of the event stream; it expires ``presence_ttl`` after the last
  heartbeat.
- ``P:nodes``, a sorted set: NODE -> the time (Redis's clock, ms) its presence expires.
  Each node's heartbeat (every ``presence_ttl / 3``) moves its own deadline on, removes
  the nodes whose deadline passed, and drops those from the node's view, telling the
  relay that their devices are gone (after a Redis restart, only once every node had a
  ttl to beat again). Every node should run with the same ``presence_ttl``.

``on_event`` gets a ``PresenceChanged`` only when it changes what ``present`` says.
Needs Redis 5 or newer (scripts that read ``TIME`` before writing).

Three background tasks: the subscriber (reconnects with a bounded backoff forever and
calls ``on_gap`` each time it is back), the writer (one, so a node's events keep their
order; it pipelines what is queued), the heartbeat. None of them raises: Redis going
away is logged once per outage and waited out.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import secrets
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any, Final, TypeAlias
from urllib.parse import urlsplit, urlunsplit

import msgspec
from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.typing import EncodableT, FieldT

from parley.errors import BusError
from parley.relay.bus.base import EventHandler, GapHandler
from parley.relay.bus.events import BusEvent, PresenceChanged, decode, encode
from parley.relay.bus.presence_view import Devices, PresenceView

logger = logging.getLogger(__name__)

_BACKOFF_FIRST: Final = 0.05
_BACKOFF_MAX: Final = 2.0
_COMMAND_TIMEOUT: Final = 2.0  # to connect, and for a reply (the subscriber's own reads aside)
_CLOSE_TIMEOUT: Final = 2.0  # how long close() tries to flush when Redis is away
_BATCH: Final = 256  # events per MULTI
_SEQ_FIELD: Final = "@seq"  # never an identity: those start with a letter or digit
# Redis is away (OSError covers asyncio's timeouts); any other error is a bug or a
# refusal (a ResponseError), which waiting out would not cure.
_FAILURES: Final = (RedisConnectionError, RedisTimeoutError, OSError)

# Redis's clock, so nodes on machines whose clocks disagree still agree on expiry.
_NOW_MS: Final = (
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
)

# KEYS: nodes, this node's presence; ARGV: node, ttl (ms).
# -> {1 if this node was not in the set (first beat, or given up for dead),
#     1 if its presence hash still exists, the live nodes}
_HEARTBEAT: Final = (
    _NOW_MS
    + """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local added = redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
local kept = redis.call('PEXPIRE', KEYS[2], ARGV[2])
return {added, kept, redis.call('ZRANGE', KEYS[1], 0, -1)}
"""
)

# KEYS: nodes; ARGV: the presence keys' prefix. -> {node, its hash as a flat list, ...}
# for every live node: one atomic read, so the hashes are one cut of the event stream.
_SNAPSHOT: Final = (
    _NOW_MS
    + """
local out = {}
for _, node in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now, '+inf')) do
  out[#out + 1] = node
  out[#out + 1] = redis.call('HGETALL', ARGV[1] .. node)
end
return out
"""
)


# node -> (its last event's (incarnation, seq) if Redis has its hash, identity -> devices)
Snapshot: TypeAlias = dict[str, tuple[tuple[int, int] | None, dict[str, Devices]]]


class _Envelope(msgspec.Struct, array_like=True, frozen=True):
    """One message on the channel: a batch of one node's events, each with its number."""

    node: str
    incarnation: int
    events: list[tuple[int, msgspec.Raw]]


_envelope_decoder: Final = msgspec.msgpack.Decoder(_Envelope)
_envelope_encoder: Final = msgspec.msgpack.Encoder()
_devices_decoder: Final = msgspec.json.Decoder(tuple[str, ...])


@dataclass(frozen=True, slots=True)
class _Outgoing:
    """One queued event (``payload``: its encoding), or with no payload, a request to
    write this node's presence again."""

    seq: int = 0
    payload: bytes | None = None
    presence: PresenceChanged | None = None


class _Order(enum.Enum):
    NEXT = "next"  # the one after the last we heard (or the first we hear)
    GAP = "gap"  # some were lost before it
    SEEN = "seen"  # not newer than what we already have (a snapshot or a resent batch)


class _Backoff:
    """The wait between attempts: 0.05 s doubling to 2 s; ``poke`` cuts it short."""

    def __init__(self) -> None:
        self._delay = _BACKOFF_FIRST
        self._poked = asyncio.Event()

    def reset(self) -> None:
        self._delay = _BACKOFF_FIRST

    def poke(self) -> None:
        self._poked.set()

    async def wait(self) -> None:
        delay, self._delay = self._delay, min(self._delay * 2, _BACKOFF_MAX)
        self._poked.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay):
                await self._poked.wait()


class RedisBus:
    """A :class:`~parley.relay.bus.base.Bus` over the Redis server at ``url``.

    ``node``: this node's id (default: a random one); ``prefix``: of every key and
    channel, so several clusters (or tests) share a server; ``presence_ttl``: how long
    after its last heartbeat a node that stopped without ``close()`` counts as gone;
    ``queue_limit``: events kept for Redis while it is unreachable, beyond which they
    are dropped (the receivers are told of a gap).
    """

    def __init__(
        self,
        url: str,
        *,
        node: str | None = None,
        prefix: str = "parley",
        presence_ttl: float = 10.0,
        queue_limit: int = 10_000,
    ) -> None:
        if presence_ttl <= 0:
            raise ValueError(f"presence_ttl must be positive, not {presence_ttl}")
        self._url = url
        self._node = node or secrets.token_hex(4)
        self._channel = f"{prefix}:events"
        self._nodes_key = f"{prefix}:nodes"
        self._presence_prefix = f"{prefix}:presence:"
        self._presence_key = self._presence_prefix + self._node
        self._ttl = presence_ttl
        self._ttl_ms = max(1, round(presence_ttl * 1000))
        self._queue_limit = queue_limit
        self._incarnation = secrets.randbits(62)
        self._seq = 0  # of the last event published (queued)
        self._sent_seq = 0  # of the last event Redis took
        self._queue: asyncio.Queue[_Outgoing | None] = asyncio.Queue()  # None: stop
        self._mine: dict[str, Devices] = {}  # this node's presence, as last published
        self._dirty = False  # Redis's copy of _mine may be wrong: write it whole
        self._dropped = 0
        self._view = PresenceView()
        self._heard: dict[str, tuple[int, int]] = {}  # node -> (incarnation, seq)
        # Not connected yet: redis-py connects on first use.
        self._redis = Redis.from_url(
            url,
            # No retries inside redis-py: a lost connection must reach us, so that we
            # know events may be lost and say so (on_gap), and log it once.
            retry=Retry(NoBackoff(), 0),
            socket_connect_timeout=_COMMAND_TIMEOUT,
            # No socket_timeout: redis-py applies it to writes with asyncio.wait_for,
            # which on Python 3.11 can swallow a cancellation (close() would hang).
            # Each call here is bounded by asyncio.timeout instead (_replied).
        )
        self._heartbeat_script = self._redis.register_script(_HEARTBEAT)
        self._snapshot_script = self._redis.register_script(_SNAPSHOT)
        self._on_event: EventHandler | None = None
        self._on_gap: GapHandler | None = None
        self._writer: asyncio.Task[None] | None = None
        self._watchers: list[asyncio.Task[None]] = []  # subscriber and heartbeat
        self._writer_backoff = _Backoff()
        self._beat_lock = asyncio.Lock()
        self._beaten = False
        self._grace_until = 0.0  # loop time before which no node is given up
        self._connected = False
        self._started = False
        self._closed = False

    @property
    def node(self) -> str:
        return self._node

    @property
    def connected(self) -> bool:
        """Whether this node hears the others now (for ``/health``)."""
        return self._connected

    # -- the Bus protocol ---------------------------------------------------------------

    async def start(self, on_event: EventHandler, on_gap: GapHandler) -> None:
        """Connect, subscribe and load the other nodes' presence; raises
        :class:`BusError` if Redis cannot be reached now (later outages are waited out)."""
        if self._started or self._closed:
            raise RuntimeError("a RedisBus starts once")
        self._on_event, self._on_gap = on_event, on_gap
        pubsub: PubSub | None = None
        try:
            await self._clear_previous_run()
            await self._beat()
            pubsub = await self._subscribe()
            self._load(await self._snapshot(), announce=False)
        except (*_FAILURES, RedisError) as exc:
            await _close_quietly(pubsub)
            await self._redis.aclose()
            self._closed = True
            raise BusError(f"cannot use Redis at {_redacted(self._url)}: {exc}") from exc
        self._started = self._connected = True
        self._writer = asyncio.create_task(self._write_forever(), name=f"bus-write:{self._node}")
        self._watchers = [
            asyncio.create_task(self._listen_forever(pubsub), name=f"bus-listen:{self._node}"),
            asyncio.create_task(self._heartbeat_forever(), name=f"bus-heartbeat:{self._node}"),
        ]

    async def close(self) -> None:
        """Stop hearing, say this node's devices are gone, publish what is queued (for
        at most 2 s if Redis is away), take this node's keys away, disconnect."""
        if self._closed:
            return
        self._closed = True
        await _stop(*self._watchers)
        self._connected = False
        self._view = PresenceView()
        if self._writer is not None:
            for identity in list(self._mine):
                self._enqueue(PresenceChanged(identity=identity, node=self._node, devices=()))
            self._queue.put_nowait(None)
            _, late = await asyncio.wait({self._writer}, timeout=_CLOSE_TIMEOUT)
            if late:
                logger.warning(
                    "bus: Redis at %s unreachable at close; %d events not published",
                    _redacted(self._url),
                    self._queue.qsize(),
                )
            await _stop(self._writer)
            try:
                async with _replied(), self._redis.pipeline() as pipe:
                    pipe.delete(self._presence_key)
                    pipe.zrem(self._nodes_key, self._node)
                    await pipe.execute()
            except _FAILURES as exc:
                logger.warning("bus: could not take node %s out of Redis: %s", self._node, exc)
        await self._redis.aclose()

    def publish(self, event: BusEvent) -> None:
        """Queue ``event`` for the other nodes (dropped once ``queue_limit`` are waiting:
        Redis is away). This node's own ``PresenceChanged`` is recorded in Redis too."""
        if self._closed:
            logger.debug("bus: closed, not publishing %r", event)
            return
        self._enqueue(event)

    def present(self, identity: str) -> frozenset[str]:
        return self._view.present(identity)

    # -- publishing -----------------------------------------------------------------------

    def _enqueue(self, event: BusEvent) -> None:
        presence = None
        if isinstance(event, PresenceChanged) and event.node == self._node:
            presence = event
            if event.devices:
                self._mine[event.identity] = event.devices
            else:
                self._mine.pop(event.identity, None)
        # The number is taken even when the event is dropped: the gap shows.
        self._seq += 1
        if self._queue.qsize() >= self._queue_limit:
            if not self._dropped:
                logger.warning(
                    "bus: %d events waiting for Redis at %s; dropping events until it is back",
                    self._queue_limit,
                    _redacted(self._url),
                )
            self._dropped += 1
            self._dirty = self._dirty or presence is not None
            return
        self._queue.put_nowait(_Outgoing(self._seq, encode(event), presence))

    def _rewrite_presence(self) -> None:
        """Have the writer write this node's presence whole (Redis lost or dropped it)."""
        self._dirty = True
        self._queue.put_nowait(_Outgoing())

    def _announce(self) -> None:
        """Write this node's presence whole and publish it again: other nodes may have
        forgotten it (Redis restarted empty, or this node was late and given up)."""
        self._rewrite_presence()
        for identity, devices in list(self._mine.items()):
            self._enqueue(PresenceChanged(identity=identity, node=self._node, devices=devices))

    async def _write_forever(self) -> None:
        backoff = self._writer_backoff
        batch: list[_Outgoing] = []
        stopping = False
        while not (stopping and not batch):
            if not batch:
                stopping = await self._take(batch)
                if not batch:
                    continue
            try:
                await self._send(batch)
            except _FAILURES as exc:
                # Kept and tried again: a short blip loses nothing. The subscriber logs
                # the outage; this side only says what it had to drop.
                logger.debug("bus: publishing failed (%s); retrying", exc)
                await backoff.wait()
                continue
            except Exception:
                # Redis refused (a ResponseError): sending again would not help.
                logger.exception("bus: Redis refused %d events; dropping them", len(batch))
                self._dirty = True
            batch = []
            backoff.reset()
            if self._dropped:
                logger.warning("bus: dropped %d events while Redis was away", self._dropped)
                self._dropped = 0

    async def _take(self, batch: list[_Outgoing]) -> bool:
        """Fill ``batch`` with what is queued (waiting for one); whether to stop after."""
        item = await self._queue.get()
        while item is not None:
            batch.append(item)
            if len(batch) >= _BATCH or self._queue.empty():
                return False
            item = self._queue.get_nowait()
        return True

    async def _send(self, batch: list[_Outgoing]) -> None:
        rewrite, self._dirty = self._dirty, False
        try:
            async with _replied(), self._redis.pipeline(transaction=True) as pipe:
                if rewrite:
                    pipe.delete(self._presence_key)
                    if self._mine:
                        pipe.hset(self._presence_key, mapping=_encode_presence(self._mine))
                events = []
                for item in batch:
                    if item.presence is not None:
                        _record(pipe, self._presence_key, item.presence)
                    if item.payload is not None:
                        events.append((item.seq, msgspec.Raw(item.payload)))
                if events:
                    envelope = _Envelope(self._node, self._incarnation, events)
                    pipe.publish(self._channel, _envelope_encoder.encode(envelope))
                # Only what was published counts: a dropped event's number stays a gap.
                seq = max([self._sent_seq, *(number for number, _ in events)])
                pipe.hset(self._presence_key, _SEQ_FIELD, f"{self._incarnation}:{seq}")
                pipe.pexpire(self._presence_key, self._ttl_ms)
                await pipe.execute()
        except BaseException:
            self._dirty = self._dirty or rewrite
            raise
        self._sent_seq = seq

    # -- heartbeat and presence ---------------------------------------------------------

    async def _heartbeat_forever(self) -> None:
        while True:
            await asyncio.sleep(self._ttl / 3)
            try:
                await self._beat()
            except _FAILURES as exc:
                logger.debug("bus: heartbeat failed: %s", exc)  # the subscriber logs outages
            except Exception:
                logger.exception("bus: heartbeat failed")

    async def _beat(self) -> None:
        async with self._beat_lock:
            async with _replied():
                added, kept, live = await self._heartbeat_script(
                    keys=[self._nodes_key, self._presence_key], args=[self._node, self._ttl_ms]
                )
            now = asyncio.get_running_loop().time()
            if self._beaten and (added or not kept):
                # Redis forgot this node (it restarted, or this node was so late that
                # others gave it up): their views must hear our presence again.
                logger.info("bus: Redis had lost node %s; announcing its presence", self._node)
                self._announce()
                if added:
                    # Most likely Redis restarted and forgot every node: give them a
                    # ttl to beat again before taking their absence for death.
                    self._grace_until = now + self._ttl
            self._beaten = True
            if now < self._grace_until:
                return
            alive = {bytes(node).decode() for node in live}
            for node in self._view.nodes() - alive:
                logger.info("bus: node %s stopped without closing; its devices are gone", node)
                self._heard.pop(node, None)
                for event in self._view.drop(node):
                    self._deliver(event)

    async def _clear_previous_run(self) -> None:
        """A node restarted under this id may have left presence behind (it was killed):
        tell the others those devices are gone, and start this node's hash afresh."""
        async with _replied(), self._redis.pipeline(transaction=True) as pipe:
            pipe.hgetall(self._presence_key)
            pipe.delete(self._presence_key)
            pipe.hset(self._presence_key, _SEQ_FIELD, f"{self._incarnation}:0")
            pipe.pexpire(self._presence_key, self._ttl_ms)
            previous: dict[bytes, bytes] = (await pipe.execute())[0]
        for field in previous:
            identity = field.decode(errors="replace")
            if identity != _SEQ_FIELD:
                self._enqueue(PresenceChanged(identity=identity, node=self._node, devices=()))

    async def _snapshot(self) -> Snapshot:
        """Every other live node: (incarnation, seq) of its last event, its presence."""
        async with _replied():
            flat = await self._snapshot_script(keys=[self._nodes_key], args=[self._presence_prefix])
        snapshot: Snapshot = {}
        for node_raw, fields in zip(flat[::2], flat[1::2], strict=True):
            node = bytes(node_raw).decode()
            if node != self._node:
                snapshot[node] = _decode_presence(node, fields)
        return snapshot

    def _load(self, snapshot: Snapshot, *, announce: bool) -> None:
        """Take in the snapshot's nodes, and from now on count their events from its
        cut. A live node it has no hash of (Redis restarted, and the node has not
        written it again yet) keeps what we heard: it will say it again, and the
        heartbeat tells whether it is alive. So does a node not in the snapshot."""
        self._heard = {}
        for node, (cut, identities) in snapshot.items():
            if cut is None:
                continue
            self._heard[node] = cut
            for event in self._view.set_node(node, identities):
                if announce:
                    self._deliver(event)

    async def _resync(self) -> None:
        """After events may have been lost: the presence from Redis, then ``on_gap``."""
        self._load(await self._snapshot(), announce=True)
        if self._on_gap is not None:
            try:
                self._on_gap()
            except Exception:
                logger.exception("bus: the gap handler failed")

    # -- hearing ------------------------------------------------------------------------

    async def _listen_forever(self, pubsub: PubSub | None) -> None:
        backoff = _Backoff()
        loop = asyncio.get_running_loop()
        down_since: float | None = None
        try:
            while True:
                try:
                    if pubsub is None:
                        pubsub = await self._subscribe()
                        await self._beat()
                        await self._resync()
                        if down_since is not None:
                            logger.warning(
                                "bus: back on Redis at %s after %.1f s",
                                _redacted(self._url),
                                loop.time() - down_since,
                            )
                        down_since = None
                        self._connected = True
                        backoff.reset()
                        self._writer_backoff.poke()
                    await self._listen(pubsub)
                except Exception as exc:
                    self._connected = False
                    if down_since is None:
                        down_since = loop.time()
                        if isinstance(exc, _FAILURES):
                            logger.warning(
                                "bus: lost Redis at %s (%s); reconnecting until it is back",
                                _redacted(self._url),
                                str(exc) or type(exc).__name__,
                            )
                        else:
                            logger.exception("bus: subscriber failed; reconnecting")
                    await _close_quietly(pubsub)
                    pubsub = None
                    await backoff.wait()
        finally:
            await _close_quietly(pubsub)

    async def _subscribe(self) -> PubSub:
        pubsub = self._redis.pubsub()
        try:
            # Once Redis confirms, every event published reaches us: a snapshot read
            # after this point misses nothing.
            async with _replied():
                await pubsub.subscribe(self._channel)
                while True:
                    message = await pubsub.get_message(timeout=_COMMAND_TIMEOUT)
                    if message is not None and message["type"] == "subscribe":
                        return pubsub
        except BaseException:
            await _close_quietly(pubsub)
            raise

    async def _listen(self, pubsub: PubSub) -> None:
        """Hand events on until the connection fails. A PING every ttl/3 shows a
        connection that died without closing (a network cut), within the ttl."""
        loop = asyncio.get_running_loop()
        interval = self._ttl / 3
        heard = pinged = loop.time()
        while True:
            message = await pubsub.get_message(timeout=interval)
            now = loop.time()
            if message is not None:
                heard = now
                if message["type"] == "message":
                    for _ in self._receive(message["data"]):
                        await self._resync()
            if now - heard > max(self._ttl, 1.0):
                raise RedisConnectionError(f"no reply from Redis for {now - heard:.1f} s")
            if now - pinged >= interval:
                async with _replied():
                    await pubsub.ping()
                pinged = now

    def _receive(self, data: bytes) -> Iterator[None]:
        """Hand one message's events on, in order; yields after each one that came after
        events were lost, for the caller to resync before the next."""
        try:
            envelope = _envelope_decoder.decode(data)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            logger.warning("bus: ignoring a message that is no Parley event: %s", exc)
            return
        if envelope.node == self._node:
            return
        for seq, raw in envelope.events:
            try:
                event = decode(bytes(raw))
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                # Skipped: its number is missing, so the next one shows a gap.
                logger.warning("bus: ignoring an event that is no Parley event: %s", exc)
                continue
            order = self._order(envelope.node, envelope.incarnation, seq)
            # A presence already in the snapshot (or heard before), or nothing new: not news.
            if not isinstance(event, PresenceChanged) or (
                order is not _Order.SEEN and self._view.apply(event)
            ):
                self._deliver(event)
            if order is _Order.GAP:
                yield

    def _order(self, node: str, incarnation: int, seq: int) -> _Order:
        """Where event ``seq`` of ``node`` stands in that node's stream (and remember it)."""
        known = self._heard.get(node)
        if known is None:
            # First heard of since we started or resubscribed: nothing to compare.
            self._heard[node] = (incarnation, seq)
            return _Order.NEXT
        heard_incarnation, heard_seq = known
        if heard_incarnation != incarnation:
            # The node restarted under the same id: what it had before is gone, and
            # its new stream starts at 1.
            for gone in self._view.drop(node):
                self._deliver(gone)
            heard_seq = 0
        elif seq <= heard_seq:
            return _Order.SEEN
        self._heard[node] = (incarnation, seq)
        return _Order.NEXT if seq == heard_seq + 1 else _Order.GAP

    def _deliver(self, event: BusEvent) -> None:
        if self._on_event is None:
            return
        try:
            self._on_event(event)
        except Exception:
            logger.exception("bus: the event handler failed on %r", event)


def _record(pipe: Any, key: str, event: PresenceChanged) -> None:
    if event.devices:
        pipe.hset(key, event.identity, msgspec.json.encode(event.devices))
    else:
        pipe.hdel(key, event.identity)


def _encode_presence(presence: dict[str, Devices]) -> dict[FieldT, EncodableT]:
    return {identity: msgspec.json.encode(devices) for identity, devices in presence.items()}


def _decode_presence(
    node: str, fields: list[bytes]
) -> tuple[tuple[int, int] | None, dict[str, Devices]]:
    """A presence hash from HGETALL: its ``@seq`` cut, and identity -> devices."""
    cut: tuple[int, int] | None = None
    presence: dict[str, Devices] = {}
    for name_raw, value in zip(fields[::2], fields[1::2], strict=True):
        name = bytes(name_raw).decode(errors="replace")
        try:
            if name == _SEQ_FIELD:
                incarnation, _, seq = bytes(value).decode().partition(":")
                cut = (int(incarnation), int(seq))
            else:
                devices = _devices_decoder.decode(value)
                if devices:
                    presence[name] = devices
        except (ValueError, msgspec.DecodeError, msgspec.ValidationError):
            logger.warning("bus: ignoring %s=%r in node %s's presence", name, value, node)
    return cut, presence


def _replied() -> asyncio.Timeout:
    """The bound on one call to Redis: past it, Redis counts as away."""
    return asyncio.timeout(_COMMAND_TIMEOUT)


async def _stop(*tasks: asyncio.Task[None]) -> None:
    """Cancel ``tasks`` and wait until they are done, cancelling again should one
    swallow it (a library's race with its own timeout)."""
    while pending := [task for task in tasks if not task.done()]:
        for task in pending:
            task.cancel()
        await asyncio.wait(pending, timeout=0.1)
    await asyncio.gather(*tasks, return_exceptions=True)


async def _close_quietly(pubsub: PubSub | None) -> None:
    if pubsub is not None:
        with contextlib.suppress(Exception):
            # Untyped before redis-py 8.2, typed since: a typed name serves both.
            aclose: Callable[[], Awaitable[None]] = pubsub.aclose
            await aclose()


def _redacted(url: str) -> str:
    """``url`` without its password, for logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.replace(parts.password, "***", 1)))

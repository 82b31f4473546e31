"""The calling proxy's core, sans I/O: the app in the middle of a call.

A proxied call is a :class:`Bridge`: the *inbound* leg (someone called the app) and one or
more *outbound* legs (the app calls on, with the same ``cid`` and ``call_id``). Each leg is
a :class:`~parley.protocol.call.Call` under the same transition table as a phone's calls:
the app is the callee of the inbound leg and the caller of the outbound ones.

- **Two legs** (the public docs' proxy): :meth:`Proxy.bind` a ``cid`` to an operator and a
  customer. The operator's start goes to the customer with ``{"operator_name": ...}``; the
  customer's accept goes back; stop and busy go to whichever side did not send them.
- **Hunt group**: :meth:`Proxy.bind_pool` a ``cid`` to a customer and its operators (or
  give the proxy ``operators``: then a start from anyone else, for a ``cid`` that is not
  bound, hunts them). The customer's start rings every available operator: not away
  (``PeerGone``) and not on another live bridge. The first accept wins; the others get
  ``answered_elsewhere``; if nobody answers within the lifetime, the customer gets
  ``timeout``. Nobody available: busy.

Both legs always end together: whatever ends one leg (stop, busy, timeout, gone,
failure) ends the other in the same :meth:`Proxy.handle` call, carrying the reason across.
In a hunt group an operator who turns the call down only ends their own leg; the inbound
leg ends with the last outbound leg, or with the answered one. A ``detail`` (a failed
leg's refusal by the relay, a peer's ``data["detail"]``) travels across with the reason.

A start for a ``call_id`` whose bridge has ended (a caller re-sending an old start, or
reusing a call_id) is not dropped: the caller gets a stop with reason ``failed`` and a
``detail`` saying the call is over, so its phone ends the attempt at once, with that
detail in its record, instead of ringing out to a timeout. Nothing else is recorded:
it never became a leg. A start for a bridge still live is a repeat, and is ignored.

Durable: after every input, :meth:`Proxy.take_changes` says what changed (the bridges
and tombstones touched, presence) as :mod:`~parley.protocol.proxy_state` structs; a new
core given them (:meth:`Proxy.restore`) goes on exactly as the old one would have.
Draining (:meth:`Proxy.drain`): starts are answered busy, live bridges go on.
"""

from __future__ import annotations

import heapq
import logging
import math
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import msgspec

from parley.errors import IllegalTransition, UnknownCall
from parley.ids import DeviceId, IdentityId
from parley.protocol import call_wire as wire
from parley.protocol.call import (
    Answered,
    Call,
    CallEvent,
    CallState,
    Dialed,
    EndingEvent,
    EndReason,
    Expired,
    Failed,
    Offered,
    OtherLegEnded,
    PeerEnded,
    PickedUp,
    Refused,
    Role,
    Superseded,
    Vanished,
    event_detail,
)
from parley.protocol.call_io import (
    Connected,
    Ended,
    Fail,
    Output,
    PeerBack,
    PeerGone,
    ProxyInput,
    Received,
    Tick,
)
from parley.protocol.call_memory import CallMemory
from parley.protocol.call_presence import Presence
from parley.protocol.messages import MessageType
from parley.protocol.proxy_state import Away, BridgeState, Changes, Kept, LegState, Resume

logger = logging.getLogger(__name__)

_ENDINGS = (MessageType.VOICE_STOP, MessageType.VOICE_BUSY)


class Binding(msgspec.Struct, frozen=True, kw_only=True):
    """The app's record of a two-leg call: whose ``cid`` it is."""

    cid: str
    operator: IdentityId
    operator_name: str
    customer: IdentityId


class Pool(msgspec.Struct, frozen=True, kw_only=True):
    """The app's record of a hunt group for one ``cid``: the customer's start rings
    every available operator, in this order."""

    cid: str
    customer: IdentityId
    operators: tuple[IdentityId, ...]


class ProxyConfig(msgspec.Struct, frozen=True, kw_only=True):
    """The proxy's call rules: the ring lifetime of the legs it places, the longest a caller may
    make it ring, how long a party may be away before its call is ``gone``, and how many ended
    call ids it remembers."""

    ring_lifetime: float = 60.0
    max_ring_lifetime: float = 600.0
    grace: float = 30.0
    memory: int = 1024


class Bridge:
    """One proxied call: the leg the start came in on and the legs the app placed."""

    def __init__(self, inbound: Call, rank: int = 0) -> None:
        self.call_id = inbound.call_id
        self.cid = inbound.cid
        self.inbound = inbound
        self.outbound: dict[IdentityId, Call] = {}
        self.winner: IdentityId | None = None
        self.rank = rank  # see proxy_state: opened, or remembered once ended

    def state(self) -> BridgeState:
        return BridgeState(
            inbound=LegState.of(self.inbound),
            outbound=tuple(LegState.of(leg) for leg in self.outbound.values()),
            winner=self.winner,
        )

    @classmethod
    def of(cls, state: BridgeState, rank: int) -> Bridge:
        bridge = cls(state.inbound.call(), rank)
        bridge.outbound = {leg.peer: leg.call() for leg in state.outbound}
        bridge.winner = state.winner
        return bridge

    def __repr__(self) -> str:
        return f"<Bridge {self.call_id} in={self.inbound!r} out={list(self.outbound.values())}>"

    def legs(self) -> Iterator[Call]:
        yield self.inbound
        yield from self.outbound.values()

    def leg_of(self, identity: IdentityId) -> Call | None:
        if identity == self.inbound.peer:
            return self.inbound
        return self.outbound.get(identity)

    @property
    def live(self) -> bool:
        return any(leg.live for leg in self.legs())

    def deadline(self) -> float | None:
        """The earliest deadline of its legs, if any has one."""
        return min((d for leg in self.legs() if (d := leg.deadline()) is not None), default=None)


class Proxy:
    def __init__(
        self,
        identity: IdentityId,
        device: DeviceId,
        *,
        operators: Iterable[IdentityId] = (),
        config: ProxyConfig | None = None,
    ) -> None:
        self.identity = identity
        self.device = device
        self.operators = tuple(operators)  # the hunt group; empty: no hunting
        self.config = config or ProxyConfig()
        self._bindings: dict[str, Binding] = {}
        self._pools: dict[str, Pool] = {}
        self._bridges: dict[str, Bridge] = {}
        self._memory: CallMemory[Bridge] = CallMemory(self.config.memory)
        self._presence = Presence(self.config.grace)
        # For take_changes: presence as Presence keeps it, and what was touched since.
        self._away: dict[tuple[IdentityId, DeviceId], float] = {}
        self._away_changed = False
        self._touched: dict[str, int | None] = {}  # call_id -> a tombstone's rank
        self._rank = 0
        self.draining = False
        # next_deadline() and ticks without a walk over every call: each live bridge's
        # earliest deadline, in a heap whose outdated entries are dropped when they come
        # to the top. A message or a Fail changes only the bridge of its call_id, a tick
        # only the bridges it finds due, presence only its party's (_watch); a resume
        # may change any of them.
        self._deadlines: dict[str, float] = {}
        self._deadline_heap: list[tuple[float, str]] = []
        self._deadlines_stale: set[str] | None = None  # None: all of them
        # Each party's live legs, by call_id, kept by _fire: an operator with one is not
        # hunted, and a party's presence touches its calls, each without a walk over
        # every call.
        self._live_legs: dict[IdentityId, Counter[str]] = {}

    def bind(self, binding: Binding) -> None:
        """Forward ``binding.cid`` from its operator to its customer (replaces any earlier
        binding or pool of that ``cid``; calls already up keep their legs)."""
        self._pools.pop(binding.cid, None)
        self._bindings[binding.cid] = binding

    def bind_pool(self, pool: Pool) -> None:
        """Hunt ``pool.operators`` for the customer's starts on ``pool.cid`` (replaces any
        earlier binding or pool of that ``cid``)."""
        self._bindings.pop(pool.cid, None)
        self._pools[pool.cid] = pool

    @property
    def bridges(self) -> Mapping[str, Bridge]:
        """Live bridges by call_id (read them; change them only through ``handle``)."""
        return self._bridges

    def finished(self, call_id: str) -> Bridge | None:
        """An ended bridge (its legs hold the records), while it is remembered."""
        return self._memory.get(call_id)

    def drain(self) -> None:
        """Take no new calls (starts get busy); the live bridges go on to their end."""
        self.draining = True

    def take_changes(self) -> Changes:
        """What changed since the last call (or since :meth:`restore`)."""
        kept = []
        for call_id, tomb_rank in self._touched.items():
            bridge = self._bridges.get(call_id)
            if bridge is not None:
                kept.append(
                    Kept(call_id=call_id, rank=bridge.rank, live=True, bridge=bridge.state())
                )
                continue
            if call_id not in self._memory:
                continue  # forgotten already
            finished = self._memory.get(call_id)
            if finished is not None:
                kept.append(
                    Kept(call_id=call_id, rank=finished.rank, live=False, bridge=finished.state())
                )
            elif tomb_rank is not None:
                kept.append(Kept(call_id=call_id, rank=tomb_rank, live=False, bridge=None))
        self._touched.clear()
        away = None
        if self._away_changed:
            away = tuple(
                Away(identity=who, device=device, since=since)
                for (who, device), since in self._away.items()
            )
            self._away_changed = False
        return Changes(kept=tuple(sorted(kept, key=lambda k: k.rank)), away=away)

    def restore(self, kept: Iterable[Kept], away: Iterable[Away] = ()) -> None:
        """Take back what :meth:`take_changes` gave (any order) before the first input."""
        self._deadlines_stale = None
        for entry in sorted(kept, key=lambda k: k.rank):
            self._rank = max(self._rank, entry.rank)
            bridge = None if entry.bridge is None else Bridge.of(entry.bridge, entry.rank)
            if entry.live and bridge is not None:
                self._bridges[entry.call_id] = bridge
            else:
                self._memory.remember(entry.call_id, bridge)
        for gone in away:
            self._away[(gone.identity, gone.device)] = gone.since
            self._presence.gone(gone.identity, gone.device, gone.since)
        self._live_legs = {}
        for bridge in self._bridges.values():
            for leg in bridge.legs():
                if leg.live:
                    self._count_leg(leg, +1)

    def resumed(self) -> list[Output]:
        """The legs that are up, re-announced (:class:`Resume`): their peers are watched
        again, and a device that left while the proxy was down is noticed."""
        return [
            _connected(leg)
            for bridge in self._bridges.values()
            for leg in bridge.legs()
            if leg.state is CallState.CONNECTED
        ]

    def next_deadline(self) -> float | None:
        deadlines, heap, stale = self._deadlines, self._deadline_heap, self._deadlines_stale
        if stale is None or len(heap) > 2 * len(deadlines) + 64:  # or mostly outdated
            fresh = ((b.deadline(), call_id) for call_id, b in self._bridges.items())
            self._deadlines = deadlines = {call_id: d for d, call_id in fresh if d is not None}
            self._deadline_heap = heap = [(d, call_id) for call_id, d in deadlines.items()]
            heapq.heapify(heap)
        else:
            for call_id in stale:
                bridge = self._bridges.get(call_id)
                deadline = None if bridge is None else bridge.deadline()
                if deadline is None:
                    deadlines.pop(call_id, None)
                elif deadlines.get(call_id) != deadline:
                    deadlines[call_id] = deadline
                    heapq.heappush(heap, (deadline, call_id))
        self._deadlines_stale = set()
        while heap and deadlines.get(heap[0][1]) != heap[0][0]:
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def handle(self, event: ProxyInput | Resume) -> list[Output]:
        if self._deadlines_stale is not None:
            if isinstance(event, Received | Fail):
                self._deadlines_stale.add(event.call_id)
            elif isinstance(event, Resume):  # ticks and presence mark what they change
                self._deadlines_stale = None
        out: list[Output] = []
        match event:
            case Received():
                self._receive(event, out)
            case Tick():
                self._tick(event.now, out)
            case PeerGone():
                self._presence.gone(event.identity, event.device, event.now)
                self._away.setdefault((event.identity, event.device), event.now)
                self._away_changed = True
                self._watch(event.identity)
            case PeerBack():
                self._presence.back(event.identity, event.device)
                self._away_changed |= (
                    self._away.pop((event.identity, event.device), None) is not None
                )
                self._watch(event.identity)
            case Fail():
                self._fail(event, out)
            case Resume():
                out.extend(self.resumed())
        return out

    def _remember(self, call_id: str) -> None:
        """A call_id only heard of: a tombstone, unless it is known already."""
        if call_id in self._memory:
            return
        self._rank += 1
        self._memory.remember(call_id)
        self._touched[call_id] = self._rank

    # -- messages ---------------------------------------------------------------------

    def _receive(self, msg: Received, out: list[Output]) -> None:
        if msg.issuer == self.identity:
            return  # copies of what we sent, from another device of the app
        if msg.kind is MessageType.VOICE_START:
            self._on_start(msg, out)
        elif msg.kind is MessageType.VOICE_ACCEPT:
            self._on_accept(msg, out)
        elif msg.kind in _ENDINGS:
            self._on_end(msg, out)

    def _route(self, msg: Received) -> tuple[list[IdentityId], dict[str, Any]] | None:
        """Whom a start goes on to, and the data it carries; None if it is not ours."""
        binding = self._bindings.get(msg.cid)
        if binding is not None:
            if msg.issuer != binding.operator:
                return None
            return [binding.customer], {wire.OPERATOR_NAME: binding.operator_name}
        pool = self._pools.get(msg.cid)
        if pool is not None:
            if msg.issuer != pool.customer:
                return None
            return [op for op in pool.operators if self._available(op)], {}
        if not self.operators or msg.issuer in self.operators:
            return None
        return [op for op in self.operators if self._available(op)], {}

    def _available(self, operator: IdentityId) -> bool:
        return not self._presence.is_away(operator) and operator not in self._live_legs

    def _on_start(self, msg: Received, out: list[Output]) -> None:
        if msg.call_id in self._bridges:
            return
        if msg.call_id in self._memory:
            finished = self._memory.get(msg.call_id)
            if finished is not None:
                self._turn_away(msg, finished, out)
            return
        route = self._route(msg)
        if route is not None and self.draining:
            route = ([], route[1])
        if route is None:
            logger.info(
                "start %s from %s for cid %s: no call to proxy", msg.call_id, msg.issuer, msg.cid
            )
            self._remember(msg.call_id)
            return
        targets, data = route
        lifetime = wire.ring_lifetime(
            msg.data, self.config.ring_lifetime, self.config.max_ring_lifetime
        )
        inbound = Call(
            role=Role.CALLEE,
            call_id=msg.call_id,
            cid=msg.cid,
            peer=msg.issuer,
            peer_device=msg.device,
            started=min(float(msg.iat), msg.now),
            lifetime=lifetime,
        )
        inbound.peer_info = msg.peer_info
        self._rank += 1
        bridge = Bridge(inbound, self._rank)
        # Whole seconds, rounded down: the outbound legs never ring longer than the
        # inbound one, so "nobody answered" reaches the caller as a timeout of ours.
        remaining = math.floor(inbound.ring_deadline - msg.now)
        if remaining < 1:
            self._fire(bridge, inbound, Refused(EndReason.TIMEOUT), msg.now, out)
        elif not targets:
            self._fire(bridge, inbound, Refused(EndReason.BUSY), msg.now, out)
            out.append(wire.end(inbound, EndReason.BUSY))
        else:
            self._fire(bridge, inbound, Offered(), msg.now, out)
            self._bridges[bridge.call_id] = bridge
            self._presence.watch(inbound)
            for target in targets:
                leg = Call(
                    role=Role.CALLER,
                    call_id=msg.call_id,
                    cid=msg.cid,
                    peer=target,
                    peer_device=None,
                    started=msg.now,
                    lifetime=remaining,
                )
                bridge.outbound[target] = leg
                self._fire(bridge, leg, Dialed(), msg.now, out)
                out.append(wire.start(leg, msg.peer_info, data))

    def _turn_away(self, msg: Received, finished: Bridge, out: list[Output]) -> None:
        """Answer a start for a call that is over, rather than leave its caller ringing."""
        record = finished.inbound.record
        how = "" if record is None else f" ({record.reason})"
        detail = f"call {msg.call_id} has already ended{how}: place a new call"
        logger.info("start %s from %s: %s", msg.call_id, msg.issuer, detail)
        out.append(wire.end_to(msg.issuer, msg.cid, msg.call_id, EndReason.FAILED, detail=detail))

    def _on_accept(self, msg: Received, out: list[Output]) -> None:
        bridge = self._bridges.get(msg.call_id) or self._memory.get(msg.call_id)
        leg = None if bridge is None else bridge.outbound.get(msg.issuer)
        if bridge is None or leg is None:
            if bridge is None:
                self._remember(msg.call_id)
            return
        if leg.record is not None:
            out.append(wire.late_accept_reply(leg.record, msg.device))
        elif bridge.winner is None:
            bridge.winner = msg.issuer
            leg.peer_info = msg.peer_info
            self._fire(bridge, leg, Answered(msg.device), msg.now, out)
            self._presence.watch(leg)
            out.append(_connected(leg))
            self._fire(bridge, bridge.inbound, PickedUp(), msg.now, out)
            out.append(wire.accept(bridge.inbound, msg.peer_info, {}))
            out.append(_connected(bridge.inbound))
            for other in bridge.outbound.values():
                if other is not leg and other.live:
                    self._fire(bridge, other, Superseded(), msg.now, out)
                    out.append(wire.answered_elsewhere(other, None))
        elif msg.device != leg.peer_device:
            out.append(wire.answered_elsewhere(leg, leg.peer_device))

    def _on_end(self, msg: Received, out: list[Output]) -> None:
        if wire.answered_by(msg.data) == self.device:
            return
        bridge = self._bridges.get(msg.call_id)
        if bridge is None:
            self._remember(msg.call_id)
            return
        leg = bridge.leg_of(msg.issuer)
        if leg is None or not leg.live or leg.peer_device not in (None, msg.device):
            return
        ended = PeerEnded(wire.end_reason(msg.kind, msg.data), wire.end_detail(msg.data))
        self._end_leg(bridge, leg, ended, msg.now, out)

    # -- time, presence, failure ------------------------------------------------------

    def _due(self, now: float) -> list[Bridge]:
        """The bridges with a deadline by ``now``, oldest first (as they were opened)."""
        self.next_deadline()  # brings the heap up to date: its top entry is current
        heap, deadlines = self._deadline_heap, self._deadlines
        due = []
        while heap and heap[0][0] <= now:
            deadline, call_id = heapq.heappop(heap)
            if deadlines.get(call_id) == deadline:
                del deadlines[call_id]
                due.append(self._bridges[call_id])
        assert self._deadlines_stale is not None  # next_deadline() left none stale
        self._deadlines_stale.update(bridge.call_id for bridge in due)
        return sorted(due, key=lambda bridge: bridge.rank)

    def _tick(self, now: float, out: list[Output]) -> None:
        for bridge in self._due(now):
            for leg in list(bridge.legs()):
                event = leg.due(now) if leg.live else None
                if event is None:
                    continue
                # Ended when its deadline came, also if the tick is late (a restart).
                due = leg.ring_deadline if isinstance(event, Expired) else leg.gone_deadline
                self._end_leg(bridge, leg, event, now if due is None else min(due, now), out)
                # As on a phone: the caller owns the lifetime; a vanished peer hears
                # about it when it is back.
                if leg.role is Role.CALLER or isinstance(event, Vanished):
                    out.append(wire.end(leg, event.reason))

    def _watch(self, identity: IdentityId) -> None:
        """Presence changed for ``identity``: its live legs' gone deadlines follow."""
        for call_id in self._live_legs.get(identity, ()):
            leg = self._bridges[call_id].leg_of(identity)
            assert leg is not None  # counted live under its party
            self._presence.watch(leg)
            self._touched.setdefault(call_id, None)
            if self._deadlines_stale is not None:
                self._deadlines_stale.add(call_id)

    def _count_leg(self, leg: Call, change: int) -> None:
        calls = self._live_legs.setdefault(leg.peer, Counter())
        calls[leg.call_id] += change
        if not calls[leg.call_id]:
            del calls[leg.call_id]
            if not calls:
                del self._live_legs[leg.peer]

    def _fail(self, cmd: Fail, out: list[Output]) -> None:
        bridge = self._bridges.get(cmd.call_id)
        if bridge is None:
            if cmd.call_id in self._memory:
                raise IllegalTransition(f"proxied call {cmd.call_id} has ended")
            raise UnknownCall(f"no proxied call {cmd.call_id!r}")
        failed = bridge.leg_of(cmd.peer) if cmd.peer is not None else None
        if failed is not None and failed is not bridge.inbound:
            # Nothing reached that party: end its leg, and the call only if no leg is left.
            if failed.live:
                self._end_leg(bridge, failed, Failed(detail=cmd.detail), cmd.now, out)
            return
        for leg in list(bridge.legs()):
            if leg.live:
                self._fire(bridge, leg, Failed(detail=cmd.detail), cmd.now, out)
                out.append(wire.end(leg, EndReason.FAILED, detail=cmd.detail))

    # -- transitions ------------------------------------------------------------------

    def _end_leg(
        self, bridge: Bridge, leg: Call, event: EndingEvent, now: float, out: list[Output]
    ) -> None:
        """End ``leg`` and every leg that cannot outlive it, telling their peers."""
        self._fire(bridge, leg, event, now, out)
        if leg is bridge.inbound:
            others = [o for o in bridge.outbound.values() if o.live]
        elif bridge.winner == leg.peer or not any(o.live for o in bridge.outbound.values()):
            others = [bridge.inbound] if bridge.inbound.live else []
        else:
            others = []  # a hunt leg turned down while others still ring
        detail = event_detail(event)
        for other in others:
            self._fire(bridge, other, OtherLegEnded(event.reason, detail), now, out)
            out.append(wire.end(other, event.reason, detail=detail))

    def _fire(
        self, bridge: Bridge, leg: Call, event: CallEvent, now: float, out: list[Output]
    ) -> None:
        was_live = leg.live
        leg.fire(event, now)
        if leg.live != was_live:
            self._count_leg(leg, +1 if leg.live else -1)
        self._touched.setdefault(bridge.call_id, None)
        if leg.record is not None:
            out.append(Ended(leg.record))
            if not bridge.live:
                self._bridges.pop(bridge.call_id, None)
                self._rank += 1
                bridge.rank = self._rank
                self._memory.remember(bridge.call_id, bridge)


def _connected(leg: Call) -> Connected:
    assert leg.peer_device is not None  # the inbound leg knows it from the start
    return Connected(
        call_id=leg.call_id,
        cid=leg.cid,
        peer=leg.peer,
        peer_device=leg.peer_device,
        peer_info=leg.peer_info,
    )

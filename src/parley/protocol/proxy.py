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
"""

from __future__ import annotations

import logging
import math
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
    Dialed,
    EndingEvent,
    EndReason,
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
    ring_lifetime: float = 60.0
    max_ring_lifetime: float = 600.0
    grace: float = 30.0
    memory: int = 1024


class Bridge:
    """One proxied call: the leg the start came in on and the legs the app placed."""

    def __init__(self, inbound: Call) -> None:
        self.call_id = inbound.call_id
        self.cid = inbound.cid
        self.inbound = inbound
        self.outbound: dict[IdentityId, Call] = {}
        self.winner: IdentityId | None = None

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

    def next_deadline(self) -> float | None:
        deadlines = [
            d
            for bridge in self._bridges.values()
            for leg in bridge.legs()
            if (d := leg.deadline()) is not None
        ]
        return min(deadlines, default=None)

    def handle(self, event: ProxyInput) -> list[Output]:
        out: list[Output] = []
        match event:
            case Received():
                self._receive(event, out)
            case Tick():
                self._tick(event.now, out)
            case PeerGone():
                self._presence.gone(event.identity, event.device, event.now)
                self._watch(event.identity)
            case PeerBack():
                self._presence.back(event.identity, event.device)
                self._watch(event.identity)
            case Fail():
                self._fail(event, out)
        return out

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
        if self._presence.is_away(operator):
            return False
        return not any(
            leg.live for bridge in self._bridges.values() if (leg := bridge.leg_of(operator))
        )

    def _on_start(self, msg: Received, out: list[Output]) -> None:
        if msg.call_id in self._bridges:
            return
        if msg.call_id in self._memory:
            finished = self._memory.get(msg.call_id)
            if finished is not None:
                self._turn_away(msg, finished, out)
            return
        route = self._route(msg)
        if route is None:
            logger.info(
                "start %s from %s for cid %s: no call to proxy", msg.call_id, msg.issuer, msg.cid
            )
            self._memory.remember(msg.call_id)
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
        bridge = Bridge(inbound)
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
                self._memory.remember(msg.call_id)
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
            self._memory.remember(msg.call_id)
            return
        leg = bridge.leg_of(msg.issuer)
        if leg is None or not leg.live or leg.peer_device not in (None, msg.device):
            return
        ended = PeerEnded(wire.end_reason(msg.kind, msg.data), wire.end_detail(msg.data))
        self._end_leg(bridge, leg, ended, msg.now, out)

    # -- time, presence, failure ------------------------------------------------------

    def _tick(self, now: float, out: list[Output]) -> None:
        for bridge in list(self._bridges.values()):
            for leg in list(bridge.legs()):
                event = leg.due(now) if leg.live else None
                if event is None:
                    continue
                self._end_leg(bridge, leg, event, now, out)
                # As on a phone: the caller owns the lifetime; a vanished peer hears
                # about it when it is back.
                if leg.role is Role.CALLER or isinstance(event, Vanished):
                    out.append(wire.end(leg, event.reason))

    def _watch(self, identity: IdentityId) -> None:
        for bridge in self._bridges.values():
            leg = bridge.leg_of(identity)
            if leg is not None:
                self._presence.watch(leg)

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
        leg.fire(event, now)
        if leg.record is not None:
            out.append(Ended(leg.record))
            if not bridge.live:
                self._bridges.pop(bridge.call_id, None)
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

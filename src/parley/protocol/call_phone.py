"""A phone: every call of one device, driven by typed inputs, sans I/O.

``Phone.handle(input)`` returns what to send and what to tell the application; it never
reads a clock (each input carries ``now``) and acts on deadlines only when given a
:class:`Tick` (ask :meth:`Phone.next_deadline` when). The rules it applies are DESIGN.md
§3; the network facts it relies on:

- a message to an identity reaches every one of its devices, and the sender's other
  devices get a copy. So a ringing device learns from the copy of its sibling's accept,
  busy or stop that the call was answered or turned down elsewhere, and a call is busy
  for the whole identity when one of its devices is.
- Glare: a start arrives from the identity we are dialling. The lower ``call_id`` wins.
  The winner ignores the other start; the loser ends its own attempt with
  ``answered_elsewhere`` (its stop also ends the ringing on the winner's other devices)
  and lets the winning call ring with ``replaces`` set, for the application to accept.
- First accept wins: a caller answers a second device's accept with a stop carrying
  ``answered_by`` (the winner), and a late accept of a call that is over with a stop that
  says how it ended, so no device sits connected to nobody.
- No ghost calls: only a start creates a call; a start for a call_id we hold or remember
  (ended, or heard of in a stop, a busy, an accept or a sibling's copy first) is ignored.

Messages that do not fit the state are logged and dropped: the network must not be able
to raise into the I/O layer. Local commands that do not fit raise a typed error and
change nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import msgspec

from parley.errors import CallIdInUse, IllegalTransition, UnknownCall
from parley.ids import DeviceId, IdentityId
from parley.protocol import call_wire as wire
from parley.protocol.call import (
    Answered,
    AnsweredElsewhere,
    Call,
    CallEvent,
    CallRecord,
    CallState,
    Dialed,
    EndReason,
    Failed,
    HungUp,
    Offered,
    PeerEnded,
    PickedUp,
    Refused,
    Rejected,
    Role,
    SiblingEnded,
    Superseded,
    Vanished,
)
from parley.protocol.call_io import (
    Accept,
    Busy,
    Connected,
    Decline,
    Ended,
    Fail,
    Hangup,
    Output,
    PeerBack,
    PeerGone,
    PhoneInput,
    Place,
    Received,
    Ringing,
    Tick,
)
from parley.protocol.call_memory import CallMemory
from parley.protocol.call_presence import Presence
from parley.protocol.messages import MessageType

logger = logging.getLogger(__name__)

_START, _ACCEPT = MessageType.VOICE_START, MessageType.VOICE_ACCEPT
_ENDINGS = (MessageType.VOICE_STOP, MessageType.VOICE_BUSY)


class PhoneConfig(msgspec.Struct, frozen=True, kw_only=True):
    """The call rules of ``client.calls(config)``: the ring lifetime of calls placed (and of starts
    that do not say), the longest a caller may make us ring, how long a peer device may be away
    before the call is ``gone``, whether a start while dialling or in a call is answered busy,
    and how many ended call ids are remembered."""

    ring_lifetime: float = 60.0  # for calls we place, and starts that do not say
    max_ring_lifetime: float = 600.0  # a caller cannot make us ring longer than this
    grace: float = 30.0  # how long a peer device may be away before the call is gone
    auto_busy: bool = True  # answer a start with busy while dialling or in a call
    memory: int = 1024  # ended call_ids remembered (see ``call_memory``)


class Phone:
    def __init__(
        self, identity: IdentityId, device: DeviceId, config: PhoneConfig | None = None
    ) -> None:
        self.identity = identity
        self.device = device
        self.config = config or PhoneConfig()
        self._calls: dict[str, Call] = {}
        self._memory: CallMemory[CallRecord] = CallMemory(self.config.memory)
        self._presence = Presence(self.config.grace)

    def __repr__(self) -> str:
        return f"<Phone {self.identity}:{self.device} calls={list(self._calls)}>"

    @property
    def calls(self) -> Mapping[str, Call]:
        """The live calls by call_id (read them; change them only through ``handle``)."""
        return self._calls

    def record(self, call_id: str) -> CallRecord | None:
        """The record of an ended call, while it is remembered."""
        return self._memory.get(call_id)

    def next_deadline(self) -> float | None:
        """When the I/O layer must next feed a :class:`Tick`; None if nothing waits."""
        deadlines = [d for call in self._calls.values() if (d := call.deadline()) is not None]
        return min(deadlines, default=None)

    def handle(self, event: PhoneInput) -> list[Output]:
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
            case Place():
                self._place(event, out)
            case Accept():
                call = self._target(event.call_id)
                self._fire(call, PickedUp(), event.now, out)
                out.append(wire.accept(call, event.peer_info, event.data))
                out.append(_connected(call))
            case Busy():
                self._end_locally(event.call_id, Rejected(EndReason.BUSY), event.now, out)
            case Decline():
                self._end_locally(event.call_id, Rejected(EndReason.DECLINED), event.now, out)
            case Hangup():
                self._end_locally(event.call_id, HungUp(), event.now, out)
            case Fail():
                self._end_locally(event.call_id, Failed(detail=event.detail), event.now, out)
        return out

    # -- local commands ---------------------------------------------------------------

    def _place(self, cmd: Place, out: list[Output]) -> None:
        if cmd.call_id in self._calls or cmd.call_id in self._memory:
            raise CallIdInUse(f"call_id {cmd.call_id!r} was already used on this phone")
        lifetime = self.config.ring_lifetime if cmd.lifetime is None else cmd.lifetime
        call = Call(
            role=Role.CALLER,
            call_id=cmd.call_id,
            cid=cmd.cid,
            peer=cmd.recipient,
            peer_device=None,
            started=cmd.now,
            lifetime=min(lifetime, self.config.max_ring_lifetime),
        )
        self._fire(call, Dialed(), cmd.now, out)
        self._calls[call.call_id] = call
        out.append(wire.start(call, cmd.peer_info, cmd.data))

    def _target(self, call_id: str) -> Call:
        call = self._calls.get(call_id)
        if call is not None:
            return call
        record = self._memory.get(call_id)
        if record is not None:
            raise IllegalTransition(f"call {call_id} has ended ({record.reason})")
        raise UnknownCall(f"no call {call_id!r} on this phone")

    def _end_locally(
        self, call_id: str, event: Rejected | HungUp | Failed, now: float, out: list[Output]
    ) -> None:
        call = self._target(call_id)
        self._fire(call, event, now, out)
        out.append(wire.end(call, event.reason))

    # -- messages ---------------------------------------------------------------------

    def _receive(self, msg: Received, out: list[Output]) -> None:
        if msg.issuer == self.identity:
            if msg.device != self.device:
                self._sibling(msg, out)
        elif msg.kind is _START:
            self._on_start(msg, out)
        elif msg.kind is _ACCEPT:
            self._on_accept(msg, out)
        elif msg.kind in _ENDINGS:
            self._on_end(msg, out)
        # setup and summary do not touch call state.

    def _on_start(self, msg: Received, out: list[Output]) -> None:
        if msg.call_id in self._calls or msg.call_id in self._memory:
            logger.debug("start %s ignored: call already known", msg.call_id)
            return
        lifetime = wire.ring_lifetime(
            msg.data, self.config.ring_lifetime, self.config.max_ring_lifetime
        )
        call = Call(
            role=Role.CALLEE,
            call_id=msg.call_id,
            cid=msg.cid,
            peer=msg.issuer,
            peer_device=msg.device,
            # An iat ahead of our clock (skew) must not stretch the ringing.
            started=min(float(msg.iat), msg.now),
            lifetime=lifetime,
        )
        call.peer_info = msg.peer_info
        if call.ring_deadline <= msg.now:
            logger.info("start %s from %s arrived after its lifetime", msg.call_id, msg.issuer)
            self._fire(call, Refused(EndReason.TIMEOUT), msg.now, out)
            return
        rivals = [
            c
            for c in self._calls.values()
            if c.role is Role.CALLER and c.state is CallState.DIALING and c.peer == msg.issuer
        ]
        if any(rival.call_id < msg.call_id for rival in rivals):
            logger.info("glare with %s: our call wins over %s", msg.issuer, msg.call_id)
            self._memory.remember(msg.call_id)
            return
        if not rivals and self.config.auto_busy and self._in_a_call():
            self._fire(call, Refused(EndReason.BUSY), msg.now, out)
            out.append(wire.end(call, EndReason.BUSY))
            return
        for rival in rivals:
            logger.info("glare with %s: %s gives way to %s", msg.issuer, rival.call_id, msg.call_id)
            self._fire(rival, Superseded(), msg.now, out)
            out.append(wire.end(rival, EndReason.ANSWERED_ELSEWHERE))
        self._fire(call, Offered(), msg.now, out)
        self._calls[call.call_id] = call
        self._presence.watch(call)
        out.append(
            Ringing(
                call_id=call.call_id,
                cid=call.cid,
                peer=call.peer,
                peer_device=msg.device,
                peer_info=msg.peer_info,
                data=msg.data,
                replaces=rivals[0].call_id if rivals else None,
            )
        )

    def _in_a_call(self) -> bool:
        busy_states = (CallState.DIALING, CallState.CONNECTED)
        return any(call.state in busy_states for call in self._calls.values())

    def _on_accept(self, msg: Received, out: list[Output]) -> None:
        call = self._calls.get(msg.call_id)
        if call is None:
            record = self._memory.get(msg.call_id)
            if record is not None and record.role is Role.CALLER and record.peer == msg.issuer:
                out.append(wire.late_accept_reply(record, msg.device))
            else:
                self._memory.remember(msg.call_id)
            return
        if call.role is not Role.CALLER or call.peer != msg.issuer:
            logger.debug("accept of %s from %s ignored", msg.call_id, msg.issuer)
        elif call.state is CallState.DIALING:
            call.peer_info = msg.peer_info
            self._fire(call, Answered(msg.device), msg.now, out)
            self._presence.watch(call)
            out.append(_connected(call))
        elif msg.device != call.peer_device:
            # A second device accepted too: the first one has the call.
            out.append(wire.answered_elsewhere(call, call.peer_device))

    def _on_end(self, msg: Received, out: list[Output]) -> None:
        if wire.answered_by(msg.data) == self.device:
            return  # "answered elsewhere" is for the other devices: we have the call
        call = self._calls.get(msg.call_id)
        if call is None:
            self._memory.remember(msg.call_id)
            return
        if call.peer != msg.issuer or call.peer_device not in (None, msg.device):
            logger.debug("%s of %s from %s:%s ignored", msg.kind, call, msg.issuer, msg.device)
            return
        ended = PeerEnded(wire.end_reason(msg.kind, msg.data), wire.end_detail(msg.data))
        self._fire_quietly(call, ended, msg.now, out)

    def _sibling(self, msg: Received, out: list[Output]) -> None:
        """The copy of a message another device of ours sent."""
        call = self._calls.get(msg.call_id)
        if call is None:
            self._memory.remember(msg.call_id)
            return
        if call.state is not CallState.RINGING:
            return  # dialling or connected: a sibling's copy does not decide for us
        if msg.kind is _ACCEPT:
            self._fire_quietly(call, AnsweredElsewhere(), msg.now, out)
        elif msg.kind in _ENDINGS:
            event = SiblingEnded(wire.end_reason(msg.kind, msg.data))
            self._fire_quietly(call, event, msg.now, out)

    # -- time and presence ------------------------------------------------------------

    def _tick(self, now: float, out: list[Output]) -> None:
        for call in list(self._calls.values()):
            event = call.due(now)
            if event is None:
                continue
            self._fire(call, event, now, out)
            # The caller owns the lifetime, so it tells the callee's devices; a callee
            # that stops ringing need not tell anyone. A vanished peer hears it when back.
            if call.role is Role.CALLER or isinstance(event, Vanished):
                out.append(wire.end(call, event.reason))

    def _watch(self, identity: IdentityId) -> None:
        for call in self._calls.values():
            if call.peer == identity:
                self._presence.watch(call)

    # -- transitions ------------------------------------------------------------------

    def _fire(self, call: Call, event: CallEvent, now: float, out: list[Output]) -> None:
        """Move ``call``; an ended call leaves the live calls for the memory."""
        call.fire(event, now)
        if call.record is not None:
            self._calls.pop(call.call_id, None)
            self._memory.remember(call.call_id, call.record)
            out.append(Ended(call.record))

    def _fire_quietly(self, call: Call, event: CallEvent, now: float, out: list[Output]) -> None:
        """For events the network caused: an illegal one is dropped, never raised."""
        try:
            self._fire(call, event, now, out)
        except IllegalTransition as exc:
            logger.debug("ignored: %s", exc)


def _connected(call: Call) -> Connected:
    assert call.peer_device is not None  # set by the start (callee) or the accept (caller)
    return Connected(
        call_id=call.call_id,
        cid=call.cid,
        peer=call.peer,
        peer_device=call.peer_device,
        peer_info=call.peer_info,
    )

"""One call (or one leg of a proxied call) as an explicit transition table.

DESIGN.md §3-5. The table is a literal ``{role: {state: {event type: new state}}}``, as in
h11: a missing key *is* the illegal transition, so :meth:`Call.fire` raises
:class:`IllegalTransition` and leaves the state unchanged. Every change of state goes
through :meth:`Call._set_state`, which logs it (as aiortc does).

This module knows nothing of messages or devices' other calls: the phone
(``call_phone``) and the proxy (``proxy``) decide which event a message or a deadline
means, and what to send about it. The call only checks that the event is legal, moves,
and keeps the record (started, ringing, answered, ended, duration, reason).

Time is always an argument (seconds, any epoch the caller likes; the I/O layer uses the
same clock as the JWS ``iat``). Nothing here reads a clock.
"""

from __future__ import annotations

import enum
import logging
from typing import Final, TypeAlias

import msgspec

from parley.errors import IllegalTransition
from parley.ids import DeviceId, IdentityId

logger = logging.getLogger(__name__)


class Role(enum.StrEnum):
    """Which side of the call this machine plays: the one that sent the start, or not."""

    CALLER = "caller"
    CALLEE = "callee"


class CallState(enum.StrEnum):
    """Where a call is: new, dialing (caller), ringing (callee), connected, ended."""

    NEW = "new"  # created, nothing decided yet
    DIALING = "dialing"  # caller: start sent, no accept yet
    RINGING = "ringing"  # callee: ringing here
    CONNECTED = "connected"
    ENDED = "ended"


class EndReason(enum.StrEnum):
    """Why a call ended; travels as ``data["reason"]`` of stop and busy (``call_wire``)."""

    HANGUP = "hangup"
    BUSY = "busy"
    DECLINED = "declined"
    TIMEOUT = "timeout"
    ANSWERED_ELSEWHERE = "answered_elsewhere"
    GONE = "gone"
    FAILED = "failed"


# -- events: what happened to the call (the table's keys) ---------------------------------


class Dialed(msgspec.Struct, frozen=True):
    """We sent the start."""


class Offered(msgspec.Struct, frozen=True):
    """A start within its lifetime arrived and rings here."""


class Refused(msgspec.Struct, frozen=True):
    """A start turned down before it rang: auto-busy, or it arrived after its lifetime."""

    reason: EndReason


class PickedUp(msgspec.Struct, frozen=True):
    """The local user accepted the ringing call."""


class Answered(msgspec.Struct, frozen=True):
    """The peer accepted; ``device`` is the peer device the call is now with."""

    device: DeviceId


class Rejected(msgspec.Struct, frozen=True):
    """The local user turned a ringing call down (busy or declined)."""

    reason: EndReason


class HungUp(msgspec.Struct, frozen=True):
    """The local user hung up."""

    reason: EndReason = EndReason.HANGUP


class Failed(msgspec.Struct, frozen=True):
    """The local side could not go on (media, delivery, ...); ``detail`` says what (the
    relay's refusal of our start or accept, say) and ends up in the record."""

    reason: EndReason = EndReason.FAILED
    detail: str | None = None


class PeerEnded(msgspec.Struct, frozen=True):
    """The peer sent stop or busy; ``reason`` is what it said (or the default),
    ``detail`` its ``data["detail"]`` if it gave one."""

    reason: EndReason
    detail: str | None = None


class AnsweredElsewhere(msgspec.Struct, frozen=True):
    """Another device of our identity accepted this call."""

    reason: EndReason = EndReason.ANSWERED_ELSEWHERE


class SiblingEnded(msgspec.Struct, frozen=True):
    """Another device of our identity turned this call down; the same end holds here."""

    reason: EndReason


class Expired(msgspec.Struct, frozen=True):
    """The ring lifetime passed without an answer."""

    reason: EndReason = EndReason.TIMEOUT


class Vanished(msgspec.Struct, frozen=True):
    """The peer's device dropped and did not come back within the grace period."""

    reason: EndReason = EndReason.GONE


class Superseded(msgspec.Struct, frozen=True):
    """Our attempt gave way to another: glare lost, or another hunt leg was answered."""

    reason: EndReason = EndReason.ANSWERED_ELSEWHERE


class OtherLegEnded(msgspec.Struct, frozen=True):
    """Proxy only: the other leg of the bridged call ended, carrying its reason (and
    detail) here."""

    reason: EndReason
    detail: str | None = None


CallEvent: TypeAlias = (
    Dialed
    | Offered
    | Refused
    | PickedUp
    | Answered
    | Rejected
    | HungUp
    | Failed
    | PeerEnded
    | AnsweredElsewhere
    | SiblingEnded
    | Expired
    | Vanished
    | Superseded
    | OtherLegEnded
)
EndingEvent: TypeAlias = (
    Refused
    | Rejected
    | HungUp
    | Failed
    | PeerEnded
    | AnsweredElsewhere
    | SiblingEnded
    | Expired
    | Vanished
    | Superseded
    | OtherLegEnded
)

_NEW, _DIALING, _RINGING = CallState.NEW, CallState.DIALING, CallState.RINGING
_CONNECTED, _ENDED = CallState.CONNECTED, CallState.ENDED

TRANSITIONS: Final[dict[Role, dict[CallState, dict[type[CallEvent], CallState]]]] = {
    Role.CALLER: {
        _NEW: {Dialed: _DIALING},
        _DIALING: {
            Answered: _CONNECTED,
            HungUp: _ENDED,
            Failed: _ENDED,
            PeerEnded: _ENDED,
            Expired: _ENDED,
            Vanished: _ENDED,
            Superseded: _ENDED,
            OtherLegEnded: _ENDED,
        },
        _CONNECTED: {
            HungUp: _ENDED,
            Failed: _ENDED,
            PeerEnded: _ENDED,
            Vanished: _ENDED,
            OtherLegEnded: _ENDED,
        },
        _ENDED: {},
    },
    Role.CALLEE: {
        _NEW: {Offered: _RINGING, Refused: _ENDED},
        _RINGING: {
            PickedUp: _CONNECTED,
            Rejected: _ENDED,
            Failed: _ENDED,
            PeerEnded: _ENDED,
            AnsweredElsewhere: _ENDED,
            SiblingEnded: _ENDED,
            Expired: _ENDED,
            Vanished: _ENDED,
            OtherLegEnded: _ENDED,
        },
        _CONNECTED: {
            HungUp: _ENDED,
            Failed: _ENDED,
            PeerEnded: _ENDED,
            Vanished: _ENDED,
            OtherLegEnded: _ENDED,
        },
        _ENDED: {},
    },
}

LIVE_STATES: Final = frozenset({_DIALING, _RINGING, _CONNECTED})


def event_detail(event: CallEvent) -> str | None:
    """The detail an ending event carries (only failures and ends someone explained)."""
    if isinstance(event, Failed | PeerEnded | OtherLegEnded):
        return event.detail
    return None


class CallRecord(msgspec.Struct, frozen=True, kw_only=True):
    """What is kept of a call once it ended; one per call and per proxy leg."""

    call_id: str
    cid: str
    role: Role
    peer: IdentityId
    peer_device: DeviceId | None  # the device the call was with, if it got that far
    started: float  # caller: when it dialled; callee: the start's iat (never after receipt)
    ringing: float | None  # when it began dialling / ringing here; None if it never rang
    answered: float | None
    ended: float
    reason: EndReason
    # What more there is to say about the reason, when something said it: the relay's
    # refusal behind a ``failed`` ("not permitted: ..."), a peer's or proxy's detail.
    detail: str | None = None

    @property
    def duration(self) -> float:
        """Seconds connected; 0 for a call that was never answered."""
        return 0.0 if self.answered is None else self.ended - self.answered


class Call:
    """The state of one call as one party sees it, and its deadlines.

    ``ring_deadline`` is ``started + lifetime`` and matters while dialling or ringing;
    ``gone_deadline`` is set by presence (``call_presence``) while the peer device is
    away. The owner feeds :class:`Expired` / :class:`Vanished` from :meth:`due`.
    """

    def __init__(
        self,
        *,
        role: Role,
        call_id: str,
        cid: str,
        peer: IdentityId,
        peer_device: DeviceId | None,
        started: float,
        lifetime: float,
    ) -> None:
        self.role = role
        self.call_id = call_id
        self.cid = cid
        self.peer = peer
        self.peer_device = peer_device
        self.started = started
        self.lifetime = lifetime
        self.ring_deadline = started + lifetime
        self.gone_deadline: float | None = None
        # The session description the peer sent (its offer, or its answer).
        self.peer_info = ""
        self.state = CallState.NEW
        self.record: CallRecord | None = None
        self._ringing: float | None = None
        self._answered: float | None = None

    def __repr__(self) -> str:
        return f"<Call {self.call_id} {self.role} {self.state} peer={self.peer}>"

    @property
    def live(self) -> bool:
        return self.state in LIVE_STATES

    def fire(self, event: CallEvent, now: float) -> CallState:
        """Apply ``event``; raise :class:`IllegalTransition` (state unchanged) if the table
        has no entry for it."""
        try:
            new_state = TRANSITIONS[self.role][self.state][type(event)]
        except KeyError:
            raise IllegalTransition(
                f"call {self.call_id} ({self.role}) is {self.state}: "
                f"{type(event).__name__} is not allowed"
            ) from None
        if isinstance(event, Answered):
            self.peer_device = event.device
        if new_state in (_DIALING, _RINGING):
            self._ringing = now
        elif new_state is _CONNECTED:
            self._answered = now
        elif new_state is _ENDED:
            # Only ending events lead to ENDED (checked by a test over the table).
            assert not isinstance(event, Dialed | Offered | PickedUp | Answered)
            self.record = CallRecord(
                call_id=self.call_id,
                cid=self.cid,
                role=self.role,
                peer=self.peer,
                peer_device=self.peer_device,
                started=self.started,
                ringing=self._ringing,
                answered=self._answered,
                ended=now,
                reason=event.reason,
                detail=event_detail(event),
            )
        self._set_state(new_state, event)
        return new_state

    def _set_state(self, new_state: CallState, event: CallEvent) -> None:
        logger.debug(
            "call %s %s %s: %s -> %s on %r",
            self.call_id,
            self.role,
            self.peer,
            self.state,
            new_state,
            event,
        )
        self.state = new_state

    def deadline(self) -> float | None:
        """The next moment :meth:`due` may return an event, if any."""
        times = []
        if self.state in (_DIALING, _RINGING):
            times.append(self.ring_deadline)
        if self.live and self.gone_deadline is not None:
            times.append(self.gone_deadline)
        return min(times, default=None)

    def due(self, now: float) -> Expired | Vanished | None:
        """The deadline event that has come by ``now``; the ring lifetime goes first."""
        if self.state in (_DIALING, _RINGING) and self.ring_deadline <= now:
            return Expired()
        if self.live and self.gone_deadline is not None and self.gone_deadline <= now:
            return Vanished()
        return None


def state_diagram(role: Role) -> str:
    """A Mermaid ``stateDiagram-v2`` of ``role``'s table, one line per transition."""
    lines = ["stateDiagram-v2", f"    [*] --> {CallState.NEW}"]
    for state, moves in TRANSITIONS[role].items():
        for event, new_state in moves.items():
            lines.append(f"    {state} --> {new_state}: {event.__name__}")
    lines.append(f"    {CallState.ENDED} --> [*]")
    return "\n".join(lines) + "\n"

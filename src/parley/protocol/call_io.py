"""What goes into a phone or a proxy, and what comes out.

Inputs are typed records that each carry ``now``: local commands (:class:`Place`,
:class:`Accept`, :class:`Busy`, :class:`Decline`, :class:`Hangup`, :class:`Fail`), a
message that arrived (:class:`Received`), the passing of time (:class:`Tick`) and
presence (:class:`PeerGone`, :class:`PeerBack`).

Outputs are messages to send (:class:`Send`, one per voice message; the relay fans it out
to every device of ``recipient`` and copies it to our other devices) and events for the
application (:class:`Ringing`, :class:`Connected`, :class:`Ended` with its record).
"""

from __future__ import annotations

from typing import Any, TypeAlias

import msgspec

from parley.ids import DeviceId, IdentityId
from parley.protocol.call import CallRecord, EndReason
from parley.protocol.messages import Message, MessageType, VoiceAccept, VoiceSetup, VoiceStart

# -- local commands ---------------------------------------------------------------------


class Place(msgspec.Struct, frozen=True, kw_only=True):
    """Call ``recipient``. ``call_id`` is chosen by the caller (unique, random);
    ``lifetime`` (seconds) overrides the phone's default ring lifetime for this call."""

    now: float
    recipient: IdentityId
    cid: str
    call_id: str
    peer_info: str
    data: dict[str, Any] = msgspec.field(default_factory=dict)
    lifetime: float | None = None


class Accept(msgspec.Struct, frozen=True, kw_only=True):
    now: float
    call_id: str
    peer_info: str
    data: dict[str, Any] = msgspec.field(default_factory=dict)


class Busy(msgspec.Struct, frozen=True, kw_only=True):
    """Turn a ringing call down as busy (sends busy)."""

    now: float
    call_id: str


class Decline(msgspec.Struct, frozen=True, kw_only=True):
    """Turn a ringing call down (sends stop with reason ``declined``)."""

    now: float
    call_id: str


class Hangup(msgspec.Struct, frozen=True, kw_only=True):
    """End a call we placed or answered (a ringing incoming call is declined instead)."""

    now: float
    call_id: str


class Fail(msgspec.Struct, frozen=True, kw_only=True):
    """End a live call because this side cannot go on (media, delivery refused, ...).

    ``peer`` names the party a message to could not be delivered: a proxy then ends only
    that party's leg (a hunt group goes on ringing the others); a phone ends the call.
    ``detail`` (the relay's refusal, say) goes into the call's record."""

    now: float
    call_id: str
    peer: IdentityId | None = None
    detail: str | None = None


# -- network and time -------------------------------------------------------------------


class Received(msgspec.Struct, frozen=True, kw_only=True):
    """A verified voice message: ``issuer`` is the sending identity, ``device`` its signing
    device, ``iat`` its JWS issued-at (int seconds). A message whose ``issuer`` is our
    own identity is the copy the relay gives us of another of our devices' message."""

    now: float
    kind: MessageType
    issuer: IdentityId
    device: DeviceId
    iat: int
    cid: str
    call_id: str
    peer_info: str = ""
    data: dict[str, Any] = msgspec.field(default_factory=dict)

    @classmethod
    def from_payload(cls, now: float, payload: Message, device: DeviceId) -> Received:
        """Adapt a verified payload (``client``'s handlers get these) to an input."""
        return cls(
            now=now,
            kind=payload.typ,
            issuer=IdentityId(payload.iss),
            device=device,
            iat=payload.iat,
            cid=payload.cid,
            call_id="" if isinstance(payload, VoiceSetup) else payload.call_id,
            peer_info=payload.peer_info if isinstance(payload, VoiceStart | VoiceAccept) else "",
            # A copy: the app's handlers get the same payload after the machine.
            data=dict(payload.data),
        )


class Tick(msgspec.Struct, frozen=True, kw_only=True):
    """Time has come to ``now``; feed it whenever ``now`` reaches ``next_deadline()``.
    Only ticks act on deadlines: other inputs take the state as it is."""

    now: float


class PeerGone(msgspec.Struct, frozen=True, kw_only=True):
    """``device`` of ``identity`` lost its connection to the relay."""

    now: float
    identity: IdentityId
    device: DeviceId


class PeerBack(msgspec.Struct, frozen=True, kw_only=True):
    now: float
    identity: IdentityId
    device: DeviceId


PhoneInput: TypeAlias = (
    Place | Accept | Busy | Decline | Hangup | Fail | Received | Tick | PeerGone | PeerBack
)
ProxyInput: TypeAlias = Fail | Received | Tick | PeerGone | PeerBack

# -- outputs ----------------------------------------------------------------------------


class Send(msgspec.Struct, frozen=True, kw_only=True):
    """A voice message to sign and send: start and accept carry ``peer_info``; every type
    may carry ``data`` (the keys are in ``call_wire``)."""

    kind: MessageType
    recipient: IdentityId
    cid: str
    call_id: str
    peer_info: str = ""
    data: dict[str, Any] = msgspec.field(default_factory=dict)


class Ringing(msgspec.Struct, frozen=True, kw_only=True):
    """An incoming call rings here. ``replaces`` names our own attempt that lost glare to
    it: the application should accept at once (it wanted this very call)."""

    call_id: str
    cid: str
    peer: IdentityId
    peer_device: DeviceId
    peer_info: str
    data: dict[str, Any]
    replaces: str | None = None


class Connected(msgspec.Struct, frozen=True, kw_only=True):
    """The call is up with ``peer_device``; ``peer_info`` is what the peer sent (its answer
    for a caller, its offer for a callee)."""

    call_id: str
    cid: str
    peer: IdentityId
    peer_device: DeviceId
    peer_info: str


class Ended(msgspec.Struct, frozen=True):
    """The call (or proxy leg) ended; exactly one per call."""

    record: CallRecord

    @property
    def call_id(self) -> str:
        """The ended call's id."""
        return self.record.call_id

    @property
    def reason(self) -> EndReason:
        """Why the call ended (the record's ``reason``)."""
        return self.record.reason

    @property
    def detail(self) -> str | None:
        """What more was said about the reason (``record.detail``), if anything."""
        return self.record.detail


Output: TypeAlias = Send | Ringing | Connected | Ended

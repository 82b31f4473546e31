"""What the call machines put in ``data``, and how they read it back.

The wire keeps the six voice types (DESIGN.md §2); everything else rides in the free-form
``data`` object, so a peer that knows only the six types still interoperates. Every key
is optional and has a default:

=================  ===========  ===========================================================
key                on           meaning (default when absent or invalid)
=================  ===========  ===========================================================
``reason``         stop, busy   an :class:`EndReason` value (stop: ``hangup``; busy:
                                ``busy``)
``lifetime``       start        ring lifetime in seconds, counted from the start's ``iat``
                                (the receiver's default, 60 s; capped by its maximum)
``answered_by``    stop         with ``answered_elsewhere``: the device that won; that
                                device ignores the stop, every other device ends
``operator_name``  start        proxy: the operator's name, as the public docs forward it
``detail``         stop, busy   a line saying more about ``reason`` (none); the receiver
                                keeps it in its record's ``detail``
=================  ===========  ===========================================================
"""

from __future__ import annotations

from typing import Any, Final

from parley.ids import DeviceId, IdentityId
from parley.protocol.call import Call, CallRecord, EndReason
from parley.protocol.call_io import Send
from parley.protocol.messages import MessageType

REASON: Final = "reason"
LIFETIME: Final = "lifetime"
ANSWERED_BY: Final = "answered_by"
OPERATOR_NAME: Final = "operator_name"
DETAIL: Final = "detail"


def end_reason(kind: MessageType, data: dict[str, Any]) -> EndReason:
    """The reason a stop or busy carries; an old peer's bare stop is a hang-up."""
    default = EndReason.BUSY if kind is MessageType.VOICE_BUSY else EndReason.HANGUP
    try:
        return EndReason(data.get(REASON, default))
    except ValueError:  # a reason from a newer peer: what the message type says
        return default


def end_detail(data: dict[str, Any]) -> str | None:
    """The ``detail`` a stop or busy carries, if it is a string."""
    value = data.get(DETAIL)
    return value if isinstance(value, str) and value else None


def ring_lifetime(data: dict[str, Any], default: float, maximum: float) -> float:
    """The lifetime a start asks for, within ``(0, maximum]``; ``default`` otherwise."""
    value = data.get(LIFETIME)
    # bool is an int subclass; True is not a lifetime.
    if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
        return min(float(value), maximum)
    return default


def answered_by(data: dict[str, Any]) -> DeviceId | None:
    value = data.get(ANSWERED_BY)
    return DeviceId(value) if isinstance(value, str) else None


def seconds(value: float) -> int | float:
    """Whole seconds go out as JSON integers, like ``iat``."""
    return int(value) if float(value).is_integer() else value


def start(call: Call, peer_info: str, data: dict[str, Any]) -> Send:
    return Send(
        kind=MessageType.VOICE_START,
        recipient=call.peer,
        cid=call.cid,
        call_id=call.call_id,
        peer_info=peer_info,
        data={**data, LIFETIME: seconds(call.lifetime)},
    )


def accept(call: Call, peer_info: str, data: dict[str, Any]) -> Send:
    return Send(
        kind=MessageType.VOICE_ACCEPT,
        recipient=call.peer,
        cid=call.cid,
        call_id=call.call_id,
        peer_info=peer_info,
        data=data,
    )


def end(
    call: Call | CallRecord,
    reason: EndReason,
    winner: DeviceId | None = None,
    *,
    detail: str | None = None,
) -> Send:
    """Busy for ``busy``, stop with the reason for everything else."""
    return end_to(call.peer, call.cid, call.call_id, reason, winner, detail=detail)


def end_to(
    recipient: IdentityId,
    cid: str,
    call_id: str,
    reason: EndReason,
    winner: DeviceId | None = None,
    *,
    detail: str | None = None,
) -> Send:
    """:func:`end` for a call that is no :class:`Call` here (a start turned away)."""
    data: dict[str, Any] = {REASON: reason.value}
    if winner is not None:
        data[ANSWERED_BY] = winner
    if detail is not None:
        data[DETAIL] = detail
    kind = MessageType.VOICE_BUSY if reason is EndReason.BUSY else MessageType.VOICE_STOP
    return Send(kind=kind, recipient=recipient, cid=cid, call_id=call_id, data=data)


def answered_elsewhere(call: Call | CallRecord, device: DeviceId | None) -> Send:
    """Tell the peer's other devices that ``device`` has the call."""
    return end(call, EndReason.ANSWERED_ELSEWHERE, device)


def late_accept_reply(record: CallRecord, device: DeviceId) -> Send:
    """A device accepted a call we placed that is already over: tell it, so it does not
    sit connected to nobody. The call it lost to keeps ``answered_elsewhere``."""
    if record.peer_device is not None and record.peer_device != device:
        return answered_elsewhere(record, record.peer_device)
    return end(record, record.reason)

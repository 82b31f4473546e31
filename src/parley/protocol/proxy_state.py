"""What the proxy core keeps across a restart: its bridges, remembered ends, presence.

The core (:mod:`parley.protocol.proxy`) hands these out after every input that changed
something (:meth:`Proxy.take_changes`) and takes them back on start
(:meth:`Proxy.restore`); the I/O side only stores them. They are typed msgspec structs
so a stored state either decodes to exactly this shape or is refused as unreadable.

``rank`` orders what is kept: live bridges by when they were opened, ended bridges and
tombstones by when they were remembered, so a restored core iterates and forgets in the
same order as one that never stopped.

Beside them the I/O side keeps the identity of every message it handled
(:class:`MessageId`), saved with what the message changed, so a message the client
delivers again after a crash (:class:`Heard`) is skipped rather than handled twice.
"""

from __future__ import annotations

import msgspec

from parley.ids import DeviceId, IdentityId
from parley.protocol.call import Call, CallRecord, CallState, Role
from parley.protocol.call_io import Received


class LegState(msgspec.Struct, frozen=True, kw_only=True):
    """One :class:`~parley.protocol.call.Call`, all of it."""

    role: Role
    call_id: str
    cid: str
    peer: IdentityId
    peer_device: DeviceId | None
    started: float
    lifetime: float
    gone_deadline: float | None
    peer_info: str
    state: CallState
    ringing: float | None
    answered: float | None
    record: CallRecord | None

    @classmethod
    def of(cls, call: Call) -> LegState:
        return cls(
            role=call.role,
            call_id=call.call_id,
            cid=call.cid,
            peer=call.peer,
            peer_device=call.peer_device,
            started=call.started,
            lifetime=call.lifetime,
            gone_deadline=call.gone_deadline,
            peer_info=call.peer_info,
            state=call.state,
            # Private to the call, but part of its record to come: kept as they are.
            ringing=call._ringing,
            answered=call._answered,
            record=call.record,
        )

    def call(self) -> Call:
        call = Call(
            role=self.role,
            call_id=self.call_id,
            cid=self.cid,
            peer=self.peer,
            peer_device=self.peer_device,
            started=self.started,
            lifetime=self.lifetime,
        )
        call.gone_deadline = self.gone_deadline
        call.peer_info = self.peer_info
        call.state = self.state
        call.record = self.record
        call._ringing = self.ringing
        call._answered = self.answered
        return call


class BridgeState(msgspec.Struct, frozen=True, kw_only=True):
    inbound: LegState
    outbound: tuple[LegState, ...]  # in the order the legs were placed
    winner: IdentityId | None


class Kept(msgspec.Struct, frozen=True, kw_only=True):
    """One call_id the core knows: a live or ended bridge, or a tombstone (``bridge``
    None: a call_id only heard of, whose late messages must not open a call)."""

    call_id: str
    rank: int
    live: bool
    bridge: BridgeState | None


class Away(msgspec.Struct, frozen=True, kw_only=True):
    """A party's device that lost its connection at ``since`` and is not back."""

    identity: IdentityId
    device: DeviceId
    since: float


class Changes(msgspec.Struct, frozen=True, kw_only=True):
    """What one or more inputs changed: the call_ids touched (oldest rank first) and,
    if presence moved, everyone away now."""

    kept: tuple[Kept, ...] = ()
    away: tuple[Away, ...] | None = None

    def __bool__(self) -> bool:
        return bool(self.kept) or self.away is not None


class Resume(msgspec.Struct, frozen=True, kw_only=True):
    """Input: the restored core is connected again; it re-announces the legs that are
    up (so the I/O side watches their peers) and acts on deadlines from now on."""

    now: float


class MessageId(msgspec.Struct, frozen=True):
    """A handled message's replay key (its issuer and ``jti``) and its ``exp``: past
    that the client refuses it as expired, so the key can be forgotten."""

    issuer: str
    jti: str
    exp: int


class Heard(msgspec.Struct, frozen=True, kw_only=True):
    """Input: a verified message with its identity, which may come again (the client
    delivers it again when the proxy stopped before the client recorded it)."""

    received: Received
    id: MessageId


_encoder = msgspec.msgpack.Encoder()
_kept_decoder = msgspec.msgpack.Decoder(Kept)
_away_decoder = msgspec.msgpack.Decoder(tuple[Away, ...])


def encode_kept(kept: Kept) -> bytes:
    return _encoder.encode(kept)


def decode_kept(data: bytes) -> Kept:
    """Raises ``msgspec.DecodeError`` (or ``ValidationError``) if it is not a Kept."""
    return _kept_decoder.decode(data)


def encode_away(away: tuple[Away, ...]) -> bytes:
    return _encoder.encode(away)


def decode_away(data: bytes) -> tuple[Away, ...]:
    return _away_decoder.decode(data)

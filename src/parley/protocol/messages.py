"""Typed payloads: the claims of a signed message (DESIGN.md §2).

Every payload carries the registered claims ``typ, iss, sub, aud, iat, exp, jti`` and
the voice fields flattened beside them (``cid, call_id, peer_info, data``), as the
public SDKs put them. ``typ`` is the msgspec tag, so decoding picks the right class and
an unknown ``typ`` is a typed error rather than a dict nobody checks.

Handlers receive these objects; they expose their fields both as attributes and as
keys (``payload.cid`` and ``payload["cid"]``).
"""

from __future__ import annotations

import enum
from typing import Any, TypeAlias

import msgspec

from parley.errors import MalformedMessage, UnknownMessageType
from parley.protocol.decoding import MIB, Decoder


class MessageType(enum.StrEnum):
    """The six Voice message types, the payload's ``typ``."""

    VOICE_SETUP = "chat.voice.setup"
    VOICE_START = "chat.voice.start"
    VOICE_ACCEPT = "chat.voice.accept"
    VOICE_BUSY = "chat.voice.busy"
    VOICE_STOP = "chat.voice.stop"
    VOICE_SUMMARY = "chat.voice.summary"


class Payload(msgspec.Struct, frozen=True, kw_only=True, tag_field="typ", omit_defaults=True):
    """Registered claims shared by every payload."""

    iss: str
    sub: str
    aud: str
    iat: int
    exp: int
    jti: str
    cid: str

    @property
    def typ(self) -> MessageType:
        """The message type (the payload's ``typ`` claim)."""
        return MessageType(str(self.__struct_config__.tag))

    def __getitem__(self, key: str) -> Any:
        if key in self.__struct_fields__:
            return getattr(self, key)
        raise KeyError(key)

    def get(self, key: str, default: Any = None) -> Any:
        """The field ``key``, or ``default`` when the payload has no such field."""
        try:
            return self[key]
        except KeyError:
            return default

    def __contains__(self, key: object) -> bool:
        return key in self.__struct_fields__


class VoiceSetup(Payload, frozen=True, kw_only=True, tag=MessageType.VOICE_SETUP.value):
    """``chat.voice.setup``: ``data`` carries ``name``."""

    data: dict[str, Any]

    @property
    def name(self) -> str | None:
        """``data["name"]`` when it is a string, else None."""
        value = self.data.get("name")
        return value if isinstance(value, str) else None


class VoiceStart(Payload, frozen=True, kw_only=True, tag=MessageType.VOICE_START.value):
    """``chat.voice.start``: a call ``call_id`` with the caller's ``peer_info`` (the offer) and
    ``data``."""

    call_id: str
    peer_info: str
    data: dict[str, Any] = msgspec.field(default_factory=dict)


class VoiceAccept(Payload, frozen=True, kw_only=True, tag=MessageType.VOICE_ACCEPT.value):
    """``chat.voice.accept``: the callee's ``peer_info`` (the answer) for ``call_id``."""

    call_id: str
    peer_info: str
    data: dict[str, Any] = msgspec.field(default_factory=dict)


class VoiceBusy(Payload, frozen=True, kw_only=True, tag=MessageType.VOICE_BUSY.value):
    """``chat.voice.busy``: the callee is busy (``data`` may carry ``reason`` and ``detail``)."""

    call_id: str
    # Optional: the call state machine puts its end reason here (DESIGN.md §3).
    data: dict[str, Any] = msgspec.field(default_factory=dict)


class VoiceStop(Payload, frozen=True, kw_only=True, tag=MessageType.VOICE_STOP.value):
    """``chat.voice.stop``: a hang-up of ``call_id`` (``data`` may carry ``reason``, ``detail``)."""

    call_id: str
    data: dict[str, Any] = msgspec.field(default_factory=dict)


class VoiceSummary(Payload, frozen=True, kw_only=True, tag=MessageType.VOICE_SUMMARY.value):
    """``chat.voice.summary`` for ``call_id``."""

    call_id: str
    data: dict[str, Any] = msgspec.field(default_factory=dict)


Message: TypeAlias = VoiceSetup | VoiceStart | VoiceAccept | VoiceBusy | VoiceStop | VoiceSummary

MESSAGE_CLASSES: dict[MessageType, type[Message]] = {
    MessageType(cls.__struct_config__.tag): cls  # type: ignore[arg-type]
    for cls in (VoiceSetup, VoiceStart, VoiceAccept, VoiceBusy, VoiceStop, VoiceSummary)
}

_KNOWN_TYPES = frozenset(t.value for t in MessageType)
# Claims ride in a body, which the relay bounds far below this.
MAX_CLAIMS_BYTES = 4 * MIB
_decoder: Decoder[Message] = Decoder(
    Message,
    format="json",
    error=MalformedMessage,
    what="invalid claims",
    max_bytes=MAX_CLAIMS_BYTES,
)
_encoder = msgspec.json.Encoder()


class _TypOnly(msgspec.Struct):
    typ: str = ""


_typ_decoder: Decoder[_TypOnly] = Decoder(
    _TypOnly,
    format="json",
    error=MalformedMessage,
    what="invalid claims",
    max_bytes=MAX_CLAIMS_BYTES,
)


def encode_payload(message: Message) -> bytes:
    return _encoder.encode(message)


def decode_payload(raw: bytes) -> Message:
    """Decode JSON claims into their typed class; a typed error for anything else."""
    try:
        return _decoder.decode(raw)
    except MalformedMessage:
        # Only on failure: say whether the claims were of a type we do not know.
        try:
            typ = _typ_decoder.decode(raw).typ
        except MalformedMessage:
            typ = ""
        if typ and typ not in _KNOWN_TYPES:
            raise UnknownMessageType(f"unknown message type {typ!r}") from None
        raise

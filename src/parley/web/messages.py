"""What the phone page and its Python process say to each other over the local WebSocket.

JSON text messages, one per WebSocket message, tagged by ``t`` (the way
``protocol/frames.py`` tags relay frames). The page is only the media endpoint: it sends
its own session descriptions and the user's commands; the Python process, which holds
the identity and the relay connection, tells it what happens to the call.

Page -> process::

    place(peer, sdp)            call ``peer`` with this offer (gathered in full)
    accept(call_id, sdp)        answer the ringing call with this answer
    decline(call_id) | busy(call_id) | hangup(call_id)
    media_failed(call_id, detail)   the page's peer connection failed: end the call failed

Process -> page::

    hello(identity, ice)        on connecting: who this phone is, the RTCConfiguration
    dialing(call_id, peer)      the start reached the relay: the peer's devices ring
    incoming(call_id, peer, sdp, glare)     a call rings here; ``sdp`` is the caller's offer
    connected(call_id, peer, sdp)   the call is up; ``sdp`` is the answer (calls we placed)
    ended(call_id, peer, reason, detail, duration)
    error(message, request, call_id)    a page message that was refused; nothing changed

Every SDP either way has been checked by ``protocol.session_description`` first.
"""

from __future__ import annotations

from typing import Annotated, Any, TypeAlias

import msgspec

from parley.errors import ProtocolError
from parley.protocol.decoding import Decoder
from parley.protocol.session_description import MAX_SDP_BYTES

# Generous bounds: ids are at most 64 characters, call ids 32 hex digits; an SDP is at
# most MAX_SDP_BYTES bytes (checked exactly later), which is at most as many characters.
CallId = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
PeerId = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
Sdp = Annotated[str, msgspec.Meta(max_length=MAX_SDP_BYTES)]
Detail = Annotated[str, msgspec.Meta(max_length=1000)]

MAX_MESSAGE_BYTES = 64 * 1024


class MalformedPageMessage(ProtocolError):
    """A message from the page that does not decode as one of :data:`PageMessage`."""


# -- page -> process ----------------------------------------------------------------------


class _FromPage(
    msgspec.Struct, frozen=True, kw_only=True, tag_field="t", forbid_unknown_fields=True
):
    pass


class Place(_FromPage, frozen=True, kw_only=True, tag="place"):
    peer: PeerId
    sdp: Sdp


class Accept(_FromPage, frozen=True, kw_only=True, tag="accept"):
    call_id: CallId
    sdp: Sdp


class Decline(_FromPage, frozen=True, kw_only=True, tag="decline"):
    call_id: CallId


class Busy(_FromPage, frozen=True, kw_only=True, tag="busy"):
    """The page cannot take the call now (it is placing one of its own)."""

    call_id: CallId


class Hangup(_FromPage, frozen=True, kw_only=True, tag="hangup"):
    call_id: CallId


class MediaFailed(_FromPage, frozen=True, kw_only=True, tag="media_failed"):
    call_id: CallId
    detail: Detail = ""


PageMessage: TypeAlias = Place | Accept | Decline | Busy | Hangup | MediaFailed

# -- process -> page ----------------------------------------------------------------------


class _ToPage(msgspec.Struct, frozen=True, kw_only=True, tag_field="t"):
    pass


class Hello(_ToPage, frozen=True, kw_only=True, tag="hello"):
    identity: str
    ice: dict[str, Any]  # an RTCConfiguration (IceConfig.to_json())


class Dialing(_ToPage, frozen=True, kw_only=True, tag="dialing"):
    call_id: str
    peer: str


class Incoming(_ToPage, frozen=True, kw_only=True, tag="incoming"):
    """A call rings here, with the caller's offer. With ``glare``, it is the peer's call
    that won over the page's own at the same moment (DESIGN.md §3): the page answers it
    at once, in place of the call it placed."""

    call_id: str
    peer: str
    sdp: str
    glare: bool = False


class Connected(_ToPage, frozen=True, kw_only=True, tag="connected"):
    call_id: str
    peer: str
    sdp: str | None  # the peer's answer when we placed the call; None when we answered


class Ended(_ToPage, frozen=True, kw_only=True, tag="ended"):
    call_id: str
    peer: str
    reason: str  # an EndReason value
    detail: str  # why, when this side ended it failed; else ""
    duration: float


class Error(_ToPage, frozen=True, kw_only=True, tag="error"):
    message: str
    request: str | None = None  # the tag of the refused message, if it decoded that far
    call_id: str | None = None


ServerMessage: TypeAlias = Hello | Dialing | Incoming | Connected | Ended | Error

_decoder: Decoder[PageMessage] = Decoder(
    PageMessage,
    format="json",
    error=MalformedPageMessage,
    what="not a phone page message",
    max_bytes=MAX_MESSAGE_BYTES,
)
_any_decoder: Decoder[Any] = Decoder(
    Any,
    format="json",
    error=MalformedPageMessage,
    what="not JSON",
    max_bytes=MAX_MESSAGE_BYTES,
)
_encoder = msgspec.json.Encoder()


def decode(data: str | bytes) -> PageMessage:
    """A page message, or :class:`MalformedPageMessage` saying what is wrong with it."""
    if isinstance(data, bytes):
        raise MalformedPageMessage("the phone page sends JSON text messages, not binary ones")
    return _decoder.decode(data)


def encode(message: ServerMessage) -> str:
    return _encoder.encode(message).decode()


def tag(message: PageMessage) -> str:
    """The ``t`` of a decoded page message."""
    return str(type(message).__struct_config__.tag)


def tag_of(data: str | bytes) -> str | None:
    """The ``t`` of a message that did not decode, if it has one (for the error reply)."""
    try:
        value = _any_decoder.decode(data)
    except MalformedPageMessage:
        return None
    tag = value.get("t") if isinstance(value, dict) else None
    return tag if isinstance(tag, str) and len(tag) <= 32 else None

"""The session description a start or an accept carries in ``peer_info`` (DESIGN.md §2).

``peer_info`` of a start is the JSON text ``{"v": 1, "type": "offer", "sdp": "..."}``, of
an accept the same with ``"type": "answer"``: full, non-trickle SDP (every candidate
gathered, ``a=end-of-candidates``), at most :data:`MAX_SDP_BYTES`. The Voice helpers carry
any string; this module is where the media layer (``parley.media``, the browser page)
turns one into a :class:`SessionDescription` or an :class:`InvalidSessionDescription`.

The checks are those a peer needs before it hands the SDP to a WebRTC stack: it must
describe audio (an ``m=audio`` section with a port) and carry a DTLS fingerprint. The
fingerprint is what makes the media as trustworthy as the signalling: the message is
signed and end-to-end encrypted, so the fingerprint is the peer's, and a DTLS handshake
with any other certificate fails.

Sans-I/O: strings in, values or typed errors out.
"""

from __future__ import annotations

import enum
import json
from typing import Final

import msgspec

from parley.errors import InvalidSessionDescription

VERSION: Final = 1
MAX_SDP_BYTES: Final = 16 * 1024
# The JSON around an SDP escapes each CRLF as four characters: room for that, no more.
MAX_PEER_INFO_CHARS: Final = 2 * MAX_SDP_BYTES + 256


class SdpType(enum.StrEnum):
    OFFER = "offer"
    ANSWER = "answer"


class SessionDescription(msgspec.Struct, frozen=True):
    """A parsed, checked ``peer_info``: ``type`` and the SDP text."""

    type: SdpType
    sdp: str

    def to_peer_info(self) -> str:
        """The JSON text that goes in ``peer_info``."""
        return json.dumps({"v": VERSION, "type": self.type.value, "sdp": self.sdp})


def offer(sdp: str) -> str:
    """``peer_info`` for a start: ``sdp`` checked, as JSON."""
    return _checked(SdpType.OFFER, sdp).to_peer_info()


def answer(sdp: str) -> str:
    """``peer_info`` for an accept: ``sdp`` checked, as JSON."""
    return _checked(SdpType.ANSWER, sdp).to_peer_info()


def parse(peer_info: str, expected: SdpType) -> SessionDescription:
    """The session description in ``peer_info``, which must be of type ``expected``.

    Raises :class:`InvalidSessionDescription` with a reason a person can act on."""
    if not isinstance(peer_info, str):
        raise InvalidSessionDescription(f"peer_info is a {type(peer_info).__name__}, not text")
    if len(peer_info) > MAX_PEER_INFO_CHARS:
        raise InvalidSessionDescription(
            f"peer_info is {len(peer_info)} characters; the SDP may be {MAX_SDP_BYTES} bytes"
        )
    try:
        value = json.loads(peer_info)
    except (ValueError, RecursionError) as exc:
        raise InvalidSessionDescription(f"peer_info is not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise InvalidSessionDescription("peer_info is not a JSON object")
    version = value.get("v")
    if type(version) is not int or version != VERSION:
        raise InvalidSessionDescription(f"peer_info has v={version!r}; expected {VERSION}")
    kind = value.get("type")
    if kind not in (SdpType.OFFER.value, SdpType.ANSWER.value):
        raise InvalidSessionDescription(f"peer_info has type={kind!r}; expected offer or answer")
    if kind != expected.value:
        raise InvalidSessionDescription(f"peer_info is an {kind}; expected an {expected.value}")
    sdp = value.get("sdp")
    if not isinstance(sdp, str):
        raise InvalidSessionDescription("peer_info has no sdp text")
    return _checked(expected, sdp)


def _checked(kind: SdpType, sdp: str) -> SessionDescription:
    size = len(sdp.encode("utf-8", "surrogatepass"))
    if size > MAX_SDP_BYTES:
        raise InvalidSessionDescription(f"the SDP is {size} bytes; at most {MAX_SDP_BYTES}")
    lines = sdp.replace("\r\n", "\n").split("\n")
    if not lines or lines[0].strip() != "v=0":
        raise InvalidSessionDescription("the SDP does not start with v=0")
    if not any(_is_audio_section(line) for line in lines):
        raise InvalidSessionDescription("the SDP has no audio (no m=audio section with a port)")
    if not any(line.startswith("a=fingerprint:") for line in lines):
        raise InvalidSessionDescription("the SDP has no DTLS fingerprint (a=fingerprint)")
    return SessionDescription(kind, sdp)


def _is_audio_section(line: str) -> bool:
    # m=audio <port> <proto> <formats>; port 0 is a section turned down (RFC 3264 §6).
    # ASCII digits, few of them, before int(): it refuses other scripts' digits (which
    # str.isdigit() takes) and 4,300 digits or more with a ValueError.
    fields = line.split()
    if len(fields) < 4 or fields[0] != "m=audio":
        return False
    port = fields[1]
    return port.isascii() and port.isdigit() and len(port) <= 5 and 0 < int(port) <= 65535

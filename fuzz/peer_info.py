"""A call's ``peer_info``: :func:`session_description.parse` -> a session description,
or InvalidSessionDescription. The bytes are read as UTF-8, undecodable ones as lone
surrogates, so text no JSON encoder would make is tried too.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as fuzz/<target>.py

import contextlib

from fuzz import samples
from fuzz.harness import Target, deep_json, main
from parley.errors import InvalidSessionDescription
from parley.protocol import session_description
from parley.protocol.session_description import SdpType, SessionDescription


def parse(data: bytes) -> list[SessionDescription]:
    text = data.decode("utf-8", "surrogateescape")
    parsed = []
    for kind in SdpType:
        with contextlib.suppress(InvalidSessionDescription):
            parsed.append(session_description.parse(text, kind))
    if not parsed:
        raise InvalidSessionDescription("neither an offer nor an answer")
    return parsed


def _unchecked_offer(sdp: str) -> bytes:
    return SessionDescription(SdpType.OFFER, sdp).to_peer_info().encode()


TARGET = Target(
    name="peer_info",
    parse=parse,
    errors=(InvalidSessionDescription,),
    seeds=lambda: [
        session_description.offer(samples.SDP).encode(),
        session_description.answer(samples.SDP).encode(),
    ],
    examples=[
        deep_json(),
        # A port of other scripts' digits: str.isdigit() says yes, int() says no.
        _unchecked_offer(samples.SDP.replace("audio 9", "audio \u00b2")),
        _unchecked_offer(samples.SDP.replace("audio 9", "audio " + "9" * 5000)),
    ],
)

if __name__ == "__main__":
    main(TARGET)

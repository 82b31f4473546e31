"""peer_info session descriptions: what a start and an accept carry, and every way one
can be unusable (each a typed error with its reason)."""

from __future__ import annotations

import contextlib
import json

import pytest
from fuzz.samples import SDP
from hypothesis import given
from hypothesis import strategies as st

from parley.errors import InvalidSessionDescription, ProtocolError
from parley.protocol import session_description
from parley.protocol.session_description import MAX_SDP_BYTES, SdpType, SessionDescription


def test_an_offer_round_trips_as_the_documented_json() -> None:
    peer_info = session_description.offer(SDP)
    assert json.loads(peer_info) == {"v": 1, "type": "offer", "sdp": SDP}
    assert session_description.parse(peer_info, SdpType.OFFER) == SessionDescription(
        SdpType.OFFER, SDP
    )


def test_an_answer_round_trips() -> None:
    peer_info = session_description.answer(SDP)
    assert json.loads(peer_info)["type"] == "answer"
    assert session_description.parse(peer_info, SdpType.ANSWER).sdp == SDP


def _offer_with_port(port: str) -> str:
    return json.dumps({"v": 1, "type": "offer", "sdp": SDP.replace("audio 9", f"audio {port}")})


def test_the_error_is_a_protocol_error() -> None:
    assert issubclass(InvalidSessionDescription, ProtocolError)


@pytest.mark.parametrize(
    ("peer_info", "reason"),
    [
        ("an opaque string", "not JSON"),
        ("[1, 2]", "not a JSON object"),
        (json.dumps({"type": "offer", "sdp": SDP}), "v=None"),
        (json.dumps({"v": 2, "type": "offer", "sdp": SDP}), "v=2"),
        (json.dumps({"v": True, "type": "offer", "sdp": SDP}), "v=True"),
        (json.dumps({"v": "1", "type": "offer", "sdp": SDP}), "v='1'"),
        (json.dumps({"v": 1, "type": "pranswer", "sdp": SDP}), "type='pranswer'"),
        (json.dumps({"v": 1, "type": "answer", "sdp": SDP}), "expected an offer"),
        (json.dumps({"v": 1, "type": "offer"}), "no sdp"),
        (json.dumps({"v": 1, "type": "offer", "sdp": 7}), "no sdp"),
        (json.dumps({"v": 1, "type": "offer", "sdp": "o=- 1 2\r\nv=0"}), "v=0"),
        (json.dumps({"v": 1, "type": "offer", "sdp": SDP.replace("m=audio", "m=video")}), "audio"),
        (json.dumps({"v": 1, "type": "offer", "sdp": SDP.replace("audio 9", "audio 0")}), "audio"),
        (json.dumps({"v": 1, "type": "offer", "sdp": SDP.replace("a=fingerprint", "a=x")}), "DTLS"),
        ("[" * 100_000, "characters"),
        # Ports int() refuses though str.isdigit() takes them: a ValueError escaped.
        (_offer_with_port("²"), "audio"),
        (_offer_with_port("9" * 5000), "audio"),
        (_offer_with_port("65536"), "audio"),
        (_offer_with_port("000"), "audio"),
    ],
)
def test_unusable_peer_info_names_its_reason(peer_info: str, reason: str) -> None:
    with pytest.raises(InvalidSessionDescription, match=reason.replace("(", r"\(")):
        session_description.parse(peer_info, SdpType.OFFER)


def test_an_sdp_over_16_kib_is_refused_and_one_at_the_limit_is_not() -> None:
    at_limit = SDP + "a=x-pad:" + "p" * (MAX_SDP_BYTES - len(SDP) - len("a=x-pad:"))
    assert len(at_limit.encode()) == MAX_SDP_BYTES
    assert session_description.parse(session_description.offer(at_limit), SdpType.OFFER)
    with pytest.raises(InvalidSessionDescription, match="16384"):
        session_description.parse(session_description.offer(at_limit + "p"), SdpType.OFFER)
    with pytest.raises(InvalidSessionDescription):
        session_description.offer(at_limit + "p")  # nothing unusable goes out either


def test_deeply_nested_json_is_a_typed_error() -> None:
    with pytest.raises(InvalidSessionDescription):
        session_description.parse("[" * 15_000 + "]" * 15_000, SdpType.OFFER)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=50),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=12,
)
FIELDS = st.fixed_dictionaries(
    {},
    optional={
        "v": st.one_of(st.just(1), JSON),
        "type": st.sampled_from(["offer", "answer", "x"]) | JSON,
        "sdp": st.sampled_from([SDP, SDP[:40], ""]) | st.text(max_size=80),
    },
)


@given(st.text(max_size=300) | JSON.map(json.dumps) | FIELDS.map(json.dumps))
def test_any_text_is_a_description_or_a_typed_error(text: str) -> None:
    with contextlib.suppress(InvalidSessionDescription):
        assert session_description.parse(text, SdpType.ANSWER).type is SdpType.ANSWER

"""Typed payloads: tags, key access, and typed errors for anything else."""

from __future__ import annotations

from typing import Any

import pytest
from fuzz.harness import deep_json, in_unknown_field_json

from parley.errors import MalformedMessage, UnknownMessageType
from parley.protocol.messages import (
    MessageType,
    VoiceSetup,
    VoiceStop,
    decode_payload,
    encode_payload,
)

CLAIMS: dict[str, Any] = dict(iss="a", sub="b", aud="b", iat=1, exp=2, jti="j", cid="c")


def test_stop_carries_only_cid_and_call_id_on_the_wire() -> None:
    raw = encode_payload(VoiceStop(**CLAIMS, call_id="k"))
    assert raw == (
        b'{"typ":"chat.voice.stop","iss":"a","sub":"b","aud":"b","iat":1,"exp":2,'
        b'"jti":"j","cid":"c","call_id":"k"}'
    )
    decoded = decode_payload(raw)
    assert isinstance(decoded, VoiceStop)
    assert decoded.typ is MessageType.VOICE_STOP


def test_attribute_and_key_access() -> None:
    setup = VoiceSetup(**CLAIMS, data={"name": "Bob"})
    assert setup["cid"] == setup.cid == "c"
    assert setup.name == "Bob"
    assert "data" in setup and "nope" not in setup
    assert setup.get("nope", 5) == 5
    with pytest.raises(KeyError):
        setup["nope"]


def test_unknown_type() -> None:
    with pytest.raises(UnknownMessageType):
        decode_payload(b'{"typ":"chat.message","iss":"a"}')


@pytest.mark.parametrize(
    "raw",
    [b"not json", b"[]", b'{"typ":"chat.voice.stop","iss":"a"}', b'{"iss":"a"}'],
)
def test_malformed(raw: bytes) -> None:
    with pytest.raises(MalformedMessage):
        decode_payload(raw)


@pytest.mark.parametrize(
    "raw",
    [
        deep_json(),
        in_unknown_field_json(b'"typ":"chat.voice.stop"'),
        # ``data`` is typed Any: msgspec decodes whatever it holds.
        b'{"typ":"chat.voice.setup","data":{"x":' + deep_json() + b"}}",
    ],
)
def test_deep_nesting_is_malformed_not_a_recursion_error(raw: bytes) -> None:
    with pytest.raises(MalformedMessage):
        decode_payload(raw)

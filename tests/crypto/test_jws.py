"""JWS tokens: strict parsing, and interoperability with two standard JOSE libraries."""

from __future__ import annotations

import warnings
from typing import Any

import jwt
import msgspec
import pytest
from fuzz.harness import deep_json
from joserfc import jws as jose_jws
from joserfc.jwk import OKPKey

from parley.crypto import jws
from parley.crypto.keys import SigningKey, b64url_encode
from parley.errors import BadSignature, MalformedMessage, UnknownMessageType
from parley.protocol.messages import VoiceStart, encode_payload


def _start(**overrides: object) -> VoiceStart:
    fields: dict[str, object] = dict(
        iss="alice",
        sub="bob",
        aud="bob",
        iat=1_700_000_000,
        exp=1_700_000_300,
        jti="j1",
        cid="c1",
        call_id="k1",
        peer_info="v=0",
        data={"operator_name": "Bob"},
    )
    fields.update(overrides)
    return VoiceStart(**fields)  # type: ignore[arg-type]


def _jwk(key: SigningKey, private: bool) -> dict[str, Any]:
    jwk: dict[str, Any] = {"kty": "OKP", "crv": "Ed25519", "x": key.public_key.to_b64()}
    if private:
        jwk["d"] = key.to_b64()
    return jwk


def test_round_trip() -> None:
    key = SigningKey.generate()
    token = jws.parse(jws.sign(_start(), key, "dev1"))
    jws.verify_signature(token, key.public_key)
    assert token.header.kid == "dev1"
    assert token.message == _start()


def test_other_key_is_rejected() -> None:
    token = jws.parse(jws.sign(_start(), SigningKey.generate(), "dev1"))
    with pytest.raises(BadSignature):
        jws.verify_signature(token, SigningKey.generate().public_key)


def test_tampered_claims_are_rejected() -> None:
    key = SigningKey.generate()
    header, _, signature = jws.sign(_start(), key, "dev1").split(b".")
    forged = b64url_encode(encode_payload(_start(aud="mallory"))).encode()
    token = jws.parse(header + b"." + forged + b"." + signature)
    with pytest.raises(BadSignature):
        jws.verify_signature(token, key.public_key)


@pytest.mark.parametrize(
    "raw",
    [b"", b"a.b", b"a.b.c.d", b"!!!.e30.e30", b"e30.e30.e30"],
)
def test_malformed_tokens(raw: bytes) -> None:
    with pytest.raises(MalformedMessage):
        jws.parse(raw)


def test_alg_none_is_refused() -> None:
    header = b64url_encode(b'{"alg":"none","kid":"d"}')
    payload = b64url_encode(encode_payload(_start()))
    with pytest.raises(MalformedMessage, match="algorithm"):
        jws.parse(f"{header}.{payload}.".encode())


def test_a_signature_in_base64_rather_than_base64url_is_malformed() -> None:
    token = jws.sign(_start(), SigningKey.generate(), "dev1")
    header, payload, signature = token.split(b".")
    plain = signature[:-2] + b"+/"  # characters of base64's alphabet, not base64url's
    with pytest.raises(MalformedMessage, match="invalid JWS encoding: base64url has"):
        jws.parse(b".".join((header, payload, plain)))


def test_unknown_type_is_typed() -> None:
    header = b64url_encode(b'{"alg":"EdDSA","kid":"d"}')
    payload = b64url_encode(b'{"typ":"chat.voice.dance","iss":"a"}')
    with pytest.raises(UnknownMessageType):
        jws.parse(f"{header}.{payload}.AAAA".encode())


def test_joserfc_verifies_parley_tokens() -> None:
    key = SigningKey.generate()
    token = jws.sign(_start(), key, "dev1").decode()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # joserfc warns that RFC 9864 prefers "Ed25519"
        obj = jose_jws.deserialize_compact(
            token, OKPKey.import_key(_jwk(key, private=False)), algorithms=["EdDSA"]
        )
    assert obj.headers() == {"alg": "EdDSA", "kid": "dev1"}
    assert obj.payload == encode_payload(_start())


def test_parley_verifies_joserfc_tokens() -> None:
    key = SigningKey.generate()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        token = jose_jws.serialize_compact(
            {"alg": "EdDSA", "kid": "dev1"},
            encode_payload(_start()),
            OKPKey.import_key(_jwk(key, private=True)),
            algorithms=["EdDSA"],
        )
    parsed = jws.parse(token.encode())
    jws.verify_signature(parsed, key.public_key)
    assert parsed.message == _start()


def test_pyjwt_round_trips_with_parley() -> None:
    key = SigningKey.generate()
    private = jwt.PyJWK(_jwk(key, private=True), algorithm="EdDSA")
    public = jwt.PyJWK(_jwk(key, private=False), algorithm="EdDSA")
    claims = encode_payload(_start())

    as_dict = msgspec.json.decode(claims)
    theirs = jwt.encode(as_dict, private.key, algorithm="EdDSA", headers={"kid": "dev1"})
    parsed = jws.parse(theirs.encode())
    jws.verify_signature(parsed, key.public_key)
    assert parsed.message == _start()

    ours = jws.sign(_start(), key, "dev1").decode()
    decoded = jwt.decode(
        ours,
        public.key,
        algorithms=["EdDSA"],
        audience="bob",
        options={"verify_exp": False, "verify_iat": False},
    )
    assert decoded == as_dict


def test_deep_nesting_in_the_header_is_malformed_not_a_recursion_error() -> None:
    header = b64url_encode(b'{"alg":"EdDSA","kid":"d","x":' + deep_json() + b"}")
    payload = b64url_encode(encode_payload(_start()))
    with pytest.raises(MalformedMessage):
        jws.parse(f"{header}.{payload}.AAAA".encode())


def test_a_token_over_the_bound_is_refused_before_decoding() -> None:
    with pytest.raises(MalformedMessage, match="bytes; at most"):
        jws.parse(b"e30." + b"A" * jws.MAX_TOKEN_BYTES + b".AAAA")


def test_the_size_limit_is_checked_first_and_exactly() -> None:
    # 4 MiB of claims in base64url, plus 8 KiB for the header, signature and dots.
    limit = 4 * 1024 * 1024 * 4 // 3 + 8 * 1024
    assert limit == 5_600_597
    with pytest.raises(MalformedMessage, match="three dot-separated parts"):
        jws.parse(b"a" * limit)  # at the limit: parsed (and refused for its shape)
    with pytest.raises(MalformedMessage, match=f"at most {limit}"):
        jws.parse(b"a" * (limit + 1))


def test_a_header_of_4_kib_is_read_and_one_byte_more_is_refused() -> None:
    key = SigningKey.generate()
    claims = b64url_encode(encode_payload(_start()))

    def token_with_header_of(size: int) -> bytes:
        frame = b'{"alg":"EdDSA","kid":""}'
        header = frame.replace(b'""', b'"' + b"k" * (size - len(frame)) + b'"')
        assert len(header) == size
        signing_input = f"{b64url_encode(header)}.{claims}".encode()
        return signing_input + b"." + b64url_encode(key.sign(signing_input)).encode()

    assert jws.parse(token_with_header_of(4096)).header.kid == "k" * (4096 - 24)
    with pytest.raises(MalformedMessage, match="invalid JWS header"):
        jws.parse(token_with_header_of(4097))


def test_a_valid_token_with_a_fourth_part_is_refused() -> None:
    token = jws.sign(_start(), SigningKey.generate(), "dev1")
    with pytest.raises(MalformedMessage, match="three dot-separated parts"):
        jws.parse(token + b".AAAA")


def test_a_parsed_token_cannot_be_altered() -> None:
    token = jws.parse(jws.sign(_start(), SigningKey.generate(), "dev1"))
    with pytest.raises(AttributeError):
        token.signature = b"other"  # type: ignore[misc]
    with pytest.raises(AttributeError):
        token.header.kid = "other"  # type: ignore[misc]

"""Compact JWS (RFC 7515) with EdDSA over Ed25519 (RFC 8037).

Written on PyNaCl rather than taken from a JOSE library because Parley needs exactly one
algorithm and strict checks before anything is trusted: the header must say
``alg: EdDSA`` and name a ``kid``, nothing else is accepted (no ``none``, no key in the
header), and the claims decode straight into the typed payload classes. A test checks
that tokens interoperate with standard JOSE libraries in both directions.
"""

from __future__ import annotations

import msgspec

from parley.crypto.keys import SigningKey, VerifyKey, b64url_decode, b64url_encode
from parley.errors import MalformedMessage
from parley.protocol.decoding import KIB, Decoder
from parley.protocol.messages import MAX_CLAIMS_BYTES, Message, decode_payload, encode_payload


class Header(msgspec.Struct, frozen=True, omit_defaults=True):
    alg: str
    kid: str
    typ: str = "JWT"


# We sign with "EdDSA" as the public SDKs do; RFC 9864 deprecates it in favour of the
# fully-specified "Ed25519", which we accept too: device keys are always Ed25519.
_ED25519_ALGS = frozenset({"EdDSA", "Ed25519"})
_header_decoder: Decoder[Header] = Decoder(
    Header, format="json", error=MalformedMessage, what="invalid JWS header", max_bytes=4 * KIB
)
# Base64url of the claims and the header, the signature, two dots: room for all of it.
MAX_TOKEN_BYTES = MAX_CLAIMS_BYTES * 4 // 3 + 8 * KIB
_header_encoder = msgspec.json.Encoder()


class Token(msgspec.Struct, frozen=True):
    """A parsed, not yet verified, compact JWS."""

    header: Header
    message: Message
    signing_input: bytes
    signature: bytes


def sign(message: Message, key: SigningKey, kid: str) -> bytes:
    """Serialize ``message`` as a compact JWS signed by ``key``."""
    header = b64url_encode(_header_encoder.encode(Header(alg="EdDSA", kid=kid)))
    payload = b64url_encode(encode_payload(message))
    signing_input = f"{header}.{payload}".encode("ascii")
    return signing_input + b"." + b64url_encode(key.sign(signing_input)).encode("ascii")


def parse(token: bytes) -> Token:
    """Split and decode a compact JWS. Nothing in it is trusted yet."""
    if len(token) > MAX_TOKEN_BYTES:
        raise MalformedMessage(f"the JWS is {len(token)} bytes; at most {MAX_TOKEN_BYTES}")
    parts = token.split(b".")
    if len(parts) != 3:
        raise MalformedMessage("a compact JWS has three dot-separated parts")
    try:
        raw_header = b64url_decode(parts[0])
        raw_claims = b64url_decode(parts[1])
        signature = b64url_decode(parts[2])
    except ValueError as exc:  # binascii.Error is one
        raise MalformedMessage(f"invalid JWS encoding: {exc}") from None
    header = _header_decoder.decode(raw_header)
    if header.alg not in _ED25519_ALGS:
        raise MalformedMessage(f"unsupported JWS algorithm {header.alg!r}; only EdDSA")
    if not header.kid:
        raise MalformedMessage("JWS header has no kid")
    return Token(header, decode_payload(raw_claims), parts[0] + b"." + parts[1], signature)


def verify_signature(token: Token, key: VerifyKey) -> None:
    """Raise :class:`~parley.errors.BadSignature` unless ``key`` signed ``token``."""
    key.verify(token.signing_input, token.signature)

"""Compact JWS: :func:`jws.parse` then :func:`jws.verify_signature` -> a verified token,
or MalformedMessage / UnknownMessageType / BadSignature.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as fuzz/<target>.py

from fuzz import samples
from fuzz.harness import Target, deep_json, main
from parley.crypto import jws
from parley.crypto.keys import b64url_encode
from parley.errors import BadSignature, MalformedMessage, UnknownMessageType

_BOB = samples.BOB_KEY.public_key


def parse(data: bytes) -> jws.Token:
    token = jws.parse(data)
    jws.verify_signature(token, _BOB)
    return token


def _deep(part: bytes) -> bytes:
    return b64url_encode(part).encode()


TARGET = Target(
    name="jws",
    parse=parse,
    errors=(MalformedMessage, UnknownMessageType, BadSignature),
    seeds=samples.tokens,
    examples=[
        _deep(b'{"alg":"EdDSA","kid":"d1","x":' + deep_json() + b"}") + b".e30.AA",
        b"eyJhbGciOiJFZERTQSIsImtpZCI6ImQxIn0." + _deep(deep_json()) + b".AA",
    ],
)

if __name__ == "__main__":
    main(TARGET)

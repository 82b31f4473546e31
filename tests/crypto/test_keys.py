"""Base64url as JOSE has it (RFC 7515 §2): the URL-safe alphabet, no padding."""

from __future__ import annotations

import pytest

from parley.crypto.keys import SigningKey, b64url_decode, b64url_encode
from parley.errors import CredentialsError


@pytest.mark.parametrize("data", [b"", b"\x00", b"\xfb\xff", b"\xfb\xef\xbe", bytes(range(256))])
def test_round_trip_without_padding_in_the_url_safe_alphabet(data: bytes) -> None:
    text = b64url_encode(data)
    assert "=" not in text and "+" not in text and "/" not in text
    assert b64url_decode(text) == b64url_decode(text.encode()) == data


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("-_8=", "no padding"),
        ("+_8", "where base64 has"),  # base64's alphabet, not base64url's
        ("-/8", "where base64 has"),
        ("a", "cannot be 1 more than a multiple of 4"),  # a length no encoding has
        ("ab c", "Only base64 data"),
        ("ab!c", "Only base64 data"),
    ],
)
def test_anything_else_is_refused(text: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        b64url_decode(text)


def test_a_secret_key_in_base64_rather_than_base64url_is_a_credentials_error() -> None:
    seed = b64url_encode(b"\xfb" * 32)
    assert SigningKey.from_b64(seed).seed == b"\xfb" * 32
    with pytest.raises(CredentialsError, match="not base64url"):
        SigningKey.from_b64(seed.replace("-", "+").replace("_", "/"))

"""Ed25519 device keys (PyNaCl)."""

from __future__ import annotations

import base64

import nacl.exceptions
import nacl.signing

from parley.errors import BadSignature, CredentialsError


class SigningKey:
    """A device's private Ed25519 key."""

    __slots__ = ("_key",)

    def __init__(self, seed: bytes) -> None:
        if len(seed) != 32:
            raise CredentialsError("an Ed25519 secret key is 32 bytes")
        self._key = nacl.signing.SigningKey(seed)

    @classmethod
    def generate(cls) -> SigningKey:
        return cls(bytes(nacl.signing.SigningKey.generate()))

    @classmethod
    def from_b64(cls, text: str) -> SigningKey:
        try:
            return cls(b64url_decode(text))
        except ValueError as exc:
            raise CredentialsError(f"secret key is not base64url: {exc}") from None

    @property
    def seed(self) -> bytes:
        return bytes(self._key)

    def to_b64(self) -> str:
        return b64url_encode(self.seed)

    @property
    def public_key(self) -> VerifyKey:
        return VerifyKey(bytes(self._key.verify_key))

    def sign(self, data: bytes) -> bytes:
        """The 64-byte detached signature of ``data``."""
        return self._key.sign(data).signature


class VerifyKey:
    """A device's public Ed25519 key."""

    __slots__ = ("_key", "raw")

    def __init__(self, raw: bytes) -> None:
        if len(raw) != 32:
            raise BadSignature("an Ed25519 public key is 32 bytes")
        self.raw = raw
        self._key = nacl.signing.VerifyKey(raw)

    def verify(self, data: bytes, signature: bytes) -> None:
        """Raise :class:`BadSignature` unless ``signature`` signs ``data``."""
        try:
            self._key.verify(data, signature)
        except (nacl.exceptions.BadSignatureError, ValueError, TypeError):
            raise BadSignature("signature does not match the device key") from None

    def to_b64(self) -> str:
        return b64url_encode(self.raw)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, VerifyKey) and other.raw == self.raw

    def __hash__(self) -> int:
        return hash(self.raw)


def b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str | bytes) -> bytes:
    raw = text.encode("ascii") if isinstance(text, str) else text
    if b"=" in raw:
        raise ValueError("base64url in JOSE carries no padding")
    # b64decode with altchars maps - and _ to + and /, and lets + and / through as well.
    if b"+" in raw or b"/" in raw:
        raise ValueError("base64url has - and _ where base64 has + and /")
    return base64.b64decode(raw + b"=" * (-len(raw) % 4), altchars=b"-_", validate=True)

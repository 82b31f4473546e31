"""The sealed body of an envelope: one ciphertext for every device, one key per device.

A payload (the signed JWS) is encrypted once with a fresh random key under
XChaCha20-Poly1305; that key travels to each device in an Olm message of the session
between the sending device and that device (DESIGN.md §2). The associated data binds
the ciphertext to its envelope: its id, the sender identity and device, and the
recipient identity. A relay that alters a byte, or moves a body to another envelope or
another recipient, makes the authentication fail: :class:`~parley.errors.Tampered`.

The sender's Olm identity key rides along with its device-key signature, so a receiver
can start a session from a pre-key message without asking the relay for it.

Sans-I/O: bytes in, bytes out; sessions live in :mod:`parley.client.olm`.
"""

from __future__ import annotations

import secrets
from typing import Annotated

import msgspec
import nacl.bindings
import nacl.exceptions

from parley.errors import Tampered
from parley.protocol.decoding import MIB, Decoder

KEY_SIZE = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_KEYBYTES
NONCE_SIZE = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_NPUBBYTES
_AAD_DOMAIN = b"parley-sealed-v1"


class OlmCiphertext(msgspec.Struct, frozen=True, array_like=True):
    """An Olm message: ``type`` 0 is a pre-key message, 1 a normal one."""

    # Bounded here so vodozemac never sees a type it cannot convert (OverflowError).
    type: Annotated[int, msgspec.Meta(ge=0, le=1)]
    body: bytes


class SealedBody(msgspec.Struct, frozen=True, array_like=True):
    sender_key: bytes
    sender_key_signature: bytes
    # Device address ("identity:device") -> the message key, Olm-encrypted for it.
    keys: dict[str, OlmCiphertext]
    nonce: bytes
    ciphertext: bytes


_encoder = msgspec.msgpack.Encoder()
# A sealed body is an envelope's body, which the relay bounds far below this.
MAX_SEALED_BYTES = 64 * MIB
_decoder: Decoder[SealedBody] = Decoder(
    SealedBody,
    format="msgpack",
    error=Tampered,
    what="not a sealed body",
    max_bytes=MAX_SEALED_BYTES,
)


def associated_data(envelope_id: str, sender: str, sender_device: str, recipient: str) -> bytes:
    # NUL-separated: ids never contain NUL (ids.is_valid_id), so fields cannot shift.
    fields = (envelope_id, sender, sender_device, recipient)
    return _AAD_DOMAIN + b"".join(b"\x00" + field.encode() for field in fields)


def encrypt(plaintext: bytes, aad: bytes) -> tuple[bytes, bytes, bytes]:
    """``(key, nonce, ciphertext)`` of ``plaintext`` under a fresh random key."""
    key = secrets.token_bytes(KEY_SIZE)
    nonce = secrets.token_bytes(NONCE_SIZE)
    ciphertext = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(
        plaintext, aad, nonce, key
    )
    return key, nonce, ciphertext


def decrypt(key: bytes, nonce: bytes, ciphertext: bytes, aad: bytes) -> bytes:
    """The plaintext, or :class:`Tampered` if anything of it or ``aad`` was changed."""
    if len(key) != KEY_SIZE or len(nonce) != NONCE_SIZE:
        raise Tampered("the message key or nonce has the wrong size")
    try:
        return nacl.bindings.crypto_aead_xchacha20poly1305_ietf_decrypt(ciphertext, aad, nonce, key)
    except nacl.exceptions.CryptoError:
        raise Tampered("the ciphertext does not authenticate for this envelope") from None


def encode(body: SealedBody) -> bytes:
    return _encoder.encode(body)


def decode(data: bytes) -> SealedBody:
    """Parse a sealed body; :class:`Tampered` if it is not one."""
    return _decoder.decode(data)

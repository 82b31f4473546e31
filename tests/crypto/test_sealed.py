"""Sealed bodies: the AEAD binds the ciphertext to its envelope; HKDF matches RFC 5869."""

from __future__ import annotations

import msgspec
import nacl.bindings
import pytest
from fuzz.harness import deep_msgpack

from parley.crypto import sealed
from parley.crypto.kdf import hkdf_sha256
from parley.errors import Tampered

AAD = sealed.associated_data("env-1", "alice", "d1", "bob")


def test_round_trip_and_a_fresh_key_and_nonce_each_time() -> None:
    key, nonce, ciphertext = sealed.encrypt(b"payload", AAD)
    assert sealed.decrypt(key, nonce, ciphertext, AAD) == b"payload"
    again = sealed.encrypt(b"payload", AAD)
    assert again[0] != key and again[1] != nonce and again[2] != ciphertext


@pytest.mark.parametrize(
    "aad",
    [
        sealed.associated_data("env-2", "alice", "d1", "bob"),  # another envelope
        sealed.associated_data("env-1", "alice", "d2", "bob"),  # another sending device
        sealed.associated_data("env-1", "alice", "d1", "carol"),  # another recipient
        sealed.associated_data("env-1", "alice\x00d1", "", "bob"),  # fields shifted
    ],
)
def test_a_body_moved_to_another_envelope_is_tampered(aad: bytes) -> None:
    key, nonce, ciphertext = sealed.encrypt(b"payload", AAD)
    with pytest.raises(Tampered):
        sealed.decrypt(key, nonce, ciphertext, aad)


def test_every_flipped_byte_is_tampered() -> None:
    key, nonce, ciphertext = sealed.encrypt(b"payload", AAD)
    for i in range(len(ciphertext)):
        flipped = bytearray(ciphertext)
        flipped[i] ^= 0x01
        with pytest.raises(Tampered):
            sealed.decrypt(key, nonce, bytes(flipped), AAD)
    with pytest.raises(Tampered):
        sealed.decrypt(key[:-1], nonce, ciphertext, AAD)


def test_a_body_that_does_not_decode_is_tampered() -> None:
    body = sealed.SealedBody(
        sender_key=b"k" * 32,
        sender_key_signature=b"s" * 64,
        keys={"bob:d1": sealed.OlmCiphertext(0, b"olm")},
        nonce=b"n" * 24,
        ciphertext=b"c",
    )
    assert sealed.decode(sealed.encode(body)) == body
    with pytest.raises(Tampered):
        sealed.decode(sealed.encode(body)[:-3])
    with pytest.raises(Tampered):
        sealed.decode(b"eyJhbGciOiJFZERTQSJ9.e30.c2ln")  # a plaintext JWS


def test_hkdf_sha256_rfc5869_case_1() -> None:
    okm = hkdf_sha256(
        bytes.fromhex("0b" * 22),
        salt=bytes.fromhex("000102030405060708090a0b0c"),
        info=bytes.fromhex("f0f1f2f3f4f5f6f7f8f9"),
        length=42,
    )
    assert okm.hex() == (
        "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"
    )


def test_deep_nesting_is_tampered_not_a_recursion_error() -> None:
    # A sixth, unknown field after the five: msgspec recurses into it to skip it.
    body = sealed.encode(_body(0))
    with pytest.raises(Tampered):
        sealed.decode(b"\x96" + body[1:] + deep_msgpack())


@pytest.mark.parametrize("olm_type", [-1, 2, 2**64 - 1])
def test_an_olm_type_other_than_0_or_1_is_tampered(olm_type: int) -> None:
    # -1 reached vodozemac, which raised OverflowError converting it.
    with pytest.raises(Tampered):
        sealed.decode(sealed.encode(_body(olm_type)))


def _body(olm_type: int) -> sealed.SealedBody:
    return sealed.SealedBody(
        sender_key=b"k" * 32,
        sender_key_signature=b"s" * 64,
        keys={"bob:d1": sealed.OlmCiphertext(olm_type, b"olm")},
        nonce=b"n" * 24,
        ciphertext=b"c",
    )


@pytest.mark.parametrize(("key_size", "nonce_size"), [(31, 24), (33, 24), (32, 23), (32, 25)])
def test_a_message_key_or_nonce_of_the_wrong_size_is_tampered(
    key_size: int, nonce_size: int
) -> None:
    # XChaCha20-Poly1305: a 32-byte key and a 24-byte nonce, pinned by value.
    assert (sealed.KEY_SIZE, sealed.NONCE_SIZE) == (32, 24)
    key, nonce, ciphertext = sealed.encrypt(b"hello", b"aad")
    with pytest.raises(Tampered, match="wrong size"):
        sealed.decrypt(
            key[:key_size].ljust(key_size, b"k"),
            nonce[:nonce_size].ljust(nonce_size, b"n"),
            ciphertext,
            b"aad",
        )


def test_a_sealed_body_is_refused_over_64_mib_and_parsed_up_to_it() -> None:
    limit = 64 * 1024 * 1024
    with pytest.raises(Tampered, match=f"{limit + 1} long, over the {limit} allowed"):
        sealed.decode(b"\x00" * (limit + 1))
    with pytest.raises(Tampered, match="Expected `array`"):  # read, and refused for its shape
        sealed.decode(b"\x00" * limit)


def test_the_wire_shape_of_a_sealed_body() -> None:
    # msgpack arrays, in this field order: what other implementations read.
    body = sealed.SealedBody(
        sender_key=b"K",
        sender_key_signature=b"S",
        keys={"bob:d1": sealed.OlmCiphertext(type=0, body=b"O")},
        nonce=b"N",
        ciphertext=b"C",
    )
    assert msgspec.msgpack.decode(sealed.encode(body)) == [
        b"K",
        b"S",
        {"bob:d1": [0, b"O"]},
        b"N",
        b"C",
    ]


def test_a_parsed_sealed_body_cannot_be_altered() -> None:
    # Checked once and then read: no field of what was parsed can change under a reader.
    key = sealed.OlmCiphertext(type=1, body=b"O")
    body = sealed.SealedBody(
        sender_key=b"K", sender_key_signature=b"S", keys={"a:d": key}, nonce=b"N", ciphertext=b"C"
    )
    with pytest.raises(AttributeError):
        body.ciphertext = b"other"  # type: ignore[misc]
    with pytest.raises(AttributeError):
        key.type = 0  # type: ignore[misc]
    assert hash(key) == hash(sealed.OlmCiphertext(type=1, body=b"O"))  # frozen: hashable


@pytest.mark.parametrize("plaintext", [b"", b"p", b"payload" * 300])
@pytest.mark.parametrize("aad", [b"", AAD])
def test_the_ciphertext_is_libsodiums_xchacha20_poly1305(plaintext: bytes, aad: bytes) -> None:
    # Checked against PyNaCl's own binding of the same construction, both ways.
    key, nonce, ciphertext = sealed.encrypt(plaintext, aad)
    assert len(ciphertext) == len(plaintext) + sealed.TAG_SIZE
    assert (
        nacl.bindings.crypto_aead_xchacha20poly1305_ietf_decrypt(ciphertext, aad, nonce, key)
        == plaintext
    )
    theirs = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(plaintext, aad, nonce, key)
    assert theirs == ciphertext
    assert sealed.decrypt(key, nonce, theirs, aad) == plaintext


def test_a_ciphertext_shorter_than_its_tag_is_tampered() -> None:
    key, nonce, ciphertext = sealed.encrypt(b"", AAD)
    assert sealed.decrypt(key, nonce, ciphertext, AAD) == b""
    for cut in range(len(ciphertext)):
        with pytest.raises(Tampered, match="shorter than its tag"):
            sealed.decrypt(key, nonce, ciphertext[:cut], AAD)

"""HKDF-SHA256 (RFC 5869), for keys derived from a device's secret key.

Written on the standard library: Parley needs one hash and one output length, and a
runtime dependency for eight lines is not worth it.
"""

from __future__ import annotations

import hashlib
import hmac

_HASH_SIZE = hashlib.sha256().digest_size


def hkdf_sha256(ikm: bytes, *, info: bytes, salt: bytes = b"", length: int = 32) -> bytes:
    if not 0 < length <= 255 * _HASH_SIZE:
        raise ValueError(f"HKDF-SHA256 yields 1 to {255 * _HASH_SIZE} bytes")
    # RFC 5869 §2.2: an absent salt is a string of HashLen zeros.
    prk = hmac.digest(salt or bytes(_HASH_SIZE), ikm, "sha256")
    okm, block = b"", b""
    for counter in range(1, -(-length // _HASH_SIZE) + 1):
        block = hmac.digest(prk, block + info + bytes([counter]), "sha256")
        okm += block
    return okm[:length]

"""An envelope's sealed body, opened as a client does: :func:`sealed.decode`, each Olm
message through this device's sessions (vodozemac), then the payload's AEAD -> the
plaintext, or a DecryptionError (Tampered, NoKeyForDevice ...).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as fuzz/<target>.py

from fuzz import samples
from fuzz.harness import Target, deep_msgpack, main
from parley.crypto import sealed
from parley.errors import DecryptionError

_ALICE, _BOB = samples.olm_pair()
_PEER = ("bob", "d1")


def parse(data: bytes) -> list[bytes]:
    body = sealed.decode(data)
    opened = []
    for message in body.keys.values():
        try:
            _ALICE.needs_sender_key(_PEER, message)
            key = _ALICE.decrypt(_PEER, message, body.sender_key)
            opened.append(sealed.decrypt(key, body.nonce, body.ciphertext, samples.aad()))
        finally:
            # Not written anywhere, but a real client takes them after every open.
            _ALICE.take_changes()
    return opened


TARGET = Target(
    name="sealed_body",
    parse=parse,
    errors=(DecryptionError,),
    seeds=lambda: samples.sealed_bodies(_BOB),
    examples=[
        deep_msgpack(),
        # A sixth, unknown field that nests past the limit.
        b"\x96\xc4\x00\xc4\x00\x80\xc4\x00\xc4\x00" + deep_msgpack(),
        # An Olm message type vodozemac cannot even convert (was an OverflowError).
        b"\x95\xc4\x00\xc4\x00\x81\xa8alice:d1\x92\xff\xc4\x01x\xc4\x00\xc4\x00",
    ],
)

if __name__ == "__main__":
    main(TARGET)

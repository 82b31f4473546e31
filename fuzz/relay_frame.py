"""Frames the relay sends a client: :func:`decode_relay_frame` -> frame or MalformedFrame,
then what a client reads next: a key chain replayed (KeyChainError), a delivered sealed
body (Tampered).

What a client parses from whatever answers at its relay URL. The follow-ups also give
libFuzzer branches to tell frame kinds apart by (the decode itself is msgspec's C code).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as fuzz/<target>.py

from fuzz import samples
from fuzz.harness import Target, deep_msgpack, in_unknown_field_msgpack, main
from parley.crypto import sealed
from parley.errors import KeyChainError, MalformedFrame, Tampered
from parley.protocol import frames
from parley.protocol.keychain import KeyChain


def parse(data: bytes) -> frames.RelayFrame:
    frame = frames.decode_relay_frame(data)
    if isinstance(frame, frames.KeyChainFrame):
        KeyChain.from_entries(frame.identity, frame.entries)
    elif isinstance(frame, frames.Deliver):
        sealed.decode(frame.envelope.body)
    return frame


TARGET = Target(
    name="relay_frame",
    parse=parse,
    errors=(MalformedFrame, KeyChainError, Tampered),
    seeds=lambda: [frames.encode(frame) for frame in samples.relay_frames()],
    examples=[deep_msgpack(), in_unknown_field_msgpack(b"\xa1t\xa4done\xa3ref\x05")],
)

if __name__ == "__main__":
    main(TARGET)

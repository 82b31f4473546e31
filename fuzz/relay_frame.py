"""Frames the relay sends a client: :func:`decode_relay_frame` -> frame or MalformedFrame.

What a client parses from whatever answers at its relay URL.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as fuzz/<target>.py

from fuzz import samples
from fuzz.harness import Target, deep_msgpack, in_unknown_field_msgpack, main
from parley.errors import MalformedFrame
from parley.protocol import frames

TARGET = Target(
    name="relay_frame",
    parse=frames.decode_relay_frame,
    errors=(MalformedFrame,),
    seeds=lambda: [frames.encode(frame) for frame in samples.relay_frames()],
    examples=[deep_msgpack(), in_unknown_field_msgpack(b"\xa1t\xa4done\xa3ref\x05")],
)

if __name__ == "__main__":
    main(TARGET)

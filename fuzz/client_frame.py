"""Frames a client sends the relay: :func:`decode_client_frame` -> frame or MalformedFrame.

The first thing the relay parses from anyone who connects, before authentication.
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
    name="client_frame",
    parse=frames.decode_client_frame,
    errors=(MalformedFrame,),
    seeds=lambda: [frames.encode(frame) for frame in samples.client_frames()],
    examples=[
        deep_msgpack(),
        # The input: a Confirm with an unknown field nested past the limit.
        b"\x82\xa1t\xa7confirm\xa1x" + deep_msgpack(),
        in_unknown_field_msgpack(b"\xa1t\xa7confirm"),
    ],
)

if __name__ == "__main__":
    main(TARGET)

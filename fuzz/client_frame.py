"""Frames a client sends the relay: :func:`decode_client_frame` -> frame or MalformedFrame,
then the key chain entry a Register or AppendKey carries -> its body or KeyChainError.

The first thing the relay parses from anyone who connects, before authentication. The
decode is one call into msgspec's C code, which atheris cannot see into; the follow-up
per frame kind gives libFuzzer a branch to tell the kinds apart by.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as fuzz/<target>.py

from fuzz import samples
from fuzz.harness import Target, deep_msgpack, in_unknown_field_msgpack, main
from parley.errors import KeyChainError, MalformedFrame
from parley.protocol import frames


def parse(data: bytes) -> frames.ClientFrame:
    frame = frames.decode_client_frame(data)
    if isinstance(frame, frames.Register | frames.AppendKey):
        frame.entry.decoded()  # what the relay reads next
    return frame


TARGET = Target(
    name="client_frame",
    parse=parse,
    errors=(MalformedFrame, KeyChainError),
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

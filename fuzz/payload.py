"""The JSON claims of a signed message: :func:`decode_payload` -> a typed payload, or
MalformedMessage / UnknownMessageType.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as fuzz/<target>.py

from fuzz import samples
from fuzz.harness import Target, deep_json, in_unknown_field_json, main
from parley.errors import MalformedMessage, UnknownMessageType
from parley.protocol import messages

TARGET = Target(
    name="payload",
    parse=messages.decode_payload,
    errors=(MalformedMessage, UnknownMessageType),
    seeds=lambda: [messages.encode_payload(message) for message in samples.payloads()],
    examples=[
        deep_json(),
        in_unknown_field_json(b'"typ":"chat.voice.stop"'),
        # An Any-typed field holding the nesting.
        b'{"typ":"chat.voice.setup","data":{"x":' + deep_json() + b"}}",
    ],
)

if __name__ == "__main__":
    main(TARGET)

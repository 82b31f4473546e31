"""What the browser softphone's page sends: :func:`web.messages.decode` and
:func:`web.messages.tag_of` -> a page message (or its tag), or MalformedPageMessage.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as fuzz/<target>.py

from fuzz import samples
from fuzz.harness import Target, deep_json, main
from parley.web import messages


def parse(data: bytes) -> messages.PageMessage:
    text = data.decode("utf-8", "surrogateescape")
    messages.tag_of(text)
    return messages.decode(text)


TARGET = Target(
    name="page_message",
    parse=parse,
    errors=(messages.MalformedPageMessage,),
    seeds=lambda: [
        b'{"t":"place","peer":"bob","sdp":' + messages._encoder.encode(samples.SDP) + b"}",
        b'{"t":"accept","call_id":"k","sdp":""}',
        b'{"t":"decline","call_id":"k"}',
        b'{"t":"busy","call_id":"k"}',
        b'{"t":"hangup","call_id":"k"}',
        b'{"t":"media_failed","call_id":"k","detail":"no microphone"}',
    ],
    examples=[deep_json(), b'{"t":"hangup","x":' + deep_json() + b"}", b'"\\ud800"'],
)

if __name__ == "__main__":
    main(TARGET)

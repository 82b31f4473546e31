"""The one decoder every parser uses: size, shape, depth and kind of input all map to
the parser's own error."""

from __future__ import annotations

from typing import Literal

import msgspec
import pytest
from fuzz.harness import deep_json, deep_msgpack, in_unknown_field_json

from parley.errors import MalformedFrame
from parley.protocol.decoding import Decoder


class Point(msgspec.Struct):
    x: int


Format = Literal["json", "msgpack"]


def _decoder(fmt: Format, max_bytes: int = 1 << 20) -> Decoder[Point]:
    return Decoder(Point, format=fmt, error=MalformedFrame, what="not a point", max_bytes=max_bytes)


def test_a_valid_input_decodes() -> None:
    assert _decoder("json").decode(b'{"x": 1}') == Point(1)
    assert _decoder("msgpack").decode(msgspec.msgpack.encode(Point(2))) == Point(2)


def test_input_over_the_bound_is_refused_before_decoding() -> None:
    decoder = _decoder("json", max_bytes=8)
    assert decoder.decode(b'{"x":12}') == Point(12)
    with pytest.raises(MalformedFrame, match="9 long, over the 8 allowed"):
        decoder.decode(b'{"x":123}')


@pytest.mark.parametrize(
    ("fmt", "data"),
    [
        ("msgpack", deep_msgpack()),
        ("json", deep_json()),
        # Nesting an unknown field holds: a typed decode recurses into it to skip it.
        ("json", in_unknown_field_json(b'"x":1')),
        ("msgpack", b"\x82\xa1y" + deep_msgpack() + b"\xa1x\x01"),
    ],
)
def test_nesting_past_the_recursion_limit_is_the_typed_error(fmt: Format, data: bytes) -> None:
    with pytest.raises(MalformedFrame, match="not a point"):
        _decoder(fmt).decode(data)


@pytest.mark.parametrize(
    ("fmt", "data"),
    [
        ("json", '{"x": "\ud800"}'),  # text no UTF-8 encoder takes
        ("msgpack", "text"),  # msgpack is bytes only
        ("json", 7),  # not even text
        ("json", b'{"x": "one"}'),
        ("msgpack", b"\xc1"),
    ],
)
def test_input_of_the_wrong_kind_is_the_typed_error(fmt: Format, data: object) -> None:
    with pytest.raises(MalformedFrame, match="not a point"):
        _decoder(fmt).decode(data)  # type: ignore[arg-type]

"""Frames: both directions round-trip; the wrong direction and garbage are typed errors."""

from __future__ import annotations

import contextlib

import pytest
from fuzz.harness import deep_msgpack, in_unknown_field_msgpack
from hypothesis import given
from hypothesis import strategies as st

from parley.errors import MalformedFrame
from parley.protocol import frames


def test_round_trips() -> None:
    send = frames.Send(ref=1, envelope_id="e", recipient="bob", body=b"x", expires_at=2.0)
    assert frames.decode_client_frame(frames.encode(send)) == send
    deliver = frames.Deliver(
        offset=7,
        envelope=frames.Envelope(
            id="e",
            sender="a",
            sender_device="d",
            recipient="b",
            body=b"x",
            sent_at=1.0,
            expires_at=2.0,
        ),
        sender_keys_version=1,
    )
    assert frames.decode_relay_frame(frames.encode(deliver)) == deliver


def test_direction_is_enforced() -> None:
    with pytest.raises(MalformedFrame):
        frames.decode_client_frame(frames.encode(frames.Done(ref=1)))


@given(st.binary(max_size=200))
def test_garbage_never_escapes_as_another_error(data: bytes) -> None:
    for decode in (frames.decode_client_frame, frames.decode_relay_frame):
        with contextlib.suppress(MalformedFrame):
            decode(data)


def test_auth_message_binds_identity_and_device() -> None:
    nonce = b"n" * 32
    assert frames.auth_message(nonce, "a", "bd") != frames.auth_message(nonce, "ab", "d")


@pytest.mark.parametrize(
    "data",
    [
        # The frame: a Confirm whose unknown field nests past the recursion limit.
        b"\x83\xa1t\xa7confirm\xa6offset\x05\xa1x" + deep_msgpack(),
        in_unknown_field_msgpack(b"\xa1t\xa4done"),
        deep_msgpack(),
    ],
)
def test_deep_nesting_is_malformed_not_a_recursion_error(data: bytes) -> None:
    for decode in (frames.decode_client_frame, frames.decode_relay_frame):
        with pytest.raises(MalformedFrame):
            decode(data)


def test_a_text_message_is_malformed_not_a_type_error() -> None:
    # A WebSocket text message arrives as str.
    with pytest.raises(MalformedFrame):
        frames.decode_client_frame("confirm")  # type: ignore[arg-type]


def test_a_frame_over_the_ceiling_is_refused_before_decoding() -> None:
    padding = b"\x00" * frames.MAX_FRAME_BYTES
    with pytest.raises(MalformedFrame, match="over the"):
        frames.decode_client_frame(frames.encode(frames.Confirm(offset=1)) + padding)

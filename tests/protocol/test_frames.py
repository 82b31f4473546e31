"""Frames: both directions round-trip; the wrong direction and garbage are typed errors."""

from __future__ import annotations

import contextlib

import pytest
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

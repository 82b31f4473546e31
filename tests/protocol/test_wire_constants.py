"""The wire's constants, pinned by their literal values.

Clients and relays of other versions (and other implementations) depend on these
exact strings and numbers; a change to one must show up here as a failing test, not
pass silently because a test compared the code's constant with itself.
"""

from __future__ import annotations

import inspect

import msgspec

from parley.protocol import frames
from parley.protocol.frames import ErrorCode
from parley.protocol.messages import MessageType
from parley.relay import connection, session


def test_frame_tags() -> None:
    tags = {
        name: cls.__struct_config__.tag
        for name, cls in vars(frames).items()
        if inspect.isclass(cls) and issubclass(cls, frames.Frame) and cls is not frames.Frame
    }
    assert tags == {
        "Challenge": "challenge",
        "Welcome": "welcome",
        "Registered": "registered",
        "Deliver": "deliver",
        "Ack": "ack",
        "Error": "error",
        "Connections": "connections",
        "KeyChainFrame": "keys",
        "Done": "done",
        "KeyCount": "key_count",
        "ClaimedKeys": "claimed_keys",
        "Register": "register",
        "Authenticate": "auth",
        "Send": "send",
        "Confirm": "confirm",
        "Permit": "permit",
        "Unpermit": "unpermit",
        "ListConnections": "list_connections",
        "GetKeys": "get_keys",
        "AppendKey": "append_key",
        "PublishKeys": "publish_keys",
        "ClaimKeys": "claim_keys",
        "Watch": "watch",
        "Unwatch": "unwatch",
        "Presence": "presence",
    }
    # The tag travels in field "t" of a msgpack map.
    encoded = msgspec.msgpack.decode(frames.encode(frames.Done(ref=7)))
    assert encoded == {"t": "done", "ref": 7}


def test_error_codes() -> None:
    assert {code.name: code.value for code in ErrorCode} == {
        "MALFORMED": "malformed",
        "UNSUPPORTED": "unsupported",
        "TOO_LARGE": "too_large",
        "RATE_LIMITED": "rate_limited",
        "NOT_AUTHENTICATED": "not_authenticated",
        "AUTH_FAILED": "auth_failed",
        "DEVICE_REVOKED": "device_revoked",
        "IDENTITY_EXISTS": "identity_exists",
        "UNKNOWN_IDENTITY": "unknown_identity",
        "UNKNOWN_RECIPIENT": "unknown_recipient",
        "NOT_PERMITTED": "not_permitted",
        "INVALID_KEY_CHAIN": "invalid_key_chain",
        "CONFLICT": "conflict",
        "EXPIRED": "expired",
        "STALE_DEVICES": "stale_devices",
        "REGISTRATION_CLOSED": "registration_closed",
        "INVALID_INVITE": "invalid_invite",
        "INTERNAL": "internal",
    }


def test_close_codes() -> None:
    assert session.CLOSE_REVOKED == 4001
    assert session.CLOSE_AUTH_FAILED == 4003
    assert session.CLOSE_AUTH_TIMEOUT == 4008
    assert session.CLOSE_REPLACED == 4009
    assert session.CLOSE_GOING_AWAY == 1001
    assert session.CLOSE_TRY_AGAIN_LATER == 1013
    assert connection.CLOSE_POLICY == 1008


def test_voice_message_types() -> None:
    assert [t.value for t in MessageType] == [
        "chat.voice.setup",
        "chat.voice.start",
        "chat.voice.accept",
        "chat.voice.busy",
        "chat.voice.stop",
        "chat.voice.summary",
    ]

"""Client <-> relay frames: one schema imported by both ends.

Each WebSocket binary message carries exactly one frame, msgpack-encoded, tagged by
``t``. Requests carry a client-chosen ``ref`` that the relay echoes in its reply
(:class:`Ack`, :class:`Error`, or a typed result), so a client may pipeline requests.

Session, in order::

    relay  -> Challenge(nonce)
    client -> Register(ref, entry, name)         optional, before authenticating
    relay  -> Registered(ref, identity) | Error
    client -> Authenticate(identity, device, signature, resume_after)
    relay  -> Welcome(...) | Error(code=auth_failed | device_revoked)
    then, in any order:
    client -> Send | Confirm | Permit | Unpermit | ListConnections | GetKeys | AppendKey
              | PublishKeys | ClaimKeys
    relay  -> Ack | Error | Deliver | Connections | KeyChainFrame | Done
              | KeyCount | ClaimedKeys

The signature in :class:`Authenticate` covers :func:`auth_message`, binding the nonce
to the identity and device, so a captured answer is useless on another connection.

End-to-end encryption (DESIGN.md §2): each device publishes its Olm identity key, signed
by its Ed25519 device key over :func:`identity_key_message`, one-time keys and a
fallback key (:class:`PublishKeys`). A sender claims one one-time key per device it has
no session with (:class:`ClaimKeys`); a device with none left gets its fallback key
claimed instead, which the relay keeps handing out until the device replaces it. A
:class:`Send` names every device it was encrypted for, by identity key; the relay
refuses it with ``stale_devices`` unless that is exactly the recipient's active devices
plus the sender's other active devices, so a sender learns about added, revoked and
re-keyed devices on its next message. The relay pushes a :class:`KeyCount` (no ``ref``)
when a device runs low on one-time keys or its fallback key was handed out.
"""

from __future__ import annotations

import enum
from typing import Annotated, TypeAlias

import msgspec

from parley.errors import MalformedFrame
from parley.protocol.decoding import MIB, Decoder
from parley.protocol.keychain import ChainEntry

PROTOCOL_VERSION = 1
DEFAULT_MAX_BODY = 64 * 1024
# The WebSocket layer allows a little more than a body so an oversized body gets a
# typed ``too_large`` error instead of a closed connection.
FRAME_OVERHEAD = 4 * 1024
# The transport enforces the relay's configured limit; this ceiling is what a frame
# decoder accepts whatever the configuration (a relay's max_body stays well below it).
MAX_FRAME_BYTES = 64 * MIB


# Inbox offsets are SQLite integers: anything outside 0..2**63-1 is a malformed frame,
# not an overflow deep in the relay's store.
Offset = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]


class ErrorCode(enum.StrEnum):
    MALFORMED = "malformed"
    UNSUPPORTED = "unsupported"
    TOO_LARGE = "too_large"
    RATE_LIMITED = "rate_limited"
    NOT_AUTHENTICATED = "not_authenticated"
    AUTH_FAILED = "auth_failed"
    DEVICE_REVOKED = "device_revoked"
    IDENTITY_EXISTS = "identity_exists"
    UNKNOWN_IDENTITY = "unknown_identity"
    UNKNOWN_RECIPIENT = "unknown_recipient"
    NOT_PERMITTED = "not_permitted"
    INVALID_KEY_CHAIN = "invalid_key_chain"
    CONFLICT = "conflict"
    EXPIRED = "expired"
    STALE_DEVICES = "stale_devices"
    REGISTRATION_CLOSED = "registration_closed"
    INVALID_INVITE = "invalid_invite"
    INTERNAL = "internal"


class Frame(msgspec.Struct, frozen=True, tag_field="t", kw_only=True):
    pass


# A device keeps about this many one-time keys at the relay, and tops up below the low mark.
ONE_TIME_KEYS_TARGET = 100
ONE_TIME_KEYS_LOW = 10
# What the relay stores per device at most, so a device cannot fill its disk.
ONE_TIME_KEYS_MAX = 2 * ONE_TIME_KEYS_TARGET
CURVE25519_KEY_SIZE = 32


class DeviceRef(msgspec.Struct, frozen=True, array_like=True):
    """A device a :class:`Send` was encrypted for, by the Olm identity key used."""

    identity: str
    device: str
    identity_key: bytes


class ClaimedDevice(msgspec.Struct, frozen=True, array_like=True):
    """An active device's signed Olm identity key and, if one was claimed, a one-time key."""

    device: str
    identity_key: bytes
    signature: bytes
    one_time_key: bytes | None
    # The key given out is the device's fallback key: it had no one-time key left.
    fallback: bool = False


class Envelope(msgspec.Struct, frozen=True, kw_only=True):
    """What the relay stores and routes: metadata in the clear, an opaque body."""

    id: str
    sender: str
    sender_device: str
    recipient: str
    body: bytes
    sent_at: float
    expires_at: float


# -- relay -> client --------------------------------------------------------------


class Challenge(Frame, frozen=True, kw_only=True, tag="challenge"):
    nonce: bytes
    version: int = PROTOCOL_VERSION
    max_body: int = DEFAULT_MAX_BODY


class Welcome(Frame, frozen=True, kw_only=True, tag="welcome"):
    identity: str
    device: str
    # The relay delivers everything after this offset, then whatever arrives.
    resume_after: Offset


class Registered(Frame, frozen=True, kw_only=True, tag="registered"):
    ref: int
    identity: str


class Deliver(Frame, frozen=True, kw_only=True, tag="deliver"):
    offset: Offset
    envelope: Envelope
    # Length of the sender's key chain now, so a receiver knows when to refetch it.
    sender_keys_version: int


class Ack(Frame, frozen=True, kw_only=True, tag="ack"):
    ref: int
    envelope_id: str


class Error(Frame, frozen=True, kw_only=True, tag="error"):
    ref: int | None = None
    code: ErrorCode
    message: str
    # Seconds until the same request may succeed (``rate_limited``); None: not said.
    retry_after: float | None = None


class Connections(Frame, frozen=True, kw_only=True, tag="connections"):
    ref: int
    identities: list[str]


class KeyChainFrame(Frame, frozen=True, kw_only=True, tag="keys"):
    ref: int
    identity: str
    entries: list[ChainEntry]


class Done(Frame, frozen=True, kw_only=True, tag="done"):
    ref: int


class KeyCount(Frame, frozen=True, kw_only=True, tag="key_count"):
    """One-time keys the relay holds for this device: a reply, or a push when low."""

    ref: int | None = None
    one_time_keys: int
    # False: the relay holds no fallback key of this device that it has not handed out
    # yet, so the device publishes a new one. True by default, so a relay that knows no
    # fallback keys never asks for one.
    fallback_key: bool = True


class ClaimedKeys(Frame, frozen=True, kw_only=True, tag="claimed_keys"):
    """Every active device of ``identity`` that has published an identity key."""

    ref: int
    identity: str
    devices: list[ClaimedDevice]


# -- client -> relay --------------------------------------------------------------


class Register(Frame, frozen=True, kw_only=True, tag="register"):
    ref: int
    entry: ChainEntry
    name: str | None = None
    # An invitation token, for a relay that registers only invited identities.
    token: str | None = None


class Authenticate(Frame, frozen=True, kw_only=True, tag="auth"):
    identity: str
    device: str
    signature: bytes
    resume_after: Offset = 0


class Send(Frame, frozen=True, kw_only=True, tag="send"):
    ref: int
    envelope_id: str
    recipient: str
    body: bytes
    expires_at: float
    # The devices ``body`` is encrypted for (see the module docstring).
    devices: list[DeviceRef] = []


class Confirm(Frame, frozen=True, kw_only=True, tag="confirm"):
    """Everything up to and including ``offset`` has been processed."""

    offset: Offset


class Permit(Frame, frozen=True, kw_only=True, tag="permit"):
    ref: int
    identity: str


class Unpermit(Frame, frozen=True, kw_only=True, tag="unpermit"):
    ref: int
    identity: str


class ListConnections(Frame, frozen=True, kw_only=True, tag="list_connections"):
    ref: int


class GetKeys(Frame, frozen=True, kw_only=True, tag="get_keys"):
    ref: int
    identity: str


class AppendKey(Frame, frozen=True, kw_only=True, tag="append_key"):
    """Add or revoke a device key: the entry must extend the sender's own chain."""

    ref: int
    entry: ChainEntry


class PublishKeys(Frame, frozen=True, kw_only=True, tag="publish_keys"):
    """Publish (or re-publish) this device's Olm identity key and more one-time keys.

    A different identity key than the one on record (a device that lost its state)
    replaces it and drops the one-time keys of the old one. A ``fallback_key`` replaces
    the device's fallback key.
    """

    ref: int
    identity_key: bytes
    signature: bytes
    one_time_keys: list[bytes] = []
    fallback_key: bytes | None = None


class ClaimKeys(Frame, frozen=True, kw_only=True, tag="claim_keys"):
    """Claim one one-time key per device of ``identity`` (needs its permission).

    ``sessions`` maps the devices the claimer already has a session with to that
    session's identity key: no one-time key is claimed for those unless the key changed.
    """

    ref: int
    identity: str
    sessions: dict[str, bytes] = {}


class Watch(Frame, frozen=True, kw_only=True, tag="watch"):
    """Follow which devices of these identities are online; each must permit the watcher."""

    ref: int
    identities: list[str]


class Unwatch(Frame, frozen=True, kw_only=True, tag="unwatch"):
    ref: int
    identities: list[str]


class Presence(Frame, frozen=True, kw_only=True, tag="presence"):
    """Relay -> watcher: the devices of ``identity`` connected now (empty: offline).

    Sent once when a watch starts and again whenever that set changes.
    """

    identity: str
    devices: list[str]


RelayFrame: TypeAlias = (
    Challenge
    | Welcome
    | Registered
    | Deliver
    | Ack
    | Error
    | Connections
    | KeyChainFrame
    | Done
    | Presence
    | KeyCount
    | ClaimedKeys
)
ClientFrame: TypeAlias = (
    Register
    | Authenticate
    | Send
    | Confirm
    | Permit
    | Unpermit
    | ListConnections
    | GetKeys
    | AppendKey
    | Watch
    | Unwatch
    | PublishKeys
    | ClaimKeys
)

_encoder = msgspec.msgpack.Encoder()
_relay_decoder: Decoder[RelayFrame] = Decoder(
    RelayFrame,
    format="msgpack",
    error=MalformedFrame,
    what="not a relay frame",
    max_bytes=MAX_FRAME_BYTES,
)
_client_decoder: Decoder[ClientFrame] = Decoder(
    ClientFrame,
    format="msgpack",
    error=MalformedFrame,
    what="not a client frame",
    max_bytes=MAX_FRAME_BYTES,
)


def encode(frame: Frame) -> bytes:
    return _encoder.encode(frame)


def decode_client_frame(data: bytes) -> ClientFrame:
    """Decode a frame sent by a client; :class:`MalformedFrame` for anything else."""
    return _client_decoder.decode(data)


def decode_relay_frame(data: bytes) -> RelayFrame:
    """Decode a frame sent by the relay; :class:`MalformedFrame` for anything else."""
    return _relay_decoder.decode(data)


def auth_message(nonce: bytes, identity: str, device: str) -> bytes:
    """The bytes a device signs to answer a :class:`Challenge`."""
    return b"parley-auth-v1\x00" + nonce + b"\x00" + identity.encode() + b"\x00" + device.encode()


def identity_key_message(identity: str, device: str, identity_key: bytes) -> bytes:
    """The bytes a device's Ed25519 key signs to vouch for its Olm identity key."""
    return (
        b"parley-olm-identity-v1\x00"
        + identity.encode()
        + b"\x00"
        + device.encode()
        + b"\x00"
        + identity_key
    )

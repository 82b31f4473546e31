"""What relay nodes tell each other over the bus: wake-ups and invalidations, never data.

A node that misses some of these loses nothing: the store holds the truth, and a node
told it may have missed events (``Bus`` calls ``on_gap``) re-reads what it serves.
Encoded as tagged msgpack (``encode`` / ``decode``) for buses that cross processes.
"""

from __future__ import annotations

from typing import TypeAlias

import msgspec


class Rows(msgspec.Struct, frozen=True, tag="rows"):
    """``device`` of ``identity`` has inbox rows up to ``offset``: a node serving it reads
    them from the store."""

    identity: str
    device: str
    offset: int


class Revoked(msgspec.Struct, frozen=True, tag="revoked"):
    """``device`` was revoked: a node serving it closes its connections."""

    identity: str
    device: str


class ChainChanged(msgspec.Struct, frozen=True, tag="chain"):
    """``identity``'s key chain (or published keys) changed: drop what is cached of it."""

    identity: str


class PermitsChanged(msgspec.Struct, frozen=True, tag="permits"):
    """``owner`` permitted or revoked someone: drop its cached permits."""

    owner: str


class KeysLow(msgspec.Struct, frozen=True, tag="keys"):
    """``device`` is low on one-time keys (or its fallback key was handed out): the node
    serving it tells it, so it publishes more."""

    identity: str
    device: str
    one_time_keys: int
    fallback_key: bool


class SessionOpened(msgspec.Struct, frozen=True, tag="session"):
    """``device`` authenticated on ``node`` at ``since`` (the node's clock): any other
    node closes its connections of that device that are older (one device, one node).
    After a gap every node says it again for its connections, so a lost one is made up
    for without closing the newer connection."""

    identity: str
    device: str
    node: str
    since: float = 0.0


class PresenceChanged(msgspec.Struct, frozen=True, tag="presence"):
    """The devices of ``identity`` connected to ``node`` are now ``devices``."""

    identity: str
    node: str
    devices: tuple[str, ...]


BusEvent: TypeAlias = (
    Rows | Revoked | ChainChanged | PermitsChanged | KeysLow | SessionOpened | PresenceChanged
)

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(BusEvent)


def encode(event: BusEvent) -> bytes:
    return _encoder.encode(event)


def decode(data: bytes) -> BusEvent:
    """An event; raises ``msgspec.DecodeError`` / ``ValidationError`` for anything else."""
    return _decoder.decode(data)

"""What the relay needs from storage, as a structural protocol.

:class:`~parley.relay.store.sqlite.SqliteStore` is the default backend; a PostgreSQL one only
has to provide the same coroutines. Every method that writes returns after the write
is durable, which is what lets the relay acknowledge a Send only once it is stored.

A store decides nothing about policy (permissions, limits, key chain validity): the
relay checks those first and hands the store only requests it has accepted.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Protocol

from parley.protocol.frames import Envelope
from parley.protocol.keychain import ChainEntry, EntryBody

# Why an invitation did not register an identity (the store cannot tell which it was).
INVITE_REFUSED = "the invitation token is unknown, used or expired; ask for a new one"


class StoreStatus(enum.Enum):
    STORED = "stored"
    # An envelope with this id from the same sender to the same recipient exists: a
    # retry, store nothing new.
    DUPLICATE = "duplicate"
    # An envelope with this id exists from another sender, or to another recipient.
    CONFLICT = "conflict"


@dataclass(frozen=True, slots=True)
class InboxRow:
    """One device's copy of a stored envelope, at its offset in that device's inbox."""

    identity: str
    device: str
    offset: int


@dataclass(frozen=True, slots=True)
class StoreResult:
    status: StoreStatus
    # The inbox rows created, one per target device; empty unless STORED.
    rows: tuple[InboxRow, ...] = ()


@dataclass(frozen=True, slots=True)
class InboxItem:
    offset: int
    envelope: Envelope


@dataclass(frozen=True, slots=True)
class IdentityKey:
    """A device's published Olm identity key with its device-key signature."""

    key: bytes
    signature: bytes


@dataclass(frozen=True, slots=True)
class KeyStatus:
    """What the relay holds for one device: how many one-time keys, and whether a
    fallback key it has not handed out yet."""

    one_time_keys: int
    fallback_key: bool


@dataclass(frozen=True, slots=True)
class Claim:
    """The key claimed for one device: a one-time key, else its fallback key (None: it
    has published neither)."""

    device: str
    one_time_key: bytes | None
    fallback: bool
    status: KeyStatus


class RelayStore(Protocol):
    """What the relay keeps: identities and their key chains, invitations, permissions, inboxes and
    Olm keys. :class:`SqliteStore` is the default; PostgreSQL serves many nodes."""

    async def open(self) -> None:
        """Create or migrate the schema and get ready to serve."""
        ...

    async def close(self) -> None: ...

    async def ping(self) -> None:
        """Return once the store answered a trivial query; raise
        :class:`~parley.errors.StoreError` if it cannot (for ``/health``)."""
        ...

    async def create_identity(
        self,
        identity: str,
        name: str | None,
        genesis: ChainEntry,
        body: EntryBody,
        now: float,
        invite: bytes | None = None,
    ) -> bool:
        """Store a new identity with its genesis entry; False if the id is taken.

        With ``invite`` (an invitation token's hash), the invitation is used up in the
        same transaction; :class:`~parley.errors.RegistrationRefused` if it is unknown,
        used or expired (and nothing is stored)."""
        ...

    async def create_invites(self, invites: list[bytes], now: float, expires_at: float) -> None:
        """Store invitation token hashes, each good for one registration until
        ``expires_at``."""
        ...

    async def load_chain(self, identity: str) -> list[ChainEntry] | None:
        """The identity's key chain entries in order; None for an unknown identity."""
        ...

    async def append_entry(self, identity: str, entry: ChainEntry, body: EntryBody) -> None:
        """Append a checked entry: an add creates the device with an empty inbox; a
        revoke marks the device revoked and drops its inbox and its published keys."""
        ...

    async def load_permits(self, owner: str) -> set[str]:
        """The identities ``owner`` accepts messages from."""
        ...

    async def permit(self, owner: str, peer: str) -> None: ...

    async def unpermit(self, owner: str, peer: str) -> None: ...

    def store_envelope(self, envelope: Envelope) -> Awaitable[StoreResult]:
        """Store the envelope once, with an inbox row for every active device of the
        recipient and every other active device of the sender. (This and ``confirm``,
        made for every message, may hand back a future instead of a coroutine.)"""
        ...

    async def stored_from(self, sender: str, recipient: str, envelope_id: str) -> bool:
        """Whether ``sender`` already had ``envelope_id`` stored for ``recipient`` (until
        it expires)."""
        ...

    async def read_inbox(
        self, identity: str, device: str, after: int, limit: int, max_bytes: int | None = None
    ) -> list[InboxItem]:
        """Up to ``limit`` inbox items with offset > ``after``, in offset order; with
        ``max_bytes``, only as many as it takes for their bodies to reach that size
        (at least one), so one read never holds more than that plus one body."""
        ...

    async def confirmed_offset(self, identity: str, device: str) -> int:
        """The highest offset the device has confirmed (0 if none)."""
        ...

    def confirm(self, identity: str, device: str, offset: int) -> Awaitable[None]:
        """Raise the device's confirmed offset to ``offset`` (never lower it) and drop
        its inbox rows up to it."""
        ...

    async def drop_rows(self, identity: str, device: str, offsets: list[int]) -> int:
        """Delete these inbox rows of one device; returns how many existed."""
        ...

    async def load_identity_keys(self, identity: str) -> dict[str, IdentityKey]:
        """The published identity keys of the identity's active devices, by device."""
        ...

    async def publish_keys(
        self,
        identity: str,
        device: str,
        identity_key: IdentityKey,
        one_time_keys: list[bytes],
        fallback_key: bytes | None,
    ) -> KeyStatus:
        """Record the device's identity key, add one-time keys and replace its fallback
        key if one is given (the same key again keeps whether it was handed out); returns
        what it holds now. A changed identity key drops the one-time and fallback keys
        of the old one first; a revoked device stores nothing."""
        ...

    async def key_status(self, identity: str, device: str) -> KeyStatus: ...

    async def claim_keys(self, identity: str, devices: list[str]) -> list[Claim]:
        """Remove and return one one-time key (the oldest) per device; for a device with
        none left, return its fallback key, kept but marked as handed out."""
        ...

    async def expire(self, now: float) -> int:
        """Delete inbox rows and envelopes that expired at or before ``now``; returns
        the number of inbox rows deleted (copies that were never delivered)."""
        ...

"""The relay's storage: the :class:`RelayStore` protocol (``base``) and its backends.

Nothing outside this package knows which backend runs: the relay is handed a store and
calls the protocol's coroutines. SQLite (``sqlite``, with its writer thread in
``dbthread``) is the embedded default.
"""

from __future__ import annotations

from parley.relay.store.base import (
    Claim,
    IdentityKey,
    InboxItem,
    InboxRow,
    KeyStatus,
    RelayStore,
    StoreResult,
    StoreStatus,
)

__all__ = [
    "Claim",
    "IdentityKey",
    "InboxItem",
    "InboxRow",
    "KeyStatus",
    "RelayStore",
    "StoreResult",
    "StoreStatus",
]

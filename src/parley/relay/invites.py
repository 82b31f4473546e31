"""Invitation tokens: how a relay with ``--registration token`` lets someone register.

A token is a random string handed to one person (``parley relay invite``); it registers
one identity, once, before it expires. The store keeps only its SHA-256, so a copy of
the database does not hold usable tokens.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from pathlib import Path

from parley.relay.store import RelayStore
from parley.relay.store.location import open_store

# Longest token a Register may carry (ours are 32 characters); longer is malformed.
MAX_TOKEN = 128


def token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


async def issue(store: RelayStore, count: int, valid_for: float, now: float) -> list[str]:
    """``count`` new tokens, each good for one registration for ``valid_for`` seconds."""
    tokens = [secrets.token_urlsafe(24) for _ in range(count)]
    await store.create_invites([token_hash(t) for t in tokens], now, now + valid_for)
    return tokens


async def issue_in(location: str | None, data_dir: Path, count: int, valid_for: float) -> list[str]:
    """:func:`issue` into the store ``location`` names (see ``relay.store.location``),
    opened for this and closed again; the relay may be running on it."""
    store = open_store(location, data_dir)
    await store.open()
    try:
        return await issue(store, count, valid_for, time.time())
    finally:
        await store.close()

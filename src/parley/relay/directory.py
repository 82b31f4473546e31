"""Identities, their key chains and their permissions, cached in front of the store.

Every Send needs the recipient's existence, its permissions and the sender's chain
length; reading those from the store each time would put a database round trip in
front of every message. Writes through this node update the caches write-through;
writes through another node reach here as bus events (``ChainChanged``,
``PermitsChanged``), and :meth:`Directory.refresh_chain` / :meth:`Directory.forget_permits`
bring the caches up to date. A chain is only ever extended after reading it from the
store, so a stale cache can never make two nodes accept conflicting entries. Unknown
identities are not cached, so probing random ids cannot grow memory.
"""

from __future__ import annotations

import asyncio
import enum

from parley.errors import KeyChainError
from parley.protocol.keychain import ChainEntry, EntryBody, KeyChain
from parley.relay.store import RelayStore


class Registration(enum.Enum):
    CREATED = "created"
    # The same genesis entry was registered before: registering is idempotent.
    ALREADY = "already"
    TAKEN = "taken"


class Directory:
    def __init__(self, store: RelayStore) -> None:
        self._store = store
        self._chains: dict[str, KeyChain] = {}
        self._permits: dict[str, set[str]] = {}
        self._permit_epoch = 0  # counts invalidations, so a stale load is not cached
        # Chain changes are check-then-write; one at a time keeps two appends from
        # both extending the same head.
        self._chain_lock = asyncio.Lock()

    async def chain(self, identity: str) -> KeyChain | None:
        cached = self._chains.get(identity)
        if cached is not None:
            return cached
        entries = await self._store.load_chain(identity)
        if entries is None:
            return None
        # A write may have cached the chain while we were reading: keep that one.
        return self._chains.setdefault(identity, KeyChain.from_entries(identity, entries))

    def cached_chain(self, identity: str) -> KeyChain | None:
        """The chain if it is in memory, as it is for every authenticated identity."""
        return self._chains.get(identity)

    async def register(
        self, genesis: ChainEntry, name: str | None, now: float, invite: bytes | None = None
    ) -> Registration:
        """Register the identity that ``genesis`` creates; KeyChainError if invalid.

        ``invite``: an invitation token's hash, used up by this registration
        (RegistrationRefused if it cannot be); a repeat of a registration that
        succeeded needs none."""
        body = genesis.decoded()
        chain = KeyChain(body.identity)
        chain.append(genesis)
        async with self._chain_lock:
            existing = await self.chain(body.identity)
            if existing is not None:
                same = existing.entries[0] == genesis
                return Registration.ALREADY if same else Registration.TAKEN
            if not await self._store.create_identity(
                body.identity, name, genesis, body, now, invite
            ):
                return Registration.TAKEN
            # Not cached: registering many identities must not grow the relay's memory;
            # the chain is read when the identity is first used.
            return Registration.CREATED

    async def append(self, identity: str, entry: ChainEntry) -> EntryBody:
        """Extend ``identity``'s chain with ``entry``; KeyChainError if it does not."""
        async with self._chain_lock:
            # From the store, not the cache: another node may have extended it.
            chain = await self.refresh_chain(identity)
            if chain is None:
                raise KeyChainError(f"unknown identity {identity!r}")
            body = chain.check(entry)
            await self._store.append_entry(identity, entry, body)
            chain.append(entry)
            return body

    async def refresh_chain(self, identity: str) -> KeyChain | None:
        """Read ``identity``'s chain from the store again and cache it."""
        entries = await self._store.load_chain(identity)
        if entries is None:
            self._chains.pop(identity, None)
            return None
        chain = KeyChain.from_entries(identity, entries)
        cached = self._chains.get(identity)
        if cached is None or len(chain.entries) >= len(cached.entries):
            self._chains[identity] = chain
            return chain
        return cached  # a longer one was cached while we read (a write of ours)

    def cached_identities(self) -> list[str]:
        return list(self._chains)

    def forget_permits(self, owner: str | None = None) -> None:
        """Drop the cached permits of ``owner`` (of everyone: None); read again on use."""
        self._permit_epoch += 1
        if owner is None:
            self._permits.clear()
        else:
            self._permits.pop(owner, None)

    def cached_permits(self, owner: str) -> set[str] | None:
        """:meth:`permits` if they are in memory (None: they must be loaded)."""
        return self._permits.get(owner)

    async def permits(self, owner: str) -> set[str]:
        """The identities ``owner`` accepts messages from (do not mutate)."""
        while True:
            cached = self._permits.get(owner)
            if cached is not None:
                return cached
            # A load that began before an invalidation may have read the old permits:
            # only one that no forget_permits() overtook is cached.
            epoch = self._permit_epoch
            loaded = await self._store.load_permits(owner)
            if self._permit_epoch == epoch:
                return self._permits.setdefault(owner, loaded)

    async def permit(self, owner: str, peer: str) -> None:
        peers = await self.permits(owner)
        await self._store.permit(owner, peer)
        peers.add(peer)

    async def unpermit(self, owner: str, peer: str) -> None:
        peers = await self.permits(owner)
        await self._store.unpermit(owner, peer)
        peers.discard(peer)

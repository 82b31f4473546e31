"""Device keys of other identities: fetched from the relay, replayed and trusted locally.

The relay only stores key chains; every chain is replayed here with
:meth:`KeyChain.from_entries`, so a relay cannot slip in a key nobody signed. A chain
is cached (in memory and in the state file) and refetched only when a delivery says the
sender's chain has grown (``sender_keys_version``) or names a ``kid`` the cached chain
does not know. A refetched chain must extend the cached one: chains are append-only, so
anything else is a relay rewriting history.
"""

from __future__ import annotations

import logging

from parley.client.connection import Connection
from parley.client.state import State
from parley.crypto.keys import VerifyKey
from parley.errors import KeyChainError, UnknownIdentity, UnknownKey
from parley.protocol.frames import GetKeys, KeyChainFrame
from parley.protocol.keychain import KeyChain

log = logging.getLogger(__name__)


async def fetch_chain(connection: Connection, identity: str) -> KeyChain:
    """Fetch ``identity``'s chain and replay it; :class:`KeyChainError` if it is invalid."""
    reply = await connection.request(lambda ref: GetKeys(ref=ref, identity=identity), KeyChainFrame)
    if reply.identity != identity:
        raise KeyChainError(f"asked for the keys of {identity}, got {reply.identity}")
    return KeyChain.from_entries(identity, reply.entries)


class Directory:
    def __init__(self, connection: Connection, state: State) -> None:
        self._connection = connection
        self._state = state
        self._chains: dict[str, KeyChain] = {}

    async def current_key(self, identity: str, kid: str, min_version: int) -> VerifyKey:
        """The active key of ``identity``'s device ``kid``.

        Raises :class:`RevokedKey` / :class:`UnknownKey` when the device is not active.
        """
        chain = self._cached(identity)
        if chain is None or chain.version < min_version or not _knows(chain, kid):
            chain = await self._refresh(identity, chain)
        return chain.current_key(kid)

    def _cached(self, identity: str) -> KeyChain | None:
        chain = self._chains.get(identity)
        if chain is None:
            entries = self._state.load_chain(identity)
            if entries is not None:
                # Replayed again on load: the state file is not more trusted than the relay.
                chain = KeyChain.from_entries(identity, entries)
                self._chains[identity] = chain
        return chain

    async def _refresh(self, identity: str, cached: KeyChain | None) -> KeyChain:
        try:
            chain = await fetch_chain(self._connection, identity)
        except UnknownIdentity:
            raise UnknownKey(f"the relay has no key chain for {identity}") from None
        if cached is not None and chain.entries[: cached.version] != cached.entries:
            raise KeyChainError(f"the relay's key chain of {identity} rewrites its history")
        log.debug("key chain of %s at version %d", identity, chain.version)
        self._chains[identity] = chain
        self._state.save_chain(identity, chain.entries)
        return chain


def _knows(chain: KeyChain, kid: str) -> bool:
    return kid in chain.active or kid in chain.revoked

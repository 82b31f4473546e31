"""The directory's caches: a load that an invalidation overtook is never cached."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, cast

from parley.relay.directory import Directory
from parley.relay.store import RelayStore
from parley.relay.store.sqlite import SqliteStore

from .helpers import WAIT, Identity


class HeldLoads:
    """A store whose first load_permits reads the data now but answers only when let go,
    as a query that returned while a bus event raced it."""

    def __init__(self, store: SqliteStore) -> None:
        self._store = store
        self.release = asyncio.Event()
        self.held = asyncio.Event()
        self._first = True

    async def load_permits(self, owner: str) -> set[str]:
        loaded = await self._store.load_permits(owner)
        if self._first:
            self._first = False
            self.held.set()
            await self.release.wait()
        return loaded

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


async def test_a_permit_load_overtaken_by_an_invalidation_is_not_cached(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "relay.db")
    await store.open()
    try:
        alice = Identity.create("alice")
        body = alice.genesis.decoded()
        assert await store.create_identity("alice", None, alice.genesis, body, 0.0)
        held = HeldLoads(store)
        directory = Directory(cast(RelayStore, held))
        loading = asyncio.create_task(directory.permits("alice"))  # reads: nobody permitted
        await asyncio.wait_for(held.held.wait(), WAIT)
        await store.permit("alice", "bob")  # another node permits bob ...
        directory.forget_permits("alice")  # ... and its bus event arrives
        held.release.set()
        assert await asyncio.wait_for(loading, WAIT) == {"bob"}
        assert await directory.permits("alice") == {"bob"}
    finally:
        await store.close()

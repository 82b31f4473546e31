"""What the PostgreSQL stores (the relay's and the proxy's) share about their pools."""

from __future__ import annotations

from typing import Any


async def keep_session(conn: Any) -> None:
    """A pool's reset between two uses of a connection (asyncpg's ``reset=``): nothing
    to undo. asyncpg's default sends one more query each time (advisory unlocks, CLOSE
    ALL, UNLISTEN, RESET ALL), a round trip per transaction, for state neither store
    leaves behind on a pooled connection: no SET (settings go with the connection's
    start), LISTEN (the proxy listens on a connection of its own), cursor or session
    advisory lock. A transaction left open is still rolled back by the pool itself
    before this runs."""

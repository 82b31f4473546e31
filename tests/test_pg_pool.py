"""keep_session: a pooled connection comes back as the store left it, and a transaction
left open is still rolled back (asyncpg does that before the reset runs)."""

from __future__ import annotations

import asyncpg
from tests.relay.store.pg import postgres_dsn, postgres_server  # noqa: F401 - fixtures

from parley.pg_pool import keep_session


async def test_a_transaction_left_open_is_rolled_back_and_settings_stay(
    postgres_dsn: str,  # noqa: F811 - the fixture
) -> None:
    pool = await asyncpg.create_pool(
        postgres_dsn,
        min_size=1,
        max_size=1,
        server_settings={"application_name": "parley-test-pool"},
        reset=keep_session,
    )
    try:
        async with pool.acquire() as conn:
            await conn.execute("CREATE TABLE kept (n int)")
            await conn.execute("BEGIN")
            await conn.execute("INSERT INTO kept VALUES (1)")
        async with pool.acquire() as conn:  # the only connection: the same one
            assert not conn.is_in_transaction()
            assert await conn.fetchval("SELECT count(*) FROM kept") == 0
            assert await conn.fetchval("SHOW application_name") == "parley-test-pool"
    finally:
        await pool.close()

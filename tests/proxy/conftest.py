"""The component's unit tests run real clients against the relay core in-process; the
store's tests (and the component's) run on SQLite and on PostgreSQL."""

from tests.client.conftest import relay, world
from tests.proxy.pg import postgres_database, postgres_server, store_location
from tests.relay.store.pg import postgres_dsn

__all__ = [
    "postgres_database",
    "postgres_dsn",
    "postgres_server",
    "relay",
    "store_location",
    "world",
]

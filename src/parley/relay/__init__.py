"""The relay: authenticated connections, a directory of identities, durable inboxes.

Start one with :class:`RelayServer` (WebSocket + ``/health`` + ``/metrics``) or, for
tests and embedding, drive a :class:`Relay` over any transport.
"""

from parley.relay.config import RegistrationPolicy, RelayConfig
from parley.relay.core import Relay
from parley.relay.metrics import RelayMetrics
from parley.relay.server import RelayServer, run_relay
from parley.relay.store import RelayStore
from parley.relay.store.sqlite import SqliteStore

__all__ = [
    "RegistrationPolicy",
    "Relay",
    "RelayConfig",
    "RelayMetrics",
    "RelayServer",
    "RelayStore",
    "SqliteStore",
    "run_relay",
]

"""The calling proxy: the app in the middle of operator <-> customer calls (DESIGN.md §1.4).

:class:`CallProxy` runs the sans-I/O core (:mod:`parley.protocol.proxy`) on a client,
with its bindings and leg records in a :class:`ProxyStore`: SQLite by default, or
PostgreSQL (:class:`parley.proxy.postgres.PostgresProxyStore`, the ``postgres`` extra);
:func:`open_proxy_store` opens either from a ``--store`` location.
"""

from parley.protocol.proxy import Binding, Pool, ProxyConfig
from parley.proxy.component import CallProxy
from parley.proxy.location import open_proxy_store
from parley.proxy.records import Leg, LegRecord, Route
from parley.proxy.store import ProxyStore, SqliteProxyStore, default_store_path

__all__ = [
    "Binding",
    "CallProxy",
    "Leg",
    "LegRecord",
    "Pool",
    "ProxyConfig",
    "ProxyStore",
    "Route",
    "SqliteProxyStore",
    "default_store_path",
    "open_proxy_store",
]

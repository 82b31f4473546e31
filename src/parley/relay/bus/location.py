"""Which bus a relay node uses, from one setting: ``--bus`` / ``PARLEY_BUS``.

- none: :class:`~parley.relay.bus.memory.LocalBus`, for a node that is the only one;
- ``redis://HOST:PORT/N`` (or ``rediss://``): Redis, between every node that shares one
  PostgreSQL store (needs the ``parley[redis]`` extra). ``?prefix=NAME`` names the keys
  and channel (default ``parley``), so several relays can share one Redis.
"""

from __future__ import annotations

import importlib
from typing import Final
from urllib.parse import parse_qsl, urlencode, urlsplit

from parley.errors import InvalidBusLocation
from parley.relay.bus.base import Bus
from parley.relay.bus.memory import LocalBus

BUS_VARIABLE: Final = "PARLEY_BUS"
_REDIS_SCHEMES: Final = ("redis", "rediss", "unix")


def backend(location: str | None) -> str:
    """``local`` or ``redis``."""
    if not location:
        return "local"
    if urlsplit(location).scheme in _REDIS_SCHEMES:
        return "redis"
    raise InvalidBusLocation(
        f"--bus {location!r}: expected redis://HOST:PORT/N (or nothing, for a single node)"
    )


def open_bus(location: str | None, node: str) -> Bus:
    """The bus ``location`` names, for node ``node`` (not started: the relay starts it)."""
    if backend(location) == "local":
        return LocalBus(node)
    try:
        module = importlib.import_module("parley.relay.bus.redis")
    except ImportError as exc:
        raise InvalidBusLocation(
            f"a Redis bus needs the redis extra ({exc.name} is missing): "
            "pip install 'parley[redis]'"
        ) from exc
    assert location is not None  # backend() said redis
    url, prefix = split_prefix(location)
    bus: Bus = module.RedisBus(url, node=node, prefix=prefix)
    return bus


def split_prefix(location: str) -> tuple[str, str]:
    """The Redis URL without its ``prefix`` parameter, and the prefix."""
    parts = urlsplit(location)
    query = parse_qsl(parts.query, keep_blank_values=True)
    prefix = next((value for key, value in query if key == "prefix"), "parley")
    if not prefix:
        raise InvalidBusLocation("--bus ...?prefix= needs a name")
    rest = urlencode([(key, value) for key, value in query if key != "prefix"])
    return parts._replace(query=rest).geturl(), prefix

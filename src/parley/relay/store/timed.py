"""A store that times every operation into ``parley_relay_store_seconds``.

Wraps any :class:`~parley.relay.store.base.RelayStore`, so each backend is measured the
same way, labelled with its name: where a deployment spends its time shows per backend.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, cast

from parley.relay.metrics import RelayMetrics
from parley.relay.store.base import RelayStore

T = TypeVar("T")

# The protocol's coroutines; open and close are not worth a sample.
_TIMED = frozenset(
    {
        "create_identity",
        "create_invites",
        "load_chain",
        "append_entry",
        "load_permits",
        "permit",
        "unpermit",
        "store_envelope",
        "stored_from",
        "read_inbox",
        "confirmed_offset",
        "confirm",
        "drop_rows",
        "load_identity_keys",
        "publish_keys",
        "key_status",
        "claim_keys",
        "expire",
    }
)


class TimedStore:
    def __init__(self, store: RelayStore, metrics: RelayMetrics, backend: str) -> None:
        self._store = store
        self._histogram = metrics.store_seconds
        self._backend = backend

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._store, name)
        if name not in _TIMED:
            return attribute
        observe = self._histogram.labels(self._backend, name).observe
        timed = _timed(cast(Callable[..., Awaitable[Any]], attribute), observe)
        # Built once: from now on the instance attribute is found before __getattr__.
        self.__dict__[name] = timed
        return timed


def _timed(
    operation: Callable[..., Awaitable[T]], observe: Callable[[float], None]
) -> Callable[..., Awaitable[T]]:
    @functools.wraps(operation)
    def timed(*args: Any, **kwargs: Any) -> Awaitable[T]:
        started = time.perf_counter()
        pending = operation(*args, **kwargs)
        if isinstance(pending, asyncio.Future):
            # Timed by a callback: a future handed back stays a future (see the store's
            # store_envelope), so the relay still waits on it without a task.
            pending.add_done_callback(lambda _: observe(time.perf_counter() - started))
            return pending
        return _observed(pending, started, observe)

    return timed


async def _observed(pending: Awaitable[T], started: float, observe: Callable[[float], None]) -> T:
    try:
        return await pending
    finally:
        observe(time.perf_counter() - started)


def timed_store(store: RelayStore, metrics: RelayMetrics) -> RelayStore:
    """``store`` with its operations timed, labelled by ``store.backend``."""
    backend = str(getattr(store, "backend", type(store).__name__))
    return cast(RelayStore, TimedStore(store, metrics, backend))

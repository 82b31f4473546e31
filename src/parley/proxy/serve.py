"""``parley proxy``: a :class:`CallProxy` as a long-running process.

It prints plain lines (scripts and tests wait for them): one per binding or pool taken
up, one ``parley proxy ready as <id>`` once it is connected and the parties are
permitted, one per leg that ended, and ``parley proxy stopped`` on SIGINT or SIGTERM.

Stopping ends no call: the calls are in the store and the next start resumes them.
Draining does: SIGUSR1, or SIGTERM with ``drain``, makes the proxy answer new starts
busy (``parley proxy draining, N calls up``) and exit once the last call has ended; a
SIGINT or a second SIGTERM then stops it at once.

With a lease (``--lease SECONDS``) it is the one active proxy of its store: while another
holds the lease it prints ``parley proxy standby: <holder> is active`` and waits, and it
takes over (resuming the calls) once that one stops or its lease runs out. An active
proxy that loses its lease stops at once, with exit code 1.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from parley.client.client import Client
from parley.errors import StoreError
from parley.protocol.proxy import Binding, ProxyConfig
from parley.proxy.component import CallProxy
from parley.proxy.lease import Lease
from parley.proxy.location import describe, open_proxy_store
from parley.proxy.records import LegRecord, Route


async def serve(
    credentials: Path,
    store_at: str | Path,
    config: ProxyConfig,
    say: Callable[[str], None],
    *,
    drain: bool = False,
    lease_seconds: float | None = None,
) -> None:
    """Run the proxy of ``credentials`` on the store at ``store_at`` (a file path or a
    ``postgresql://`` URL, as :func:`~parley.proxy.location.open_proxy_store` takes).
    ``drain``: SIGTERM drains (as SIGUSR1 always does) instead of stopping.
    ``lease_seconds``: be the one active proxy of the store (:mod:`.lease`), waiting on
    standby while another is."""
    stopping, draining = asyncio.Event(), asyncio.Event()

    def terminated() -> None:
        if drain and not draining.is_set():
            draining.set()
        else:
            stopping.set()

    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGINT, stopping.set)
    loop.add_signal_handler(signal.SIGTERM, terminated)
    loop.add_signal_handler(signal.SIGUSR1, draining.set)
    store = open_proxy_store(store_at)
    lease = None if lease_seconds is None else Lease(store, lease_seconds)
    stop = asyncio.ensure_future(stopping.wait())
    lost: list[str] = []
    keeper: asyncio.Task[None] | None = None
    try:
        if lease is not None:
            await _unless(
                stop, lease.acquire(lambda holder: say(f"parley proxy standby: {holder} is active"))
            )
            if stopping.is_set():
                return
        client = Client.from_credentials(credentials)
        async with CallProxy(
            client,
            store,
            config,
            on_leg=lambda leg: say(leg_line(leg)),
            on_route=lambda route: say(route_line(route)),
            holder=None if lease is None else lease.holder,
        ) as proxy:
            say(f"parley proxy ready as {client.id} (store {describe(store_at)})")
            if lease is not None:
                keeper = asyncio.create_task(_keep(lease, lost, stopping))
            await _unless(stop, draining.wait())
            if not stopping.is_set():
                say(f"parley proxy draining, {len(proxy.core.bridges)} calls up")
                await _unless(stop, proxy.drain())
        if lease is not None and not lost:
            await lease.release()  # a standby takes over at once
    finally:
        stop.cancel()
        if keeper is not None:
            keeper.cancel()
        await store.close()
        say("parley proxy stopped")
    if lost:
        raise StoreError(f"the proxy stopped: {lost[0]}")


async def _keep(lease: Lease, lost: list[str], stopping: asyncio.Event) -> None:
    """Renew ``lease``; once lost, say why in ``lost`` and stop the proxy."""
    lost.append(await lease.keep())
    stopping.set()


async def _unless(stop: asyncio.Future[Any], work: Coroutine[Any, Any, Any]) -> None:
    """Run ``work`` until it ends or ``stop`` does."""
    task = asyncio.ensure_future(work)
    try:
        await asyncio.wait((stop, task), return_when=asyncio.FIRST_COMPLETED)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def route_line(route: Route) -> str:
    if isinstance(route, Binding):
        return (
            f"parley proxy bound {route.cid}: operator {route.operator}"
            f" ({route.operator_name}) -> customer {route.customer}"
        )
    return (
        f"parley proxy bound {route.cid}: customer {route.customer}"
        f" -> hunt group {', '.join(route.operators)}"
    )


def leg_line(leg: LegRecord) -> str:
    talked = "never answered" if leg.answered is None else f"{leg.duration:.1f} s connected"
    return (
        f"parley proxy leg ended: {leg.call_id} cid {leg.cid} {leg.leg}"
        f" {leg.caller} -> {leg.callee}: {leg.reason}, {talked}"
    )

"""``parley proxy``: a :class:`CallProxy` as a long-running process.

It prints plain lines (scripts and tests wait for them): one per binding or pool taken
up, one ``parley proxy ready as <id>`` once it is connected and the parties are
permitted, one per leg that ended, and ``parley proxy stopped`` on SIGINT or SIGTERM.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from pathlib import Path

from parley.client.client import Client
from parley.protocol.proxy import Binding, ProxyConfig
from parley.proxy.component import CallProxy
from parley.proxy.location import describe, open_proxy_store
from parley.proxy.records import LegRecord, Route


async def serve(
    credentials: Path, store_at: str | Path, config: ProxyConfig, say: Callable[[str], None]
) -> None:
    """Run the proxy of ``credentials`` on the store at ``store_at`` (a file path or a
    ``postgresql://`` URL, as :func:`~parley.proxy.location.open_proxy_store` takes)."""
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)
    store = open_proxy_store(store_at)
    client = Client.from_credentials(credentials)
    try:
        async with CallProxy(
            client,
            store,
            config,
            on_leg=lambda leg: say(leg_line(leg)),
            on_route=lambda route: say(route_line(route)),
        ):
            say(f"parley proxy ready as {client.id} (store {describe(store_at)})")
            await stopping.wait()
    finally:
        await store.close()
    say("parley proxy stopped")


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

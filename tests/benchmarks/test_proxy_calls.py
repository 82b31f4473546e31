"""The proxied-calls benchmark runs end to end (tiny sizes; no timing is asserted)."""

from __future__ import annotations

import re

import asyncpg
import pytest
from tests.benchmarks.helpers import run_benchmark
from tests.relay.store.pg import PostgresServer, postgres_server

__all__ = ["postgres_server"]  # the fixture, used below

pytestmark = pytest.mark.e2e


SMALL = (
    *("--pairs", "2", "--calls", "3", "--window", "2", "--rounds", "2"),
    *("--latency-calls", "2"),
    *("--paced-rate", "20", "--paced-seconds", "0.1"),
)


async def test_benchmark_reports_rates_latencies_and_ratios() -> None:
    text = await run_benchmark("proxy_calls.py", *SMALL, "--held", "3")
    assert "proxy store=SQLite" in text
    assert "3 more calls connected through the proxy and left up meanwhile" in text
    assert "best of 2 alternating rounds per mode" in text
    assert re.search(r"proxied rounds, calls/s: \d+, \d+\n", text)
    assert "direct        6 calls in" in text
    assert "proxied       6 calls in" in text
    assert "ratio proxied/direct calls/s = " in text
    assert "ratio proxied/direct setup latency (median) = " in text
    assert "CPU during the proxied rounds, cores (per call): bench " in text
    assert "setup, paced at 20 calls/s for 0.1 s:" in text
    assert "proxied    p50 " in text
    # Warm-up (one proxied call per pair), 3 held, 2 latency calls, 2 rounds of 6 calls
    # and 2 paced calls, two legs each.
    assert "leg records in the proxy's store: 42" in text


async def test_with_a_postgresql_store_the_benchmark_runs_and_drops_its_database(
    postgres_server: PostgresServer,
) -> None:
    text = await run_benchmark(
        "proxy_calls.py", *SMALL, "--store-postgres", postgres_server.admin_dsn
    )
    assert "proxy store=PostgreSQL" in text
    assert "ratio proxied/direct setup latency (median) = " in text
    # Warm-up 2, latency 2, rounds 12 and paced 2 calls, two legs each.
    assert "leg records in the proxy's store: 36" in text
    found = re.search(r"^cleaned up: database (parley_bench_proxy_\w+) dropped$", text, re.M)
    assert found, text
    admin = await asyncpg.connect(postgres_server.admin_dsn)
    try:
        count = "SELECT count(*) FROM pg_database WHERE datname = $1"
        assert await admin.fetchval(count, found.group(1)) == 0
    finally:
        await admin.close()

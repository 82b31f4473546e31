"""The relay-cluster benchmark runs end to end in its quick mode (no timing is asserted):
on PostgreSQL and Redis where they answer, and the SQLite figures alone where not."""

from __future__ import annotations

import re

import asyncpg
import pytest
import redis.asyncio
from tests.benchmarks.helpers import run_benchmark
from tests.redis_server import free_port

pytestmark = pytest.mark.e2e

THROUGHPUT = r"\s+40 messages in\s+\d+\.\d{3} s =\s+\d+\.\d msg/s"
LATENCY = r"\s+p50\s+\d+\.\d\d ms  p99\s+\d+\.\d\d ms  \(n=10\)"
FALLBACK = "is not reachable at"
SQLITE_ONLY = ": reporting the SQLite figures only$"


async def test_benchmark_reports_latency_throughput_and_ratios() -> None:
    text = await run_benchmark("relay_cluster.py", "--quick")
    assert "client-side cryptography" in text, text
    assert re.search(rf"^sqlite{THROUGHPUT}", text, re.M), text
    assert re.search(rf"^sqlite{LATENCY}", text, re.M), text
    if FALLBACK in text:  # no PostgreSQL or Redis here: the SQLite figures only
        assert re.search(rf"not reachable at .*{SQLITE_ONLY}", text, re.M), text
        assert "pg-1node" not in text, text
        return
    for mode in ("pg-1node", "pg-2nodes"):
        assert re.search(rf"^{mode}{THROUGHPUT}", text, re.M), text
    assert "(two nodes, one PostgreSQL + one Redis; 1 of 2 pairs across nodes)" in text
    for mode in ("same-node", "cross-node"):
        assert re.search(rf"^{mode}{LATENCY}", text, re.M), text
    goal = r"^ratio cross/same latency p50 = \d+\.\d{3} \(goal <= 2: (NOT )?met\)  p99 = "
    assert re.search(goal, text, re.M), text
    assert re.search(r"^ratio 2-node/1-node PG throughput = \d+\.\d{3}$", text, re.M), text
    assert re.search(r"^ratio PG 1-node/SQLite throughput = \d+\.\d{3}$", text, re.M), text
    assert len(re.findall(r"^  cpu s: client .* relays .* postgres ", text, re.M)) == 2, text
    assert "relay nodes logged 0 warning/error lines" in text, text
    # What the run made is gone: its database, and its keys in Redis.
    found = re.search(
        r"^cleaned up: database (parley_bench_\w+) dropped, Redis keys under (\S+) deleted$",
        text,
        re.M,
    )
    assert found, text
    database, prefix = found.groups()
    admin = await asyncpg.connect("postgresql://postgres@127.0.0.1:5432/postgres")
    try:
        left = await admin.fetchval("SELECT count(*) FROM pg_database WHERE datname = $1", database)
        assert left == 0
    finally:
        await admin.close()
    client = redis.asyncio.Redis.from_url("redis://127.0.0.1:6379/0")
    try:
        assert [key async for key in client.scan_iter(match=f"{prefix}:*")] == []
    finally:
        await client.aclose()


async def test_without_redis_it_says_so_and_reports_sqlite_only() -> None:
    closed = f"redis://127.0.0.1:{free_port()}/0"
    text = await run_benchmark("relay_cluster.py", "--quick", "--redis", closed)
    said = rf"^Redis is not reachable at {re.escape(closed)} \(.*\){SQLITE_ONLY}"
    assert re.search(said, text, re.M), text
    assert re.search(rf"^sqlite{THROUGHPUT}", text, re.M), text
    assert re.search(rf"^sqlite{LATENCY}", text, re.M), text
    assert "pg-1node" not in text and "ratio" not in text, text

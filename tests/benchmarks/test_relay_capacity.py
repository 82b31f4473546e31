"""The relay-capacity benchmark runs end to end with tiny sizes (no figure is asserted),
and its load generators end by themselves when their parent goes away."""

from __future__ import annotations

import asyncio
import json
import re
import sys
import time
from pathlib import Path

import pytest
from benchmarks.harness import UNLIMITED_RELAY_ARGS
from tests.benchmarks.helpers import BENCHMARKS, run_benchmark

from parley.processes import RelayProcess

pytestmark = pytest.mark.e2e

RATE = r"\s+(\d+) messages in\s+\d+\.\d{3} s =\s+(\d+\.\d) msg/s"
LATENCY = r"\s+p50\s+\d+\.\d\d ms  p99\s+\d+\.\d\d ms  \(n=(\d+)\)  paced at \d+\.\d msg/s"
CPU = r"^  cpu s: (relay|echo ) +(\d+\.\d\d|n/a)  generators +\d+\.\d\d  over \d+\.\d\d s wall$"


def figures(text: str, name: str) -> tuple[int, float]:
    found = re.search(rf"^{name}{RATE}", text, re.M)
    assert found, text
    return int(found.group(1)), float(found.group(2))


async def test_benchmark_reports_relay_echo_ratio_and_latency_at_half_load() -> None:
    text = await run_benchmark("relay_capacity.py", "--quick", "--generators", "2")
    # 2 generators x 4 devices x 20 messages, every one delivered; the paced 10 each too.
    assert "2 generators x 4 devices, each sending to the 2 after it; window 4" in text, text
    for name in ("sqlite", "echo"):
        messages, rate = figures(text, name)
        assert messages == 160 and rate > 0, text
    assert "(SQLite, synchronous=FULL, --loop auto: stored, acked, delivered, confirmed)" in text, (
        text
    )
    found = re.search(rf"^sqlite{LATENCY}", text, re.M)
    assert found and int(found.group(1)) == 80, text
    assert len(re.findall(CPU, text, re.M)) >= 2, text
    goal = r"^ratio relay/echo = \d+\.\d{3} \(target >= 0\.5: (NOT )?met\)$"
    assert re.search(goal, text, re.M), text
    if "no PostgreSQL figure" in text:  # no PostgreSQL or Redis here
        assert re.search(r"is not reachable at .*: no PostgreSQL figure$", text, re.M), text
        return
    messages, _ = figures(text, "postgres")
    assert messages == 160, text
    found = re.search(rf"^postgres{LATENCY}", text, re.M)
    assert found and int(found.group(1)) == 80, text
    assert re.search(r"^ratio postgres/echo = \d+\.\d{3} \(no target\)$", text, re.M), text
    assert re.search(r"^cleaned up: database parley_bench_\w+ dropped, Redis keys", text, re.M)


async def test_sqlite_only_with_a_single_generator() -> None:
    text = await run_benchmark(
        "relay_capacity.py", "--quick", "--no-postgres", "--generators", "1", "--devices", "3"
    )
    assert "1 generators x 3 devices" in text, text
    assert figures(text, "sqlite")[0] == figures(text, "echo")[0] == 60, text
    assert "postgres" not in text, text


async def test_a_generator_ends_when_its_parent_goes_away_even_mid_command() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(BENCHMARKS / "relay_capacity.py"),
        "--generator",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert proc.stdin is not None and proc.stdout is not None
    # Nothing prepared: an empty phase, answered at once.
    now = time.monotonic()
    proc.stdin.write(json.dumps({"cmd": "drive", "phase": "x", "start_at": now}).encode() + b"\n")
    answer = json.loads(await asyncio.wait_for(proc.stdout.readline(), 30))
    assert answer["delivered"] == 0 and answer["errors"] == []
    # A phase that would wait a minute for its start: the parent's going away ends it.
    later = time.monotonic() + 60
    proc.stdin.write(json.dumps({"cmd": "drive", "phase": "x", "start_at": later}).encode() + b"\n")
    await proc.stdin.drain()
    await asyncio.sleep(0.3)
    proc.stdin.close()
    assert await asyncio.wait_for(proc.wait(), 10) == 0


async def test_it_drives_a_relay_started_by_hand(tmp_path: Path) -> None:
    async with RelayProcess(tmp_path / "relay", extra_args=UNLIMITED_RELAY_ARGS) as relay:
        text = await run_benchmark("relay_capacity.py", "--quick", "--relay-url", relay.url)
    assert f"(the relay at {relay.url}: stored, acked, delivered, confirmed)" in text, text
    assert figures(text, "sqlite")[0] == 160, text
    assert re.search(r"^  cpu s: relay   n/a  generators", text, re.M), text
    assert "postgres" not in text, text

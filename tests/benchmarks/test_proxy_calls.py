"""The proxied-calls benchmark runs end to end (tiny sizes; no timing is asserted)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "proxy_calls.py"


async def test_benchmark_reports_rates_latencies_and_ratios() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(SCRIPT),
        "--pairs", "2", "--calls", "3", "--window", "2", "--latency-calls", "2",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), 120)
    text = out.decode()
    assert proc.returncode == 0, text
    assert "direct        6 calls in" in text
    assert "proxied       6 calls in" in text
    assert "ratio proxied/direct calls/s = " in text
    assert "ratio proxied/direct setup latency (median) = " in text
    # Warm-up (one proxied call per pair), 2 latency calls and 6 calls, two legs each.
    assert "leg records in the proxy's store: 20" in text

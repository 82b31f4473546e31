"""The proxied-calls benchmark runs end to end (tiny sizes; no timing is asserted)."""

from __future__ import annotations

import re

import pytest
from tests.benchmarks.helpers import run_benchmark

pytestmark = pytest.mark.e2e


async def test_benchmark_reports_rates_latencies_and_ratios() -> None:
    text = await run_benchmark(
        "proxy_calls.py",
        *("--pairs", "2", "--calls", "3", "--window", "2", "--rounds", "2"),
        *("--latency-calls", "2", "--held", "3"),
        *("--paced-rate", "20", "--paced-seconds", "0.1"),
    )
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

"""The flood benchmark runs end to end (a few samples; no timing is asserted)."""

from __future__ import annotations

import re

import pytest
from tests.benchmarks.helpers import run_benchmark

pytestmark = pytest.mark.e2e


async def test_benchmark_reports_both_latencies_their_ratio_and_the_flooder_s_refusals() -> None:
    text = await run_benchmark("relay_flood.py", "--quick")
    figure = r"p50\s+\d+\.\d\d ms  p99\s+\d+\.\d\d ms  \(n=20\)"
    assert re.search(rf"^baseline\s+{figure}", text, re.M), text
    assert re.search(rf"^flooded\s+{figure}", text, re.M), text
    assert re.search(
        r"^ratio flooded/baseline p99 = \d+\.\d{3} \(goal <= 2: (NOT )?met\)", text, re.M
    )
    refused = re.search(r"refused rate_limited (\d+); the relay closed (\d+) of its 8", text)
    assert refused is not None, text
    # The flooder was refused, and four of its eight connections closed (4 per device).
    assert int(refused[1]) > 0 and int(refused[2]) == 4

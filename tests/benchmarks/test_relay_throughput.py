"""The throughput benchmark runs end to end (tiny sizes; no timing is asserted)."""

from __future__ import annotations

import re

import pytest
from tests.benchmarks.helpers import run_benchmark

pytestmark = pytest.mark.e2e


async def test_benchmark_reports_the_rates_the_floor_and_the_ratios() -> None:
    text = await run_benchmark(
        "relay_throughput.py", "--senders", "2", "--messages", "20", "--window", "4"
    )
    assert re.search(r"^relay\s+40 messages in", text, re.M)
    assert re.search(r"^echo\s+40 messages in", text, re.M)
    assert "ratio relay/echo = " in text
    assert re.search(
        r"^crypto floor\s+[\d.]+ msg/s per core .*sign .*seal .*open .*verify", text, re.M
    )
    assert re.search(r"^sdk\s+[\d.]+ msg/s per client core", text, re.M)
    assert "ratio sdk/floor = " in text

"""The throughput benchmark runs end to end (tiny sizes; no timing is asserted)."""

from __future__ import annotations

import re

import pytest
from tests.benchmarks.helpers import run_benchmark

pytestmark = pytest.mark.e2e


async def test_benchmark_reports_both_rates_and_the_ratio() -> None:
    text = await run_benchmark(
        "relay_throughput.py", "--senders", "2", "--messages", "20", "--window", "4"
    )
    assert re.search(r"^relay\s+40 messages in", text, re.M)
    assert re.search(r"^echo\s+40 messages in", text, re.M)
    assert "ratio relay/echo = " in text

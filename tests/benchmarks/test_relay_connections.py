"""The idle-connections benchmark runs end to end (a few hundred; no figure is asserted)."""

from __future__ import annotations

import re

import pytest
from tests.benchmarks.helpers import run_benchmark

pytestmark = pytest.mark.e2e


async def test_benchmark_reports_memory_per_connection_and_delivery_to_all() -> None:
    text = await run_benchmark("relay_connections.py", "--connections", "80", "--holders", "2")
    pattern = r"^80 idle authenticated connections \(2 holder processes; relay --loop auto\)$"
    assert re.search(pattern, text, re.M), text
    assert re.search(r"\d+\.\d\d KB per connection \(goal <= 10 KB: (NOT )?met\)", text), text
    assert re.search(r"one message to each: all delivered \d+\.\d\d s after", text), text

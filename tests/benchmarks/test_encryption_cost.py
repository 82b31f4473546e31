"""The encryption-cost benchmark runs end to end (tiny sizes; no timing is asserted)."""

from __future__ import annotations

import re

import pytest
from tests.benchmarks.helpers import run_benchmark

pytestmark = pytest.mark.e2e


async def test_benchmark_reports_both_modes_and_the_ratio() -> None:
    text = await run_benchmark(
        "encryption_cost.py", "--senders", "2", "--messages", "20", "--window", "4",
        "--rounds", "1",
    )  # fmt: skip
    assert re.search(r"^encrypted\s+40 messages in", text, re.M)
    assert re.search(r"^plaintext\s+40 messages in", text, re.M)
    assert "ratio encrypted/plaintext = " in text

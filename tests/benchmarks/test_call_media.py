"""The call-media benchmark runs end to end (three calls per mode; no timing is asserted)."""

from __future__ import annotations

import re

import pytest
from tests.benchmarks.helpers import run_benchmark

pytestmark = pytest.mark.e2e


async def test_benchmark_reports_place_to_audio_per_mode_and_the_ratio() -> None:
    text = await run_benchmark("call_media.py", "--calls", "3")
    figure = r"median \d+\.\d{3} s  p95 \d+\.\d{3} s  \(n=3\)"
    assert re.search(rf"^direct:\s+{figure}", text, re.M), text
    assert re.search(rf"^proxied:\s+{figure}", text, re.M), text
    assert re.search(r"^ratio proxied/direct: median \d+\.\d\dx  p95 \d+\.\d\dx$", text, re.M)
    assert re.search(r"^direct:\s+start sent .* first audio", text, re.M), text
    # Warm-up (one call per mode) and three calls per mode: each answered by the
    # customer, each proxied one leaving two leg records.
    assert "calls answered by the customer: 8" in text
    assert "leg records in the proxy's store: 8" in text

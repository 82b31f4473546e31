"""The encryption-cost benchmark runs end to end (tiny sizes; no timing is asserted)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "encryption_cost.py"


async def test_benchmark_reports_both_modes_and_the_ratio() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(SCRIPT),
        "--senders",
        "2",
        "--messages",
        "20",
        "--window",
        "4",
        "--rounds",
        "1",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 120)
    text = out.decode()
    assert proc.returncode == 0, text
    assert "encrypted       40 messages" in text
    assert "plaintext       40 messages" in text
    assert "ratio encrypted/plaintext = " in text

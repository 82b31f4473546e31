"""Run a benchmark script with tiny sizes, as a user would; returns what it printed."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


async def run_benchmark(script: str, *args: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(BENCHMARKS / script),
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 120)
    text = out.decode()
    assert proc.returncode == 0, text
    return text

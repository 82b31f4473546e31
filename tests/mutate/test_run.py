"""``./run mutate`` as a user runs it: a sampled run of one target, its report."""

from __future__ import annotations

import asyncio
import re
import sys
from pathlib import Path

from mutate.equivalents import EQUIVALENTS
from mutate.run import Survivor, listed
from mutate.targets import TARGETS

ROOT = Path(__file__).resolve().parents[2]


async def mutate(*args: str, kept: Path | None = None) -> tuple[int, str]:
    where = ["--kept", str(kept)] if kept is not None else []
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "mutate.run",
        *where,
        *args,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 110)
    assert proc.returncode is not None
    return proc.returncode, out.decode()


async def test_a_sampled_run_reports_the_kill_rate_and_the_survivors(tmp_path: Path) -> None:
    module = ROOT / "src/parley/crypto/sealed.py"
    before = module.read_bytes()
    code, text = await mutate("--sample", "4", "--seed", "3", "sealed", kept=tmp_path)
    assert code == 0, text
    assert module.read_bytes() == before  # mutants are made in a copy of the project
    line = re.search(
        r"^sealed +src/parley/crypto/sealed\.py +killed +(\d+) of +(\d+), (\d+) equivalent"
        r" = +([\d.]+)%"
        r" \(goal 90%: (NOT )?met\)",
        text,
        re.M,
    )
    assert line, text
    killed, run = int(line.group(1)), int(line.group(2))
    assert run == 4 and 0 <= killed <= run, text
    survivors = re.findall(r"^survived: src/parley/crypto/sealed\.py:\d+ \S+$", text, re.M)
    assert len(survivors) == run - killed, text


async def test_an_unknown_target_is_a_usage_error() -> None:
    code, text = await mutate("nonsense")
    assert code == 2 and "no target nonsense" in text, text


async def test_kept_results_are_reported_and_only_survivors_run_again(tmp_path: Path) -> None:
    code, first = await mutate("--sample", "6", "--seed", "2", "--no-diffs", "jws", kept=tmp_path)
    assert code == 0, first
    summary = re.search(r"^jws .*$", first, re.M)
    assert summary, first
    # Listed equivalents survive too: they run again with the unexplained survivors.
    survivors = len(re.findall(r"^(survived|equivalent): ", first, re.M))
    code, report = await mutate("--report", "--no-diffs", "jws", kept=tmp_path)
    assert code == 0 and summary.group(0) in report, report
    code, again = await mutate("--survivors", "--no-diffs", "jws", kept=tmp_path)
    assert code == 0, again
    assert f"==> jws: {survivors} mutants" in again  # the kills are kept, not run again
    assert summary.group(0) in again  # and nothing changed: the same figure


def test_a_listed_change_is_reported_as_equivalent_not_survived() -> None:
    target = next(t for t in TARGETS if t.name == "sealed")
    entry = next(e for e in EQUIVALENTS if e.target == "sealed")
    diff = f"--- a\n+++ b\n@@ -1 +1 @@\n-    {entry.line}\n+    {entry.mutated}\n"
    assert listed(target, Survivor("x.py:1", "op", diff)) == entry
    other = diff.replace(entry.mutated, entry.mutated + "  # changed otherwise")
    assert listed(target, Survivor("x.py:1", "op", other)) is None
    elsewhere = next(t for t in TARGETS if t.name != "sealed")
    assert listed(elsewhere, Survivor("x.py:1", "op", diff)) is None  # per module

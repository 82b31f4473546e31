"""``parley demo`` as a user runs it, in a subprocess: a kept folder used twice, SIGTERM,
and a transcript that says each thing once."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

WAIT = 120.0  # an upper bound for a whole demo run; never asserted on


def _env() -> dict[str, str]:
    return {**os.environ, "COLUMNS": "240"}


async def _demo(*args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "parley", "demo", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env=_env(),
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), WAIT)
    assert proc.returncode is not None
    return proc.returncode, out.decode()


def _alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return status.rsplit(")", 1)[1].split()[0] != "Z"


async def test_a_kept_folder_works_twice_with_new_identities(tmp_path: Path) -> None:
    keep = tmp_path / "kept"
    identities: list[set[str]] = []
    for _ in range(2):
        code, out = await _demo("--keep", str(keep))
        assert code == 0, out
        assert "all 5 forwarded messages accounted for" in out
        assert out.count("listening") == 1, out
        bound = re.findall(r"bound (conv-[0-9a-f]+)", out)
        assert len(bound) == len(set(bound)) == 2, out  # each binding once, this run's only
        assert "The proxy passes on what is left of the operator's 60 s" in out, out
        identities.append(set(re.findall(r"identity \w+ +(\S+)", out)))
    assert len(identities[0]) == 3 and not identities[0] & identities[1]
    assert (keep / "app.json").is_file() and (keep / "app.proxy.db").is_file()


async def test_sigterm_stops_the_relay_and_the_proxy_and_removes_the_folder() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "parley", "demo",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env=_env(),
    )  # fmt: skip
    assert proc.stdout is not None
    lines: list[str] = []
    try:
        async with asyncio.timeout(WAIT):
            while not any(line.startswith("─") and "call 1" in line for line in lines):
                line = (await proc.stdout.readline()).decode()
                assert line, "".join(lines)
                lines.append(line)
        proc.send_signal(signal.SIGTERM)
        rest, _ = await asyncio.wait_for(proc.communicate(), WAIT)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    out = "".join(lines) + rest.decode()
    assert proc.returncode == 1, out
    assert "demo stopped by SIGTERM" in out, out
    folder = Path(re.search(r"working directory: (\S+)", out)[1])  # type: ignore[index]
    relay = int(re.search(r"relay listening on \S+ \(pid (\d+)", out)[1])  # type: ignore[index]
    proxy = int(re.search(r"\(proxy pid (\d+)\)", out)[1])  # type: ignore[index]
    assert not await asyncio.to_thread(folder.exists)
    assert not _alive(relay) and not _alive(proxy)

"""A usage error (an unknown option, a missing argument, a bad value, an unknown command)
is one plain line on stderr naming the command, exit code 2: no box, no usage block."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest
from tests.test_cli import parley

# The console script pip installed beside this interpreter: the `parley` a user runs.
SCRIPT = Path(sys.executable).parent / "parley"


async def _script(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        str(SCRIPT), *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["relay", "--bogus"], "error: parley relay: No such option: --bogus"),
        (["permit"], "error: parley permit: Missing argument 'other'; see parley permit --help"),
        (["relay", "--port", "abc"], "error: parley relay: Invalid value for '--port'"),
        (["calls", "--store"], "error: parley: Option '--store' requires an argument"),
        (["nosuch"], "error: parley: No such command 'nosuch'"),
    ],
)
async def test_a_usage_error_is_one_plain_line(args: list[str], says: str) -> None:
    code, out, err = await _script(*args)
    lines = err.splitlines()
    assert (code, out, len(lines)) == (2, "", 1), err
    assert lines[0].startswith(says), err
    assert not any(box in err for box in "╭│╰"), err


async def test_python_m_parley_says_the_same() -> None:
    code, _, err = await parley("identity", "new", "--relay", "ws://127.0.0.1:1")
    assert code == 2 and err.splitlines() == [
        "error: python -m parley identity new: Missing option '--out'; "
        "see python -m parley identity new --help"
    ]


async def test_no_arguments_still_print_the_help() -> None:
    code, out, _ = await _script("identity")
    assert code == 2 and "Usage: parley identity" in out and "add-device" in out


async def test_help_and_version_exit_0() -> None:
    assert (await _script("--help"))[0] == 0
    code, out, _ = await _script("--version")
    assert code == 0 and out.startswith("parley ")

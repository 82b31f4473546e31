"""``parley phone call`` and ``parley phone answer`` as real processes on a real relay:
exit codes, recordings of the other side's tone, and a peer whose process dies."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from pathlib import Path

import pytest
from tests.conftest import Register
from tests.media.helpers import LOOPBACK, TOLERANCE, assert_torn_down, heard_frequency

from parley.client import Client
from parley.media import Softphone
from parley.processes import ChildProcess
from parley.protocol.call import EndReason
from parley.protocol.call_phone import PhoneConfig

pytestmark = pytest.mark.e2e

PARLEY = (sys.executable, "-m", "parley")
ICE = ("--ice-host", "127.0.0.1")


def answerer(credentials: Path, *args: str) -> ChildProcess:
    return ChildProcess(
        [*PARLEY, "phone", "answer", "-c", str(credentials), *ICE, *args],
        re.compile(r"parley phone answering as (\S+)"),
        name="parley phone answer",
    )


async def permit_both(a: Path, b: Path) -> tuple[str, str]:
    async with Client.from_credentials(a) as ca, Client.from_credentials(b) as cb:
        await asyncio.gather(ca.connections.permit(cb.id), cb.connections.permit(ca.id))
        return ca.id, cb.id


async def test_call_and_answer_commands_hear_each_other(register: Register, tmp_path: Path) -> None:
    (_, a_path), (_, b_path) = await asyncio.gather(register("caller"), register("callee"))
    _, b_id = await permit_both(a_path, b_path)
    a_heard, b_heard = tmp_path / "a.wav", tmp_path / "b.wav"
    answering = answerer(b_path, "--play", "tone:1000", "--record", str(b_heard), "--calls", "1")
    await answering.start()
    call = await asyncio.create_subprocess_exec(
        *PARLEY, "phone", "call", "-c", str(a_path), b_id, "--play", "tone:440",
        "--record", str(a_heard), "--for", "2", *ICE,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "COLUMNS": "200"},
    )  # fmt: skip
    out, _ = await asyncio.wait_for(call.communicate(), 60)
    text = out.decode()
    assert call.returncode == 0, text
    assert re.search(r"call \w+ with \w+: hangup, connected \d", text), text
    assert "connected" in text and "packets" in text
    # It answered one call, as asked, then exits on its own with success.
    assert await asyncio.wait_for(answering.wait(), 30) == 0, answering.lines
    assert heard_frequency(a_heard) == pytest.approx(1000, abs=TOLERANCE)
    assert heard_frequency(b_heard) == pytest.approx(440, abs=TOLERANCE)


async def test_call_command_exits_1_when_nobody_answers(register: Register, tmp_path: Path) -> None:
    (_, a_path), (_, b_path) = await asyncio.gather(register("caller"), register("callee"))
    _, b_id = await permit_both(a_path, b_path)
    call = await asyncio.create_subprocess_exec(
        *PARLEY, "phone", "call", "-c", str(a_path), b_id, "--for", "1", *ICE,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(call.communicate(), 60)
    assert call.returncode == 1, out.decode()
    assert "0 audio frames received" in out.decode()


async def test_a_peer_whose_process_dies_ends_the_call_gone(
    register: Register, tmp_path: Path
) -> None:
    (_, a_path), (_, b_path) = await asyncio.gather(register("caller"), register("callee"))
    _, b_id = await permit_both(a_path, b_path)
    answering = answerer(b_path, "--play", "tone:1000")
    await answering.start()
    async with Client.from_credentials(a_path) as client:
        # Media would fail the call after 30 s of silence; presence says gone first.
        phone = Softphone(
            client, source="tone:440", ice=LOOPBACK, media_timeout=30,
            config=PhoneConfig(grace=1),
        )  # fmt: skip
        media = await phone.call(b_id)
        await media.wait_audio(10)
        await answering.kill()
        record = await asyncio.wait_for(media.wait_ended(), 20)
        assert record.reason is EndReason.GONE
        await assert_torn_down(media)

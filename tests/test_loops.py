"""The event loop the relay and the proxy run on: uvloop where installed, asyncio when
asked, a typed error when uvloop is asked for and missing."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

from parley.errors import EventLoopUnavailable
from parley.loops import LoopChoice, loop_factory, loop_name
from parley.processes import RelayProcess

uvloop = pytest.importorskip("uvloop", reason="uvloop is not installed (pip install uvloop)")


def test_auto_and_uvloop_build_uvloop_loops_and_asyncio_the_default() -> None:
    assert loop_factory(LoopChoice.AUTO) is uvloop.new_event_loop
    assert loop_factory(LoopChoice.UVLOOP) is uvloop.new_event_loop
    assert loop_factory(LoopChoice.ASYNCIO) is None


def test_without_uvloop_auto_falls_back_and_uvloop_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # import uvloop -> ImportError
    assert loop_factory(LoopChoice.AUTO) is None
    with pytest.raises(EventLoopUnavailable, match="pip install uvloop"):
        loop_factory(LoopChoice.UVLOOP)


def test_loop_name_says_which_loop_runs() -> None:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        assert runner.run(_name()) == "uvloop"
    with asyncio.Runner() as runner:
        assert runner.run(_name()) == "asyncio"


async def _name() -> str:
    return loop_name()


@pytest.mark.e2e
@pytest.mark.parametrize(("choice", "runs"), [("auto", "uvloop"), ("asyncio", "asyncio")])
async def test_the_relay_runs_on_the_loop_asked_for(tmp_path: Path, choice: str, runs: str) -> None:
    async with RelayProcess(tmp_path / "data", extra_args=("--loop", choice)) as relay:
        ready = next(line for line in relay.lines if "relay" in line and "listening on" in line)
        assert f"{runs} event loop" in ready

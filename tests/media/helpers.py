"""What the media tests share: loopback ICE, measuring what a recording heard, and the
check that a call's media left nothing running."""

from __future__ import annotations

import asyncio
from pathlib import Path

from parley.ice import IceConfig
from parley.media import MediaCall
from parley.media.analysis import dominant_frequency, read_wav

LOOPBACK = IceConfig(hosts=("127.0.0.1",))
TOLERANCE = 5.0  # Hz: the bound on a heard tone


def heard_frequency(path: Path, skip: float = 0.3) -> float:
    """The dominant frequency of a recording, past its first ``skip`` seconds (the jitter
    buffer filling up)."""
    samples, rate = read_wav(path)
    assert len(samples) > rate * (skip + 0.5), f"{path} holds {len(samples) / rate:.2f} s"
    return dominant_frequency(samples[int(rate * skip) :], rate)


def media_tasks() -> list[asyncio.Task[object]]:
    """Running tasks of the media stack (aiortc, aioice) or of parley.media."""
    found = []
    for task in asyncio.all_tasks():
        coro = task.get_coro()
        code = getattr(coro, "cr_code", None)
        filename = "" if code is None else code.co_filename
        if (
            task.get_name().startswith("parley-media")
            or "/aiortc/" in filename
            or "/aioice/" in filename
            or "/parley/media/" in filename
        ):
            found.append(task)
    return found


async def assert_torn_down(*calls: MediaCall) -> None:
    """Every call's media closed: connection closed, source track ended, no task left."""
    for media in calls:
        async with asyncio.timeout(10):
            await media._closed.wait()
        assert media.closed
        assert media.connection_state == "closed"
    async with asyncio.timeout(5):
        while media_tasks():  # noqa: ASYNC110 - aiortc's tasks end on their own after close
            await asyncio.sleep(0.05)

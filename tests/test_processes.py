"""Child processes: a start given up on leaves nothing behind that nobody looks at."""

from __future__ import annotations

import asyncio
import contextlib
import gc
from pathlib import Path
from typing import Any

from parley.processes import RelayProcess


async def test_stopping_after_a_cancelled_start_leaves_no_unretrieved_error(
    tmp_path: Path,
) -> None:
    loop = asyncio.get_running_loop()
    reported: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _, context: reported.append(context))
    relay = RelayProcess(tmp_path / "relay")
    starting = asyncio.create_task(relay.start())
    await asyncio.sleep(0.05)  # the process runs; its ready line has not come yet
    starting.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await starting
    await relay.stop()
    del relay, starting  # an unretrieved error is reported when its future is collected
    gc.collect()
    await asyncio.sleep(0)
    loop.set_exception_handler(None)
    assert [c.get("message") for c in reported] == []

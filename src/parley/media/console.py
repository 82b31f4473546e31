"""``parley phone call`` and ``parley phone answer``: a softphone in a terminal.

Each shows the call live (state, time connected, level heard, packets, round trip; one
line a second when the output is not a terminal), ends on ``--for``, on the peer, or on
SIGINT/SIGTERM (hanging up first), and prints the call's record. The exit status says
whether the call worked: 0 when it connected and audio was received.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from rich.console import Console
from rich.live import Live
from rich.text import Text

from parley.client import Client
from parley.ice import IceConfig
from parley.media.softphone import MediaCall, MediaStats, Softphone
from parley.protocol.call import CallRecord

REFRESH = 0.5  # seconds between two status updates


def _status(media: MediaCall, stats: MediaStats, connected_at: float | None) -> Text:
    state = media.call.state.value if media.call is not None else "placing"
    parts = [f"{state:<9}", f"media {stats.connection:<10}"]
    if connected_at is not None:
        seconds = int(time.monotonic() - connected_at)
        parts.append(f"{seconds // 60:02d}:{seconds % 60:02d}")
    level = "  -inf" if math.isinf(stats.level_dbfs) else f"{stats.level_dbfs:6.1f}"
    parts.append(f"level {level} dBFS")
    parts.append(f"packets {stats.packets_received}")
    if stats.round_trip is not None:
        parts.append(f"rtt {stats.round_trip * 1000:.1f} ms")
    return Text("  ".join(parts))


async def _show(console: Console, media: MediaCall, until: asyncio.Event) -> MediaStats:
    """Show ``media`` until ``until`` is set or its media closed; the last stats."""
    connected_at: float | None = None
    stats = await media.stats()
    last_print = 0.0

    async def update() -> Text:
        nonlocal stats, connected_at
        stats = await media.stats()
        if connected_at is None and media.frames_received:
            connected_at = time.monotonic()
        return _status(media, stats, connected_at)

    async def tick() -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(REFRESH):
                await until.wait()

    if console.is_terminal:
        with Live(await update(), console=console, transient=True) as live:
            while not until.is_set() and not media.closed:
                await tick()
                live.update(await update())
    else:
        while not until.is_set() and not media.closed:
            line = await update()
            if time.monotonic() - last_print >= 1.0:
                console.print(line, soft_wrap=True)
                last_print = time.monotonic()
            await tick()
    return stats


def _summary(console: Console, record: CallRecord, media: MediaCall, stats: MediaStats) -> None:
    console.print(
        f"call {record.call_id} with {record.peer}: {record.reason.value}, "
        f"connected {record.duration:.1f} s, {media.frames_received} audio frames received, "
        f"{stats.packets_received} packets",
        soft_wrap=True,
    )
    if media.failure:
        console.print(f"media failure: {media.failure}", soft_wrap=True)


def _stop_on_signals(stopping: asyncio.Event) -> Callable[[], None]:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)

    def restore() -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)

    return restore


async def _finish(console: Console, media: MediaCall, stats: MediaStats) -> bool:
    if media.call is not None and media.call.record is None:
        await media.hangup()
    record = await media.wait_ended()
    _summary(console, record, media, stats)
    return record.answered is not None and media.frames_received > 0


async def run_call(
    console: Console,
    credentials: Path,
    peer: str,
    *,
    play: str,
    record: Path | None,
    seconds: float | None,
    ice: IceConfig,
    cid: str | None = None,
) -> bool:
    """Place one call; True when it connected and audio was received."""
    stopping = asyncio.Event()
    restore = _stop_on_signals(stopping)
    try:
        async with Client.from_credentials(credentials) as client:
            phone = Softphone(client, source=play, ice=ice)
            media = await phone.call(peer, record=record, cid=cid)
            console.print(f"calling {peer} (call {media.call_id})", soft_wrap=True)
            timer = None
            if seconds is not None:
                timer = asyncio.get_running_loop().call_later(seconds, stopping.set)
            stats = await _show(console, media, stopping)
            if timer is not None:
                timer.cancel()
            return await _finish(console, media, stats)
    finally:
        restore()


def recording_path(record: Path | None, number: int) -> Path | None:
    """Where call ``number`` (from 1) is recorded: ``record`` itself for the first,
    ``<stem>-N<suffix>`` for the next ones."""
    if record is None or number == 1:
        return record
    return record.with_name(f"{record.stem}-{number}{record.suffix}")


async def run_answer(
    console: Console,
    credentials: Path,
    *,
    play: str,
    record: Path | None,
    calls: int | None,
    ice: IceConfig,
    on_ready: Callable[[str], Awaitable[None] | None] | None = None,
) -> bool:
    """Answer calls until ``calls`` of them ended (or a signal); True when every call
    answered connected and received audio."""
    stopping = asyncio.Event()
    restore = _stop_on_signals(stopping)
    all_good = True
    answered = 0
    try:
        async with Client.from_credentials(credentials) as client:
            phone = Softphone(client, source=play, ice=ice)
            console.print(f"parley phone answering as {client.id}", soft_wrap=True)
            if on_ready is not None:
                result = on_ready(client.id)
                if result is not None:
                    await result
            incoming = phone.incoming().__aiter__()
            while calls is None or answered < calls:
                next_call = asyncio.ensure_future(incoming.__anext__())
                stop = asyncio.ensure_future(stopping.wait())
                await asyncio.wait((next_call, stop), return_when=asyncio.FIRST_COMPLETED)
                stop.cancel()
                if not next_call.done():
                    next_call.cancel()
                    break
                ringing = next_call.result()
                answered += 1
                console.print(f"answering {ringing.peer} (call {ringing.call_id})", soft_wrap=True)
                try:
                    media = await phone.answer(ringing, record=recording_path(record, answered))
                except Exception as exc:
                    console.print(f"could not answer: {type(exc).__name__}: {exc}", soft_wrap=True)
                    all_good = False
                    continue
                stats = await _show(console, media, stopping)
                all_good = await _finish(console, media, stats) and all_good
                if stopping.is_set():
                    break
            await phone.close()
    finally:
        restore()
    return all_good and answered > 0

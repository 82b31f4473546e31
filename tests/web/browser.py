"""Debian's Chromium, headless, driven by Playwright, hearing a tone as its microphone."""

from __future__ import annotations

import contextlib
import math
import shutil
import wave
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest

CHROMIUM = Path("/usr/bin/chromium")
TONE_RATE = 48_000

FLAGS = [
    "--no-sandbox",
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",  # grants the microphone without asking
    "--allow-loopback-in-peer-connection",  # a 127.0.0.1 host candidate
    "--disable-features=WebRtcHideLocalIpsWithMdns",  # addresses, not .local names
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-gpu",
    "--disable-quic",
]

if TYPE_CHECKING:  # imported when used: a machine without it skips the tests instead
    from playwright.async_api import BrowserContext


def write_tone(path: Path, hz: float, seconds: float = 10.0) -> Path:
    """A mono 16-bit WAV of a sine at ``hz`` (Chromium loops it as the microphone)."""
    t = np.arange(int(TONE_RATE * seconds)) / TONE_RATE
    samples = (0.5 * 32767 * np.sin(2 * math.pi * hz * t)).astype("<i2")
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(TONE_RATE)
        out.writeframes(samples.tobytes())
    return path


def require_browser() -> None:
    """Skip, saying what to install, where the browser or its driver is missing."""
    if not CHROMIUM.exists() and shutil.which("chromium") is None:
        pytest.skip("Debian's chromium is not installed: apt-get install chromium")
    try:
        import playwright.async_api  # noqa: F401
    except ImportError:
        pytest.skip("playwright (python) is not installed: pip install playwright")


@contextlib.asynccontextmanager
async def chromium(
    workdir: Path, tone_hz: float, *, extra_args: tuple[str, ...] = ()
) -> AsyncIterator[BrowserContext]:
    """A fresh headless Chromium (its own profile) whose microphone plays ``tone_hz``."""
    executable, tone = _prepare(workdir, tone_hz)
    from playwright.async_api import async_playwright

    async with async_playwright() as driver:
        context = await driver.chromium.launch_persistent_context(
            str(workdir / "profile"),
            executable_path=str(executable),
            headless=True,
            args=[*FLAGS, f"--use-file-for-fake-audio-capture={tone}", *extra_args],
            viewport={"width": 520, "height": 760},
        )
        try:
            yield context
        finally:
            await context.close()


def _prepare(workdir: Path, tone_hz: float) -> tuple[Path, Path]:
    require_browser()
    executable = CHROMIUM if CHROMIUM.exists() else Path(str(shutil.which("chromium")))
    workdir.mkdir(parents=True, exist_ok=True)
    return executable, write_tone(workdir / f"tone-{tone_hz:g}.wav", tone_hz)

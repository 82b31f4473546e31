"""Glare with the browser: the page and a Python softphone call each other at once. The
lower call_id wins (DESIGN.md §3); whichever side lost answers the winner's offer with
a fresh answer (the page on its own peer connection), and both hear each other.

To make both starts cross, the relay's deliveries to the page's process are held back
until the softphone has received the page's start: each side is then dialling when the
other's start arrives, as in a real race, but every time."""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from tests.client.helpers import Wrapper
from tests.conftest import Register
from tests.media.helpers import TOLERANCE, assert_torn_down, heard_frequency
from tests.web.calling import (
    BROWSER_TONE,
    PYTHON_TONE,
    PySide,
    WebSide,
    open_phone,
    page_hears,
    reach,
)
from tests.web.conftest import serve_web

from parley.client.handlers import Observed
from parley.processes import RelayProcess
from parley.protocol.call import EndReason
from parley.protocol.frames import Deliver, decode_relay_frame
from parley.protocol.messages import VoiceStart
from parley.transport import Transport
from parley.transport.websocket import connect_websocket

if TYPE_CHECKING:
    from playwright.async_api import BrowserContext

pytestmark = pytest.mark.e2e


class HeldDeliveries(Wrapper):
    """Client side: deliveries from the relay wait while the gate is closed, then come in
    their order; replies to the client's requests (keys, acks) pass, so it can send."""

    def __init__(self, inner: Transport, gate: asyncio.Event) -> None:
        super().__init__(inner)
        self.gate = gate
        self._held: collections.deque[bytes] = collections.deque()
        self._reading: asyncio.Future[bytes] | None = None

    async def recv(self) -> bytes:
        while True:
            if self.gate.is_set() and self._held:
                return self._held.popleft()
            if self._reading is None:
                self._reading = asyncio.ensure_future(self.inner.recv())
            if not self.gate.is_set():
                opened = asyncio.ensure_future(self.gate.wait())
                waiting: set[asyncio.Future[Any]] = {self._reading, opened}
                await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
                opened.cancel()
                if not self._reading.done():
                    continue  # the gate opened: what it held goes first
            data = await self._reading
            self._reading = None
            delivery = isinstance(decode_relay_frame(data), Deliver)
            if delivery and (self._held or not self.gate.is_set()):
                self._held.append(data)
                continue
            return data


@pytest.fixture
def gate() -> asyncio.Event:
    opened = asyncio.Event()
    opened.set()
    return opened


@pytest.fixture
async def web(
    register: Register, relay_process: RelayProcess, gate: asyncio.Event
) -> AsyncIterator[WebSide]:
    """The page's side, whose deliveries from the relay ``gate`` holds back."""

    async def connector() -> Transport:
        return HeldDeliveries(await connect_websocket(relay_process.url), gate)

    async with serve_web(register, connector=connector) as side:
        yield side


async def test_glare_the_page_and_a_softphone_call_each_other_and_both_hear(
    web: WebSide,
    py: PySide,
    browser: BrowserContext,
    gate: asyncio.Event,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="parley.protocol.call_phone")
    page = await open_phone(browser, web)
    page_start_seen = asyncio.Event()

    def seen(observed: Observed) -> None:
        if isinstance(observed.message, VoiceStart) and observed.issuer == web.id:
            page_start_seen.set()

    py.client.observe(seen)
    gate.clear()  # the softphone's start waits on its way to the page's process
    media = await py.phone.call(web.id, record=tmp_path / "python-heard.wav")
    await page.fill("#peer-id", py.id)
    await page.click("#call")
    async with asyncio.timeout(20):
        await page_start_seen.wait()  # the softphone is dialling and got the page's start
    gate.set()

    await reach(page, "connected")
    await media.wait_audio(timeout=20)
    assert media.call_id == await page.evaluate("window.parleyPhone.callId")  # one call
    heard = await page_hears(page, PYTHON_TONE)
    assert heard is not None and abs(heard - PYTHON_TONE) <= TOLERANCE, heard
    await asyncio.sleep(1.0)  # a second of the browser's tone in the recording
    await page.click("#hangup")
    assert (await media.wait_ended()).reason is EndReason.HANGUP
    await reach(page, "ended")
    await assert_torn_down(media)
    python_heard = heard_frequency(tmp_path / "python-heard.wav")
    assert abs(python_heard - BROWSER_TONE) <= TOLERANCE, python_heard
    # The loser's phone logs "glare with WINNER: ... gives way to ...". Which side wins
    # is the call ids' draw; either way both heard each other above.
    gave_way = [r.getMessage() for r in caplog.records if "gives way" in r.getMessage()]
    assert len(gave_way) == 1, gave_way
    loser = "the page" if gave_way[0].startswith(f"glare with {py.id}:") else "the softphone"
    print(f"glare: {loser} gave way and answered the other's offer")

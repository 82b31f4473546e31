"""The browser page and a Python softphone really talk: Chromium plays a 1000 Hz tone as
its microphone, the softphone a 440 Hz one, and each side measures what it heard.
The page is driven as a person would: filling the field and clicking its buttons."""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from tests.media.helpers import TOLERANCE, assert_torn_down, heard_frequency
from tests.web.calling import (
    BROWSER_TONE,
    PYTHON_TONE,
    WAIT_MS,
    PySide,
    WebSide,
    open_phone,
    page_hears,
    phone_state,
    reach,
)

from parley.protocol import session_description
from parley.protocol.call import EndReason
from parley.protocol.session_description import SdpType

if TYPE_CHECKING:  # imported by tests.web.browser when there is a browser to drive
    from playwright.async_api import BrowserContext

pytestmark = pytest.mark.e2e

SCREENSHOT = Path("/tmp/parley-web-connected.png")
RINGING_SCREENSHOT = Path("/tmp/parley-web-ringing.png")
ENDED_SCREENSHOT = Path("/tmp/parley-web-ended.png")


async def test_the_browser_calls_a_python_softphone_and_each_hears_the_other(
    web: WebSide, py: PySide, browser: BrowserContext, tmp_path: Path, loopback_network: bool
) -> None:
    if loopback_network:  # the media below cannot have gone anywhere but loopback
        assert [name for _, name in socket.if_nameindex()] == ["lo"]
    page = await open_phone(browser, web)
    assert await page.text_content("#identity") == web.id
    await page.fill("#peer-id", py.id)
    await page.click("#call")

    incoming = await py.next_call()
    assert incoming.peer == web.id
    # The page's offer, as the server passed it on: whole, and loopback candidates only.
    offer = session_description.parse(incoming.peer_info, SdpType.OFFER).sdp
    candidates = [line.split()[4] for line in offer.splitlines() if line.startswith("a=candidate:")]
    assert candidates and set(candidates) == {"127.0.0.1"}, candidates
    assert "a=end-of-candidates" in offer.splitlines()
    media = await py.phone.answer(incoming, record=tmp_path / "python-heard.wav")
    await reach(page, "connected")
    await media.wait_audio(timeout=20)
    await page.wait_for_function("() => window.parleyPhone.packetsReceived > 0", timeout=WAIT_MS)
    heard = await page_hears(page, PYTHON_TONE)
    assert heard is not None and abs(heard - PYTHON_TONE) <= TOLERANCE, heard
    await page.wait_for_function("() => window.parleyPhone.level > 0.01", timeout=WAIT_MS)
    await page.wait_for_function(
        "() => document.getElementById('duration').textContent !== '0:00'", timeout=WAIT_MS
    )

    shot = tmp_path / "connected.png"
    await page.screenshot(path=str(shot), full_page=True)
    shutil.copyfile(shot, SCREENSHOT)
    print(f"screenshot of a connected call: {shot} (and {SCREENSHOT})")

    await page.click("#hangup")
    record = await media.wait_ended()
    assert record.reason is EndReason.HANGUP
    await reach(page, "ended")
    assert await phone_state(page) == {
        "state": "ended", "lastEnded": "hangup", "lastDetail": "", "mediaOpen": False,
    }  # fmt: skip
    await assert_torn_down(media)
    python_heard = heard_frequency(tmp_path / "python-heard.wav")
    assert abs(python_heard - BROWSER_TONE) <= TOLERANCE, python_heard


async def test_a_python_softphone_calls_the_browser_which_answers_and_each_hears_the_other(
    web: WebSide, py: PySide, browser: BrowserContext, tmp_path: Path
) -> None:
    page = await open_phone(browser, web)
    media = await py.phone.call(web.id, record=tmp_path / "python-heard.wav")
    await reach(page, "ringing")
    assert await page.is_visible("#incoming")
    assert await page.text_content("#caller") == py.id
    await page.screenshot(path=str(tmp_path / "ringing.png"), full_page=True)
    shutil.copyfile(tmp_path / "ringing.png", RINGING_SCREENSHOT)
    await page.click("#accept")

    await reach(page, "connected")
    await media.wait_audio(timeout=20)
    heard = await page_hears(page, PYTHON_TONE)
    assert heard is not None and abs(heard - PYTHON_TONE) <= TOLERANCE, heard
    await asyncio.sleep(1.0)  # a second of the browser's tone in the recording

    await media.hangup()
    record = await media.wait_ended()
    assert record.reason is EndReason.HANGUP
    await reach(page, "ended")
    state = await phone_state(page)
    assert (state["lastEnded"], state["mediaOpen"]) == ("hangup", False)
    assert "hung up" in str(await page.text_content("#reason"))
    await page.screenshot(path=str(tmp_path / "ended.png"), full_page=True)
    shutil.copyfile(tmp_path / "ended.png", ENDED_SCREENSHOT)
    python_heard = heard_frequency(tmp_path / "python-heard.wav")
    assert abs(python_heard - BROWSER_TONE) <= TOLERANCE, python_heard


async def test_the_browser_declines_and_the_caller_hears_it(
    web: WebSide, py: PySide, browser: BrowserContext
) -> None:
    page = await open_phone(browser, web)
    media = await py.phone.call(web.id)
    await reach(page, "ringing")
    await page.click("#decline")
    assert (await media.wait_ended()).reason is EndReason.DECLINED
    await reach(page, "ended")
    assert (await phone_state(page))["lastEnded"] == "declined"
    await assert_torn_down(media)


async def test_closing_the_page_hangs_up_its_call(
    web: WebSide, py: PySide, browser: BrowserContext
) -> None:
    page = await open_phone(browser, web)
    media = await py.phone.call(web.id)
    await reach(page, "ringing")
    await page.click("#accept")
    await media.wait_audio(timeout=20)
    await page.close()  # its media went with it
    assert (await media.wait_ended()).reason is EndReason.HANGUP
    await assert_torn_down(media)


@pytest.mark.parametrize(
    "peer_info",
    [
        "not a session description",
        json.dumps({"v": 1, "type": "answer", "sdp": "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n"}),
        json.dumps({"v": 1, "type": "offer", "sdp": "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n"}),
    ],
    ids=["not-json", "an-answer", "no-audio"],
)
async def test_an_unusable_offer_ends_the_call_failed_and_the_page_says_why(
    web: WebSide, py: PySide, browser: BrowserContext, peer_info: str
) -> None:
    page = await open_phone(browser, web)
    call = await py.client.calls().place(web.id, peer_info)
    assert (await call.wait_ended()).reason is EndReason.FAILED  # the caller is told
    await reach(page, "ended")
    state = await phone_state(page)
    assert state["lastEnded"] == "failed"
    assert "the caller's offer is unusable" in str(state["lastDetail"])
    assert "offer is unusable" in str(await page.text_content("#reason"))


async def test_an_unusable_answer_ends_the_call_failed_and_the_page_says_why(
    web: WebSide, py: PySide, browser: BrowserContext
) -> None:
    page = await open_phone(browser, web)
    await page.fill("#peer-id", py.id)
    await page.click("#call")
    incoming = await py.next_call()
    await incoming.accept(json.dumps({"v": 1, "type": "answer", "sdp": "v=0\r\n"}))
    assert (await incoming.wait_ended()).reason is EndReason.FAILED  # the answerer is told
    await reach(page, "ended")
    state = await phone_state(page)
    assert (state["lastEnded"], state["mediaOpen"]) == ("failed", False)
    assert "the peer's answer is unusable" in str(state["lastDetail"])

"""What the browser tests share: the two sides of a call, and reading the page."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tests.media.helpers import TOLERANCE

from parley.client import Client, IncomingCall
from parley.ice import IceConfig
from parley.media import Softphone
from parley.web import WebPhone

if TYPE_CHECKING:  # imported by tests.web.browser when there is a browser to drive
    from playwright.async_api import BrowserContext, Page

BROWSER_TONE = 1000.0  # what Chromium's fake microphone plays
PYTHON_TONE = 440.0  # what the Python softphone plays
WAIT_MS = 20_000
LOOPBACK = IceConfig(hosts=("127.0.0.1",))


@dataclass
class WebSide:
    """An identity whose phone is the browser page served by ``phone``."""

    client: Client
    phone: WebPhone

    @property
    def id(self) -> str:
        return self.client.id


@dataclass
class PySide:
    client: Client
    phone: Softphone

    @property
    def id(self) -> str:
        return self.client.id

    async def next_call(self) -> IncomingCall:
        async with asyncio.timeout(WAIT_MS / 1000):
            async for incoming in self.phone.incoming():
                return incoming
        raise AssertionError("the calls service closed")


async def open_phone(browser: BrowserContext, web: WebSide) -> Page:
    page = await browser.new_page()
    await page.goto(web.phone.url)
    await page.wait_for_function("() => window.parleyPhone && window.parleyPhone.linked")
    return page


async def reach(page: Page, state: str) -> None:
    await page.wait_for_function(
        "(state) => window.parleyPhone.state === state", arg=state, timeout=WAIT_MS
    )


async def page_hears(page: Page, expected: float) -> float | None:
    """The page's dominant frequency, once it is ``expected`` (or the last one measured,
    for the failure message, after 15 s)."""
    heard: float | None = None
    try:
        async with asyncio.timeout(15):
            while True:
                heard = await page.evaluate("window.parleyPhone.dominantFrequency()")
                if heard is not None and abs(heard - expected) <= TOLERANCE:
                    return heard
                await asyncio.sleep(0.2)
    except TimeoutError:
        return heard


async def phone_state(page: Page) -> dict[str, object]:
    return dict(
        await page.evaluate(
            """() => ({state: parleyPhone.state, lastEnded: parleyPhone.lastEnded,
                       lastDetail: parleyPhone.lastDetail, mediaOpen: parleyPhone.mediaOpen})"""
        )
    )

"""``serve()`` and ``parley phone web``: the page's URL on a line of its own, the phone
running until cancelled, and what it leaves behind when it stops or its page goes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import sys
from typing import TYPE_CHECKING

import pytest
from tests.conftest import Register
from tests.media.helpers import assert_torn_down
from tests.web import raw_http
from tests.web.calling import LOOPBACK, PYTHON_TONE, WebSide, phone_state, reach
from websockets.asyncio.client import connect

from parley.client import Client
from parley.media import Softphone
from parley.processes import ChildProcess
from parley.protocol.call import EndReason
from parley.web import serve

if TYPE_CHECKING:
    from playwright.async_api import BrowserContext

pytestmark = pytest.mark.e2e

URL_LINE = re.compile(r"^http://127\.0\.0\.1:(\d+)/\?token=([A-Za-z0-9_-]+)$")


async def test_parley_phone_web_prints_the_pages_url_on_a_line_of_its_own(
    register: Register,
) -> None:
    _, path = await register("web")
    process = ChildProcess(
        [
            sys.executable,
            "-m",
            "parley",
            "phone",
            "web",
            "-c",
            str(path),
            "--ice-host",
            "127.0.0.1",
        ],
        URL_LINE,
        name="parley phone web",
    )
    match = await process.start()
    try:
        port, token = int(match.group(1)), match.group(2)
        page = await raw_http.get(port, f"/?token={token}", {"Host": f"127.0.0.1:{port}"})
        assert page.status == 200
        assert (await raw_http.get(port, "/", {"Host": f"127.0.0.1:{port}"})).status == 403
    finally:
        code = await process.stop()
    assert code == 0, process.lines  # SIGTERM stops it cleanly, hanging up first
    assert sum(1 for line in process.lines if token in line) == 1  # printed once, logged never


async def test_serve_runs_the_phone_until_cancelled_and_then_hangs_up_its_call(
    register: Register, browser: BrowserContext
) -> None:
    (web_creds, web_path), (_, py_path) = await asyncio.gather(register("web"), register("py"))
    py_client = Client.from_credentials(py_path)
    py_phone = Softphone(py_client, source=f"tone:{PYTHON_TONE:g}", ice=LOOPBACK)
    await py_client.connect()
    await py_client.connections.permit(web_creds.identity)
    # The page's identity permits the softphone's first, as its owner would have.
    async with Client.from_credentials(web_path) as web_client:
        await web_client.connections.permit(py_client.id)
    urls: asyncio.Queue[str] = asyncio.Queue()
    served = asyncio.create_task(serve(web_path, ice=LOOPBACK, on_ready=urls.put_nowait))
    try:
        url = await asyncio.wait_for(urls.get(), 20)
        page = await browser.new_page()
        await page.goto(url)
        await page.wait_for_function("() => window.parleyPhone && window.parleyPhone.linked")
        media = await py_phone.call(web_creds.identity)
        await reach(page, "ringing")
        await page.click("#accept")
        await media.wait_audio(timeout=20)

        served.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await served
        assert (await media.wait_ended()).reason is EndReason.HANGUP
        await reach(page, "ended")
        assert (await phone_state(page))["mediaOpen"] is False
        await page.wait_for_function("() => !window.parleyPhone.linked")
        assert "gone" in str(await page.text_content("#error"))
        await assert_torn_down(media)
    finally:
        served.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await served
        await py_phone.close()
        await py_client.close()


async def test_a_call_ringing_with_no_page_open_is_shown_to_the_next_page(
    web: WebSide, register: Register
) -> None:
    _, py_path = await register("py")
    py_client = Client.from_credentials(py_path)
    py_phone = Softphone(py_client, ice=LOOPBACK)
    await py_client.connect()
    await asyncio.gather(
        py_client.connections.permit(web.id), web.client.connections.permit(py_client.id)
    )
    url = f"ws://127.0.0.1:{web.phone.port}/ws?token={web.phone.token}"
    origin = f"http://127.0.0.1:{web.phone.port}"
    try:
        media = await py_phone.call(web.id)  # no page is open: it rings all the same
        for _ in range(2):  # a page that opens, sees it ring, and goes: it keeps ringing
            async with connect(url, origin=origin) as ws:  # type: ignore[arg-type]
                assert json.loads(await ws.recv())["t"] == "hello"
                ringing = json.loads(await ws.recv())
                assert (ringing["t"], ringing["peer"]) == ("incoming", py_client.id)
                assert ringing["call_id"] == media.call_id
                assert ringing["sdp"].startswith("v=0")
        async with connect(url, origin=origin) as ws:  # type: ignore[arg-type]
            await ws.recv()
            await ws.recv()
            await ws.send(json.dumps({"t": "decline", "call_id": media.call_id}))
            ended = json.loads(await ws.recv())
            assert (ended["t"], ended["reason"], ended["detail"]) == ("ended", "declined", "")
        assert (await media.wait_ended()).reason is EndReason.DECLINED
    finally:
        await py_phone.close()
        await py_client.close()

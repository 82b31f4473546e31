"""Only the phone's own page, opened with its secret link, drives the phone: the token,
the Host (DNS rebinding) and the Origin are checked on every request and WebSocket."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.web import raw_http
from tests.web.browser import chromium
from tests.web.calling import LOOPBACK, WebSide
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from parley.web.server import ANOTHER_PAGE

pytestmark = pytest.mark.e2e


def page_origin(web: WebSide) -> str:
    return f"http://127.0.0.1:{web.phone.port}"


def socket_url(web: WebSide, token: str | None = None) -> str:
    return f"ws://127.0.0.1:{web.phone.port}/ws?token={web.phone.token if token is None else token}"


async def open_page_socket(web: WebSide) -> ClientConnection:
    return await connect(socket_url(web), origin=page_origin(web))  # type: ignore[arg-type]


async def test_the_page_is_served_with_its_token_only(web: WebSide) -> None:
    port, token = web.phone.port, web.phone.token
    assert web.phone.url == f"http://127.0.0.1:{port}/?token={token}"
    for host in (f"127.0.0.1:{port}", f"localhost:{port}"):
        page = await raw_http.get(port, f"/?token={token}", {"Host": host})
        assert page.status == 200
        assert '<script src="/phone.js">' in page.body
        assert page.headers["content-type"].startswith("text/html")
        assert page.headers["cache-control"] == "no-store"  # the URL holds the token
        assert page.headers["referrer-policy"] == "no-referrer"
        assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
        assert f"ws://{host}/ws" in page.headers["content-security-policy"]

    for path in ("/", "/?token=", f"/?token={token}x", f"/?token={token[:-1]}",
                 f"/?token=wrong&token={token}", f"/?token=%C3%A9{token}"):  # fmt: skip
        refused = await raw_http.get(port, path, {"Host": f"127.0.0.1:{port}"})
        assert refused.status == 403, path
        assert "secret link" in refused.body
        assert "phone.js" not in refused.body

    # The script and style hold nothing secret; anything else is not there.
    script = await raw_http.get(port, "/phone.js", {"Host": f"127.0.0.1:{port}"})
    assert script.status == 200
    assert script.headers["content-type"].startswith("text/javascript")
    assert "parleyPhone" in script.body
    assert (await raw_http.get(port, "/phone.css", {"Host": f"127.0.0.1:{port}"})).status == 200
    assert (await raw_http.get(port, "/../cli.py", {"Host": f"127.0.0.1:{port}"})).status == 404


async def test_a_foreign_host_is_refused_for_the_page_and_the_websocket(web: WebSide) -> None:
    port, token = web.phone.port, web.phone.token
    # DNS rebinding: a name the attacker controls made to resolve to 127.0.0.1.
    for host in (f"evil.example:{port}", f"127.0.0.1:{port}.evil.example", "127.0.0.1",
                 "localhost", f"127.0.0.2:{port}", f"127.0.0.1:{port + 1}", ""):  # fmt: skip
        page = await raw_http.get(port, f"/?token={token}", {"Host": host})
        assert page.status == 403, host
        assert "answers to" in page.body
        handshake = await raw_http.get(
            port, f"/ws?token={token}", raw_http.websocket_headers(host, f"http://{host}")
        )
        assert handshake.status == 403, host
    assert (await raw_http.get(port, f"/?token={token}", {})).status == 403  # no Host at all


async def test_the_websocket_needs_the_pages_origin_and_the_token(web: WebSide) -> None:
    port, token = web.phone.port, web.phone.token
    here = f"127.0.0.1:{port}"

    async def handshake(host: str, origin: str | None, path: str = f"/ws?token={token}") -> int:
        answer = await raw_http.get(port, path, raw_http.websocket_headers(host, origin))
        return answer.status

    assert await handshake(here, f"http://{here}") == 101
    assert await handshake(f"localhost:{port}", f"http://localhost:{port}") == 101
    # Another page on this machine (another port, another name, a sandboxed frame) ...
    for origin in ("http://127.0.0.1:9", f"http://localhost:{port}", f"https://{here}",
                   "http://evil.example", "null", None):  # fmt: skip
        assert await handshake(here, origin) == 403, origin
    # ... or a process that does not know the token.
    for path in ("/ws", "/ws?token=", f"/ws?token={token}0", "/ws?token=guess"):
        assert await handshake(here, f"http://{here}", path) == 403, path
    # A plain request for the socket's path is no handshake.
    assert (await raw_http.get(port, f"/ws?token={token}", {"Host": here})).status == 426


async def test_a_malformed_page_message_gets_an_error_and_changes_nothing(web: WebSide) -> None:
    async with await open_page_socket(web) as ws:
        hello = json.loads(await ws.recv())
        assert hello == {"t": "hello", "identity": web.id, "ice": LOOPBACK.to_json()}
        malformed: list[str | bytes] = [
            "not json",
            "[]",
            '{"t": "dial"}',
            '{"t": "place"}',
            '{"t": "place", "peer": "x", "sdp": "v=0", "secret": 1}',
            '{"t": "hangup", "call_id": ""}',
            '{"t": "hangup", "call_id": 7}',
            b'{"t": "hangup", "call_id": "k"}',
            '{"t": "place", "peer": "not an id!", "sdp": "v=0"}',
        ]
        for message in malformed:
            await ws.send(message)
            reply = json.loads(await ws.recv())
            assert reply["t"] == "error", message
            assert reply["message"], message
        # Well formed, but not what the phone's state allows, or not a usable SDP.
        refused = {
            '{"t": "hangup", "call_id": "k1"}': "no call k1",
            '{"t": "accept", "call_id": "k2", "sdp": "v=0"}': "no call k2",
            '{"t": "decline", "call_id": "k3"}': "no call k3",
            '{"t": "media_failed", "call_id": "k4"}': "no call k4",
            '{"t": "place", "peer": "someone", "sdp": "v=0\\r\\n"}': "the page's offer is unusable",
            f'{{"t": "place", "peer": "{web.id}", "sdp": "v=0"}}': "its own identity",
        }
        for message, why in refused.items():
            await ws.send(message)
            reply = json.loads(await ws.recv())
            assert reply["t"] == "error", message
            assert why in reply["message"], reply
            assert reply["request"] == json.loads(message)["t"]
        assert web.client.calls().live == []


async def test_a_second_page_is_refused_while_one_drives_the_phone(web: WebSide) -> None:
    async with await open_page_socket(web) as first:
        assert json.loads(await first.recv())["t"] == "hello"
        async with await open_page_socket(web) as second:
            with pytest.raises(ConnectionClosed) as closed:
                await second.recv()
            assert closed.value.rcvd is not None
            assert closed.value.rcvd.code == ANOTHER_PAGE
        await first.send('{"t": "hangup", "call_id": "k"}')  # the first one still drives it
        assert json.loads(await first.recv())["t"] == "error"
    # Once it is gone, the next page may.
    async with await open_page_socket(web) as third:
        assert json.loads(await third.recv())["t"] == "hello"


async def test_in_a_browser_other_pages_cannot_drive_the_phone(
    web: WebSide, tmp_path: Path
) -> None:
    port = web.phone.port
    rebinding = "--host-resolver-rules=MAP evil.example 127.0.0.1, EXCLUDE localhost"
    async with chromium(tmp_path, 1000, extra_args=(rebinding,)) as browser:
        page = await browser.new_page()
        # Without the token: a page that says so, and no phone in it.
        response = await page.goto(f"http://127.0.0.1:{port}/")
        assert response is not None and response.status == 403
        assert await page.evaluate("typeof window.parleyPhone") == "undefined"
        # DNS rebinding: evil.example resolves to 127.0.0.1, the Host header gives it away.
        response = await page.goto(f"http://evil.example:{port}/?token={web.phone.token}")
        assert response is not None and response.status == 403
        # A page of another origin on this machine, even knowing the token, gets no socket.
        await page.route(
            "http://127.0.0.1:9/**",
            lambda route: route.fulfill(body="<p>elsewhere</p>", content_type="text/html"),
        )
        await page.goto("http://127.0.0.1:9/")
        outcome = await page.evaluate(
            """(url) => new Promise((resolve) => {
                const ws = new WebSocket(url);
                ws.onopen = () => resolve("open");
                ws.onclose = (event) => resolve(`closed ${event.code}`);
            })""",
            socket_url(web),
        )
        assert outcome == "closed 1006"
        # The phone's own page, opened with its link, is connected and shows who it is.
        await page.goto(web.phone.url)
        await page.wait_for_function("() => window.parleyPhone && window.parleyPhone.linked")
        assert await page.text_content("#identity") == web.id
        # Its view of the phone is read-only.
        await page.evaluate("() => { try { window.parleyPhone.state = 'connected'; } catch {} }")
        assert await page.evaluate("window.parleyPhone.state") == "idle"

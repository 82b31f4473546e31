"""The page's files (``parley/web/static``, packed into the wheel) and the HTTP answers
that carry them.

Every answer forbids what the page never needs, so a bug in it cannot be turned into a
leak: no caching (the page's URL holds the token), no ``Referer`` (same reason), no
framing by another page (clickjacking), and a content security policy allowing only
this server's own scripts, styles and WebSocket.
"""

from __future__ import annotations

import functools
import http
import importlib.resources
from typing import Final, NamedTuple

from websockets.asyncio.server import ServerConnection
from websockets.http11 import Response


class Asset(NamedTuple):
    name: str
    content_type: str


PHONE: Final = Asset("phone.html", "text/html; charset=utf-8")
PUBLIC: Final = {
    # The script, the style and the icon hold nothing secret: served without the token, so the
    # page can load them by plain URLs.
    "/phone.js": Asset("phone.js", "text/javascript; charset=utf-8"),
    "/phone.css": Asset("phone.css", "text/css; charset=utf-8"),
    "/icon.svg": Asset("icon.svg", "image/svg+xml"),
}

FORBIDDEN_PAGE: Final = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Parley phone</title></head>
<body><h1>This phone opens with its secret link only</h1>
<p>Open the address that <code>parley phone web</code> printed, with its
<code>?token=&hellip;</code>, on this computer.</p></body></html>
"""


@functools.cache
def text(asset: Asset) -> str:
    """An asset's text, read once from the package."""
    return (importlib.resources.files("parley.web") / "static" / asset.name).read_text("utf-8")


def respond(
    conn: ServerConnection,
    status: http.HTTPStatus,
    body: str,
    content_type: str = "text/plain; charset=utf-8",
    *,
    websocket: str | None = None,
) -> Response:
    """An HTTP answer with the headers every answer of this server carries.
    ``websocket``: the WebSocket URL the page may connect to (for its policy)."""
    response = conn.respond(status, body)
    headers = response.headers
    del headers["Content-Type"]
    headers["Content-Type"] = content_type
    headers["Cache-Control"] = "no-store"
    headers["Referrer-Policy"] = "no-referrer"
    headers["X-Content-Type-Options"] = "nosniff"
    headers["X-Frame-Options"] = "DENY"
    connect = f" {websocket}" if websocket else ""
    headers["Content-Security-Policy"] = (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        f"media-src 'self' blob: mediastream:; connect-src 'self'{connect}; "
        "frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    )
    return response

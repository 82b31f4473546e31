"""Requests with whatever headers a test wants (a foreign Host, a missing Origin), which
HTTP and WebSocket clients will not send, over a plain socket."""

from __future__ import annotations

import asyncio
import base64
import os
from dataclasses import dataclass


@dataclass
class Answer:
    status: int
    headers: dict[str, str]  # names in lower case
    body: str


async def get(port: int, path: str, headers: dict[str, str]) -> Answer:
    """``GET path`` with exactly ``headers`` (Host included, or not), then the answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        lines = [f"GET {path} HTTP/1.1", *(f"{k}: {v}" for k, v in headers.items()), "", ""]
        writer.write("\r\n".join(lines).encode())
        await writer.drain()
        async with asyncio.timeout(10):
            head = await reader.readuntil(b"\r\n\r\n")
            status_line, *header_lines = head.decode().split("\r\n")
            found = {}
            for line in header_lines:
                if line:
                    name, _, value = line.partition(":")
                    found[name.strip().lower()] = value.strip()
            length = int(found.get("content-length", "0"))
            body = await reader.readexactly(length) if length else b""
        return Answer(int(status_line.split()[1]), found, body.decode())
    finally:
        writer.close()
        await writer.wait_closed()


def websocket_headers(host: str, origin: str | None) -> dict[str, str]:
    """The headers of a WebSocket handshake (RFC 6455 §4.1), with this Host and Origin."""
    headers = {
        "Host": host,
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode(),
        "Sec-WebSocket-Version": "13",
    }
    if origin is not None:
        headers["Origin"] = origin
    return headers

"""The browser softphone's tests: a real relay process, a WebPhone on it, Chromium.

Every module here runs in a network namespace holding only loopback where the machine
allows it (see ``netns.py``), so no WebRTC stack can send to any other address.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from tests.conftest import Register
from tests.web import netns
from tests.web.browser import chromium
from tests.web.calling import BROWSER_TONE, LOOPBACK, PYTHON_TONE, PySide, WebSide

from parley.client import Client, Connector
from parley.media import Softphone
from parley.web import WebPhone

if TYPE_CHECKING:  # imported by tests.web.browser when there is a browser to drive
    from playwright.async_api import BrowserContext


@pytest.fixture(scope="module", autouse=True)
def loopback_network() -> Iterator[bool]:
    with netns.loopback_only() as isolated:
        yield isolated


@contextlib.asynccontextmanager
async def serve_web(
    register: Register, name: str = "web", *, connector: Connector | None = None
) -> AsyncIterator[WebSide]:
    """A new identity, connected (through ``connector``, if given), with its phone page
    served."""
    _, path = await register(name)
    client = Client.from_credentials(path, connector=connector)
    phone = WebPhone(client, ice=LOOPBACK)  # before connecting, like client.calls()
    await client.connect()
    try:
        async with phone:
            yield WebSide(client, phone)
    finally:
        await client.close()


@pytest.fixture
async def web(register: Register) -> AsyncIterator[WebSide]:
    async with serve_web(register) as side:
        yield side


@pytest.fixture
async def py(register: Register, web: WebSide) -> AsyncIterator[PySide]:
    """A Python softphone playing PYTHON_TONE, and ``web``, each permitting the other."""
    _, path = await register("py")
    client = Client.from_credentials(path)
    phone = Softphone(client, source=f"tone:{PYTHON_TONE:g}", ice=LOOPBACK)
    await client.connect()
    # Each accepts messages only from identities it permitted.
    await asyncio.gather(
        client.connections.permit(web.id), web.client.connections.permit(client.id)
    )
    try:
        yield PySide(client, phone)
    finally:
        await phone.close()
        await client.close()


@pytest.fixture
async def browser(tmp_path: Path) -> AsyncIterator[BrowserContext]:
    """Chromium whose microphone plays BROWSER_TONE; the test fails if a page's script
    threw or logged an error."""
    errors: list[str] = []
    async with chromium(tmp_path / "chromium", BROWSER_TONE) as context:
        context.on("weberror", lambda error: errors.append(f"uncaught: {error.error}"))
        context.on(
            "console",
            lambda message: (
                errors.append(f"console: {message.text}") if message.type == "error" else None
            ),
        )
        yield context
    assert errors == []

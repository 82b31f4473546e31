"""The browser softphone's tests: a real relay process, a WebPhone on it, Chromium.

Every module here runs in a network namespace holding only loopback where the machine
allows it (see ``netns.py``), so no WebRTC stack can send to any other address.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import pytest
from tests.conftest import Register
from tests.web import netns

from parley.client import Client
from parley.ice import IceConfig
from parley.web import WebPhone

LOOPBACK = IceConfig(hosts=("127.0.0.1",))


@pytest.fixture(scope="module", autouse=True)
def loopback_network() -> Iterator[bool]:
    with netns.loopback_only() as isolated:
        yield isolated


@dataclass
class WebSide:
    """An identity whose phone is the browser page served by ``phone``."""

    client: Client
    phone: WebPhone

    @property
    def id(self) -> str:
        return self.client.id


@pytest.fixture
async def web(register: Register) -> AsyncIterator[WebSide]:
    _, path = await register("web")
    client = Client.from_credentials(path)
    phone = WebPhone(client, ice=LOOPBACK)  # before connecting, like client.calls()
    await client.connect()
    try:
        async with phone:
            yield WebSide(client, phone)
    finally:
        await client.close()

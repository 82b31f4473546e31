"""Real calls through a real ``parley proxy`` process: the proxy forwards the session
descriptions unchanged, so the media flows directly between operator and customer
(DTLS-SRTP, authenticated by the signed SDP), and the tests measure what each heard."""

from __future__ import annotations

import asyncio
import contextlib
import re
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from tests.conftest import Register
from tests.e2e.test_media import next_incoming
from tests.e2e.test_proxy import parley
from tests.media.helpers import LOOPBACK, TOLERANCE, assert_torn_down, heard_frequency

from parley.client import Client
from parley.errors import IllegalTransition
from parley.media import MediaCall, Softphone
from parley.processes import ChildProcess
from parley.protocol.call import EndReason

pytestmark = pytest.mark.e2e

TONES = {"olga": 440.0, "cust": 1000.0, "al": 600.0, "cy": 800.0}
TALK = 1.5


@dataclass
class Office:
    app: str
    phones: dict[str, Softphone]
    tmp: Path

    def __getattr__(self, name: str) -> Softphone:
        return self.phones[name]


@pytest.fixture
async def office(register: Register, tmp_path: Path) -> AsyncIterator[Office]:
    """An app running ``parley proxy``: cid "conv" binds olga to cust, the hunt group
    "sales" rings al and cy for cust. Each party is a softphone playing its own tone."""
    app, app_path = await register("app")
    registered = await asyncio.gather(*(register(name) for name in TONES))
    clients = {
        name: Client.from_credentials(path)
        for name, (_, path) in zip(TONES, registered, strict=True)
    }
    phones = {
        name: Softphone(client, source=f"tone:{TONES[name]:g}", ice=LOOPBACK)
        for name, client in clients.items()
    }
    for client in clients.values():
        await client.connect()
    await asyncio.gather(*(c.connections.permit(app.identity) for c in clients.values()))
    ids = {name: client.id for name, client in clients.items()}
    await asyncio.gather(
        parley(
            "proxy", "bind", "-c", str(app_path), "conv",
            "--operator", ids["olga"], "--customer", ids["cust"], "--operator-name", "Olga",
        ),
        parley(
            "proxy", "bind-pool", "-c", str(app_path), "sales",
            "--customer", ids["cust"], "--operator", ids["al"], "--operator", ids["cy"],
        ),
    )  # fmt: skip
    proxy = ChildProcess(
        [sys.executable, "-m", "parley", "proxy", "-c", str(app_path)],
        re.compile(r"parley proxy ready"),
        name="parley proxy",
    )
    await proxy.start()
    try:
        yield Office(app.identity, phones, tmp_path)
    finally:
        await asyncio.gather(*(phone.close() for phone in phones.values()))
        assert await proxy.stop() == 0
        for client in clients.values():
            await client.close()


async def test_operator_and_customer_hear_each_other_through_the_proxy(office: Office) -> None:
    olga_heard, cust_heard = office.tmp / "olga.wav", office.tmp / "cust.wav"
    operator = await office.olga.call(office.app, cid="conv", record=olga_heard)
    incoming = await next_incoming(office.cust)
    assert incoming.peer == office.app and incoming.cid == "conv"
    assert incoming.data.get("operator_name") == "Olga"
    customer = await office.cust.answer(incoming, record=cust_heard)
    await asyncio.gather(operator.wait_audio(10), customer.wait_audio(10))
    await asyncio.sleep(TALK)
    await customer.hangup()
    assert (await operator.wait_ended()).reason is EndReason.HANGUP
    await assert_torn_down(operator, customer)
    assert heard_frequency(olga_heard) == pytest.approx(TONES["cust"], abs=TOLERANCE)
    assert heard_frequency(cust_heard) == pytest.approx(TONES["olga"], abs=TOLERANCE)


async def test_hunt_group_first_operator_to_answer_gets_the_audio(office: Office) -> None:
    heard = {name: office.tmp / f"{name}.wav" for name in ("cust", "al", "cy")}
    customer = await office.cust.call(office.app, cid="sales", record=heard["cust"])
    al_ringing, cy_ringing = await asyncio.gather(
        next_incoming(office.al), next_incoming(office.cy)
    )
    winner = await office.al.answer(al_ringing, record=heard["al"])
    await customer.wait_audio(10)  # al's audio reaches the customer: al has the call
    # cy answers too late: the proxy tells it the call was answered elsewhere.
    loser: MediaCall | None = None
    with contextlib.suppress(IllegalTransition):  # it had heard already
        loser = await office.cy.answer(cy_ringing, record=heard["cy"])
    cy_record = await (loser.wait_ended() if loser is not None else cy_ringing.wait_ended())
    assert cy_record.reason is EndReason.ANSWERED_ELSEWHERE
    if loser is not None:
        await assert_torn_down(loser)
        assert loser.frames_received == 0  # the customer's media never knew it
    await winner.wait_audio(10)
    await asyncio.sleep(TALK)
    await winner.hangup()
    assert (await customer.wait_ended()).reason is EndReason.HANGUP
    await assert_torn_down(customer, winner)
    assert heard_frequency(heard["cust"]) == pytest.approx(TONES["al"], abs=TOLERANCE)
    assert heard_frequency(heard["al"]) == pytest.approx(TONES["cust"], abs=TOLERANCE)

"""Delivery over a real relay: offline recipients, several devices, a relay restart."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from tests.conftest import Register
from tests.e2e.test_security import _until

from parley.client import Client
from parley.client.registration import add_device
from parley.errors import DeliveryTimeout, RelayConnectionError
from parley.processes import RelayProcess
from parley.protocol.messages import VoiceStart

pytestmark = pytest.mark.e2e


async def test_offline_customer_receives_the_call_on_reconnect(register: Register) -> None:
    (op, op_path), (cu, cu_path) = await register("operator"), await register("customer")
    async with Client.from_credentials(cu_path) as customer:
        await customer.connections.permit(op.identity)
    # The customer is offline now; the start is stored for it.
    async with Client.from_credentials(op_path) as operator:
        await operator.voice().start(cu.identity, "cid", "k1", "offer", {"operator_name": "Bob"})
        await operator.voice().stop(cu.identity, "cid", "k1")
    received: list[tuple[str, str]] = []

    def customer_app() -> Client:
        customer = Client.from_credentials(cu_path)
        voice = customer.voice()
        voice.on_start(lambda issuer, payload: received.append(("start", payload["call_id"])))
        voice.on_stop(lambda issuer, payload: received.append(("stop", payload["call_id"])))
        return customer

    async with customer_app():
        await _until(lambda: len(received) == 2)
    assert received == [("start", "k1"), ("stop", "k1")]
    # The customer's app restarts with the same state file: nothing is handled again.
    # Shown by a sentinel sent after the restart: anything redelivered would be handled
    # before it, since one device's inbox is delivered in order.
    async with customer_app(), Client.from_credentials(op_path) as operator:
        await operator.voice().start(cu.identity, "cid", "sentinel", "offer", {})
        await _until(lambda: ("start", "sentinel") in received)
    assert received == [("start", "k1"), ("stop", "k1"), ("start", "sentinel")]


async def test_every_device_of_the_recipient_receives(register: Register, tmp_path: Path) -> None:
    (op, op_path), (cu, cu_path) = await register("operator"), await register("customer")
    cu_phone, op_phone = await add_device(cu), await add_device(op)
    got: Counter[tuple[str, str]] = Counter()

    def on_start(device: str) -> Callable[[str, VoiceStart], None]:
        return lambda issuer, payload: got.update([(device, payload["call_id"])])

    async with (
        Client.from_credentials(cu_path) as laptop,
        Client(cu_phone, state_path=tmp_path / "phone.db") as phone,
        Client(op_phone, state_path=tmp_path / "op-phone.db") as operator_phone,
        Client.from_credentials(op_path) as operator,
    ):
        await laptop.connections.permit(op.identity)
        await operator.connections.permit(cu.identity)
        laptop.voice().on_start(on_start("laptop"))
        phone.voice().on_start(on_start("phone"))
        # The sender's other device gets a copy but no handler runs for its own message.
        operator_phone.voice().on_start(on_start("operator-phone"))
        await operator.voice().start(cu.identity, "cid", "k1", "offer", {})
        # Sentinels after it: each device handles its inbox in order, so a second k1 (or
        # the operator's phone handling its own copy) would come before them.
        await operator.voice().start(cu.identity, "cid", "sentinel", "offer", {})
        await laptop.voice().start(op.identity, "cid", "sentinel-back", "offer", {})
        await _until(
            lambda: (
                got[("laptop", "sentinel")] == got[("phone", "sentinel")] == 1
                and got[("operator-phone", "sentinel-back")] == 1
            )
        )
    assert got == Counter(
        {
            ("laptop", "k1"): 1,
            ("phone", "k1"): 1,
            ("laptop", "sentinel"): 1,
            ("phone", "sentinel"): 1,
            ("operator-phone", "sentinel-back"): 1,
        }
    )


async def test_relay_restart_loses_nothing_acknowledged(
    register: Register, relay_process: RelayProcess
) -> None:
    (op, op_path), (cu, cu_path) = await register("operator"), await register("customer")
    handled: list[str] = []
    acked: list[str] = []
    customer = Client.from_credentials(cu_path)
    customer.voice().on_start(lambda issuer, payload: handled.append(payload["call_id"]))
    operator = Client.from_credentials(op_path, ack_timeout=30.0)
    async with customer, operator:
        await customer.connections.permit(op.identity)

        async def send_all() -> None:
            for n in range(60):
                call_id = f"k{n}"
                with contextlib.suppress(DeliveryTimeout, RelayConnectionError):
                    await operator.voice().start(cu.identity, "cid", call_id, "offer", {})
                    acked.append(call_id)
                await asyncio.sleep(0.01)

        sending = asyncio.create_task(send_all())
        await _until(lambda: len(acked) >= 20)
        await relay_process.kill()  # a crash: no clean shutdown
        restarted = RelayProcess(relay_process.data_dir, port=relay_process.port)
        async with restarted:
            await sending
            await _until(lambda: set(acked) <= set(handled), timeout=30)
            # A redelivered duplicate would be handled before a message sent now.
            await operator.voice().start(cu.identity, "cid", "k999", "offer", {})
            await _until(lambda: "k999" in handled, timeout=30)
    assert handled[-1] == "k999"
    assert len(acked) >= 20
    duplicates = [call_id for call_id, n in Counter(handled).items() if n > 1]
    assert duplicates == []
    assert set(acked) <= set(handled)
    # Calls are handled in the order they were sent.
    assert handled == sorted(handled, key=lambda c: int(c[1:]))

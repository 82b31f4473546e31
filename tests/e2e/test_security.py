"""Refusals over a real relay: permissions, forged and replayed payloads, revoked keys.

The forged payloads are sealed properly (:func:`tests.e2e.raw.send_payload`), so they
open fine at the receiver and it is the checks on the signed payload that refuse them.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from tests.conftest import Register
from tests.e2e.raw import send_payload, signed, voice_start

from parley.client import Client
from parley.client.registration import add_device
from parley.crypto.keys import SigningKey
from parley.errors import DeviceRevoked, NotPermitted, ParleyError, UnknownIdentity
from parley.protocol.messages import Message

pytestmark = pytest.mark.e2e


async def _until(predicate: object, timeout: float = 10.0) -> None:
    assert callable(predicate)
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)


async def test_unpermitted_sender_is_refused(register: Register) -> None:
    (_, alice_path), (bob, bob_path) = await register("alice"), await register("bob")
    received: list[Message] = []
    async with (
        Client.from_credentials(alice_path) as alice,
        Client.from_credentials(bob_path) as bob_client,
    ):
        bob_client.voice().on_start(lambda issuer, payload: received.append(payload))
        with pytest.raises(NotPermitted):
            await alice.voice().start(bob.identity, "c", "k", "sdp", {})
        with pytest.raises(UnknownIdentity):
            await alice.voice().start("nobody-here", "c", "k", "sdp", {})
        # Once bob permits alice the same call goes through; revoking closes it again.
        await bob_client.connections.permit(alice.id)
        assert await bob_client.connections.list() == [alice.id]
        await alice.voice().start(bob.identity, "c", "k2", "sdp", {})
        await _until(lambda: len(received) == 1)
        await bob_client.connections.revoke(alice.id)
        with pytest.raises(NotPermitted):
            await alice.voice().start(bob.identity, "c", "k3", "sdp", {})
    assert [m["call_id"] for m in received] == ["k2"]


async def test_bad_payloads_never_reach_a_handler(register: Register) -> None:
    (mallory, _), (bob, bob_path), (carol, _) = [
        await register(name) for name in ("mallory", "bob", "carol")
    ]
    handled: list[str] = []
    async with Client.from_credentials(bob_path) as bob_client:
        await bob_client.connections.permit(mallory.identity)
        bob_client.voice().on_start(lambda issuer, payload: handled.append(payload["call_id"]))
        good = signed(
            voice_start(iss=mallory.identity, aud=bob.identity, call_id="good"),
            mallory.secret_key,
            mallory.device,
        )
        bad = {
            "bad_signature": signed(
                voice_start(iss=mallory.identity, aud=bob.identity, call_id="forged"),
                SigningKey.generate(),
                mallory.device,
            ),
            "wrong_audience": signed(
                voice_start(iss=mallory.identity, aud=carol.identity, call_id="aud"),
                mallory.secret_key,
                mallory.device,
            ),
            "wrong_issuer": signed(
                voice_start(iss=carol.identity, aud=bob.identity, call_id="iss"),
                mallory.secret_key,
                mallory.device,
            ),
            "expired": signed(
                voice_start(
                    iss=mallory.identity,
                    aud=bob.identity,
                    call_id="old",
                    iat=time.time() - 600,
                    exp=time.time() - 300,
                ),
                mallory.secret_key,
                mallory.device,
            ),
            "issued_in_future": signed(
                voice_start(
                    iss=mallory.identity, aud=bob.identity, call_id="future", iat=time.time() + 120
                ),
                mallory.secret_key,
                mallory.device,
            ),
        }
        async with Client(mallory, state_path=":memory:") as raw:
            await send_payload(raw, bob.identity, good)
            for body in bad.values():
                await send_payload(raw, bob.identity, body)
            # The same signed payload again, in a new envelope: a replay.
            await send_payload(raw, bob.identity, good)
            await send_payload(raw, bob.identity, b"not a jws")
            await send_payload(
                raw,
                bob.identity,
                signed(
                    voice_start(iss=mallory.identity, aud=bob.identity, call_id="last"),
                    mallory.secret_key,
                    mallory.device,
                ),
            )
        await _until(lambda: handled[-1:] == ["last"])
        assert handled == ["good", "last"]
        for reason in [*bad, "replayed"]:
            assert bob_client.rejected[reason] == 1, (reason, bob_client.rejected)
        assert sum(bob_client.rejected.values()) == len(bad) + 2  # + replay + garbage


async def test_revoked_device_is_refused(register: Register) -> None:
    (op, op_path), (bob, bob_path) = await register("operator"), await register("bob")
    phone = await add_device(op)
    handled: list[str] = []
    async with (
        Client.from_credentials(bob_path) as bob_client,
        Client.from_credentials(op_path) as operator,
    ):
        await bob_client.connections.permit(op.identity)
        bob_client.voice().on_start(lambda issuer, payload: handled.append(payload["call_id"]))
        async with Client(phone, state_path=":memory:") as phone_client:
            await phone_client.voice().start(bob.identity, "c", "from-phone", "sdp", {})
            await _until(lambda: handled == ["from-phone"])
            await operator.revoke_device(phone.device)
            # The relay drops the revoked device: it can neither send nor reconnect.
            with pytest.raises(ParleyError):
                await phone_client.voice().start(bob.identity, "c", "after", "sdp", {})
        with pytest.raises(DeviceRevoked):
            async with Client(phone, state_path=":memory:"):
                pass
        # A payload signed by the revoked key, smuggled through the good device's session.
        smuggled = signed(
            voice_start(iss=op.identity, aud=bob.identity, call_id="smuggled"),
            phone.secret_key,
            phone.device,
        )
        await send_payload(operator, bob.identity, smuggled)
        await operator.voice().start(bob.identity, "c", "from-desk", "sdp", {})
        await _until(lambda: handled[-1:] == ["from-desk"])
        assert handled == ["from-phone", "from-desk"]
        assert bob_client.rejected["revoked_key"] == 1

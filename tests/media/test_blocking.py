"""The blocking softphone: two ``parley.sync`` clients call each other with real audio
over a real relay, from plain (non-async) code."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from tests.conftest import Register

from parley.errors import NotConnected
from parley.protocol.call import EndReason
from parley.sync import Client

from .helpers import LOOPBACK, TOLERANCE, heard_frequency

pytestmark = pytest.mark.e2e


def talk(a_path: Path, b_path: Path, tmp: Path) -> tuple[float, float, EndReason, int]:
    """alice calls bob, both hear the other's tone, alice hangs up; what each heard."""
    with Client.from_credentials(a_path) as alice, Client.from_credentials(b_path) as bob:
        alice.connections.permit(bob.id)
        bob.connections.permit(alice.id)
        caller = alice.softphone(source="tone:440", ice=LOOPBACK)
        callee = bob.softphone(source="tone:1000", ice=LOOPBACK)
        outgoing = caller.call(bob.id, record=tmp / "alice.wav")
        ringing = next(callee.incoming(timeout=10))
        answered = callee.answer(ringing, record=tmp / "bob.wav")
        outgoing.wait_audio(timeout=10)
        answered.wait_audio(timeout=10)
        caller_packets = 0
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # about a second of audio each way
            caller_packets = outgoing.stats().packets_received
            if min(caller_packets, answered.stats().packets_received) >= 50:
                break
            time.sleep(0.05)
        outgoing.hangup()
        record = answered.wait_ended(timeout=10)
        assert outgoing.closed and answered.closed
        caller.close()
        callee.close()
    return (
        heard_frequency(tmp / "alice.wav"),
        heard_frequency(tmp / "bob.wav"),
        record.reason,
        caller_packets,
    )


async def test_two_blocking_clients_talk_with_audio(register: Register, tmp_path: Path) -> None:
    (_, a_path), (_, b_path) = await asyncio.gather(register("alice"), register("bob"))
    alice_heard, bob_heard, reason, packets = await asyncio.to_thread(
        talk, a_path, b_path, tmp_path
    )
    assert abs(alice_heard - 1000.0) <= TOLERANCE
    assert abs(bob_heard - 440.0) <= TOLERANCE
    assert reason is EndReason.HANGUP
    assert packets >= 50


async def test_a_softphone_needs_a_connected_client(register: Register) -> None:
    _, path = await register("carol")

    def unconnected() -> None:
        Client.from_credentials(path).softphone()

    with pytest.raises(NotConnected):
        await asyncio.to_thread(unconnected)

"""End-to-end encryption between clients over the real relay core (in memory)."""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
from collections import Counter
from contextlib import closing
from pathlib import Path

import msgspec
import pytest

from parley.client import Client, add_device
from parley.client.connection import Connection
from parley.client.verify import Verified, Verifier
from parley.crypto import sealed
from parley.crypto.keys import SigningKey
from parley.errors import StateError
from parley.protocol import frames
from parley.protocol.frames import ONE_TIME_KEYS_LOW, ONE_TIME_KEYS_TARGET
from parley.transport import Transport

from .helpers import WAIT, Received, World, Wrapper, eventually, inject, stop_token

MARKER = "marker-7f3a9c-peer-info"


def _relay_files(tmp_path: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(tmp_path.glob("relay.db*")))


def _one_time_keys(tmp_path: Path, identity: str) -> int:
    with sqlite3.connect(tmp_path / "relay.db") as db:
        row = db.execute("SELECT COUNT(*) FROM one_time_keys WHERE identity = ?", (identity,))
        return int(row.fetchone()[0])


class TamperingRelay(Wrapper):
    """Client side, as a malicious relay: flips the last byte (in the ciphertext) of the
    first delivery, and swaps the bodies of the second and third."""

    def __init__(self, inner: Transport) -> None:
        super().__init__(inner)
        self.delivered = 0
        self.queued: list[bytes] = []

    async def recv(self) -> bytes:
        if self.queued:
            return self.queued.pop(0)
        data = await self.inner.recv()
        frame = frames.decode_relay_frame(data)
        if not isinstance(frame, frames.Deliver):
            return data
        self.delivered += 1
        body = frame.envelope.body
        if self.delivered == 1:
            return _with_body(frame, body[:-1] + bytes([body[-1] ^ 0x01]))
        if self.delivered == 2:
            following = frames.decode_relay_frame(await self.inner.recv())
            assert isinstance(following, frames.Deliver)
            self.delivered += 1
            self.queued.append(_with_body(following, body))
            return _with_body(frame, following.envelope.body)
        return data


def _with_body(deliver: frames.Deliver, body: bytes) -> bytes:
    envelope = msgspec.structs.replace(deliver.envelope, body=body)
    return frames.encode(msgspec.structs.replace(deliver, envelope=envelope))


class CaptureSends(Wrapper):
    """Client side: remember every Send the client puts on the wire."""

    def __init__(self, inner: Transport, sent: list[frames.Send]) -> None:
        super().__init__(inner)
        self.sent = sent

    async def send(self, data: bytes) -> None:
        frame = frames.decode_client_frame(data)
        if isinstance(frame, frames.Send):
            self.sent.append(frame)
        await self.inner.send(data)


async def test_the_relay_stores_ciphertext_only(world: World, tmp_path: Path) -> None:
    alice, bob = await world.identity("alice"), await world.identity("bob")
    await world.permit(bob, alice)
    alice_client = await world.connected(alice)
    await alice_client.voice().start(bob.identity, "cid", "k1", MARKER, {"name": MARKER})
    # bob is offline: the relay holds the envelope now.
    assert MARKER.encode() not in _relay_files(tmp_path)

    received = Received()
    bob_client = world.client(bob)
    bob_client.voice().on_start(received)
    await bob_client.connect()
    _, payload = await received.next()
    assert (payload["peer_info"], payload["data"]) == (MARKER, {"name": MARKER})
    assert MARKER.encode() not in _relay_files(tmp_path)


async def test_new_devices_get_sessions_and_own_copies_open(world: World) -> None:
    alice, bob = await world.identity("alice"), await world.identity("bob")
    await world.permit(bob, alice)
    alice_desk = await world.connected(alice)
    on_bob = Received()
    bob_client = world.client(bob)
    bob_client.voice().on_stop(on_bob)
    await bob_client.connect()
    await alice_desk.voice().stop(bob.identity, "cid", "before")
    await on_bob.next()

    bob_phone, alice_phone = await add_device(bob, world.link), await add_device(alice, world.link)
    on_bob_phone, on_alice_phone = Received(), Received()
    bob_phone_client = world.client(bob_phone)
    bob_phone_client.voice().on_stop(on_bob_phone)
    alice_phone_client = world.client(alice_phone)
    alice_phone_client.voice().on_stop(on_alice_phone)
    await bob_phone_client.connect()
    await alice_phone_client.connect()

    # The relay refuses the stale device lists once; the retry covers the new devices.
    await alice_desk.voice().stop(bob.identity, "cid", "after")
    assert (await on_bob.next())[1]["call_id"] == "after"
    assert (await on_bob_phone.next())[1]["call_id"] == "after"
    # alice's phone opened its copy (no rejection) and, as before, handled nothing.
    await alice_phone_client.voice().stop(bob.identity, "cid", "from-phone")
    await on_bob.until(3)
    await on_bob_phone.until(2)
    assert on_alice_phone.items == []
    for client in (bob_client, bob_phone_client, alice_phone_client, alice_desk):
        assert client.rejected == Counter(), client.rejected


async def test_a_revoked_device_is_no_longer_encrypted_for(world: World) -> None:
    alice, bob = await world.identity("alice"), await world.identity("bob")
    bob_phone = await add_device(bob, world.link)
    await world.permit(bob, alice)
    bob_client, phone_client = world.client(bob), world.client(bob_phone)
    received = Received()
    bob_client.voice().on_stop(received)
    await bob_client.connect()
    await phone_client.connect()
    sent: list[frames.Send] = []
    alice_client = world.client(
        alice, link=world.link.with_client_side(lambda t: CaptureSends(t, sent))
    )
    await alice_client.connect()
    await alice_client.voice().stop(bob.identity, "cid", "both")
    phone_address = f"{bob.identity}:{bob_phone.device}"
    assert phone_address in sealed.decode(sent[-1].body).keys

    await bob_client.revoke_device(bob_phone.device)
    await alice_client.voice().stop(bob.identity, "cid", "desk-only")
    assert phone_address not in sealed.decode(sent[-1].body).keys
    assert {d.device for d in sent[-1].devices} == {bob.device}
    await received.until(2)
    assert received.call_ids == ["both", "desk-only"]


async def test_tampered_deliveries_never_reach_a_handler(world: World) -> None:
    alice, bob = await world.identity("alice"), await world.identity("bob")
    await world.permit(bob, alice)
    alice_client = await world.connected(alice)
    for n in range(4):
        await alice_client.voice().stop(bob.identity, "cid", f"call-{n}")
    # bob connects once all four are stored, so the swapped pair comes in one batch.
    received = Received()
    bob_client = world.client(bob, link=world.link.with_client_side(TamperingRelay))
    bob_client.voice().on_stop(received)
    await bob_client.connect()
    await received.next()
    assert received.call_ids == ["call-3"]
    assert bob_client.rejected == Counter(tampered=3)


async def test_keys_for_a_device_that_had_none_yet_are_missing_not_fatal(world: World) -> None:
    alice, bob = await world.identity("alice"), await world.identity("bob")
    await world.permit(bob, alice)
    bob_phone = await add_device(bob, world.link)  # never connected: no keys published
    alice_client = await world.connected(alice)
    await alice_client.voice().stop(bob.identity, "cid", "early")

    received = Received()
    phone_client = world.client(bob_phone)
    phone_client.voice().on_stop(received)
    await phone_client.connect()
    await eventually(lambda: phone_client.rejected)
    assert phone_client.rejected == Counter(no_key_for_device=1)
    await alice_client.voice().stop(bob.identity, "cid", "later")
    assert (await received.next())[1]["call_id"] == "later"


async def test_one_time_keys_are_topped_up_when_low(world: World, tmp_path: Path) -> None:
    alice, bob = await world.identity("alice"), await world.identity("bob")
    await world.permit(bob, alice)
    await world.connected(bob)
    assert _one_time_keys(tmp_path, bob.identity) == ONE_TIME_KEYS_TARGET
    claimer = Connection(
        alice,
        world.link,
        on_deliver=lambda deliver: None,
        resume_after=lambda: 0,
        ack_timeout=WAIT,
    )
    await claimer.open()
    for _ in range(ONE_TIME_KEYS_TARGET - ONE_TIME_KEYS_LOW + 1):
        await claimer.request(
            lambda ref: frames.ClaimKeys(ref=ref, identity=bob.identity), frames.ClaimedKeys
        )
    await claimer.close()
    await eventually(lambda: _one_time_keys(tmp_path, bob.identity) == ONE_TIME_KEYS_TARGET)


def _fallback_key(tmp_path: Path, identity: str) -> tuple[bytes, bool]:
    """The fallback key the relay holds for the identity's device, and whether it was
    handed out."""
    with closing(sqlite3.connect(tmp_path / "relay.db")) as db:
        row = db.execute("SELECT key, claimed FROM fallback_keys WHERE identity = ?", (identity,))
        key, claimed = row.fetchone()
        return bytes(key), bool(claimed)


async def test_a_fallback_key_handed_out_while_away_is_rotated(
    world: World, tmp_path: Path
) -> None:
    alice, bob = await world.identity("alice"), await world.identity("bob")
    await world.permit(bob, alice)  # bob's client published its keys, and left
    first, claimed = _fallback_key(tmp_path, bob.identity)
    assert not claimed
    claimer = Connection(
        alice,
        world.link,
        on_deliver=lambda deliver: None,
        resume_after=lambda: 0,
        ack_timeout=WAIT,
    )
    await claimer.open()
    try:
        replies = [
            await claimer.request(
                lambda ref: frames.ClaimKeys(ref=ref, identity=bob.identity),
                frames.ClaimedKeys,
            )
            for _ in range(ONE_TIME_KEYS_TARGET + 2)
        ]
    finally:
        await claimer.close()
    handed_out = [r.devices[0].one_time_key for r in replies if r.devices[0].fallback]
    assert handed_out and set(handed_out) == {first}
    assert _fallback_key(tmp_path, bob.identity) == (first, True)
    # Told when it comes back, bob publishes a new fallback key and more one-time keys.
    await world.connected(bob)
    await eventually(lambda: _fallback_key(tmp_path, bob.identity)[0] != first)
    assert not _fallback_key(tmp_path, bob.identity)[1]
    await eventually(lambda: _one_time_keys(tmp_path, bob.identity) == ONE_TIME_KEYS_TARGET)


async def test_a_restarted_client_opens_messages_with_its_saved_sessions(world: World) -> None:
    alice, bob = await world.identity("alice"), await world.identity("bob")
    await world.permit(bob, alice)
    await world.permit(alice, bob)
    alice_client = await world.connected(alice)
    on_alice = Received()
    alice_client.voice().on_accept(on_alice)
    first = Received()
    bob_client = world.client(bob)
    bob_client.voice().on_start(first)
    await bob_client.connect()
    await alice_client.voice().start(bob.identity, "cid", "k1", "sdp-offer", {})
    await first.next()
    # The answer makes alice's next messages normal (not pre-key) Olm messages.
    await bob_client.voice().accept(alice.identity, "cid", "k1", "sdp-answer")
    await on_alice.next()
    await bob_client.close()

    await alice_client.voice().start(bob.identity, "cid", "k2", "sdp-offer", {})
    again = Received()
    restarted = world.client(bob)
    restarted.voice().on_start(again)
    await restarted.connect()
    assert (await again.next())[1]["call_id"] == "k2"
    assert restarted.rejected == Counter()


async def test_other_credentials_cannot_open_the_olm_state(world: World) -> None:
    alice = await world.identity("alice")
    await (await world.connected(alice)).close()
    impostor = dataclasses.replace(alice, secret_key=SigningKey.generate())
    client = Client(impostor, state_path=world.state_path(alice), connector=world.link)
    with pytest.raises(StateError):
        await client.connect()


@pytest.mark.parametrize("bob_sends_meanwhile", [False, True])
async def test_a_delivery_decrypted_before_a_restart_is_still_handled(
    world: World, monkeypatch: pytest.MonkeyPatch, bob_sends_meanwhile: bool
) -> None:
    """Decrypting spends Olm keys. If bob's client stops after decrypting a delivery
    but before recording it, and meanwhile wrote Olm state for a send of its own, the
    redelivered message must still be handled after the restart, not lost."""
    alice, bob = await world.identity("alice"), await world.identity("bob")
    await world.permit(bob, alice)
    await world.permit(alice, bob)
    alice_client = await world.connected(alice)

    decrypted = asyncio.Event()
    real_verify = Verifier.verify

    async def verify_never_returns(*args: object) -> Verified:
        decrypted.set()  # a key fetch that waits on the network, say
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    monkeypatch.setattr(Verifier, "verify", verify_never_returns)
    bob_client = world.client(bob, state_path=world.tmp_path / "bob-state.db")
    await bob_client.connect()
    await inject(alice_client, bob.identity, stop_token(alice, bob.identity, call_id="m1"))
    await asyncio.wait_for(decrypted.wait(), WAIT)
    if bob_sends_meanwhile:
        await inject(bob_client, alice.identity, stop_token(bob, alice.identity, call_id="r"))
    await bob_client.close()

    monkeypatch.setattr(Verifier, "verify", real_verify)
    received = Received()
    restarted = world.client(bob, state_path=world.tmp_path / "bob-state.db")
    restarted.voice().on_stop(received)
    await restarted.connect()
    await received.until(1)
    assert received.call_ids == ["m1"]
    assert restarted.rejected == Counter()

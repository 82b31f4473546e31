"""End-to-end encryption over a real relay process: the relay sees ciphertext only."""

from __future__ import annotations

import re
import sqlite3
import sys
from collections import Counter
from pathlib import Path

import pytest
from tests.conftest import Register
from tests.e2e.test_security import _until
from tests.examples.test_examples import PROXY, Inbox, _bind

from parley.client import Client
from parley.client.connection import Connection, websocket_connector
from parley.client.registration import add_device, register_identity
from parley.crypto import sealed
from parley.errors import DeviceRevoked
from parley.processes import ChildProcess, RelayProcess
from parley.protocol import frames
from parley.protocol.frames import ONE_TIME_KEYS_LOW, ONE_TIME_KEYS_TARGET

pytestmark = pytest.mark.e2e

MARKER = "zq-marker-4b1d-e2ee"


def _relay_db(relay: RelayProcess) -> sqlite3.Connection:
    return sqlite3.connect(next(relay.data_dir.glob("*.db")))


def _stored_bodies(relay: RelayProcess, sender: str) -> list[tuple[str, bytes]]:
    """(envelope id, body) of the envelopes from ``sender`` the relay still holds."""
    with _relay_db(relay) as db:
        rows = db.execute(
            "SELECT id, body FROM messages WHERE sender = ? AND body IS NOT NULL ORDER BY seq",
            (sender,),
        )
        return [(id_, bytes(body)) for id_, body in rows]


def _one_time_keys(relay: RelayProcess, identity: str) -> int:
    with _relay_db(relay) as db:
        row = db.execute("SELECT COUNT(*) FROM one_time_keys WHERE identity = ?", (identity,))
        return int(row.fetchone()[0])


async def test_the_proxy_flow_is_encrypted_and_the_relay_never_sees_a_payload(
    tmp_path: Path,
) -> None:
    relay = RelayProcess(tmp_path / "relay")
    relay.argv.insert(relay.argv.index("relay"), "--verbose")  # debug logs too
    async with relay:
        paths = {}
        for name in ("app", "operator", "customer"):
            creds = await register_identity(relay.url, name=name)
            paths[name] = tmp_path / f"{name}.json"
            creds.save(paths[name])
        app, op, cu = (Client.from_credentials(paths[n]) for n in ("app", "operator", "customer"))
        db = tmp_path / "calls.db"
        await _bind(db, "cid-1", op.id, cu.id)
        app_args = ["run", "--credentials", str(paths["app"])]
        proxy = ChildProcess(
            [sys.executable, str(PROXY), "--db", str(db), *app_args],
            re.compile(r"\[voice_proxy\] ready"),
            name="voice proxy",
        )
        async with proxy, op as operator, cu as customer:
            await operator.connections.permit(app.id)
            await customer.connections.permit(app.id)
            at_operator, at_customer = Inbox(), Inbox()
            customer.voice().on_start(at_customer)
            customer.voice().on_stop(at_customer)
            operator.voice().on_accept(at_operator)

            offer, answer = f"v=0 {MARKER}-offer", f"v=0 {MARKER}-answer"
            await operator.voice().start(app.id, "cid-1", "k1", offer, {"note": MARKER})
            _, ring = await at_customer.next()
            assert (ring["peer_info"], ring["data"]) == (offer, {"operator_name": "Bob"})
            await customer.voice().accept(app.id, "cid-1", "k1", answer, {"note": MARKER})
            _, accepted = await at_operator.next()
            assert accepted["peer_info"] == answer
            await operator.voice().stop(app.id, "cid-1", "k1")
            _, stopped = await at_customer.next()
            assert stopped["call_id"] == "k1"
            for client in (operator, customer):
                assert client.rejected == Counter()
        relay_lines = list(relay.lines)
    stored = b"".join(p.read_bytes() for p in (tmp_path / "relay").rglob("*") if p.is_file())
    assert stored  # the relay did write its database here
    assert MARKER.encode() not in stored
    assert any("DEBUG" in line for line in relay_lines)
    assert not [line for line in relay_lines if MARKER in line]


async def test_tampered_ciphertext_is_rejected_at_the_receiver(
    register: Register, relay_process: RelayProcess
) -> None:
    (alice, alice_path), (bob, bob_path) = await register("alice"), await register("bob")
    async with Client.from_credentials(bob_path) as bob_client:
        await bob_client.connections.permit(alice.identity)
    async with Client.from_credentials(alice_path) as alice_client:
        for n in range(4):
            await alice_client.voice().stop(bob.identity, "cid", f"call-{n}")
    # bob is offline: play the relay that flips a byte and swaps two envelopes' bodies.
    (first, body1), (second, body2), (third, body3), _ = _stored_bodies(
        relay_process, alice.identity
    )
    flipped = body1[:-1] + bytes([body1[-1] ^ 0x01])
    with _relay_db(relay_process) as db:
        for envelope_id, body in ((first, flipped), (second, body3), (third, body2)):
            db.execute("UPDATE messages SET body = ? WHERE id = ?", (body, envelope_id))

    handled: list[str] = []
    async with Client.from_credentials(bob_path) as bob_client:
        bob_client.voice().on_stop(lambda issuer, payload: handled.append(payload["call_id"]))
        await _until(lambda: handled)
        assert handled == ["call-3"]
        assert bob_client.rejected == Counter(tampered=3)


async def test_a_receiver_that_lost_its_state_recovers_on_the_next_pre_key_message(
    register: Register,
) -> None:
    (alice, alice_path), (bob, bob_path) = await register("alice"), await register("bob")
    handled: list[str] = []

    def bob_app() -> Client:
        client = Client.from_credentials(bob_path)
        client.voice().on_stop(lambda issuer, payload: handled.append(payload["call_id"]))
        return client

    async with Client.from_credentials(alice_path) as alice_client:
        async with bob_app() as bob_client:
            await bob_client.connections.permit(alice.identity)
            await alice_client.voice().stop(bob.identity, "cid", "before")
            await _until(lambda: handled == ["before"])
        # bob's device loses its state file: its Olm account and every session.
        bob_path.with_name(bob_path.stem + ".state.db").unlink()
        async with bob_app() as bob_client:
            # alice still holds a session with bob's old account; the relay refuses
            # that Send as stale, alice claims a key of the new account and starts a
            # new session: the message arrives as its pre-key message.
            await alice_client.voice().stop(bob.identity, "cid", "after")
            await _until(lambda: handled == ["before", "after"])
            assert bob_client.rejected == Counter()


async def test_one_time_keys_are_published_and_topped_up(
    register: Register, relay_process: RelayProcess
) -> None:
    (alice, _), (bob, bob_path) = await register("alice"), await register("bob")
    async with Client.from_credentials(bob_path) as bob_client:
        await bob_client.connections.permit(alice.identity)
        assert _one_time_keys(relay_process, bob.identity) == ONE_TIME_KEYS_TARGET
        claimer = Connection(
            alice,
            websocket_connector(relay_process.url),
            on_deliver=lambda deliver: None,
            resume_after=lambda: 0,
            ack_timeout=10,
        )
        await claimer.open()
        try:
            for _ in range(ONE_TIME_KEYS_TARGET - ONE_TIME_KEYS_LOW + 1):
                await claimer.request(
                    lambda ref: frames.ClaimKeys(ref=ref, identity=bob.identity),
                    frames.ClaimedKeys,
                )
        finally:
            await claimer.close()
        await _until(lambda: _one_time_keys(relay_process, bob.identity) == ONE_TIME_KEYS_TARGET)


async def test_a_device_out_of_one_time_keys_is_reached_through_its_fallback_key(
    register: Register, relay_process: RelayProcess
) -> None:
    (alice, alice_path), (carol, carol_path) = await register("alice"), await register("carol")
    (bob, bob_path), (mallory, _) = await register("bob"), await register("mallory")
    async with Client.from_credentials(bob_path) as bob_client:
        for sender in (alice, carol, mallory):
            await bob_client.connections.permit(sender.identity)
    # bob is offline; mallory claims every one-time key bob published.
    claimer = Connection(
        mallory,
        websocket_connector(relay_process.url),
        on_deliver=lambda deliver: None,
        resume_after=lambda: 0,
        ack_timeout=10,
    )
    await claimer.open()
    try:
        for _ in range(ONE_TIME_KEYS_TARGET):
            await claimer.request(
                lambda ref: frames.ClaimKeys(ref=ref, identity=bob.identity),
                frames.ClaimedKeys,
            )
    finally:
        await claimer.close()
    assert _one_time_keys(relay_process, bob.identity) == 0

    # Two new senders still start sessions with bob: both from his fallback key.
    for path, call in ((alice_path, "from alice"), (carol_path, "from carol")):
        async with Client.from_credentials(path) as sender_client:
            await sender_client.voice().stop(bob.identity, "cid", call)
    with _relay_db(relay_process) as db:
        row = db.execute(
            "SELECT key, claimed FROM fallback_keys WHERE identity = ?", (bob.identity,)
        )
        handed_out, claimed = row.fetchone()
    assert claimed
    handled: list[str] = []
    async with Client.from_credentials(bob_path) as bob_client:
        bob_client.voice().on_stop(lambda issuer, payload: handled.append(payload["call_id"]))
        await _until(lambda: sorted(handled) == ["from alice", "from carol"])
        assert bob_client.rejected == Counter()
        # Told on the way in, bob replaced the fallback key and topped up.
        await _until(lambda: _one_time_keys(relay_process, bob.identity) == ONE_TIME_KEYS_TARGET)
        with _relay_db(relay_process) as db:
            row = db.execute(
                "SELECT key, claimed FROM fallback_keys WHERE identity = ?", (bob.identity,)
            )
            assert row.fetchone()[0] != handed_out


async def test_a_revoked_device_cannot_read_new_messages(
    register: Register, relay_process: RelayProcess, tmp_path: Path
) -> None:
    (alice, alice_path), (bob, bob_path) = await register("alice"), await register("bob")
    phone = await add_device(bob)
    phone_state = tmp_path / "phone.state.db"
    handled: list[str] = []
    async with (
        Client.from_credentials(bob_path) as bob_desk,
        Client(phone, state_path=phone_state) as phone_client,
        Client.from_credentials(alice_path) as alice_client,
    ):
        phone_client.voice().on_stop(lambda issuer, payload: handled.append(payload["call_id"]))
        await bob_desk.connections.permit(alice.identity)
        await alice_client.voice().stop(bob.identity, "cid", "before")
        await _until(lambda: handled == ["before"])
        await bob_desk.revoke_device(phone.device)
    async with Client.from_credentials(alice_path) as alice_client:
        await alice_client.voice().stop(bob.identity, "cid", f"after {MARKER}")
    # The new message is sealed for bob's desk only: nothing in it opens for the phone.
    [(_, body)] = _stored_bodies(relay_process, alice.identity)
    assert set(sealed.decode(body).keys) == {f"{bob.identity}:{bob.device}"}
    with pytest.raises(DeviceRevoked):
        async with Client(phone, state_path=phone_state):
            pass
    assert handled == ["before"]


async def test_a_restarted_client_decrypts_with_its_persisted_sessions(
    register: Register,
) -> None:
    (alice, alice_path), (bob, bob_path) = await register("alice"), await register("bob")
    handled: list[str] = []
    answered: list[str] = []

    def bob_app() -> Client:
        client = Client.from_credentials(bob_path)
        client.voice().on_start(lambda issuer, payload: handled.append(payload["call_id"]))
        return client

    async with Client.from_credentials(alice_path) as alice_client:
        alice_client.voice().on_accept(lambda issuer, payload: answered.append(payload["cid"]))
        await alice_client.connections.permit(bob.identity)
        async with bob_app() as bob_client:
            await bob_client.connections.permit(alice.identity)
            await alice_client.voice().start(bob.identity, "c1", "k1", "offer", {})
            await _until(lambda: handled == ["k1"])
            await bob_client.voice().accept(alice.identity, "c1", "k1", "answer")
            await _until(lambda: answered == ["c1"])
        # bob is down; alice's next message continues the session bob saved.
        await alice_client.voice().start(bob.identity, "c2", "k2", "offer", {})
        async with bob_app() as bob_client:
            await _until(lambda: handled == ["k1", "k2"])
            assert bob_client.rejected == Counter()

"""The relay's key directory: publishing, claiming, fallback keys, low-key pushes, Send
coverage."""

from __future__ import annotations

import secrets
import sqlite3
from contextlib import closing
from pathlib import Path

from parley.protocol import frames
from parley.protocol.frames import ONE_TIME_KEYS_LOW, DeviceRef, ErrorCode
from parley.protocol.keychain import KeyOp
from parley.relay import Relay, RelayConfig, SqliteStore

from .helpers import FakeClock, Identity, Peer, enroll, online


def _key() -> bytes:
    return secrets.token_bytes(32)


async def _publish(
    peer: Peer,
    ident: Identity,
    device: str = "d1",
    count: int = 0,
    identity_key: bytes = b"",
    fallback_key: bytes | None = None,
) -> tuple[bytes, frames.RelayFrame]:
    identity_key = identity_key or _key()
    signature = ident.keys[device].sign(frames.identity_key_message(ident.id, device, identity_key))
    ref = next(peer.refs)
    await peer.send(
        frames.PublishKeys(
            ref=ref,
            identity_key=identity_key,
            signature=signature,
            one_time_keys=[_key() for _ in range(count)],
            fallback_key=fallback_key,
        )
    )
    while True:  # skip KeyCount pushes (claims of others) queued before the reply
        reply = await peer.recv()
        if getattr(reply, "ref", None) == ref:
            return identity_key, reply


async def _claim(peer: Peer, identity: str, **sessions: bytes) -> frames.ClaimedKeys:
    reply = await peer.request(frames.ClaimKeys, identity=identity, sessions=sessions)
    assert isinstance(reply, frames.ClaimedKeys), reply
    return reply


async def _pair(relay: Relay) -> tuple[Identity, Identity, Peer, Peer]:
    """alice and bob online, bob permitting alice."""
    alice, bob = Identity.create("alice"), Identity.create("bob")
    await enroll(relay, alice)
    await enroll(relay, bob)
    alice_peer, bob_peer = await online(relay, alice), await online(relay, bob)
    assert isinstance(await bob_peer.request(frames.Permit, identity="alice"), frames.Done)
    return alice, bob, alice_peer, bob_peer


async def test_publish_answers_with_the_count_and_claims_hand_each_key_out_once(
    relay: Relay,
) -> None:
    _alice, bob, alice_peer, bob_peer = await _pair(relay)
    identity_key, reply = await _publish(bob_peer, bob, count=2)
    assert isinstance(reply, frames.KeyCount) and reply.one_time_keys == 2

    first, second, third = [await _claim(alice_peer, "bob") for _ in range(3)]
    assert [d.device for d in first.devices] == ["d1"]
    assert first.devices[0].identity_key == identity_key
    claimed = [c.devices[0].one_time_key for c in (first, second, third)]
    assert claimed[0] is not None and claimed[1] is not None and claimed[0] != claimed[1]
    assert claimed[2] is None  # none left: the device is still listed
    # A device the claimer already has a session with (same identity key) costs nothing.
    _, reply = await _publish(bob_peer, bob, count=1, identity_key=identity_key)
    assert (await _claim(alice_peer, "bob", d1=identity_key)).devices[0].one_time_key is None
    assert (await _claim(alice_peer, "bob")).devices[0].one_time_key is not None


async def test_publish_is_checked(relay: Relay) -> None:
    _, bob, _, bob_peer = await _pair(relay)
    key = _key()
    forged = Identity.create("bob").keys["d1"].sign(frames.identity_key_message("bob", "d1", key))
    for bad in (
        frames.PublishKeys(ref=1, identity_key=key, signature=forged),
        frames.PublishKeys(ref=2, identity_key=b"short", signature=forged),
        frames.PublishKeys(
            ref=3,
            identity_key=key,
            signature=bob.keys["d1"].sign(frames.identity_key_message("bob", "d1", key)),
            one_time_keys=[b"short"],
        ),
        frames.PublishKeys(
            ref=4,
            identity_key=key,
            signature=bob.keys["d1"].sign(frames.identity_key_message("bob", "d1", key)),
            fallback_key=b"short",
        ),
    ):
        await bob_peer.send(bad)
        reply = await bob_peer.expect(frames.Error)
        assert (reply.ref, reply.code) == (bad.ref, ErrorCode.MALFORMED)


async def test_a_new_identity_key_drops_the_old_one_time_keys(relay: Relay) -> None:
    _, bob, alice_peer, bob_peer = await _pair(relay)
    await _publish(bob_peer, bob, count=5)
    new_key, reply = await _publish(bob_peer, bob, count=1)
    assert isinstance(reply, frames.KeyCount) and reply.one_time_keys == 1
    assert (await _claim(alice_peer, "bob")).devices[0].identity_key == new_key


async def test_claims_need_permission_and_a_known_identity(relay: Relay) -> None:
    alice, _bob, alice_peer, bob_peer = await _pair(relay)
    await _publish(alice_peer, alice, count=1)
    reply = await bob_peer.request(frames.ClaimKeys, identity="alice")
    assert isinstance(reply, frames.Error) and reply.code is ErrorCode.NOT_PERMITTED
    reply = await bob_peer.request(frames.ClaimKeys, identity="nobody")
    assert isinstance(reply, frames.Error) and reply.code is ErrorCode.UNKNOWN_IDENTITY


async def test_own_claims_list_the_other_devices_only(relay: Relay) -> None:
    alice = Identity.create("alice")
    await enroll(relay, alice)
    desk = await online(relay, alice)
    entry = alice.next_entry(KeyOp.ADD, "d2", signer="d1")
    assert isinstance(await desk.request(frames.AppendKey, entry=entry), frames.Done)
    alice.chain.append(entry)
    phone = await online(relay, alice, "d2")
    # Enough keys that claiming one leaves neither low (no KeyCount push in between).
    await _publish(desk, alice, count=ONE_TIME_KEYS_LOW + 1)
    await _publish(phone, alice, "d2", count=ONE_TIME_KEYS_LOW + 1)
    assert [d.device for d in (await _claim(desk, "alice")).devices] == ["d2"]
    assert [d.device for d in (await _claim(phone, "alice")).devices] == ["d1"]


async def test_a_device_low_on_keys_is_told_now_and_when_it_comes_back(relay: Relay) -> None:
    _alice, bob, alice_peer, bob_peer = await _pair(relay)
    await _publish(bob_peer, bob, count=ONE_TIME_KEYS_LOW, fallback_key=_key())
    await _claim(alice_peer, "bob")
    assert await bob_peer.expect(frames.KeyCount) == frames.KeyCount(
        one_time_keys=ONE_TIME_KEYS_LOW - 1
    )
    await bob_peer.close()
    again = await online(relay, bob)
    assert await again.expect(frames.KeyCount) == frames.KeyCount(
        one_time_keys=ONE_TIME_KEYS_LOW - 1
    )


async def test_a_send_must_cover_exactly_the_current_devices(
    relay: Relay, clock: FakeClock
) -> None:
    _alice, bob, alice_peer, bob_peer = await _pair(relay)
    bob_key, _ = await _publish(bob_peer, bob, count=1)

    async def send(*devices: DeviceRef) -> frames.RelayFrame:
        return await alice_peer.request(
            frames.Send,
            envelope_id=secrets.token_hex(8),
            recipient="bob",
            body=b"sealed",
            expires_at=clock.now + 60,
            devices=list(devices),
        )

    stale = await send()
    assert isinstance(stale, frames.Error) and stale.code is ErrorCode.STALE_DEVICES
    wrong_key = await send(DeviceRef("bob", "d1", _key()))
    assert isinstance(wrong_key, frames.Error) and wrong_key.code is ErrorCode.STALE_DEVICES
    assert isinstance(await send(DeviceRef("bob", "d1", bob_key)), frames.Ack)
    assert (await bob_peer.expect(frames.Deliver)).envelope.body == b"sealed"

    # Revoking the device drops its keys: a Send naming it is stale from then on.
    entry = bob.next_entry(KeyOp.ADD, "d2", signer="d1")
    assert isinstance(await bob_peer.request(frames.AppendKey, entry=entry), frames.Done)
    bob.chain.append(entry)
    revoke = bob.next_entry(KeyOp.REVOKE, "d1", signer="d2")
    phone = await online(relay, bob, "d2")
    assert isinstance(await phone.request(frames.AppendKey, entry=revoke), frames.Done)
    stale = await send(DeviceRef("bob", "d1", bob_key))
    assert isinstance(stale, frames.Error) and stale.code is ErrorCode.STALE_DEVICES
    assert (await _claim(alice_peer, "bob")).devices == []
    assert isinstance(await send(), frames.Ack)


async def test_a_device_out_of_one_time_keys_hands_out_its_fallback_key_until_it_rotates(
    relay: Relay,
) -> None:
    _alice, bob, alice_peer, bob_peer = await _pair(relay)
    fallback = _key()
    identity_key, reply = await _publish(bob_peer, bob, count=1, fallback_key=fallback)
    assert isinstance(reply, frames.KeyCount)
    assert (reply.one_time_keys, reply.fallback_key) == (1, True)
    first = (await _claim(alice_peer, "bob")).devices[0]
    assert first.one_time_key not in (None, fallback) and not first.fallback
    assert await bob_peer.expect(frames.KeyCount) == frames.KeyCount(one_time_keys=0)

    # Out of one-time keys: every claimer gets the fallback key, which stays.
    for _ in range(3):
        claimed = (await _claim(alice_peer, "bob")).devices[0]
        assert (claimed.one_time_key, claimed.fallback) == (fallback, True)
        # Told each time it was handed out, so it rotates even if it missed a push.
        told = await bob_peer.expect(frames.KeyCount)
        assert told == frames.KeyCount(one_time_keys=0, fallback_key=False)
    # The same key again (a retried publish) does not hide that it was handed out.
    _, reply = await _publish(bob_peer, bob, identity_key=identity_key, fallback_key=fallback)
    assert isinstance(reply, frames.KeyCount) and not reply.fallback_key

    rotated = _key()
    _, reply = await _publish(bob_peer, bob, identity_key=identity_key, fallback_key=rotated)
    assert isinstance(reply, frames.KeyCount) and reply.fallback_key
    claimed = (await _claim(alice_peer, "bob")).devices[0]
    assert (claimed.one_time_key, claimed.fallback) == (rotated, True)
    # One-time keys come first again once there are some.
    _, reply = await _publish(bob_peer, bob, count=1, identity_key=identity_key)
    claimed = (await _claim(alice_peer, "bob")).devices[0]
    assert claimed.one_time_key not in (None, rotated) and not claimed.fallback


async def test_a_device_whose_fallback_key_went_out_while_away_is_told_when_it_comes_back(
    relay: Relay,
) -> None:
    _alice, bob, alice_peer, bob_peer = await _pair(relay)
    fallback = _key()
    await _publish(bob_peer, bob, count=ONE_TIME_KEYS_LOW, fallback_key=fallback)
    await bob_peer.close()
    for _ in range(ONE_TIME_KEYS_LOW + 1):
        await _claim(alice_peer, "bob")
    again = await online(relay, bob)
    told = await again.expect(frames.KeyCount)
    assert told == frames.KeyCount(one_time_keys=0, fallback_key=False)


async def test_a_device_that_never_published_a_fallback_key_is_asked_for_one(
    relay: Relay,
) -> None:
    _alice, bob, _alice_peer, bob_peer = await _pair(relay)
    _, reply = await _publish(bob_peer, bob, count=ONE_TIME_KEYS_LOW)
    assert isinstance(reply, frames.KeyCount) and not reply.fallback_key
    await bob_peer.close()
    again = await online(relay, bob)
    told = await again.expect(frames.KeyCount)
    assert told == frames.KeyCount(one_time_keys=ONE_TIME_KEYS_LOW, fallback_key=False)


async def test_the_fallback_key_survives_a_restart_and_goes_with_the_identity_key(
    tmp_path: Path, clock: FakeClock
) -> None:
    path = tmp_path / "keys.db"
    relay = Relay(SqliteStore(path), RelayConfig(), clock=clock)
    await relay.start()
    try:
        alice, bob, _, bob_peer = await _pair(relay)
        fallback = _key()
        await _publish(bob_peer, bob, fallback_key=fallback)
    finally:
        await relay.close()
    restarted = Relay(SqliteStore(path), RelayConfig(), clock=clock)
    await restarted.start()
    try:
        alice_peer = await online(restarted, alice)
        bob_peer = await online(restarted, bob)
        claimed = (await _claim(alice_peer, "bob")).devices[0]
        assert (claimed.one_time_key, claimed.fallback) == (fallback, True)
        # A new Olm account (new identity key) without a fallback key: the old one is gone.
        _, reply = await _publish(bob_peer, bob, count=0)
        assert isinstance(reply, frames.KeyCount) and not reply.fallback_key
        assert (await _claim(alice_peer, "bob")).devices[0].one_time_key is None
    finally:
        await restarted.close()


async def test_revoking_a_device_drops_its_fallback_key(relay: Relay, tmp_path: Path) -> None:
    _alice, bob, alice_peer, bob_peer = await _pair(relay)
    await _publish(bob_peer, bob, fallback_key=_key())
    entry = bob.next_entry(KeyOp.ADD, "d2", signer="d1")
    assert isinstance(await bob_peer.request(frames.AppendKey, entry=entry), frames.Done)
    bob.chain.append(entry)
    phone = await online(relay, bob, "d2")
    phone_fallback = _key()
    await _publish(phone, bob, "d2", fallback_key=phone_fallback)
    revoke = bob.next_entry(KeyOp.REVOKE, "d1", signer="d2")
    assert isinstance(await phone.request(frames.AppendKey, entry=revoke), frames.Done)
    [claimed] = (await _claim(alice_peer, "bob")).devices
    assert (claimed.device, claimed.one_time_key) == ("d2", phone_fallback)
    with closing(sqlite3.connect(tmp_path / "relay.db")) as db:
        rows = db.execute("SELECT identity, device FROM fallback_keys").fetchall()
    assert rows == [("bob", "d2")]


async def test_keys_loaded_past_a_revocation_lose_the_revoked_device(relay: Relay) -> None:
    # The race the cache guards against: a load that began before a revocation lands
    # after it, with the revoked device's key in it.
    _alice, bob, alice_peer, bob_peer = await _pair(relay)
    await _publish(bob_peer, bob)
    entry = bob.next_entry(KeyOp.ADD, "d2", signer="d1")
    assert isinstance(await bob_peer.request(frames.AppendKey, entry=entry), frames.Done)
    bob.chain.append(entry)
    phone = await online(relay, bob, "d2")
    await _publish(phone, bob, "d2")
    keys = relay._keys
    loaded = dict(await keys.identity_keys("bob"))
    assert sorted(loaded) == ["d1", "d2"]
    revoke = bob.next_entry(KeyOp.REVOKE, "d1", signer="d2")
    assert isinstance(await phone.request(frames.AppendKey, entry=revoke), frames.Done)
    assert sorted(await keys.identity_keys("bob")) == ["d2"]
    keys._keys["bob"] = dict(loaded)  # the late load, as identity_keys would cache it
    assert sorted(await keys.identity_keys("bob")) == ["d2"]
    assert sorted(await keys.identity_keys("bob")) == ["d2"]  # and checked once, kept
    [claimed] = (await _claim(alice_peer, "bob")).devices
    assert claimed.device == "d2"

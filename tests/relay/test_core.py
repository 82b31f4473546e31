"""The relay core over in-memory transports, speaking raw frames."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import msgspec
import pytest

from parley.protocol import frames
from parley.protocol.frames import ErrorCode
from parley.protocol.keychain import KeyOp
from parley.relay import Relay, RelayConfig, SqliteStore
from parley.relay.session import CLOSE_AUTH_FAILED, CLOSE_AUTH_TIMEOUT, CLOSE_REVOKED

from .helpers import WAIT, FakeClock, Identity, Peer, counter, enroll, online, rejected

HOUR = 3600.0


def error(frame: frames.RelayFrame, code: ErrorCode) -> frames.Error:
    assert isinstance(frame, frames.Error), frame
    assert frame.code is code, frame
    return frame


async def pair(relay: Relay) -> tuple[Identity, Identity]:
    """alice and bob, registered; alice accepts messages from bob."""
    alice, bob = Identity.create("alice"), Identity.create("bob")
    await enroll(relay, alice)
    await enroll(relay, bob)
    peer = await online(relay, alice)
    assert isinstance(await peer.request(frames.Permit, identity="bob"), frames.Done)
    await peer.close()
    return alice, bob


# -- handshake ------------------------------------------------------------------------


async def test_challenge_carries_a_fresh_nonce_and_the_body_limit(tmp_path: Path) -> None:
    relay = Relay(SqliteStore(tmp_path / "r.db"), RelayConfig(max_body=1000))
    await relay.start()
    try:
        first, second = Peer(relay), Peer(relay)
        a, b = await first.start(), await second.start()
        assert len(a.nonce) == 32
        assert a.nonce != b.nonce
        assert a.max_body == 1000
        await first.close()
        await second.close()
    finally:
        await relay.close()


async def test_register_is_idempotent_and_protects_the_id(relay: Relay) -> None:
    alice = Identity.create("alice")
    peer = Peer(relay)
    await peer.start()
    reply = await peer.register(alice, name="Alice")
    assert reply == frames.Registered(ref=1, identity="alice")
    again = await peer.register(alice)
    assert isinstance(again, frames.Registered)
    impostor = Identity.create("alice")
    error(await peer.register(impostor), ErrorCode.IDENTITY_EXISTS)
    await peer.close()


async def test_register_rejects_an_entry_that_is_not_a_genesis(relay: Relay) -> None:
    alice = Identity.create("alice")
    second = alice.next_entry(KeyOp.ADD, "d2", signer="d1")
    peer = Peer(relay)
    await peer.start()
    await peer.send(frames.Register(ref=7, entry=second))
    reply = error(await peer.recv(), ErrorCode.INVALID_KEY_CHAIN)
    assert reply.ref == 7
    await peer.close()


async def test_requests_before_authenticating_are_refused(relay: Relay) -> None:
    peer = Peer(relay)
    await peer.start()
    reply = error(await peer.request(frames.ListConnections), ErrorCode.NOT_AUTHENTICATED)
    assert reply.ref == 1
    await peer.send(frames.Confirm(offset=3))
    assert error(await peer.recv(), ErrorCode.NOT_AUTHENTICATED).ref is None
    await peer.close()


async def test_authentication_succeeds_with_the_device_key(relay: Relay) -> None:
    alice = Identity.create("alice")
    await enroll(relay, alice)
    peer = Peer(relay)
    welcome = await peer.authenticate(alice, resume_after=5)
    assert welcome == frames.Welcome(identity="alice", device="d1", resume_after=5)
    assert counter(relay, "parley_relay_connections") == 1
    await peer.close()
    assert counter(relay, "parley_relay_connections") == 0


@pytest.mark.parametrize("case", ["unknown identity", "unknown device", "bad signature"])
async def test_failed_authentication_closes_the_connection(relay: Relay, case: str) -> None:
    alice = Identity.create("alice")
    await enroll(relay, alice)
    peer = Peer(relay)
    challenge = await peer.start()
    identity, device = "alice", "d1"
    message = frames.auth_message(challenge.nonce, identity, device)
    if case == "unknown identity":
        identity = "nobody"
    elif case == "unknown device":
        device = "d9"
    else:
        message = frames.auth_message(b"\0" * 32, identity, device)
    signature = alice.keys["d1"].sign(message)
    await peer.send(frames.Authenticate(identity=identity, device=device, signature=signature))
    error(await peer.recv(), ErrorCode.AUTH_FAILED)
    assert await peer.closed() == CLOSE_AUTH_FAILED
    assert rejected(relay, "auth_failed") == 1


async def test_unauthenticated_connections_time_out(tmp_path: Path) -> None:
    relay = Relay(SqliteStore(tmp_path / "r.db"), RelayConfig(auth_timeout=0.05))
    await relay.start()
    try:
        peer = Peer(relay)
        await peer.start()
        assert await peer.closed() == CLOSE_AUTH_TIMEOUT
        assert rejected(relay, "auth_timeout") == 1
    finally:
        await relay.close()


# -- sending --------------------------------------------------------------------------


async def test_send_is_acked_then_delivered_to_every_device(relay: Relay, clock: FakeClock) -> None:
    alice, bob = await pair(relay)
    bob_phone = await online(relay, bob)
    add = bob.next_entry(KeyOp.ADD, "d2", signer="d1")
    assert isinstance(await bob_phone.request(frames.AppendKey, entry=add), frames.Done)
    bob.chain.append(add)
    bob_laptop = await online(relay, bob, "d2")
    alice_phone = await online(relay, alice)

    reply = await bob_phone.send_to("alice", b"ciphertext", "env-1", clock() + HOUR)
    assert reply == frames.Ack(ref=2, envelope_id="env-1")

    for peer in (alice_phone, bob_laptop):
        deliver = await peer.expect(frames.Deliver)
        assert deliver.envelope == frames.Envelope(
            id="env-1",
            sender="bob",
            sender_device="d1",
            recipient="alice",
            body=b"ciphertext",
            sent_at=clock(),
            expires_at=clock() + HOUR,
        )
        assert deliver.sender_keys_version == 2
    assert counter(relay, "parley_relay_messages_in_total") == 1
    assert counter(relay, "parley_relay_messages_stored_total") == 1
    assert counter(relay, "parley_relay_messages_out_total") == 2
    for peer in (bob_phone, bob_laptop, alice_phone):
        await peer.close()


async def test_sending_to_yourself_needs_no_permission(relay: Relay, clock: FakeClock) -> None:
    alice = Identity.create("alice")
    await enroll(relay, alice)
    peer = await online(relay, alice)
    ack = await peer.send_to("alice", b"note", "e1", clock() + HOUR)
    assert isinstance(ack, frames.Ack)
    deliver = await peer.expect(frames.Deliver)
    assert deliver.envelope.body == b"note"
    await peer.close()


@pytest.mark.parametrize(
    "case",
    [
        # (recipient, body, expires in, expected); earlier checks win over later ones.
        ("alice", b"x" * 65, HOUR, ErrorCode.TOO_LARGE),
        ("carol", b"x" * 65, HOUR, ErrorCode.TOO_LARGE),
        ("carol", b"x", HOUR, ErrorCode.UNKNOWN_RECIPIENT),
        ("carol", b"x", 0.0, ErrorCode.UNKNOWN_RECIPIENT),
        ("mallory", b"x", HOUR, ErrorCode.NOT_PERMITTED),
        ("mallory", b"x", 0.0, ErrorCode.NOT_PERMITTED),
        ("alice", b"x", 0.0, ErrorCode.EXPIRED),
        ("alice", b"x", float("nan"), ErrorCode.EXPIRED),
    ],
)
async def test_send_rejections(
    tmp_path: Path, clock: FakeClock, case: tuple[str, bytes, float, ErrorCode]
) -> None:
    recipient, body, expires_in, code = case
    relay = Relay(SqliteStore(tmp_path / "r.db"), RelayConfig(max_body=64), clock=clock)
    await relay.start()
    try:
        _, bob = await pair(relay)
        await enroll(relay, Identity.create("mallory"))
        peer = await online(relay, bob)
        reply = await peer.send_to(recipient, body, "e1", clock() + expires_in)
        assert error(reply, code).ref == 1
        assert rejected(relay, code.value) == 1
        assert counter(relay, "parley_relay_messages_stored_total") == 0
        await peer.close()
    finally:
        await relay.close()


async def test_sends_over_the_burst_are_rate_limited(tmp_path: Path, clock: FakeClock) -> None:
    config = RelayConfig(device_rate=1, device_burst=2)
    relay = Relay(SqliteStore(tmp_path / "r.db"), config, clock=clock)
    await relay.start()
    try:
        alice = Identity.create("alice")
        await enroll(relay, alice)
        peer = await online(relay, alice)
        for i in range(3):
            await peer.send(
                frames.Send(
                    ref=i, envelope_id=f"e{i}", recipient="alice", body=b"", expires_at=clock() + 9
                )
            )
        replies = [await peer.recv() for _ in range(5)]  # 2 acks, 2 delivers, 1 error
        errors = [r for r in replies if isinstance(r, frames.Error)]
        assert [(e.ref, e.code) for e in errors] == [(2, ErrorCode.RATE_LIMITED)]
        clock.advance(1)
        assert isinstance(await peer.send_to("alice", b"", "e3", clock() + 9), frames.Ack)
        await peer.close()
    finally:
        await relay.close()


async def test_lifetime_is_capped(tmp_path: Path, clock: FakeClock) -> None:
    relay = Relay(SqliteStore(tmp_path / "r.db"), RelayConfig(max_lifetime=60), clock=clock)
    await relay.start()
    try:
        alice = Identity.create("alice")
        await enroll(relay, alice)
        peer = await online(relay, alice)
        await peer.send_to("alice", b"", "e1", clock() + 10 * HOUR)
        deliver = await peer.expect(frames.Deliver)
        assert deliver.envelope.expires_at == clock() + 60
        await peer.close()
    finally:
        await relay.close()


async def test_a_retried_send_is_acked_and_not_stored_twice(relay: Relay, clock: FakeClock) -> None:
    alice, bob = await pair(relay)
    sender = await online(relay, bob)
    assert isinstance(await sender.send_to("alice", b"1", "same", clock() + HOUR), frames.Ack)
    assert isinstance(await sender.send_to("alice", b"1", "same", clock() + HOUR), frames.Ack)
    assert isinstance(await sender.send_to("alice", b"2", "next", clock() + HOUR), frames.Ack)
    await sender.close()
    receiver = await online(relay, alice)
    first = await receiver.expect(frames.Deliver)
    second = await receiver.expect(frames.Deliver)
    assert [first.envelope.id, second.envelope.id] == ["same", "next"]
    assert counter(relay, "parley_relay_messages_stored_total") == 2
    await receiver.close()


async def test_an_envelope_id_of_another_sender_conflicts(relay: Relay, clock: FakeClock) -> None:
    alice, bob_ident = await pair(relay)
    bob = await online(relay, bob_ident)
    assert isinstance(await bob.send_to("alice", b"1", "taken", clock() + HOUR), frames.Ack)
    mine = await online(relay, alice)
    assert (await mine.expect(frames.Deliver)).envelope.id == "taken"
    reply = await mine.send_to("alice", b"2", "taken", clock() + HOUR)
    assert error(reply, ErrorCode.CONFLICT).ref == 1
    await bob.close()
    await mine.close()


async def test_an_envelope_id_reused_for_another_recipient_conflicts(
    relay: Relay, clock: FakeClock
) -> None:
    _, bob_ident = await pair(relay)
    carol = Identity.create("carol")
    await enroll(relay, carol)
    bob = await online(relay, bob_ident)
    assert isinstance(await bob.send_to("alice", b"1", "taken", clock() + HOUR), frames.Ack)
    # To bob himself (no permit needed): stored for nobody yet, so not a retry.
    assert error(await bob.send_to("bob", b"1", "taken", clock() + HOUR), ErrorCode.CONFLICT)
    # Carol does not permit bob: refused for that, not acknowledged as a stored retry.
    refused = await bob.send_to("carol", b"1", "taken", clock() + HOUR)
    assert error(refused, ErrorCode.NOT_PERMITTED)
    await bob.close()


# -- inboxes --------------------------------------------------------------------------


async def test_inbox_resumes_after_the_confirmed_offset(relay: Relay, clock: FakeClock) -> None:
    alice, bob = await pair(relay)
    sender = await online(relay, bob)
    for i in range(3):
        assert isinstance(await sender.send_to("alice", b"m", f"e{i}", clock() + HOUR), frames.Ack)

    receiver = await online(relay, alice)
    got = [await receiver.expect(frames.Deliver) for _ in range(3)]
    assert [d.envelope.id for d in got] == ["e0", "e1", "e2"]
    assert got[0].offset < got[1].offset < got[2].offset
    await receiver.send(frames.Confirm(offset=got[1].offset))
    await receiver.close()

    peer = Peer(relay)
    welcome = await peer.authenticate(alice, resume_after=0)
    assert welcome == frames.Welcome(identity="alice", device="d1", resume_after=got[1].offset)
    assert (await peer.expect(frames.Deliver)).envelope.id == "e2"
    await peer.close()
    await sender.close()


async def test_a_device_cannot_confirm_what_it_was_not_sent(relay: Relay, clock: FakeClock) -> None:
    alice, bob = await pair(relay)
    receiver = await online(relay, alice, resume=0)
    await receiver.send(frames.Confirm(offset=1_000_000))
    sender = await online(relay, bob)
    assert isinstance(await sender.send_to("alice", b"m", "e1", clock() + HOUR), frames.Ack)
    await receiver.close()
    again = await online(relay, alice)
    assert (await again.expect(frames.Deliver)).envelope.id == "e1"
    for peer in (again, sender):
        await peer.close()


async def test_expired_envelopes_are_swept_and_never_delivered(
    relay: Relay, clock: FakeClock
) -> None:
    alice, bob = await pair(relay)
    sender = await online(relay, bob)
    await sender.send_to("alice", b"short", "short", clock() + 10)
    await sender.send_to("alice", b"mid", "mid", clock() + 100)
    await sender.send_to("alice", b"long", "long", clock() + HOUR)
    clock.advance(50)
    assert await relay.sweep() == 1
    clock.advance(100)  # "mid" expires too, but no sweep has run yet
    receiver = await online(relay, alice)
    assert (await receiver.expect(frames.Deliver)).envelope.id == "long"
    assert counter(relay, "parley_relay_messages_expired_total") == 2
    assert await relay.sweep() == 0  # counted once, by whoever dropped it
    for peer in (receiver, sender):
        await peer.close()


async def test_a_node_alone_publishes_no_bus_events(relay: Relay, clock: FakeClock) -> None:
    alice, bob = await pair(relay)  # a permit, presence on connecting and leaving
    sender = await online(relay, bob)
    receiver = await online(relay, alice)
    assert isinstance(await sender.send_to("alice", b"m", "e1", clock() + HOUR), frames.Ack)
    await receiver.expect(frames.Deliver)
    for peer in (receiver, sender):
        await peer.close()
    published = [
        sample
        for metric in relay.metrics.registry.collect()
        if metric.name == "parley_relay_bus_events"
        for sample in metric.samples
        if sample.labels.get("direction") == "published"
    ]
    assert published == []


async def test_restart_keeps_identities_permissions_inboxes_and_offsets(
    tmp_path: Path, clock: FakeClock
) -> None:
    path = tmp_path / "relay.db"
    relay = Relay(SqliteStore(path), RelayConfig(), clock=clock)
    await relay.start()
    alice, bob = await pair(relay)
    sender = await online(relay, bob)
    for i in range(3):
        await sender.send_to("alice", b"m", f"e{i}", clock() + HOUR)
    receiver = await online(relay, alice)
    first = await receiver.expect(frames.Deliver)
    await receiver.send(frames.Confirm(offset=first.offset))
    await receiver.expect(frames.Deliver)
    await receiver.expect(frames.Deliver)
    # A reply after the Confirm shows the relay has taken it in.
    assert isinstance(await receiver.request(frames.ListConnections), frames.Connections)
    await relay.close()  # closes both connections

    restarted = Relay(SqliteStore(path), RelayConfig(), clock=clock)
    await restarted.start()
    try:
        peer = Peer(restarted)
        welcome = await peer.authenticate(alice)
        assert welcome == frames.Welcome(identity="alice", device="d1", resume_after=first.offset)
        assert [(await peer.expect(frames.Deliver)).envelope.id for _ in range(2)] == ["e1", "e2"]
        connections = await peer.request(frames.ListConnections)
        assert connections == frames.Connections(ref=1, identities=["bob"])
        sender = await online(restarted, bob)
        assert isinstance(await sender.send_to("alice", b"m", "e3", clock() + HOUR), frames.Ack)
        assert (await peer.expect(frames.Deliver)).envelope.id == "e3"
        await peer.close()
        await sender.close()
    finally:
        await restarted.close()


# -- directory ------------------------------------------------------------------------


async def test_permissions(relay: Relay, clock: FakeClock) -> None:
    alice, bob = await pair(relay)
    await enroll(relay, Identity.create("carol"))
    peer = await online(relay, alice)
    error(await peer.request(frames.Permit, identity="nobody"), ErrorCode.UNKNOWN_IDENTITY)
    assert await peer.request(frames.Permit, identity="carol") == frames.Done(ref=2)
    reply = await peer.request(frames.ListConnections)
    assert reply == frames.Connections(ref=3, identities=["bob", "carol"])
    assert await peer.request(frames.Unpermit, identity="bob") == frames.Done(ref=4)

    sender = await online(relay, bob)
    error(await sender.send_to("alice", b"x", "e1", clock() + HOUR), ErrorCode.NOT_PERMITTED)
    for p in (peer, sender):
        await p.close()


async def test_get_keys(relay: Relay) -> None:
    alice, bob = await pair(relay)
    peer = await online(relay, bob)
    reply = await peer.request(frames.GetKeys, identity="alice")
    assert reply == frames.KeyChainFrame(ref=1, identity="alice", entries=alice.chain.entries)
    error(await peer.request(frames.GetKeys, identity="nobody"), ErrorCode.UNKNOWN_IDENTITY)
    await peer.close()


async def test_append_key_must_extend_your_own_chain(relay: Relay) -> None:
    alice, bob = await pair(relay)
    peer = await online(relay, bob)
    foreign = alice.next_entry(KeyOp.ADD, "d2", signer="d1")
    error(await peer.request(frames.AppendKey, entry=foreign), ErrorCode.INVALID_KEY_CHAIN)
    replayed = bob.genesis
    error(await peer.request(frames.AppendKey, entry=replayed), ErrorCode.INVALID_KEY_CHAIN)
    await peer.close()


async def test_an_added_device_starts_with_an_empty_inbox(relay: Relay, clock: FakeClock) -> None:
    alice, bob = await pair(relay)
    sender = await online(relay, bob)
    await sender.send_to("alice", b"before", "before", clock() + HOUR)
    phone = await online(relay, alice)
    assert (await phone.expect(frames.Deliver)).envelope.id == "before"
    add = alice.next_entry(KeyOp.ADD, "d2", signer="d1")
    assert isinstance(await phone.request(frames.AppendKey, entry=add), frames.Done)
    alice.chain.append(add)
    await sender.send_to("alice", b"after", "after", clock() + HOUR)
    laptop = await online(relay, alice, "d2")
    assert (await laptop.expect(frames.Deliver)).envelope.id == "after"
    keys = await sender.request(frames.GetKeys, identity="alice")
    assert isinstance(keys, frames.KeyChainFrame)
    assert len(keys.entries) == 2
    for peer in (sender, phone, laptop):
        await peer.close()


async def test_revoking_a_device_closes_it_and_drops_its_inbox(
    relay: Relay, clock: FakeClock
) -> None:
    alice, bob = await pair(relay)
    phone = await online(relay, alice)
    add = alice.next_entry(KeyOp.ADD, "d2", signer="d1")
    assert isinstance(await phone.request(frames.AppendKey, entry=add), frames.Done)
    alice.chain.append(add)
    laptop = await online(relay, alice, "d2")

    revoke = alice.next_entry(KeyOp.REVOKE, "d2", signer="d1")
    assert isinstance(await phone.request(frames.AppendKey, entry=revoke), frames.Done)
    error(await laptop.recv(), ErrorCode.DEVICE_REVOKED)
    assert await laptop.closed() == CLOSE_REVOKED
    assert counter(relay, "parley_relay_connections") == 1

    sender = await online(relay, bob)
    await sender.send_to("alice", b"m", "e1", clock() + HOUR)
    assert (await phone.expect(frames.Deliver)).envelope.id == "e1"
    again = Peer(relay)
    error(await again.authenticate(alice, "d2"), ErrorCode.DEVICE_REVOKED)
    assert await again.closed() == CLOSE_REVOKED
    for peer in (phone, sender):
        await peer.close()


# -- bad input ------------------------------------------------------------------------


async def test_malformed_frames_are_answered_and_the_connection_survives(
    relay: Relay, clock: FakeClock
) -> None:
    alice, bob = await pair(relay)
    peer = await online(relay, bob)
    await peer.send_to("alice", b"kept", "kept", clock() + HOUR)  # accepted before the noise

    await peer.transport.send(b"\xc1 not msgpack")
    assert error(await peer.recv(), ErrorCode.MALFORMED).ref is None
    await peer.transport.send(msgspec.msgpack.encode({"t": "send", "ref": 9, "body": 3}))
    assert error(await peer.recv(), ErrorCode.MALFORMED).ref == 9
    await peer.transport.send(msgspec.msgpack.encode({"t": "teleport", "ref": 4}))
    assert error(await peer.recv(), ErrorCode.UNSUPPORTED).ref == 4
    await peer.send(frames.Ack(ref=5, envelope_id="x"))  # a relay frame, from a client
    assert error(await peer.recv(), ErrorCode.UNSUPPORTED).ref == 5
    await peer.transport.send(b"\x91" * 1200 + b"\x00")  # nested deeper than msgspec goes
    assert error(await peer.recv(), ErrorCode.MALFORMED).ref is None

    assert isinstance(await peer.request(frames.ListConnections), frames.Connections)
    await peer.close()
    again = await online(relay, alice)
    assert (await again.expect(frames.Deliver)).envelope.id == "kept"
    assert rejected(relay, "malformed") == 3
    assert rejected(relay, "unsupported") == 2
    await again.close()


async def test_close_shuts_every_connection(tmp_path: Path) -> None:
    relay = Relay(SqliteStore(tmp_path / "r.db"))
    await relay.start()
    alice = Identity.create("alice")
    await enroll(relay, alice)
    peer = await online(relay, alice)
    pending = Peer(relay)
    await pending.start()
    await asyncio.wait_for(relay.close(), WAIT)
    assert await peer.closed() == 1001
    assert await pending.closed() == 1001


async def test_a_second_authenticate_is_refused(relay: Relay) -> None:
    alice = Identity.create("alice")
    await enroll(relay, alice)
    peer = await online(relay, alice)
    await peer.send(frames.Authenticate(identity="alice", device="d1", signature=b""))
    error(await peer.recv(), ErrorCode.UNSUPPORTED)
    assert isinstance(await peer.request(frames.ListConnections), frames.Connections)
    await peer.close()


async def test_bodies_never_reach_the_logs(
    relay: Relay, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="parley")
    secret = b"SECRET-PAYLOAD"
    alice, bob = await pair(relay)
    receiver = await online(relay, alice)
    sender = await online(relay, bob)
    assert isinstance(await sender.send_to("alice", secret, "e1", clock() + HOUR), frames.Ack)
    assert (await receiver.expect(frames.Deliver)).envelope.body == secret
    error(await sender.send_to("alice", secret, "e2", clock() - 1), ErrorCode.EXPIRED)
    await sender.transport.send(msgspec.msgpack.encode({"t": "send", "ref": 3, "body": secret}))
    error(await sender.recv(), ErrorCode.MALFORMED)
    for peer in (receiver, sender):
        await peer.close()
    assert caplog.records  # the relay did log; just never the body
    assert "SECRET" not in caplog.text


async def test_offsets_out_of_range_are_malformed_and_the_connection_goes_on(
    relay: Relay,
) -> None:
    alice = Identity.create("alice")
    await enroll(relay, alice)
    peer = Peer(relay, "alice")
    challenge = await peer.start()
    signature = alice.keys["d1"].sign(frames.auth_message(challenge.nonce, "alice", "d1"))
    too_far = {"t": "auth", "identity": "alice", "device": "d1", "signature": signature,
               "resume_after": 2**63}  # fmt: skip
    await peer.transport.send(msgspec.msgpack.encode(too_far))
    refused = await peer.expect(frames.Error)
    assert refused.code is ErrorCode.MALFORMED
    assert isinstance(await peer.authenticate(alice), frames.Welcome)
    await peer.transport.send(msgspec.msgpack.encode({"t": "confirm", "offset": 2**64 - 1}))
    assert (await peer.expect(frames.Error)).code is ErrorCode.MALFORMED
    assert isinstance(await peer.request(frames.ListConnections), frames.Connections)
    await peer.close()


async def test_a_retried_send_that_was_stored_is_acked_even_if_now_refused(
    relay: Relay, clock: FakeClock
) -> None:
    alice, bob = await pair(relay)  # alice accepts messages from bob
    alice_phone, bob_phone = await online(relay, alice), await online(relay, bob)
    assert isinstance(await bob_phone.send_to("alice", b"m", "e1", clock() + HOUR), frames.Ack)
    assert (await alice_phone.expect(frames.Deliver)).envelope.id == "e1"
    assert isinstance(await alice_phone.request(frames.Unpermit, identity="bob"), frames.Done)
    # bob never saw the first Ack (a dropped connection) and sends e1 again: it was
    # delivered, so he is told so; a new message is refused.
    again = await bob_phone.send_to("alice", b"m", "e1", clock() + HOUR)
    assert isinstance(again, frames.Ack) and again.envelope_id == "e1"
    refused = await bob_phone.send_to("alice", b"m", "e2", clock() + HOUR)
    assert isinstance(refused, frames.Error) and refused.code is ErrorCode.NOT_PERMITTED
    # alice got e1 once: the next frame she sees answers her own request.
    assert isinstance(await alice_phone.request(frames.ListConnections), frames.Connections)
    for peer in (alice_phone, bob_phone):
        await peer.close()

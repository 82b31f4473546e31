"""The receive checks: a message failing any of them never reaches a handler."""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from parley.client import Client, add_device
from parley.client.state import State
from parley.client.verify import Verifier
from parley.credentials import Credentials
from parley.crypto import jws
from parley.crypto.keys import SigningKey
from parley.errors import DeviceRevoked, Expired, IssuedInFuture, WrongAudience
from parley.protocol.frames import Envelope
from parley.protocol.keychain import KeyOp, make_entry
from parley.protocol.messages import VoiceStop

from .helpers import KnownKeys, Received, World, inject, raw_token, stop_token


async def _bob_listening(world: World) -> tuple[Credentials, Credentials, Client, Received]:
    alice, bob = await world.identity("alice"), await world.identity("bob")
    await world.permit(bob, alice)
    received = Received()
    bob_client = world.client(bob)
    bob_client.voice().on_stop(received)
    await bob_client.connect()
    return alice, bob, bob_client, received


async def test_messages_failing_a_check_are_counted_by_reason(world: World) -> None:
    alice, bob, bob_client, received = await _bob_listening(world)
    raw = await world.raw(alice)
    now = int(time.time())
    to_bob = bob.identity
    replayed = stop_token(alice, to_bob, call_id="first")
    bad_bodies = [
        stop_token(alice, to_bob, key=SigningKey.generate()),  # forged signature
        stop_token(alice, to_bob, aud="carol"),  # wrong audience
        stop_token(alice, to_bob, iat=now - 120, exp=now - 60),  # expired
        stop_token(alice, to_bob, iat=now + 60),  # issued in the future
        stop_token(alice, to_bob, iss="mallory"),  # not the authenticated sender
        stop_token(alice, to_bob, kid="d-nosuchdevice"),  # no such device key
        b"not a token",
        raw_token(alice.secret_key, alice.device, b'{"typ":"chat.voice.dance"}'),
        raw_token(alice.secret_key, alice.device, b'{"typ":"chat.voice.stop"}'),
    ]
    await inject(raw, to_bob, replayed)
    for body in bad_bodies:
        await inject(raw, to_bob, body)
    await inject(raw, to_bob, replayed)  # same jti again, in a new envelope
    await inject(raw, to_bob, stop_token(alice, to_bob, call_id="last"))
    await received.next()
    await received.next()

    assert received.call_ids == ["first", "last"]
    assert bob_client.rejected == Counter(
        bad_signature=1,
        wrong_audience=1,
        expired=1,
        issued_in_future=1,
        wrong_issuer=1,
        unknown_key=1,
        malformed=2,
        unknown_type=1,
        replayed=1,
    )
    await raw.close()


async def test_a_replay_is_refused_after_a_restart(world: World) -> None:
    alice, bob = await world.identity("alice"), await world.identity("bob")
    await world.permit(bob, alice)
    state = world.tmp_path / "bob.state.db"
    token = stop_token(alice, bob.identity, call_id="once", jti=uuid.uuid4().hex)
    raw = await world.raw(alice)

    first = Received()
    bob_client = world.client(bob, state_path=state)
    bob_client.voice().on_stop(first)
    await bob_client.connect()
    await inject(raw, bob.identity, token)
    await first.next()
    await bob_client.close()

    again = Received()
    restarted = world.client(bob, state_path=state)
    restarted.voice().on_stop(again)
    await restarted.connect()
    await inject(raw, bob.identity, token)
    await inject(raw, bob.identity, stop_token(alice, bob.identity, call_id="fresh"))
    await again.next()
    assert again.call_ids == ["fresh"]
    assert restarted.rejected == Counter(replayed=1)
    await raw.close()


async def test_a_revoked_device_is_refused_and_cannot_authenticate(world: World) -> None:
    alice, bob = await world.identity("alice"), await world.identity("bob")
    alice2 = await add_device(alice, connector=world.link)
    await world.permit(bob, alice)

    # alice2 sends while bob is offline, then alice revokes alice2.
    alice2_client = await world.connected(alice2)
    await alice2_client.voice().stop(bob.identity, "cid", "from-revoked")
    alice_client = await world.connected(alice)
    await alice_client.revoke_device(alice2.device)

    # Its open session is ended by the relay: it fails for good and says why.
    with pytest.raises(DeviceRevoked):
        await alice2_client.voice().stop(bob.identity, "cid", "after-revoke")
    with pytest.raises(DeviceRevoked):
        await world.connected(alice2)

    received = Received()
    bob_client = world.client(bob)
    bob_client.voice().on_stop(received)
    await bob_client.connect()
    await alice_client.voice().stop(bob.identity, "cid", "from-alice")
    await received.next()
    assert received.call_ids == ["from-alice"]
    assert bob_client.rejected == Counter(revoked_key=1)


async def test_a_relay_rewriting_a_cached_key_chain_is_refused(world: World) -> None:
    alice, bob, carol = [await world.identity(n) for n in ("alice", "bob", "carol")]
    await world.permit(bob, alice, carol)
    state_path = world.tmp_path / "bob.state.db"
    # Bob cached another (self-consistent) history of alice's chain than the relay's.
    other_key = SigningKey.generate()
    other_genesis = make_entry(
        identity=alice.identity,
        seq=0,
        prev=b"",
        op=KeyOp.ADD,
        device="d-other",
        public_key=other_key.public_key,
        signer="d-other",
        signer_key=other_key,
    )
    state = State(state_path, identity=bob.identity, device=bob.device)
    state.save_chain(alice.identity, [other_genesis])
    state.close()

    received = Received()
    bob_client = world.client(bob, state_path=state_path)
    bob_client.voice().on_stop(received)
    await bob_client.connect()
    await (await world.connected(alice)).voice().stop(bob.identity, "cid", "refused")
    await (await world.connected(carol)).voice().stop(bob.identity, "cid", "accepted")
    await received.next()
    assert received.call_ids == ["accepted"]
    assert bob_client.rejected == Counter(invalid_key_chain=1)


async def test_exp_and_iat_are_refused_exactly_at_their_boundaries(world: World) -> None:
    # The receiver's clock is fixed; each token sits on one side of a boundary.
    # RFC 7519 4.1.4: refused on or after exp; iat at most MAX_CLOCK_SKEW (5 s) ahead.
    now = 1_900_000_000
    alice, bob = await world.identity("alice"), await world.identity("bob")
    await world.permit(bob, alice)
    received = Received()
    bob_client = world.client(bob, clock=lambda: now)
    bob_client.voice().on_stop(received)
    await bob_client.connect()
    raw = await world.raw(alice)
    to_bob = bob.identity
    tokens = [
        stop_token(alice, to_bob, call_id="exp-now", iat=now - 10, exp=now),
        stop_token(alice, to_bob, call_id="exp-next-second", iat=now - 10, exp=now + 1),
        stop_token(alice, to_bob, call_id="iat-5s-ahead", iat=now + 5, exp=now + 60),
        stop_token(alice, to_bob, call_id="iat-6s-ahead", iat=now + 6, exp=now + 60),
        stop_token(alice, to_bob, call_id="last", iat=now, exp=now + 60),
    ]
    for token in tokens:
        await inject(raw, to_bob, token)
    for _ in range(3):
        await received.next()
    assert received.call_ids == ["exp-next-second", "iat-5s-ahead", "last"]
    assert bob_client.rejected == Counter(expired=1, issued_in_future=1)
    await raw.close()


# -- the checks alone: a Verifier over keys it is given ---------------------------------

NOW = 1_900_000_000
SELF = "i-middle"  # identities on both sides of it in sort order
BELOW, ABOVE = "i-aaaa", "i-zzzz"


def _signed(iss: str, key: SigningKey, **claims: Any) -> bytes:
    fields: dict[str, Any] = dict(iss=iss, sub=SELF, aud=SELF, iat=NOW, exp=NOW + 60)
    fields.update(jti=uuid.uuid4().hex, cid="cid-1", call_id="c1")
    fields.update(claims)
    return jws.sign(VoiceStop(**fields), key, kid="d-1")


def _envelope(sender: str, recipient: str) -> Envelope:
    return Envelope(
        id="e" * 32,
        sender=sender,
        sender_device="d-1",
        recipient=recipient,
        body=b"",
        sent_at=NOW,
        expires_at=NOW + 60,
    )


@pytest.fixture
def verifier(tmp_path: Path) -> Iterator[tuple[Verifier, dict[str, SigningKey]]]:
    keys = {name: SigningKey.generate() for name in (SELF, BELOW, ABOVE)}
    state = State(tmp_path / "state.db", identity=SELF, device="d-self")
    yield Verifier(SELF, KnownKeys(keys), state, lambda: NOW), keys
    state.close()


async def test_a_message_for_another_identity_handed_on_by_the_relay_is_refused(
    verifier: tuple[Verifier, dict[str, SigningKey]],
) -> None:
    # A relay delivering to us what another identity sent to a third: the envelope names
    # the third as recipient, and so does the signed aud. Only copies of our own sends
    # may be addressed to someone else.
    check, keys = verifier
    for sender in (BELOW, ABOVE):
        token = _signed(sender, keys[sender], sub="i-third", aud="i-third")
        with pytest.raises(WrongAudience, match="addressed to 'i-third', not 'i-middle'"):
            await check.verify(_envelope(sender, "i-third"), token, 0)
    own = _signed(SELF, keys[SELF], sub="i-third", aud="i-third")
    assert (await check.verify(_envelope(SELF, "i-third"), own, 0)).message.aud == "i-third"


async def test_an_audience_on_either_side_of_ours_is_refused(
    verifier: tuple[Verifier, dict[str, SigningKey]],
) -> None:
    check, keys = verifier
    for aud in (BELOW, ABOVE):
        with pytest.raises(WrongAudience):
            await check.verify(_envelope(ABOVE, SELF), _signed(ABOVE, keys[ABOVE], aud=aud), 0)


async def test_a_refusal_says_how_far_the_clock_is_off(
    verifier: tuple[Verifier, dict[str, SigningKey]],
) -> None:
    check, keys = verifier
    key = keys[BELOW]
    with pytest.raises(Expired, match=r"^expired 1899999999 s ago$"):
        await check.verify(_envelope(BELOW, SELF), _signed(BELOW, key, iat=0, exp=1), 0)
    with pytest.raises(Expired, match=r"^expired 7 s ago$"):
        await check.verify(_envelope(BELOW, SELF), _signed(BELOW, key, exp=NOW - 7), 0)
    future = _signed(BELOW, key, iat=3 * NOW, exp=4 * NOW)
    with pytest.raises(IssuedInFuture, match=r"^issued 3800000000 s in the future$"):
        await check.verify(_envelope(BELOW, SELF), future, 0)

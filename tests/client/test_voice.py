"""Voice: all six messages round trip, both handler styles, typed refusals."""

from __future__ import annotations

import asyncio

import pytest

from parley.errors import DeliveryTimeout, NotPermitted, UnknownIdentity
from parley.protocol.messages import (
    Message,
    MessageType,
    VoiceAccept,
    VoiceBusy,
    VoiceSetup,
    VoiceStart,
    VoiceStop,
    VoiceSummary,
)

from .helpers import WAIT, Received, RelayLink, SwallowSends, World


async def test_all_six_types_round_trip_with_both_handler_styles(world: World) -> None:
    alice, bob = await world.identity("alice"), await world.identity("bob")
    await world.permit(bob, alice)
    bob_client = world.client(bob)
    voice = bob_client.voice()
    assert bob_client.voice() is voice
    got: asyncio.Queue[tuple[str, Message]] = asyncio.Queue()

    @voice.on_start
    async def on_start(issuer: str, payload: VoiceStart) -> None:
        await got.put((issuer, payload))

    def on_accept(issuer: str, payload: VoiceAccept) -> None:
        got.put_nowait((issuer, payload))

    voice.on_accept(on_accept)
    voice.on_busy(lambda issuer, payload: got.put_nowait((issuer, payload)))
    voice.on_stop(lambda issuer, payload: got.put_nowait((issuer, payload)))
    voice.on_setup(lambda issuer, payload: got.put_nowait((issuer, payload)))
    voice.on_summary(lambda issuer, payload: got.put_nowait((issuer, payload)))
    assert on_start.__name__ == "on_start"  # the decorator returns the handler
    await bob_client.connect()

    alice_voice = (await world.connected(alice)).voice()
    sent = await alice_voice.start(
        bob.identity, "cid-1", "call-1", "v=0 offer", {"operator_name": "Ann"}
    )
    await alice_voice.accept(bob.identity, "cid-1", "call-1", "v=0 answer")
    await alice_voice.busy(bob.identity, "cid-1", "call-1")
    await alice_voice.stop(bob.identity, "cid-1", "call-1")
    await alice_voice.setup(bob.identity, "Ann", "cid-1")
    await alice_voice.summary(bob.identity, "cid-1", "call-1")

    async with asyncio.timeout(WAIT):
        received = [await got.get() for _ in range(6)]
    assert [issuer for issuer, _ in received] == [alice.identity] * 6
    assert [type(payload) for _, payload in received] == [
        VoiceStart,
        VoiceAccept,
        VoiceBusy,
        VoiceStop,
        VoiceSetup,
        VoiceSummary,
    ]
    start, accept, busy, stop, setup, summary = (payload for _, payload in received)
    assert start == sent  # a sender returns the payload it signed
    assert (sent.iss, sent.sub, sent.aud) == (alice.identity, bob.identity, bob.identity)
    assert sent.exp - sent.iat == 300 and len(sent.jti) == 32
    assert start.typ is MessageType.VOICE_START
    assert isinstance(start, VoiceStart)
    assert (start.cid, start.call_id, start.peer_info) == ("cid-1", "call-1", "v=0 offer")
    assert start["cid"] == "cid-1" and start["peer_info"] == "v=0 offer"
    assert start.data == {"operator_name": "Ann"} and start["data"]["operator_name"] == "Ann"
    assert isinstance(accept, VoiceAccept) and accept.data == {}
    assert accept["peer_info"] == "v=0 answer"
    assert isinstance(setup, VoiceSetup) and setup.name == "Ann"
    assert setup["data"] == {"name": "Ann"}
    for payload in (busy, stop, summary):
        assert (payload["cid"], payload["call_id"]) == ("cid-1", "call-1")
        assert "peer_info" not in payload
    assert bob_client.rejected == {}


async def test_a_later_handler_replaces_the_earlier(world: World) -> None:
    alice, bob = await world.identity("alice"), await world.identity("bob")
    await world.permit(bob, alice)
    first, second = Received(), Received()
    bob_client = world.client(bob)
    bob_client.voice().on_stop(first)
    bob_client.voice().on_stop(second)
    await bob_client.connect()
    await (await world.connected(alice)).voice().stop(bob.identity, "cid", "call")
    await second.next()
    assert first.items == []


async def test_a_raising_handler_does_not_stop_the_client(world: World) -> None:
    alice, bob = await world.identity("alice"), await world.identity("bob")
    await world.permit(bob, alice)
    received = Received()
    bob_client = world.client(bob)

    def explode(issuer: str, payload: VoiceBusy) -> None:
        raise RuntimeError("handler bug")

    bob_client.voice().on_busy(explode)
    bob_client.voice().on_stop(received)
    await bob_client.connect()
    alice_voice = (await world.connected(alice)).voice()
    await alice_voice.busy(bob.identity, "cid", "call-1")
    await alice_voice.stop(bob.identity, "cid", "call-2")
    assert (await received.next())[1]["call_id"] == "call-2"


async def test_messages_without_a_handler_are_dropped(world: World) -> None:
    alice, bob = await world.identity("alice"), await world.identity("bob")
    await world.permit(bob, alice)
    received = Received()
    bob_client = world.client(bob)
    bob_client.voice().on_stop(received)
    await bob_client.connect()
    alice_voice = (await world.connected(alice)).voice()
    await alice_voice.busy(bob.identity, "cid", "call-1")
    await alice_voice.stop(bob.identity, "cid", "call-2")
    await received.next()
    assert received.call_ids == ["call-2"]
    assert bob_client.rejected == {}


async def test_a_sender_not_permitted_gets_not_permitted(world: World) -> None:
    alice, bob = await world.identity("alice"), await world.identity("bob")
    voice = (await world.connected(alice)).voice()
    with pytest.raises(NotPermitted):
        await voice.start(bob.identity, "cid", "call", "offer", {})


async def test_an_unknown_recipient_gets_unknown_identity(world: World) -> None:
    alice = await world.identity("alice")
    voice = (await world.connected(alice)).voice()
    with pytest.raises(UnknownIdentity):
        await voice.stop("nobody-here", "cid", "call")


async def test_delivery_timeout_when_the_relay_never_acks(world: World) -> None:
    alice, bob = await world.identity("alice"), await world.identity("bob")
    await world.permit(bob, alice)
    link = RelayLink(world.relay, relay_side=SwallowSends)
    client = world.client(alice, link=link, ack_timeout=0.2)
    await client.connect()
    with pytest.raises(DeliveryTimeout):
        await client.voice().stop(bob.identity, "cid", "call")
    # The connection is still usable for everything else.
    assert await client.connections.list() == []


async def test_sent_messages_are_observed_once_acked_and_a_refused_one_is_not(
    world: World,
) -> None:
    alice, bob = await world.identity("alice"), await world.identity("bob")
    await world.permit(bob, alice)
    client = await world.connected(alice)
    seen: list[tuple[str, str]] = []

    def explode(message: object) -> None:
        raise RuntimeError("observer bug")

    client.observe_sent(explode)  # an observer's bug does not fail the send
    stop_observing = client.observe_sent(lambda m: seen.append((m.typ.value, m.aud)))
    sent = await client.voice().stop(bob.identity, "cid", "call-1")
    assert seen == [("chat.voice.stop", bob.identity)]
    assert sent.aud == bob.identity
    with pytest.raises(UnknownIdentity):
        await client.voice().stop("nobody-here", "cid", "call-2")
    stop_observing()
    await client.voice().busy(bob.identity, "cid", "call-3")
    assert seen == [("chat.voice.stop", bob.identity)]

"""Delivery: offline, reconnects, several devices, restarts. Nothing lost, nothing twice."""

from __future__ import annotations

from collections import Counter

from parley.client import add_device
from parley.transport import Transport

from .helpers import (
    DropAfterFirstSend,
    DropConfirms,
    ForgetResume,
    Received,
    Trip,
    World,
    eventually,
)


async def test_an_offline_recipient_gets_the_message_on_connect(world: World) -> None:
    alice, bob = await world.identity("alice"), await world.identity("bob")
    await world.permit(bob, alice)
    await (await world.connected(alice)).voice().stop(bob.identity, "cid", "call-1")

    received = Received()
    bob_client = world.client(bob)
    bob_client.voice().on_stop(received)
    await bob_client.connect()
    issuer, payload = await received.next()
    assert (issuer, payload["call_id"]) == (alice.identity, "call-1")


async def test_reconnect_resumes_without_loss_or_duplicates(world: World) -> None:
    alice, bob = await world.identity("alice"), await world.identity("bob")
    await world.permit(bob, alice)
    received = Received()
    bob_client = world.client(bob)
    bob_client.voice().on_stop(received)
    await bob_client.connect()
    bob_transport = world.link.transports[-1]
    alice_voice = (await world.connected(alice)).voice()

    for n in range(3):
        await alice_voice.stop(bob.identity, "cid", f"call-{n}")
    await received.next()
    await bob_transport.close()  # fails mid-run, with deliveries in flight
    for n in range(3, 6):
        await alice_voice.stop(bob.identity, "cid", f"call-{n}")
    await received.until(6)
    await alice_voice.stop(bob.identity, "cid", "call-6")
    await received.until(7)
    assert received.call_ids == [f"call-{n}" for n in range(7)]


async def test_a_send_made_while_disconnected_is_resent_after_reconnect(world: World) -> None:
    alice, bob = await world.identity("alice"), await world.identity("bob")
    await world.permit(bob, alice)
    received = Received()
    bob_client = world.client(bob)
    bob_client.voice().on_stop(received)
    await bob_client.connect()
    alice_client = await world.connected(alice)

    await world.link.transports[-1].close()  # alice's transport
    await alice_client.voice().stop(bob.identity, "cid", "call-1")
    await received.next()
    assert received.call_ids == ["call-1"]


async def test_a_resent_send_is_stored_once(world: World) -> None:
    alice, bob = await world.identity("alice"), await world.identity("bob")
    await world.permit(bob, alice)
    received = Received()
    bob_client = world.client(bob)
    bob_client.voice().on_stop(received)
    await bob_client.connect()
    trip = Trip()

    def drop_after_send(transport: Transport) -> Transport:
        return DropAfterFirstSend(transport, trip)

    # The relay gets the Send, the Ack is lost with the connection, the client resends.
    alice_voice = (
        await world.connected(alice, link=world.link.with_client_side(drop_after_send))
    ).voice()
    await alice_voice.stop(bob.identity, "cid", "call-1")
    assert trip.fired
    await alice_voice.stop(bob.identity, "cid", "call-2")
    await received.next()
    await received.next()
    assert received.call_ids == ["call-1", "call-2"]


async def test_every_device_of_the_recipient_receives(world: World) -> None:
    alice, bob = await world.identity("alice"), await world.identity("bob")
    bob2 = await add_device(bob, connector=world.link)
    assert (bob2.identity, bob2.name) == (bob.identity, bob.name)
    assert bob2.device != bob.device
    await world.permit(bob, alice)
    on_one, on_two = Received(), Received()
    for creds, received in ((bob, on_one), (bob2, on_two)):
        client = world.client(creds)
        client.voice().on_stop(received)
        await client.connect()
    await (await world.connected(alice)).voice().stop(bob.identity, "cid", "call-1")
    assert (await on_one.next())[1]["call_id"] == "call-1"
    assert (await on_two.next())[1]["call_id"] == "call-1"


async def test_copies_of_own_sends_do_not_reach_handlers(world: World) -> None:
    alice, bob = await world.identity("alice"), await world.identity("bob")
    alice2 = await add_device(alice, connector=world.link)
    await world.permit(bob, alice)
    await world.permit(alice, bob)
    on_alice2 = Received()
    alice2_client = world.client(alice2)
    alice2_client.voice().on_stop(on_alice2)
    await alice2_client.connect()

    # alice2 gets a copy of what alice sends to bob: it is not addressed to alice2.
    await (await world.connected(alice)).voice().stop(bob.identity, "cid", "copy")
    await (await world.connected(bob)).voice().stop(alice.identity, "cid", "for-alice")
    await on_alice2.next()
    assert on_alice2.call_ids == ["for-alice"]
    assert alice2_client.rejected == {}


async def test_a_message_to_its_own_identity_reaches_the_other_devices_only(
    world: World,
) -> None:
    alice, bob = await world.identity("alice"), await world.identity("bob")
    alice2 = await add_device(alice, connector=world.link)
    await world.permit(alice, bob)
    on_alice, on_alice2 = Received(), Received()
    alice_client, alice2_client = world.client(alice), world.client(alice2)
    alice_client.voice().on_stop(on_alice)
    alice2_client.voice().on_stop(on_alice2)
    await alice_client.connect()
    await alice2_client.connect()

    await alice_client.voice().stop(alice.identity, "cid", "to-self")
    # A sentinel from bob: each device handles its inbox in order.
    await (await world.connected(bob)).voice().stop(alice.identity, "cid", "from-bob")
    await on_alice.next()
    await on_alice2.next()
    await on_alice2.next()
    assert on_alice.call_ids == ["from-bob"]
    assert on_alice2.call_ids == ["to-self", "from-bob"]
    assert alice_client.rejected == {} and alice2_client.rejected == {}


async def test_a_restarted_client_does_not_handle_old_messages_again(world: World) -> None:
    alice, bob = await world.identity("alice"), await world.identity("bob")
    await world.permit(bob, alice)
    state = world.tmp_path / "bob.state.db"
    # Confirms never reach the relay: only the local state knows what was handled.
    lossy = world.link.with_client_side(DropConfirms)
    first = Received()
    bob_client = world.client(bob, state_path=state, link=lossy)
    bob_client.voice().on_stop(first)
    await bob_client.connect()
    alice_voice = (await world.connected(alice)).voice()
    for n in range(2):
        await alice_voice.stop(bob.identity, "cid", f"call-{n}")
        await first.next()
    await bob_client.close()

    # Restarted, and the relay is asked to redeliver from the start: old offsets skip.
    again = Received()
    restarted = world.client(bob, state_path=state, link=world.link.with_client_side(ForgetResume))
    restarted.voice().on_stop(again)
    await restarted.connect()
    await alice_voice.stop(bob.identity, "cid", "call-2")
    await again.next()
    assert again.call_ids == ["call-2"]


async def test_without_the_state_file_old_messages_come_again_unreadable(
    world: World,
) -> None:
    """The control for the test above: it is the state file that prevents repeats; and
    without it the device has lost its Olm account too, so it cannot open them."""
    alice, bob = await world.identity("alice"), await world.identity("bob")
    await world.permit(bob, alice)
    lossy = world.link.with_client_side(DropConfirms)
    first = Received()
    bob_client = world.client(bob, link=lossy, state_path=":memory:")
    bob_client.voice().on_stop(first)
    await bob_client.connect()
    await (await world.connected(alice)).voice().stop(bob.identity, "cid", "call-0")
    await first.next()
    await bob_client.close()

    again = Received()
    restarted = world.client(bob, link=lossy, state_path=":memory:")
    restarted.voice().on_stop(again)
    await restarted.connect()
    await eventually(lambda: restarted.rejected)
    assert restarted.rejected == Counter(undecryptable=1)
    assert again.call_ids == []


async def test_restart_resumes_after_the_stored_offset(world: World) -> None:
    alice, bob = await world.identity("alice"), await world.identity("bob")
    await world.permit(bob, alice)
    state = world.tmp_path / "bob.state.db"
    lossy = world.link.with_client_side(DropConfirms)
    first = Received()
    bob_client = world.client(bob, state_path=state, link=lossy)
    bob_client.voice().on_stop(first)
    await bob_client.connect()
    alice_voice = (await world.connected(alice)).voice()
    await alice_voice.stop(bob.identity, "cid", "call-0")
    await first.next()
    await bob_client.close()

    again = Received()
    restarted = world.client(bob, state_path=state, link=lossy)
    restarted.voice().on_stop(again)
    await restarted.connect()
    await alice_voice.stop(bob.identity, "cid", "call-1")
    await again.next()
    assert again.call_ids == ["call-1"]

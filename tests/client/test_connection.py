"""The relay session: handshake failures and lifecycle."""

from __future__ import annotations

import asyncio

import pytest

from parley.client import Client
from parley.crypto.keys import SigningKey
from parley.errors import AuthenticationFailed, NotConnected, StateError
from parley.protocol.messages import VoiceStop

from .helpers import WAIT, World


async def test_a_wrong_key_fails_to_authenticate(world: World) -> None:
    alice = await world.identity("alice")
    impostor = type(alice)(
        identity=alice.identity,
        device=alice.device,
        secret_key=SigningKey.generate(),
        relay_url=alice.relay_url,
    )
    with pytest.raises(AuthenticationFailed):
        await world.connected(impostor)


async def test_requests_after_close_raise_not_connected(world: World) -> None:
    alice = await world.identity("alice")
    client = await world.connected(alice)
    await client.close()
    await client.close()  # idempotent
    with pytest.raises(NotConnected):
        await client.connections.list()


async def test_a_client_connects_once(world: World) -> None:
    alice = await world.identity("alice")
    client = Client(alice, connector=world.link)
    async with client:
        with pytest.raises(StateError):
            await client.connect()


async def test_a_handler_may_close_its_client(world: World) -> None:
    alice, bob = await world.identity("alice"), await world.identity("bob")
    await world.permit(bob, alice)
    bob_client = world.client(bob)
    closed = asyncio.Event()

    @bob_client.voice().on_stop
    async def hang_up(issuer: str, payload: VoiceStop) -> None:
        await bob_client.close()
        closed.set()

    await bob_client.connect()
    await (await world.connected(alice)).voice().stop(bob.identity, "cid", "call")
    async with asyncio.timeout(WAIT):
        await closed.wait()
    with pytest.raises(NotConnected):
        await bob_client.connections.list()

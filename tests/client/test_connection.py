"""The relay session: handshake failures and lifecycle."""

from __future__ import annotations

import pytest

from parley.client import Client
from parley.crypto.keys import SigningKey
from parley.errors import AuthenticationFailed, NotConnected, StateError

from .helpers import World


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

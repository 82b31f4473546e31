"""Registering identities and adding devices."""

from __future__ import annotations

from pathlib import Path

import pytest

from parley.client import Client, add_device, register_identity
from parley.credentials import Credentials
from parley.errors import CredentialsError, IdentityExists, KeyChainError

from .helpers import World


async def test_register_then_connect(world: World) -> None:
    creds = await register_identity(
        "memory://relay", name="Alice", identity_id="alice", connector=world.link
    )
    assert (creds.identity, creds.name, creds.relay_url) == ("alice", "Alice", "memory://relay")
    client = await world.connected(creds)
    assert (client.id, client.device) == ("alice", creds.device)


async def test_an_identity_id_is_registered_once(world: World) -> None:
    await register_identity("memory://relay", identity_id="alice", connector=world.link)
    with pytest.raises(IdentityExists):
        await register_identity("memory://relay", identity_id="alice", connector=world.link)


async def test_an_invalid_identity_id_is_refused_locally(world: World) -> None:
    with pytest.raises(CredentialsError):
        await register_identity("memory://relay", identity_id="no spaces", connector=world.link)


async def test_an_added_device_can_connect(world: World) -> None:
    alice = await world.identity("alice")
    alice2 = await add_device(alice, connector=world.link)
    client = await world.connected(alice2)
    assert (client.id, client.device) == (alice.identity, alice2.device)


async def test_revoking_an_unknown_device_fails_locally(world: World) -> None:
    alice = await world.identity("alice")
    client = await world.connected(alice)
    with pytest.raises(KeyChainError, match="not an active device"):
        await client.revoke_device("d-nosuchdevice")


async def test_from_credentials_keeps_state_beside_the_file(world: World, tmp_path: Path) -> None:
    alice = await world.identity("alice")
    path = tmp_path / "alice.json"
    alice.save(path)
    client = Client.from_credentials(path, connector=world.link)
    async with client:
        assert client.id == alice.identity
    assert Credentials.default_state_path(path).exists()


async def test_credentials_made_first_then_registered(world: World, tmp_path: Path) -> None:
    from parley.client.registration import new_device, new_identity, register, register_device

    alice = new_identity("memory://relay", name="Alice", identity_id="alice")
    path = tmp_path / "alice.json"
    alice.create(path)  # saved before the relay hears of it
    await register(alice, world.link)
    phone = new_device(alice)
    assert (phone.identity, phone.relay_url) == ("alice", "memory://relay")
    await register_device(alice, phone, world.link)
    client = await world.connected(Credentials.load(path))
    assert client.device == alice.device
    assert (await world.connected(phone)).device == phone.device
    with pytest.raises(IdentityExists):
        await register(new_identity("memory://relay", identity_id="alice"), world.link)

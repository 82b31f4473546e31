"""What the store tests build their data from: envelopes, identities, devices, keys."""

from __future__ import annotations

from tests.relay.helpers import Identity

from parley.protocol.frames import Envelope
from parley.protocol.keychain import KeyOp
from parley.relay.store import IdentityKey, RelayStore

NOW = 1000.0


def envelope(
    id_: str,
    sender: str = "bob",
    recipient: str = "alice",
    expires: float = 2000.0,
    sender_device: str = "d1",
) -> Envelope:
    return Envelope(
        id=id_,
        sender=sender,
        sender_device=sender_device,
        recipient=recipient,
        body=b"body of " + id_.encode(),
        sent_at=NOW,
        expires_at=expires,
    )


async def add_identity(store: RelayStore, ident: Identity) -> None:
    assert await store.create_identity(ident.id, None, ident.genesis, ident.genesis.decoded(), NOW)


async def add_device(store: RelayStore, ident: Identity, device: str) -> None:
    entry = ident.next_entry(KeyOp.ADD, device, signer="d1")
    await store.append_entry(ident.id, entry, ident.chain.append(entry))


async def revoke_device(store: RelayStore, ident: Identity, device: str) -> None:
    entry = ident.next_entry(KeyOp.REVOKE, device, signer="d1")
    await store.append_entry(ident.id, entry, ident.chain.append(entry))


def identity_key(n: int) -> IdentityKey:
    return IdentityKey(key=bytes([n]) * 32, signature=bytes([n]) * 64)


def one_time_keys(prefix: int, count: int) -> list[bytes]:
    return [bytes([prefix, i]) * 16 for i in range(count)]

"""Key chains: genesis, add, revoke, rotation, and every way an entry can be wrong."""

from __future__ import annotations

import pytest
from fuzz.harness import deep_msgpack

from parley.crypto.keys import SigningKey
from parley.errors import KeyChainError, RevokedKey, UnknownKey
from parley.protocol.keychain import ChainEntry, KeyChain, KeyOp, genesis_entry, make_entry


def _genesis(key: SigningKey, identity: str = "alice", device: str = "d1") -> ChainEntry:
    return genesis_entry(identity, device, key)


def _next(
    chain: KeyChain, op: KeyOp, device: str, key: SigningKey, *, signer: str, signer_key: SigningKey
) -> ChainEntry:
    return make_entry(
        identity=chain.identity,
        seq=chain.version,
        prev=chain.head,
        op=op,
        device=device,
        public_key=key.public_key,
        signer=signer,
        signer_key=signer_key,
    )


def test_genesis_then_rotation() -> None:
    k1, k2 = SigningKey.generate(), SigningKey.generate()
    chain = KeyChain.from_entries("alice", [_genesis(k1)])
    assert chain.current_key("d1") == k1.public_key
    chain.append(_next(chain, KeyOp.ADD, "d2", k2, signer="d1", signer_key=k1))
    chain.append(_next(chain, KeyOp.REVOKE, "d1", k1, signer="d2", signer_key=k2))
    assert chain.version == 3
    assert chain.current_key("d2") == k2.public_key
    with pytest.raises(RevokedKey):
        chain.current_key("d1")
    with pytest.raises(UnknownKey):
        chain.current_key("d9")
    # Replaying the stored entries gives the same state.
    again = KeyChain.from_entries("alice", chain.entries)
    assert again.active == chain.active and again.revoked == chain.revoked


def test_genesis_must_be_self_signed() -> None:
    k1, other = SigningKey.generate(), SigningKey.generate()
    forged = make_entry(
        identity="alice",
        seq=0,
        prev=b"",
        op=KeyOp.ADD,
        device="d1",
        public_key=k1.public_key,
        signer="d1",
        signer_key=other,
    )
    with pytest.raises(KeyChainError, match="signature"):
        KeyChain("alice").append(forged)


def test_revoked_device_cannot_sign_further_entries() -> None:
    k1, k2, k3 = SigningKey.generate(), SigningKey.generate(), SigningKey.generate()
    chain = KeyChain.from_entries("alice", [_genesis(k1)])
    chain.append(_next(chain, KeyOp.ADD, "d2", k2, signer="d1", signer_key=k1))
    chain.append(_next(chain, KeyOp.REVOKE, "d1", k1, signer="d2", signer_key=k2))
    with pytest.raises(KeyChainError, match="not an active device"):
        chain.append(_next(chain, KeyOp.ADD, "d3", k3, signer="d1", signer_key=k1))


@pytest.mark.parametrize("mutation", ["seq", "prev", "identity", "duplicate", "wrong_key"])
def test_bad_links_leave_the_chain_unchanged(mutation: str) -> None:
    k1, k2 = SigningKey.generate(), SigningKey.generate()
    chain = KeyChain.from_entries("alice", [_genesis(k1)])
    entry = {
        "seq": make_entry(
            identity="alice",
            seq=5,
            prev=chain.head,
            op=KeyOp.ADD,
            device="d2",
            public_key=k2.public_key,
            signer="d1",
            signer_key=k1,
        ),
        "prev": make_entry(
            identity="alice",
            seq=1,
            prev=b"x" * 32,
            op=KeyOp.ADD,
            device="d2",
            public_key=k2.public_key,
            signer="d1",
            signer_key=k1,
        ),
        "identity": make_entry(
            identity="bob",
            seq=1,
            prev=chain.head,
            op=KeyOp.ADD,
            device="d2",
            public_key=k2.public_key,
            signer="d1",
            signer_key=k1,
        ),
        "duplicate": _next(chain, KeyOp.ADD, "d1", k2, signer="d1", signer_key=k1),
        "wrong_key": _next(chain, KeyOp.REVOKE, "d1", k2, signer="d1", signer_key=k1),
    }[mutation]
    with pytest.raises(KeyChainError):
        chain.append(entry)
    assert chain.version == 1 and list(chain.active) == ["d1"]


def test_garbage_entry_is_typed() -> None:
    with pytest.raises(KeyChainError, match="decode"):
        KeyChain("alice").append(ChainEntry(body=b"\xff\x00", signature=b""))


def test_deep_nesting_after_the_fields_is_typed_not_a_recursion_error() -> None:
    body = _genesis(SigningKey.generate()).body
    # A ninth, unknown element after the eight: msgspec recursed into it to skip it.
    nested = b"\x99" + body[1:] + deep_msgpack()
    with pytest.raises(KeyChainError, match="decode"):
        KeyChain("alice").append(ChainEntry(body=nested, signature=b""))


def test_a_valid_entry_padded_over_the_bound_is_refused() -> None:
    body = _genesis(SigningKey.generate()).body
    padded = b"\x99" + body[1:] + b"\xc5\x04\x00" + b"\x00" * 1024  # a 1 KiB bin field
    with pytest.raises(KeyChainError, match="over the"):
        KeyChain("alice").append(ChainEntry(body=padded, signature=b""))

"""An identity's key history as a signed hash chain.

Entry 0 (genesis) adds the identity's first device and is signed by that device's own
key. Every later entry adds or revokes one device key and is signed by a device key that
is active at that point in the chain, and names the hash of the entry before it. The
relay stores the chain; clients fetch it and replay it themselves, so a relay cannot add
a key to someone else's identity without a signature from that identity.

Rotation is "add the new key, then revoke the old one".
"""

from __future__ import annotations

import enum
import hashlib
import time
from dataclasses import dataclass, field

import msgspec

from parley.crypto.keys import SigningKey, VerifyKey
from parley.errors import BadSignature, KeyChainError, RevokedKey, UnknownKey
from parley.ids import is_valid_id
from parley.protocol.decoding import KIB, Decoder

_DOMAIN = b"parley-keychain-v1\x00"


class KeyOp(enum.StrEnum):
    ADD = "add"
    REVOKE = "revoke"


class EntryBody(msgspec.Struct, frozen=True, array_like=True):
    identity: str
    seq: int
    prev: bytes
    op: KeyOp
    device: str
    public_key: bytes
    signer: str
    created_at: float


class ChainEntry(msgspec.Struct, frozen=True, array_like=True):
    """``body`` is the msgpack encoding of an :class:`EntryBody`; the signature covers it."""

    body: bytes
    signature: bytes

    def decoded(self) -> EntryBody:
        """The body; :class:`KeyChainError` if it does not decode."""
        return _body_decoder.decode(self.body)

    def digest(self) -> bytes:
        return hashlib.sha256(self.body + self.signature).digest()


# Three ids of at most 64 characters, two keys, a hash and two numbers: well under this.
MAX_ENTRY_BODY_BYTES = 1 * KIB
_body_decoder: Decoder[EntryBody] = Decoder(
    EntryBody,
    format="msgpack",
    error=KeyChainError,
    what="key chain entry does not decode",
    max_bytes=MAX_ENTRY_BODY_BYTES,
)
_body_encoder = msgspec.msgpack.Encoder()


def make_entry(
    *,
    identity: str,
    seq: int,
    prev: bytes,
    op: KeyOp,
    device: str,
    public_key: VerifyKey,
    signer: str,
    signer_key: SigningKey,
    created_at: float | None = None,
) -> ChainEntry:
    body = _body_encoder.encode(
        EntryBody(
            identity=identity,
            seq=seq,
            prev=prev,
            op=op,
            device=device,
            public_key=public_key.raw,
            signer=signer,
            created_at=time.time() if created_at is None else created_at,
        )
    )
    return ChainEntry(body=body, signature=signer_key.sign(_DOMAIN + body))


def genesis_entry(identity: str, device: str, key: SigningKey) -> ChainEntry:
    """Entry 0 of a new identity: its first device, signed by that device's own key."""
    return make_entry(
        identity=identity,
        seq=0,
        prev=b"",
        op=KeyOp.ADD,
        device=device,
        public_key=key.public_key,
        signer=device,
        signer_key=key,
    )


@dataclass
class KeyChain:
    """The replayed state of one identity's chain: which device keys are active now."""

    identity: str
    entries: list[ChainEntry] = field(default_factory=list)
    active: dict[str, VerifyKey] = field(default_factory=dict)
    revoked: dict[str, VerifyKey] = field(default_factory=dict)

    @classmethod
    def from_entries(cls, identity: str, entries: list[ChainEntry]) -> KeyChain:
        chain = cls(identity)
        for entry in entries:
            chain.append(entry)
        return chain

    @property
    def version(self) -> int:
        """Number of entries; grows by one with every add or revoke."""
        return len(self.entries)

    @property
    def head(self) -> bytes:
        return self.entries[-1].digest() if self.entries else b""

    def check(self, entry: ChainEntry) -> EntryBody:
        """Validate ``entry`` as the next link without applying it."""
        body = entry.decoded()
        if body.identity != self.identity:
            raise KeyChainError(f"entry is for {body.identity!r}, not {self.identity!r}")
        if not is_valid_id(body.identity) or not is_valid_id(body.device):
            raise KeyChainError("identity and device ids must match [A-Za-z0-9._-]{1,64}")
        if body.seq != len(self.entries):
            raise KeyChainError(f"entry seq {body.seq}, expected {len(self.entries)}")
        if body.prev != self.head:
            raise KeyChainError("entry does not name the current chain head")
        try:
            public_key = VerifyKey(body.public_key)
        except BadSignature:
            raise KeyChainError("entry carries an invalid public key") from None
        if body.seq == 0:
            if body.op is not KeyOp.ADD or body.signer != body.device:
                raise KeyChainError("the first entry must add a device, signed by itself")
            signer_key = public_key
        else:
            signer_key_or_none = self.active.get(body.signer)
            if signer_key_or_none is None:
                raise KeyChainError(f"signer {body.signer!r} is not an active device")
            signer_key = signer_key_or_none
        try:
            signer_key.verify(_DOMAIN + entry.body, entry.signature)
        except BadSignature:
            raise KeyChainError("entry signature does not verify") from None
        if body.op is KeyOp.ADD:
            if body.device in self.active or body.device in self.revoked:
                raise KeyChainError(f"device {body.device!r} already exists")
        else:
            current = self.active.get(body.device)
            if current is None:
                raise KeyChainError(f"device {body.device!r} is not active")
            if current.raw != body.public_key:
                raise KeyChainError("revoke names a different key than the active one")
        return body

    def append(self, entry: ChainEntry) -> EntryBody:
        body = self.check(entry)
        key = VerifyKey(body.public_key)
        if body.op is KeyOp.ADD:
            self.active[body.device] = key
        else:
            del self.active[body.device]
            self.revoked[body.device] = key
        self.entries.append(entry)
        return body

    def current_key(self, device: str) -> VerifyKey:
        """The device's key if it is active; a typed error otherwise."""
        key = self.active.get(device)
        if key is not None:
            return key
        if device in self.revoked:
            raise RevokedKey(f"device key {self.identity}:{device} has been revoked")
        raise UnknownKey(f"{self.identity} has no device {device!r}")

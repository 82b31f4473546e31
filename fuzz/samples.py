"""Valid inputs for every parser, made with fixed keys: the fuzzers' seed corpora."""

from __future__ import annotations

import functools
import tempfile
from pathlib import Path

import msgspec

from parley.client.olm import OlmDevice
from parley.client.state import Seen, State
from parley.credentials import Credentials
from parley.crypto import jws, sealed
from parley.crypto.keys import SigningKey
from parley.ids import DeviceId, IdentityId
from parley.protocol import frames, messages, session_description
from parley.protocol.keychain import ChainEntry, KeyChain, KeyOp, make_entry

ALICE_KEY = SigningKey(b"a" * 32)
BOB_KEY = SigningKey(b"b" * 32)
SECOND_KEY = SigningKey(b"c" * 32)
ALICE = Credentials(IdentityId("alice"), DeviceId("d1"), ALICE_KEY, "memory://relay")
BOB = Credentials(IdentityId("bob"), DeviceId("d1"), BOB_KEY, "memory://relay")

SDP = "\r\n".join(
    [
        "v=0",
        "o=- 1 2 IN IP4 127.0.0.1",
        "s=-",
        "t=0 0",
        "m=audio 9 UDP/TLS/RTP/SAVPF 111",
        "c=IN IP4 127.0.0.1",
        "a=candidate:1 1 udp 2130706431 127.0.0.1 50000 typ host",
        "a=end-of-candidates",
        "a=fingerprint:sha-256 " + ":".join(["AB"] * 32),
        "a=rtpmap:111 opus/48000/2",
        "",
    ]
)


def genesis() -> ChainEntry:
    """Entry 0 of alice's chain, made at a fixed time so entry 1 can name it."""
    return _entry(0, b"", "d1", ALICE_KEY)


def second_entry() -> ChainEntry:
    """Entry 1 of alice's chain: device d2 added, signed by d1."""
    return _entry(1, genesis().digest(), "d2", SECOND_KEY)


def _entry(seq: int, prev: bytes, device: str, key: SigningKey) -> ChainEntry:
    return make_entry(
        identity="alice",
        seq=seq,
        prev=prev,
        op=KeyOp.ADD,
        device=device,
        public_key=key.public_key,
        signer="d1",
        signer_key=ALICE_KEY,
        created_at=float(seq),
    )


def alice_chain() -> KeyChain:
    return KeyChain.from_entries("alice", [genesis()])


def payloads() -> list[messages.Message]:
    """One payload of every type, made as a receiver would decode them."""
    claims = {"iss": "bob", "sub": "bob", "aud": "alice", "iat": 1, "exp": 2, "jti": "j"}
    offer, answer = session_description.offer(SDP), session_description.answer(SDP)
    fields: list[dict[str, object]] = [
        {"typ": "chat.voice.setup", "data": {"name": "Bob", "n": [1, 2.5, None, True]}},
        {"typ": "chat.voice.start", "call_id": "k", "peer_info": offer},
        {"typ": "chat.voice.accept", "call_id": "k", "peer_info": answer},
        {"typ": "chat.voice.busy", "call_id": "k", "data": {"reason": "busy"}},
        {"typ": "chat.voice.stop", "call_id": "k"},
        {"typ": "chat.voice.summary", "call_id": "k", "data": {"duration": 3.5}},
    ]
    return [msgspec.convert({**claims, "cid": "c", **f}, messages.Message) for f in fields]


def tokens() -> list[bytes]:
    return [jws.sign(message, BOB_KEY, "d1") for message in payloads()]


def client_frames() -> list[frames.Frame]:
    ref = frames.DeviceRef(identity="bob", device="d1", identity_key=b"k" * 32)
    return [
        frames.Register(ref=1, entry=genesis(), name="Alice"),
        frames.Authenticate(identity="alice", device="d1", signature=b"s" * 64, resume_after=3),
        frames.Send(
            ref=2, envelope_id="e", recipient="bob", body=b"x", expires_at=9.5, devices=[ref]
        ),
        frames.Confirm(offset=4),
        frames.Permit(ref=3, identity="bob"),
        frames.Unpermit(ref=4, identity="bob"),
        frames.ListConnections(ref=5),
        frames.GetKeys(ref=6, identity="bob"),
        frames.AppendKey(ref=7, entry=second_entry()),
        frames.Watch(ref=8, identities=["bob"]),
        frames.Unwatch(ref=9, identities=["bob"]),
        frames.PublishKeys(
            ref=10, identity_key=b"i" * 32, signature=b"s" * 64, one_time_keys=[b"o" * 32]
        ),
        frames.ClaimKeys(ref=11, identity="bob", sessions={"d1": b"k" * 32}),
    ]


def relay_frames() -> list[frames.Frame]:
    envelope = frames.Envelope(
        id="e",
        sender="bob",
        sender_device="d1",
        recipient="alice",
        body=sealed.encode(
            sealed.SealedBody(
                sender_key=b"k" * 32,
                sender_key_signature=b"s" * 64,
                keys={"alice:d1": sealed.OlmCiphertext(0, b"olm")},
                nonce=b"n" * 24,
                ciphertext=b"c",
            )
        ),
        sent_at=1.0,
        expires_at=2.0,
    )
    claimed = frames.ClaimedDevice(
        device="d1", identity_key=b"i" * 32, signature=b"s" * 64, one_time_key=b"o" * 32
    )
    return [
        frames.Challenge(nonce=b"n" * 32),
        frames.Welcome(identity="alice", device="d1", resume_after=0),
        frames.Registered(ref=1, identity="alice"),
        frames.Deliver(offset=1, envelope=envelope, sender_keys_version=1),
        frames.Ack(ref=2, envelope_id="e"),
        frames.Error(ref=3, code=frames.ErrorCode.RATE_LIMITED, message="slow down"),
        frames.Connections(ref=4, identities=["bob"]),
        frames.KeyChainFrame(ref=5, identity="alice", entries=[genesis(), second_entry()]),
        frames.Done(ref=6),
        frames.Presence(identity="bob", devices=["d1"]),
        frames.KeyCount(one_time_keys=3, fallback_key=False),
        frames.ClaimedKeys(ref=7, identity="bob", devices=[claimed]),
    ]


def olm_pair() -> tuple[OlmDevice, OlmDevice]:
    """Alice's and Bob's devices in memory; Bob has a session with Alice."""
    alice = OlmDevice(ALICE, State(":memory:", identity="alice", device="d1"))
    bob = OlmDevice(BOB, State(":memory:", identity="bob", device="d1"))
    fallback = alice.fallback_key(rotate=True)
    assert fallback is not None
    bob.start_session(("alice", "d1"), alice.identity_key, fallback)
    return alice, bob


def aad() -> bytes:
    return sealed.associated_data("e", "bob", "d1", "alice")


def sealed_bodies(bob: OlmDevice) -> list[bytes]:
    """Bodies from Bob to Alice: each carries a pre-key message for ``alice:d1``."""
    bodies = []
    for token in tokens()[:2]:
        key, nonce, ciphertext = sealed.encrypt(token, aad())
        message = bob.encrypt(("alice", "d1"), bob_peer_key(bob), key)
        assert message is not None
        body = sealed.SealedBody(
            sender_key=bob.identity_key,
            sender_key_signature=bob.identity_key_signature,
            keys={"alice:d1": message},
            nonce=nonce,
            ciphertext=ciphertext,
        )
        bodies.append(sealed.encode(body))
    return bodies


def bob_peer_key(bob: OlmDevice) -> bytes:
    return bob.session_keys("alice")["d1"]


def credentials_file() -> bytes:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "alice.json"
        ALICE.save(path)
        return path.read_bytes()


@functools.cache
def state_file() -> bytes:
    """A state file with an offset, a seen jti, a cached chain, Olm account and session."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "alice.state.db"
        state = State(path, identity="alice", device="d1")
        olm = OlmDevice(ALICE, state)
        bob = OlmDevice(BOB, State(":memory:", identity="bob", device="d1"))
        olm.start_session(("bob", "d1"), bob.identity_key, bob.one_time_keys(1)[0])
        state.save_olm(olm.take_changes())
        state.save_chain("alice", [genesis(), second_entry()])
        state.keep_opened(5, lambda: b"kept")
        olm.one_time_keys(2)
        state.save_olm(olm.take_changes())
        state.record(4, Seen("bob", "j", 2))
        state.close()
        return path.read_bytes()

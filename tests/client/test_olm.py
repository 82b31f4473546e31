"""A device's Olm account and sessions: persistence, encryption at rest, recovery."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from parley.client.olm import OlmDevice
from parley.client.state import State
from parley.credentials import Credentials
from parley.crypto.keys import SigningKey
from parley.errors import DecryptionError, StateError
from parley.ids import DeviceId, IdentityId


def _creds(identity: str, device: str = "d1", key: SigningKey | None = None) -> Credentials:
    return Credentials(
        identity=IdentityId(identity),
        device=DeviceId(device),
        secret_key=key or SigningKey.generate(),
        relay_url="memory://relay",
    )


class Side:
    """One device with its state file, reopened at will as after a restart."""

    def __init__(self, creds: Credentials, path: Path) -> None:
        self.creds, self.path = creds, path
        self.state = State(path, identity=creds.identity, device=creds.device)
        self.olm = OlmDevice(creds, self.state)

    def restart(self) -> None:
        self.state.close()
        self.state = State(self.path, identity=self.creds.identity, device=self.creds.device)
        self.olm = OlmDevice(self.creds, self.state)

    def save(self) -> None:
        self.state.save_olm(self.olm.take_changes())

    @property
    def peer(self) -> tuple[str, str]:
        return self.olm.address


def _connect(alice: Side, bob: Side) -> None:
    """alice starts a session with bob from one of bob's published one-time keys."""
    otk = bob.olm.one_time_keys(1)[0]
    bob.olm.mark_published()
    bob.save()
    alice.olm.start_session(bob.peer, bob.olm.identity_key, otk)


@pytest.fixture
def alice(tmp_path: Path) -> Side:
    return Side(_creds("alice"), tmp_path / "alice.db")


@pytest.fixture
def bob(tmp_path: Path) -> Side:
    return Side(_creds("bob"), tmp_path / "bob.db")


def test_sessions_survive_a_restart_on_both_sides(alice: Side, bob: Side) -> None:
    _connect(alice, bob)
    first = alice.olm.encrypt(bob.peer, bob.olm.identity_key, b"one")
    assert first is not None and first.type == 0  # pre-key until bob answers
    assert bob.olm.needs_sender_key(alice.peer, first)
    assert bob.olm.decrypt(alice.peer, first, alice.olm.identity_key) == b"one"
    reply = bob.olm.encrypt(alice.peer, alice.olm.identity_key, b"two")
    assert reply is not None
    assert alice.olm.decrypt(bob.peer, reply, None) == b"two"
    alice.save()
    bob.save()

    alice.restart()
    bob.restart()
    third = alice.olm.encrypt(bob.peer, bob.olm.identity_key, b"three")
    assert third is not None and third.type == 1  # the session, not a new one
    assert bob.olm.decrypt(alice.peer, third, None) == b"three"
    assert alice.olm.session_keys("bob") == {"d1": bob.olm.identity_key}


def test_the_state_file_holds_no_plaintext_pickle(alice: Side, bob: Side) -> None:
    _connect(alice, bob)
    alice.save()
    account = alice.state.load_olm_account()
    (session,) = alice.state.load_olm_sessions()
    # Other credentials (another key for the same device) cannot open them.
    thief = _creds("alice")
    with pytest.raises(StateError):
        OlmDevice(thief, alice.state)
    # Ciphertext: not even the public identity key shows through.
    assert account is not None
    raw = base64.b64decode(account + "=" * (-len(account) % 4))
    assert alice.olm.identity_key not in raw
    assert session.peer_key == bob.olm.identity_key


def test_unsaved_changes_are_not_on_disk(alice: Side, bob: Side) -> None:
    """What the sender has not saved is lost on a crash; so it saves before sending."""
    _connect(alice, bob)
    assert alice.state.load_olm_sessions() == []
    alice.save()
    assert len(alice.state.load_olm_sessions()) == 1


def test_a_pre_key_message_after_lost_sessions_starts_a_new_session(
    alice: Side, bob: Side, tmp_path: Path
) -> None:
    _connect(alice, bob)
    message = alice.olm.encrypt(bob.peer, bob.olm.identity_key, b"one")
    assert message is not None
    assert bob.olm.decrypt(alice.peer, message, alice.olm.identity_key) == b"one"
    # alice loses everything: a new account starts a new session from a new key.
    alice = Side(alice.creds, tmp_path / "alice-again.db")
    _connect(alice, bob)
    message = alice.olm.encrypt(bob.peer, bob.olm.identity_key, b"again")
    assert message is not None
    assert bob.olm.needs_sender_key(alice.peer, message)
    assert bob.olm.decrypt(alice.peer, message, alice.olm.identity_key) == b"again"


def test_what_cannot_be_decrypted_is_a_typed_error(alice: Side, bob: Side) -> None:
    _connect(alice, bob)
    message = alice.olm.encrypt(bob.peer, bob.olm.identity_key, b"one")
    assert message is not None
    with pytest.raises(DecryptionError):  # a new session needs the sender's key
        bob.olm.decrypt(alice.peer, message, None)
    with pytest.raises(DecryptionError):  # not alice's identity key
        bob.olm.decrypt(alice.peer, message, bob.olm.identity_key)
    assert bob.olm.decrypt(alice.peer, message, alice.olm.identity_key) == b"one"
    with pytest.raises(DecryptionError):  # its message key is spent
        bob.olm.decrypt(alice.peer, message, alice.olm.identity_key)
    garbled = type(message)(message.type, message.body[:-1] + bytes([message.body[-1] ^ 1]))
    with pytest.raises(DecryptionError):
        bob.olm.decrypt(alice.peer, garbled, alice.olm.identity_key)
    with pytest.raises(DecryptionError):
        bob.olm.decrypt(alice.peer, type(message)(7, b"x"), None)


def test_forgetting_a_device_drops_its_sessions(alice: Side, bob: Side) -> None:
    _connect(alice, bob)
    alice.save()
    alice.olm.forget("bob", {})
    alice.save()
    assert alice.olm.encrypt(bob.peer, bob.olm.identity_key, b"x") is None
    assert alice.state.load_olm_sessions() == []


def test_the_fallback_key_is_published_once_and_outlives_its_rotation(
    alice: Side, bob: Side, tmp_path: Path
) -> None:
    # A new account comes with a fallback key to publish with its first keys.
    fallback = bob.olm.fallback_key(rotate=False)
    assert fallback is not None
    bob.olm.mark_published()
    bob.save()
    assert bob.olm.fallback_key(rotate=False) is None
    # Handed out by the relay: a new one, the same until it is published.
    rotated = bob.olm.fallback_key(rotate=True)
    assert rotated not in (None, fallback)
    assert bob.olm.fallback_key(rotate=True) == rotated
    bob.olm.mark_published()
    bob.save()
    bob.restart()

    # Two senders started from the old fallback key before the rotation: it is not
    # used up by the first, and the account kept it after rotating.
    carol = Side(_creds("carol"), tmp_path / "carol.db")
    for sender in (alice, carol):
        sender.olm.start_session(bob.peer, bob.olm.identity_key, fallback)
        message = sender.olm.encrypt(bob.peer, bob.olm.identity_key, b"hi")
        assert message is not None
        assert bob.olm.decrypt(sender.peer, message, sender.olm.identity_key) == b"hi"

"""This device's Olm account and its sessions with other devices (vodozemac).

The account holds the device's Curve25519 identity key, its one-time keys and its
fallback key (handed out by the relay once the one-time keys are gone; the account keeps
the previous one after a rotation, for pre-key messages already made with it); a session
per peer device carries the message keys of :mod:`parley.crypto.sealed`. Both persist in
the state file as vodozemac pickles, encrypted under a key derived (HKDF-SHA256) from
the device's Ed25519 secret key, so whoever copies the state file without the
credentials learns nothing, and a state file opened with other credentials fails.

Changes accumulate in memory until :meth:`OlmDevice.take_changes`, which every
transaction of the state file calls as it is formed (:meth:`State.track_olm`): the
sender commits before a message leaves (a session must never encrypt twice from the
same state), the inbox before the handler of the deliveries that changed them runs.

A peer device may have several sessions (both sides started one at once, or the peer
re-keyed): the one that last encrypted or decrypted is used to send, as in Matrix.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar, cast

import vodozemac

from parley.client.state import OlmChanges, SessionRow, State
from parley.credentials import Credentials
from parley.crypto.kdf import hkdf_sha256
from parley.crypto.sealed import OlmCiphertext
from parley.errors import DecryptionError, StateError
from parley.protocol.frames import identity_key_message

log = logging.getLogger(__name__)

PRE_KEY = 0
# Older sessions with one device are dropped beyond this many.
MAX_SESSIONS_PER_DEVICE = 4

Peer = tuple[str, str]  # (identity, device)
T = TypeVar("T")


class _FallbackKeys(Protocol):
    """What vodozemac's Account has for fallback keys but its type stubs leave out."""

    # The fallback key generated and not yet marked published, by key id (at most one).
    @property
    def fallback_key(self) -> dict[str, vodozemac.Curve25519PublicKey]: ...

    def generate_fallback_key(self) -> None: ...


def _fallback_keys(account: vodozemac.Account) -> _FallbackKeys:
    return cast(_FallbackKeys, account)


def pickle_key(credentials: Credentials) -> bytes:
    info = b"parley-olm-pickle-v1\x00%s\x00%s" % (
        credentials.identity.encode(),
        credentials.device.encode(),
    )
    return hkdf_sha256(credentials.secret_key.seed, info=info)


@dataclass
class _Session:
    session: vodozemac.Session
    peer_key: bytes
    rank: int


class OlmDevice:
    def __init__(self, credentials: Credentials, state: State) -> None:
        self._key = pickle_key(credentials)
        self.address = (credentials.identity, credentials.device)
        self._sessions: dict[Peer, list[_Session]] = {}
        self._dirty: dict[tuple[Peer, str], _Session] = {}
        self._dropped: list[tuple[str, str, str]] = []
        self._account_dirty = False
        pickled = state.load_olm_account()
        if pickled is None:
            self._account = vodozemac.Account()
            # So the first publication carries a fallback key along with one-time keys.
            _fallback_keys(self._account).generate_fallback_key()
            state.save_olm(OlmChanges(account=self._account.pickle(self._key)))
            log.info("created an Olm account for %s:%s", *self.address)
        else:
            self._account = self._unpickle(vodozemac.Account.from_pickle, pickled)
        rows = state.load_olm_sessions()
        for row in rows:
            session = self._unpickle(vodozemac.Session.from_pickle, row.pickle)
            entry = _Session(session, row.peer_key, row.rank)
            self._sessions.setdefault((row.identity, row.device), []).append(entry)
        for sessions in self._sessions.values():
            sessions.sort(key=lambda s: s.rank, reverse=True)
        self._ranks = itertools.count(max((row.rank for row in rows), default=0) + 1)
        state.track_olm(self.take_changes)
        # Fixed for the account's life; signed once, as it rides on every sealed body.
        self.identity_key = self._account.curve25519_key.to_bytes()
        self.identity_key_signature = credentials.secret_key.sign(
            identity_key_message(*self.address, self.identity_key)
        )

    def _unpickle(self, load: Callable[[str, bytes], T], pickled: str) -> T:
        try:
            return load(pickled, self._key)
        except ValueError:
            raise StateError(
                "the state file's Olm state does not open with these credentials"
            ) from None

    # -- keys to publish ----------------------------------------------------------------

    def one_time_keys(self, wanted: int) -> list[bytes]:
        """The unpublished one-time keys, generating more so there are ``wanted``.

        Commit the state file before publishing them: a key the relay hands out must
        still be in the account after a restart.
        """
        missing = wanted - len(self._account.one_time_keys)
        if missing > 0:
            self._account.generate_one_time_keys(missing)
            self._account_dirty = True
        return [key.to_bytes() for key in self._account.one_time_keys.values()]

    def fallback_key(self, rotate: bool) -> bytes | None:
        """The fallback key to publish: the unpublished one if there is one, else with
        ``rotate`` a new one (None: nothing to publish).

        A key generated but not yet published is reused rather than replaced: the account
        keeps only one previous fallback key, and that must stay the one the relay handed
        out. Commit the state file before publishing, as for one-time keys.
        """
        account = _fallback_keys(self._account)
        if not account.fallback_key and rotate:
            account.generate_fallback_key()
            self._account_dirty = True
        return next((key.to_bytes() for key in account.fallback_key.values()), None)

    def mark_published(self) -> None:
        self._account.mark_keys_as_published()
        self._account_dirty = True

    # -- sessions -----------------------------------------------------------------------

    def session_keys(self, identity: str) -> dict[str, bytes]:
        """Devices of ``identity`` with a session, by the identity key of the one in use."""
        return {
            device: sessions[0].peer_key
            for (whose, device), sessions in self._sessions.items()
            if whose == identity and sessions
        }

    def start_session(self, peer: Peer, identity_key: bytes, one_time_key: bytes) -> None:
        """An outbound session to ``peer`` from its (verified) identity and one-time key
        (or fallback key: to this side both are the same)."""
        try:
            session = self._account.create_outbound_session(
                vodozemac.Curve25519PublicKey.from_bytes(identity_key),
                vodozemac.Curve25519PublicKey.from_bytes(one_time_key),
            )
        except ValueError as exc:
            log.warning("cannot start a session with %s:%s: %s", *peer, exc)
            return
        self._add(peer, _Session(session, identity_key, next(self._ranks)))

    def forget(self, identity: str, keep: dict[str, bytes]) -> None:
        """Drop sessions with devices of ``identity`` not in ``keep`` (device -> key)."""
        for peer in [p for p in self._sessions if p[0] == identity]:
            key = keep.get(peer[1])
            gone = [s for s in self._sessions[peer] if s.peer_key != key]
            for entry in gone:
                self._drop(peer, entry)

    def encrypt(self, peer: Peer, identity_key: bytes, plaintext: bytes) -> OlmCiphertext | None:
        """Encrypt for ``peer`` with its session for ``identity_key``; None if it has none."""
        entry = next((s for s in self._sessions.get(peer, ()) if s.peer_key == identity_key), None)
        if entry is None:
            return None
        message_type, body = entry.session.encrypt(plaintext).to_parts()
        self._touch(peer, entry)
        return OlmCiphertext(message_type, body)

    def needs_sender_key(self, peer: Peer, message: OlmCiphertext) -> bool:
        """Whether ``message`` starts a new session, which needs the sender's identity key."""
        if message.type != PRE_KEY:
            return False
        pre_key = _pre_key(message)
        return not any(s.session.session_matches(pre_key) for s in self._sessions.get(peer, ()))

    def decrypt(self, peer: Peer, message: OlmCiphertext, sender_key: bytes | None) -> bytes:
        """The plaintext of ``message`` from ``peer``, or :class:`DecryptionError`.

        A pre-key message that no session matches starts a new one with ``sender_key``
        (the sender's verified identity key), if its one-time key is still ours.
        """
        olm_message = _any(message)
        sessions = self._sessions.get(peer, [])
        if message.type == PRE_KEY:
            pre_key = _pre_key(message)
            matching = [s for s in sessions if s.session.session_matches(pre_key)]
            if not matching:
                return self._start_inbound(peer, pre_key, sender_key)
            candidates = matching
        else:
            candidates = sessions
        for entry in candidates:
            try:
                plaintext = entry.session.decrypt(olm_message)
            except ValueError:
                continue
            self._touch(peer, entry)
            return plaintext
        raise DecryptionError(f"no session with {peer[0]}:{peer[1]} decrypts this message")

    def _start_inbound(
        self, peer: Peer, pre_key: vodozemac.PreKeyMessage, sender_key: bytes | None
    ) -> bytes:
        if sender_key is None:
            raise DecryptionError("a new session needs the sender's identity key")
        try:
            session, plaintext = self._account.create_inbound_session(
                vodozemac.Curve25519PublicKey.from_bytes(sender_key), pre_key
            )
        except ValueError as exc:
            msg = f"cannot start a session with {peer[0]}:{peer[1]}: {exc}"
            raise DecryptionError(msg) from None
        # The one-time key it used is gone from the account now (a fallback key stays).
        self._account_dirty = True
        self._add(peer, _Session(session, sender_key, next(self._ranks)))
        log.info("new session with %s:%s from a pre-key message", *peer)
        return plaintext

    def _add(self, peer: Peer, entry: _Session) -> None:
        sessions = self._sessions.setdefault(peer, [])
        sessions.insert(0, entry)
        self._dirty[(peer, entry.session.session_id)] = entry
        for old in sessions[MAX_SESSIONS_PER_DEVICE:]:
            self._drop(peer, old)

    def _touch(self, peer: Peer, entry: _Session) -> None:
        entry.rank = next(self._ranks)
        sessions = self._sessions[peer]
        if sessions[0] is not entry:
            sessions.remove(entry)
            sessions.insert(0, entry)
        self._dirty[(peer, entry.session.session_id)] = entry

    def _drop(self, peer: Peer, entry: _Session) -> None:
        self._sessions[peer].remove(entry)
        if not self._sessions[peer]:
            del self._sessions[peer]
        session_id = entry.session.session_id
        self._dirty.pop((peer, session_id), None)
        self._dropped.append((*peer, session_id))

    # -- persistence --------------------------------------------------------------------

    def derived_key(self, purpose: bytes) -> bytes:
        """A 32-byte key for ``purpose``, derived from this device's storage key."""
        return hkdf_sha256(self._key, info=b"parley-state-v1\x00" + purpose)

    def take_changes(self) -> OlmChanges:
        """Pickles of what changed since the last call, for the state file."""
        changes = OlmChanges(
            account=self._account.pickle(self._key) if self._account_dirty else None,
            sessions=[
                SessionRow(
                    peer[0], peer[1], session_id, e.peer_key, e.rank, e.session.pickle(self._key)
                )
                for (peer, session_id), e in self._dirty.items()
            ],
            dropped=self._dropped,
        )
        self._account_dirty = False
        self._dirty = {}
        self._dropped = []
        return changes


def _any(message: OlmCiphertext) -> vodozemac.AnyOlmMessage:
    try:
        return vodozemac.AnyOlmMessage.from_parts(message.type, message.body)
    except ValueError as exc:
        raise DecryptionError(f"not an Olm message: {exc}") from None


def _pre_key(message: OlmCiphertext) -> vodozemac.PreKeyMessage:
    pre_key = _any(message).to_pre_key()
    if pre_key is None:
        raise DecryptionError("not a pre-key message")
    return pre_key

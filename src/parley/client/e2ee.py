"""End-to-end encryption of envelope bodies: sign, then seal; open, then verify.

:meth:`EndToEnd.seal` encrypts a signed payload once (:mod:`parley.crypto.sealed`) and
its key for every active device of the recipient and every other active device of the
sender, each through this device's Olm session with it (:mod:`.olm`, :mod:`.devices`).
:meth:`EndToEnd.open` reverses that for a delivery; the inbox then verifies the JWS
exactly as for a plaintext one. Every failure to open is a typed
:class:`~parley.errors.DecryptionError` (or a key-chain :class:`VerificationError` for
a sender key nobody vouched for), which the inbox counts and logs; none reaches a
handler.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import NamedTuple

import nacl.exceptions
import nacl.secret

from parley.client.devices import Devices
from parley.client.directory import Directory
from parley.client.olm import OlmDevice, Peer
from parley.client.state import State
from parley.crypto import sealed
from parley.errors import DecryptionError, NoKeyForDevice
from parley.ids import Address
from parley.protocol.frames import DeviceRef, Envelope, identity_key_message

log = logging.getLogger(__name__)


_NONE: dict[str, bytes] = {}  # no other devices of our own to seal for (never changed)


class _Targets(NamedTuple):
    """The devices a message to one recipient is sealed for, made from two device lists
    (made once per pair of lists, as the same lists serve every message)."""

    theirs: dict[str, bytes]
    own: dict[str, bytes]
    refs: list[DeviceRef]
    peers: list[tuple[Peer, str, bytes]]  # each ref's peer, address, identity key


class EndToEnd:
    def __init__(
        self, olm: OlmDevice, devices: Devices, directory: Directory, state: State
    ) -> None:
        self._olm = olm
        self._state = state
        self._devices = devices
        self._directory = directory
        self._identity, self._device = olm.address
        self._address = str(Address(*olm.address))
        self._at_rest = nacl.secret.SecretBox(olm.derived_key(b"kept-payload"))
        self._targets: dict[str, _Targets] = {}  # by recipient

    async def seal(
        self, envelope_id: str, recipient: str, payload: bytes
    ) -> tuple[bytes, list[DeviceRef]]:
        """The sealed body of ``payload`` and the devices it is encrypted for.

        The Olm state it advanced is written before this returns: a session must never
        encrypt again from a state it has already encrypted from after a restart.
        """
        targets = await self._targets_of(recipient)
        aad = sealed.associated_data(envelope_id, self._identity, self._device, recipient)
        key, nonce, ciphertext = sealed.encrypt(payload, aad)
        keys = {}
        for peer, address, identity_key in targets.peers:
            message = self._olm.encrypt(peer, identity_key, key)
            if message is not None:
                keys[address] = message
        body = sealed.SealedBody(
            sender_key=self._olm.identity_key,
            sender_key_signature=self._olm.identity_key_signature,
            keys=keys,
            nonce=nonce,
            ciphertext=ciphertext,
        )
        # Group-committed: concurrent seals share a transaction, each session is
        # pickled once for all of them.
        await self._state.commit()
        return sealed.encode(body), targets.refs

    async def targets(self, recipient: str) -> list[DeviceRef]:
        """The devices a message to ``recipient`` is sealed for: the recipient's and the
        sender's own other devices (so they see what this one sent). The same list for
        every message while the device lists stay: not to be changed."""
        return (await self._targets_of(recipient)).refs

    async def _targets_of(self, recipient: str) -> _Targets:
        theirs = await self._devices.of(recipient)
        own = await self._devices.of(self._identity) if recipient != self._identity else _NONE
        cached = self._targets.get(recipient)
        # Device lists are replaced, never changed in place, when they are fetched again.
        if cached is not None and cached.theirs is theirs and cached.own is own:
            return cached
        refs = [DeviceRef(identity=recipient, device=d, identity_key=k) for d, k in theirs.items()]
        refs += [
            DeviceRef(identity=self._identity, device=d, identity_key=k) for d, k in own.items()
        ]
        peers = [((r.identity, r.device), f"{r.identity}:{r.device}", r.identity_key) for r in refs]
        targets = self._targets[recipient] = _Targets(theirs, own, refs, peers)
        return targets

    async def refresh(self, recipient: str, sent: list[DeviceRef]) -> None:
        """After ``stale_devices``: fetch the device lists ``sent`` was built from again."""
        for identity in {recipient, self._identity}:
            stale = {r.device: r.identity_key for r in sent if r.identity == identity}
            await self._devices.refresh(identity, stale)

    async def open(self, envelope: Envelope, sender_keys_version: int) -> bytes:
        """The signed payload in ``envelope``; a typed error if it cannot be opened.

        Key fetches may raise connection errors before any Olm state changes, so the
        caller may retry; once the Olm message is decrypted its key is spent, so the
        caller must keep the result rather than open the same envelope twice.
        """
        body = sealed.decode(envelope.body)
        mine = body.keys.get(self._address)
        if mine is None:
            raise NoKeyForDevice(f"the sender encrypted nothing for {self._address}")
        peer = (envelope.sender, envelope.sender_device)
        sender_key = None
        if self._olm.needs_sender_key(peer, mine):
            await self._check_sender_key(envelope, sender_keys_version, body)
            sender_key = body.sender_key
        message_key = self._olm.decrypt(peer, mine, sender_key)
        if len(message_key) != sealed.KEY_SIZE:
            raise DecryptionError("the Olm message does not carry a message key")
        aad = sealed.associated_data(
            envelope.id, envelope.sender, envelope.sender_device, envelope.recipient
        )
        return sealed.decrypt(message_key, body.nonce, body.ciphertext, aad)

    async def _check_sender_key(
        self, envelope: Envelope, sender_keys_version: int, body: sealed.SealedBody
    ) -> None:
        # Raises RevokedKey / UnknownKey / BadSignature: a session is only ever started
        # with an identity key that the sending device's current key signed.
        device_key = await self._directory.current_key(
            envelope.sender, envelope.sender_device, sender_keys_version
        )
        message = identity_key_message(envelope.sender, envelope.sender_device, body.sender_key)
        device_key.verify(message, body.sender_key_signature)

    def wrap_kept(self, payload: bytes) -> Callable[[], bytes]:
        """``payload`` encrypted for the state file (a decrypted delivery kept there),
        when called: only if it is written."""
        return lambda: bytes(self._at_rest.encrypt(payload))

    def unwrap_kept(self, kept: bytes) -> bytes:
        try:
            return self._at_rest.decrypt(kept)
        except nacl.exceptions.CryptoError:
            raise DecryptionError("a kept payload in the state file does not decrypt") from None

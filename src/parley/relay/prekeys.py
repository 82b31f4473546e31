"""The relay's end-to-end encryption directory: identity, one-time and fallback keys.

The relay never sees a message key or a payload; it only hands out what devices
published: each device's Olm identity key, signed by its Ed25519 device key (checked
here against the key chain, and again by every client that uses it), and its one-time
keys, each given out once. A device with no one-time key left gets its fallback key
claimed instead, as often as needed, so a device that stays offline longer than its
one-time keys last can still be reached; the device replaces it once told.

Identity keys are read on every Send (:meth:`KeyDirectory.expected` is what a Send must
cover), so they are cached per identity in front of the store. As with the key chains,
this relay is the only writer of its store and writes go through here, so the cache is
updated write-through; only active devices' keys are in it.
"""

from __future__ import annotations

from parley.crypto.keys import VerifyKey
from parley.errors import BadSignature
from parley.protocol.frames import (
    CURVE25519_KEY_SIZE,
    ONE_TIME_KEYS_MAX,
    ClaimedDevice,
    PublishKeys,
    identity_key_message,
)
from parley.relay.directory import Directory
from parley.relay.store import Claim, IdentityKey, KeyStatus, RelayStore


class InvalidKeys(ValueError):
    """A PublishKeys request the relay refuses; the message says why."""


def check_publish(identity: str, device: str, key: VerifyKey, frame: PublishKeys) -> None:
    """Raise :class:`InvalidKeys` unless ``frame`` is well formed and signed by ``key``."""
    if len(frame.identity_key) != CURVE25519_KEY_SIZE:
        raise InvalidKeys(f"an identity key is {CURVE25519_KEY_SIZE} bytes")
    if any(len(otk) != CURVE25519_KEY_SIZE for otk in frame.one_time_keys):
        raise InvalidKeys(f"a one-time key is {CURVE25519_KEY_SIZE} bytes")
    if frame.fallback_key is not None and len(frame.fallback_key) != CURVE25519_KEY_SIZE:
        raise InvalidKeys(f"a fallback key is {CURVE25519_KEY_SIZE} bytes")
    if len(frame.one_time_keys) > ONE_TIME_KEYS_MAX:
        raise InvalidKeys(f"at most {ONE_TIME_KEYS_MAX} one-time keys at once")
    try:
        key.verify(identity_key_message(identity, device, frame.identity_key), frame.signature)
    except BadSignature:
        raise InvalidKeys("the identity key signature does not verify") from None


class KeyDirectory:
    def __init__(self, store: RelayStore, directory: Directory) -> None:
        self._store = store
        self._directory = directory
        self._keys: dict[str, dict[str, IdentityKey]] = {}
        # Per identity, the cached keys last checked against its chain, and the chain's
        # version then: every Send reads them, and the chain rarely changes.
        self._checked: dict[str, tuple[dict[str, IdentityKey], int]] = {}
        self._epoch = 0  # counts invalidations, so a stale load is not cached

    async def identity_keys(self, identity: str) -> dict[str, IdentityKey]:
        """Published identity keys of ``identity``'s active devices (do not mutate)."""
        cached = self.cached_identity_keys(identity)
        while cached is None:
            # Only a load that no invalidate() overtook is cached (it may be stale).
            epoch = self._epoch
            loaded = await self._store.load_identity_keys(identity)
            if self._epoch == epoch:
                self._keys.setdefault(identity, loaded)
            cached = self.cached_identity_keys(identity)
        return cached

    def cached_identity_keys(self, identity: str) -> dict[str, IdentityKey] | None:
        """:meth:`identity_keys` if they are in memory (None: they must be loaded)."""
        cached = self._keys.get(identity)
        if cached is None:
            return None
        chain = self._directory.cached_chain(identity)
        if chain is not None:
            checked = self._checked.get(identity)
            if checked is None or checked[0] is not cached or checked[1] != chain.version:
                # A device revoked while its keys were being loaded must not come back.
                for device in [d for d in cached if d not in chain.active]:
                    del cached[device]
                self._checked[identity] = (cached, chain.version)
        return cached

    async def publish(
        self,
        identity: str,
        device: str,
        key: IdentityKey,
        one_time_keys: list[bytes],
        fallback_key: bytes | None,
    ) -> KeyStatus:
        """Store a checked publish; returns what the device holds now.

        Refuses (:class:`InvalidKeys`) one-time keys past :data:`ONE_TIME_KEYS_MAX`.
        """
        keys = await self.identity_keys(identity)
        held = (await self._store.key_status(identity, device)).one_time_keys
        if keys.get(device) == key and held + len(one_time_keys) > ONE_TIME_KEYS_MAX:
            raise InvalidKeys(f"a device holds at most {ONE_TIME_KEYS_MAX} one-time keys")
        status = await self._store.publish_keys(identity, device, key, one_time_keys, fallback_key)
        chain = self._directory.cached_chain(identity)
        if chain is not None and device in chain.active:
            keys[device] = key
        return status

    async def status(self, identity: str, device: str) -> KeyStatus | None:
        """What the device holds; None if it has published no identity key."""
        if device not in await self.identity_keys(identity):
            return None
        return await self._store.key_status(identity, device)

    async def claim(
        self, identity: str, sessions: dict[str, bytes], exclude: str | None
    ) -> tuple[list[ClaimedDevice], list[Claim]]:
        """Every device of ``identity`` (but ``exclude``) with a one-time (or fallback)
        key claimed for each one the claimer has no session with; and the claims, for
        top-up pushes."""
        listed = {d: k for d, k in (await self.identity_keys(identity)).items() if d != exclude}
        wanted = sorted(d for d, k in listed.items() if sessions.get(d) != k.key)
        claims = await self._store.claim_keys(identity, wanted) if wanted else []
        claimed = {claim.device: claim for claim in claims}
        devices = []
        for device, key in sorted(listed.items()):
            claim = claimed.get(device)
            devices.append(
                ClaimedDevice(
                    device=device,
                    identity_key=key.key,
                    signature=key.signature,
                    one_time_key=None if claim is None else claim.one_time_key,
                    fallback=claim is not None and claim.fallback,
                )
            )
        return devices, claims

    def invalidate(self, identity: str | None = None) -> None:
        """Drop the cached identity keys of ``identity`` (of everyone: None): another
        node published or dropped some."""
        self._epoch += 1
        if identity is None:
            self._keys.clear()
            self._checked.clear()
        else:
            self._keys.pop(identity, None)
            self._checked.pop(identity, None)

    def forget(self, identity: str, device: str) -> None:
        """Drop a revoked device's keys from the cache (the store dropped them)."""
        cached = self._keys.get(identity)
        if cached is not None:
            cached.pop(device, None)

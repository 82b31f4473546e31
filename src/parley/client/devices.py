"""Which devices a message must be encrypted for, and sessions with each of them.

A sender asks the relay for an identity's devices once (:class:`ClaimKeys`), naming the
devices it already has sessions with so no one-time key is wasted on them, and starts
an Olm session with every other device from the one-time key claimed for it (or its
fallback key, if the relay had no one-time key left). Every identity key is checked
against the device's Ed25519 key from the replayed key chain (:mod:`.directory`): a
relay cannot slip in a key of its own. The list is kept until the relay refuses a Send
as ``stale_devices``, which is when :meth:`Devices.refresh` runs.
"""

from __future__ import annotations

import asyncio
import logging

from parley.client.connection import Connection
from parley.client.directory import Directory
from parley.client.olm import OlmDevice
from parley.client.state import State
from parley.errors import BadSignature, KeyChainError, UnknownKey
from parley.protocol.frames import ClaimedDevice, ClaimedKeys, ClaimKeys, identity_key_message

log = logging.getLogger(__name__)


class Devices:
    def __init__(
        self, connection: Connection, directory: Directory, olm: OlmDevice, state: State
    ) -> None:
        self._connection = connection
        self._directory = directory
        self._olm = olm
        self._state = state
        # identity -> device -> verified Olm identity key
        self._devices: dict[str, dict[str, bytes]] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def of(self, identity: str) -> dict[str, bytes]:
        """The devices of ``identity`` to encrypt for (never this device), by identity key."""
        devices = self._devices.get(identity)
        return devices if devices is not None else await self._fetch(identity, stale=None)

    async def refresh(self, identity: str, stale: dict[str, bytes]) -> None:
        """Ask the relay again, as it said ``stale`` is out of date; once for many
        senders that learnt it together."""
        await self._fetch(identity, stale)

    async def _fetch(self, identity: str, stale: dict[str, bytes] | None) -> dict[str, bytes]:
        async with self._locks.setdefault(identity, asyncio.Lock()):
            current = self._devices.get(identity)
            if current is not None and current != stale:
                return current  # fetched while this one waited for the lock
            reply = await self._connection.request(
                lambda ref: ClaimKeys(
                    ref=ref, identity=identity, sessions=self._olm.session_keys(identity)
                ),
                ClaimedKeys,
            )
            devices: dict[str, bytes] = {}
            for claimed in reply.devices:
                if await self._vouched(identity, claimed):
                    devices[claimed.device] = claimed.identity_key
                    self._start_session(identity, claimed)
            self._olm.forget(identity, devices)
            await self._state.commit()
            self._devices[identity] = devices
            return devices

    async def _vouched(self, identity: str, claimed: ClaimedDevice) -> bool:
        """Whether the device's own key signed this identity key."""
        message = identity_key_message(identity, claimed.device, claimed.identity_key)
        try:
            key = await self._directory.current_key(identity, claimed.device, 0)
            key.verify(message, claimed.signature)
        except (UnknownKey, BadSignature, KeyChainError) as exc:
            log.warning(
                "ignoring the identity key the relay lists for %s:%s: %s",
                identity,
                claimed.device,
                exc,
            )
            return False
        return True

    def _start_session(self, identity: str, claimed: ClaimedDevice) -> None:
        peer = (identity, claimed.device)
        if self._olm.session_keys(identity).get(claimed.device) == claimed.identity_key:
            return
        if claimed.one_time_key is None:
            log.warning(
                "%s:%s has no one-time keys left: it cannot read messages until it tops up",
                *peer,
            )
            return
        if claimed.fallback:
            log.info("%s:%s is out of one-time keys: starting from its fallback key", *peer)
        self._olm.start_session(peer, claimed.identity_key, claimed.one_time_key)

"""The presence service: which devices of an identity are connected to the relay now.

Watch identities that permit you; the relay answers with their connected devices and
tells again whenever that set changes. After a reconnect the watches are renewed, so the
picture is fresh. The call layer uses this to end a call whose peer disappeared.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from parley.client.connection import Connection
from parley.errors import ParleyError
from parley.protocol.frames import Done, Presence, Unwatch, Watch

log = logging.getLogger(__name__)

PresenceHandler = Callable[[str, frozenset[str]], None]


class PresenceService:
    def __init__(self, connection: Connection) -> None:
        self._connection = connection
        self._watched: set[str] = set()
        self._devices: dict[str, frozenset[str]] = {}
        self._handlers: list[PresenceHandler] = []
        self._renewing: asyncio.Task[None] | None = None

    async def watch(self, *identities: str) -> None:
        """Follow ``identities``; :class:`NotPermitted` unless each one permits you."""
        # Marked watched before asking: the first report follows the reply at once.
        new = set(identities) - self._watched
        self._watched.update(new)
        try:
            await self._connection.request(_watch_request(list(identities)), Done)
        except BaseException:
            self._watched.difference_update(new)
            raise

    async def unwatch(self, *identities: str) -> None:
        gone = list(identities)
        self._watched.difference_update(gone)
        for identity in gone:
            self._devices.pop(identity, None)
        await self._connection.request(lambda ref: Unwatch(ref=ref, identities=gone), Done)

    def devices(self, identity: str) -> frozenset[str]:
        """The devices of ``identity`` last reported connected (empty if unknown)."""
        return self._devices.get(identity, frozenset())

    def on_change(self, handler: PresenceHandler) -> PresenceHandler:
        """Call ``handler(identity, devices)`` on every report; several may subscribe."""
        self._handlers.append(handler)
        return handler

    # -- called by the client ----------------------------------------------------------

    def received(self, frame: Presence) -> None:
        if frame.identity not in self._watched:
            return  # a report that crossed our unwatch
        devices = frozenset(frame.devices)
        self._devices[frame.identity] = devices
        for handler in list(self._handlers):
            try:
                handler(frame.identity, devices)
            except Exception:
                log.exception("presence handler failed for %s", frame.identity)

    def reconnected(self) -> None:
        """Renew the watches on the new session; the relay forgot them."""
        if self._watched and (self._renewing is None or self._renewing.done()):
            self._renewing = asyncio.create_task(self._renew(), name="parley-presence-renew")

    async def _renew(self) -> None:
        # One request each: an identity that stopped permitting us must not cost the rest.
        for identity in sorted(self._watched):
            try:
                await self._connection.request(_watch_request([identity]), Done)
            except ParleyError as exc:
                log.warning("could not renew the presence watch on %s: %s", identity, exc)

    async def close(self) -> None:
        if self._renewing is not None:
            self._renewing.cancel()
            await asyncio.gather(self._renewing, return_exceptions=True)


def _watch_request(identities: list[str]) -> Callable[[int], Watch]:
    return lambda ref: Watch(ref=ref, identities=identities)

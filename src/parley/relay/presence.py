"""Who is online, and who is told when that changes.

An identity is watched by connections of identities it has permitted (the relay checks
that before :meth:`PresenceBoard.watch`). Each watcher gets a
:class:`~parley.protocol.frames.Presence` frame when the watch starts and whenever the
set of connected devices of the watched identity changes; a call layer uses this to
end a call whose peer disappeared (DESIGN.md §3, reason ``gone``).
"""

from __future__ import annotations

from collections import Counter
from typing import Protocol

from parley.protocol.frames import Frame, Presence


class Watcher(Protocol):
    @property
    def identity(self) -> str | None: ...

    def reply(self, frame: Frame) -> None: ...


class PresenceBoard:
    def __init__(self) -> None:
        # identity -> device -> live connections of that device
        self._online: dict[str, Counter[str]] = {}
        self._watchers: dict[str, set[Watcher]] = {}
        self._watching: dict[Watcher, set[str]] = {}

    def devices(self, identity: str) -> list[str]:
        return sorted(self._online.get(identity, ()))

    def connected(self, identity: str, device: str) -> None:
        devices = self._online.setdefault(identity, Counter())
        devices[device] += 1
        if devices[device] == 1:
            self._announce(identity)

    def disconnected(self, identity: str, device: str) -> None:
        devices = self._online.get(identity)
        if devices is None or devices[device] == 0:
            return
        devices[device] -= 1
        if devices[device] == 0:
            del devices[device]
            if not devices:
                del self._online[identity]
            self._announce(identity)

    def watch(self, watcher: Watcher, identity: str) -> None:
        self._watchers.setdefault(identity, set()).add(watcher)
        self._watching.setdefault(watcher, set()).add(identity)
        watcher.reply(Presence(identity=identity, devices=self.devices(identity)))

    def unwatch(self, watcher: Watcher, identity: str) -> None:
        watchers = self._watchers.get(identity)
        if watchers is not None:
            watchers.discard(watcher)
            if not watchers:
                del self._watchers[identity]
        watched = self._watching.get(watcher)
        if watched is not None:
            watched.discard(identity)
            if not watched:
                del self._watching[watcher]

    def unwatch_by(self, watcher_identity: str, identity: str) -> None:
        """``identity`` no longer permits ``watcher_identity``: stop telling it."""
        for watcher in list(self._watchers.get(identity, ())):
            if watcher.identity == watcher_identity:
                self.unwatch(watcher, identity)

    def forget(self, watcher: Watcher) -> None:
        """A watcher's connection is gone."""
        for identity in list(self._watching.get(watcher, ())):
            self.unwatch(watcher, identity)

    def _announce(self, identity: str) -> None:
        frame = Presence(identity=identity, devices=self.devices(identity))
        for watcher in self._watchers.get(identity, ()):
            watcher.reply(frame)

"""Who is online, and who is told when that changes.

An identity is watched by connections of identities it has permitted (the relay checks
that before :meth:`PresenceBoard.watch`). Each watcher gets a
:class:`~parley.protocol.frames.Presence` frame when the watch starts and whenever the
set of connected devices of the watched identity changes; a call layer uses this to
end a call whose peer disappeared (DESIGN.md §3, reason ``gone``).

The devices of an identity are those connected to this node and, where several nodes
share the work, those the bus says are connected elsewhere (``remote``): a watcher hears
one set whichever node each device is on, and :meth:`PresenceBoard.remote_changed` is
how the bus reports a change of the others'. :meth:`PresenceBoard.local` is what this
node tells the others.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Protocol

from parley.protocol.frames import Frame, Presence


class Watcher(Protocol):
    @property
    def identity(self) -> str | None: ...

    def reply(self, frame: Frame) -> None: ...


def _nobody_else(identity: str) -> frozenset[str]:
    return frozenset()


class PresenceBoard:
    def __init__(self, remote: Callable[[str], frozenset[str]] = _nobody_else) -> None:
        # identity -> device -> live connections of that device on this node
        self._online: dict[str, Counter[str]] = {}
        self._remote = remote
        self._watchers: dict[str, set[Watcher]] = {}
        self._watching: dict[Watcher, set[str]] = {}
        # What watchers of an identity were last told, so only changes are announced.
        self._told: dict[str, list[str]] = {}

    def devices(self, identity: str) -> list[str]:
        return sorted(set(self._online.get(identity, ())) | self._remote(identity))

    def local(self, identity: str) -> tuple[str, ...]:
        """The devices of ``identity`` connected to this node."""
        return tuple(sorted(self._online.get(identity, ())))

    def connected(self, identity: str, device: str) -> bool:
        """Count a connection; True if the device was not connected here before."""
        devices = self._online.setdefault(identity, Counter())
        devices[device] += 1
        if devices[device] == 1:
            self._announce(identity)
            return True
        return False

    def disconnected(self, identity: str, device: str) -> bool:
        """Uncount a connection; True if that was the device's last one here."""
        devices = self._online.get(identity)
        if devices is None or devices[device] == 0:
            return False
        devices[device] -= 1
        if devices[device] == 0:
            del devices[device]
            if not devices:
                del self._online[identity]
            self._announce(identity)
            return True
        return False

    def remote_changed(self, identity: str) -> None:
        """The devices of ``identity`` on other nodes changed."""
        self._announce(identity)

    def watch(self, watcher: Watcher, identity: str) -> None:
        self._watchers.setdefault(identity, set()).add(watcher)
        self._watching.setdefault(watcher, set()).add(identity)
        devices = self.devices(identity)
        self._told[identity] = devices
        watcher.reply(Presence(identity=identity, devices=devices))

    def watchers_of(self, identity: str) -> list[Watcher]:
        return list(self._watchers.get(identity, ()))

    def unwatch(self, watcher: Watcher, identity: str) -> None:
        watchers = self._watchers.get(identity)
        if watchers is not None:
            watchers.discard(watcher)
            if not watchers:
                del self._watchers[identity]
                self._told.pop(identity, None)
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
        watchers = self._watchers.get(identity)
        if not watchers:
            return
        devices = self.devices(identity)
        if self._told.get(identity) == devices:
            return  # e.g. a device that moved from another node to this one
        self._told[identity] = devices
        frame = Presence(identity=identity, devices=devices)
        for watcher in watchers:
            watcher.reply(frame)

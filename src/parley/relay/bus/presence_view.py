"""Which devices other nodes have, as one node last heard it: the state behind
``Bus.present``, kept apart from any transport so its bookkeeping is a plain unit test.

Every change returns the :class:`PresenceChanged` events that describe it, so a bus
that learns presence some other way than by an event (a node found dead, a node's
presence reloaded after a gap) can tell the relay exactly what changed.
"""

from __future__ import annotations

from collections.abc import Mapping

from parley.relay.bus.events import PresenceChanged

Devices = tuple[str, ...]


class PresenceView:
    def __init__(self) -> None:
        # Both directions: present() looks up by identity, drop() by node.
        self._by_identity: dict[str, dict[str, Devices]] = {}
        self._by_node: dict[str, dict[str, Devices]] = {}

    def present(self, identity: str) -> frozenset[str]:
        nodes = self._by_identity.get(identity, {})
        return frozenset(device for devices in nodes.values() for device in devices)

    def nodes(self) -> frozenset[str]:
        """The nodes that have at least one device."""
        return frozenset(self._by_node)

    def devices(self, node: str) -> dict[str, Devices]:
        """``node``'s identities and their devices (a copy)."""
        return dict(self._by_node.get(node, {}))

    def apply(self, event: PresenceChanged) -> bool:
        """Take ``event`` in; whether it changed anything."""
        current = self._by_node.get(event.node, {}).get(event.identity, ())
        if current == event.devices:
            return False
        if event.devices:
            self._by_identity.setdefault(event.identity, {})[event.node] = event.devices
            self._by_node.setdefault(event.node, {})[event.identity] = event.devices
        else:
            self._forget(event.identity, event.node)
        return True

    def drop(self, node: str) -> list[PresenceChanged]:
        """Forget ``node`` (it is gone): one event with no devices per identity it had."""
        gone = [
            PresenceChanged(identity=identity, node=node, devices=())
            for identity in self._by_node.get(node, {})
        ]
        for event in gone:
            self.apply(event)
        return gone

    def set_node(self, node: str, identities: Mapping[str, Devices]) -> list[PresenceChanged]:
        """Make ``node``'s presence ``identities`` (identity -> devices); the events that
        turn the old view into it, for what differs only."""
        known = self._by_node.get(node, {})
        changes = [
            PresenceChanged(identity=identity, node=node, devices=())
            for identity in known.keys() - identities.keys()
        ]
        changes += [
            PresenceChanged(identity=identity, node=node, devices=devices)
            for identity, devices in identities.items()
            if known.get(identity, ()) != devices
        ]
        for event in changes:
            self.apply(event)
        return changes

    def _forget(self, identity: str, node: str) -> None:
        nodes = self._by_identity.get(identity, {})
        nodes.pop(node, None)
        if not nodes:
            self._by_identity.pop(identity, None)
        identities = self._by_node.get(node, {})
        identities.pop(identity, None)
        if not identities:
            self._by_node.pop(node, None)

"""Presence: which peer devices have lost their connection, and since when.

A call is with one peer device once it rings (the callee knows the caller's device) or
is answered (the caller learns the callee's). If that device is away for longer than the
grace period, the call ends with ``gone``. A caller still dialling does not know which
device will answer, so presence does not touch it: its ring lifetime bounds it.
"""

from __future__ import annotations

from collections import Counter

from parley.ids import DeviceId, IdentityId
from parley.protocol.call import Call


class Presence:
    def __init__(self, grace: float) -> None:
        self.grace = grace
        self._away: dict[tuple[IdentityId, DeviceId], float] = {}
        self._away_devices: Counter[IdentityId] = Counter()  # is_away without a walk

    def gone(self, identity: IdentityId, device: DeviceId, now: float) -> None:
        # A second "gone" without a "back" keeps the first moment: grace runs from there.
        if (identity, device) not in self._away:
            self._away[(identity, device)] = now
            self._away_devices[identity] += 1

    def back(self, identity: IdentityId, device: DeviceId) -> None:
        if self._away.pop((identity, device), None) is not None:
            self._away_devices[identity] -= 1
            if not self._away_devices[identity]:
                del self._away_devices[identity]

    def is_away(self, identity: IdentityId) -> bool:
        """Whether any device of ``identity`` is away (the proxy skips such operators)."""
        return identity in self._away_devices

    def watch(self, call: Call) -> None:
        """Set or clear ``call.gone_deadline`` from what is known of its peer device."""
        since = None
        if call.peer_device is not None:
            since = self._away.get((call.peer, call.peer_device))
        call.gone_deadline = None if since is None else since + self.grace

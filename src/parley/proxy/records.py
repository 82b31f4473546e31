"""What the calling proxy keeps: which ``cid`` is whose, a record of every leg, and the
core's state (its bridges), saved after every input that changed it.

The bindings themselves are the core's :class:`~parley.protocol.proxy.Binding` and
:class:`~parley.protocol.proxy.Pool`; a :class:`LegRecord` is the core's
:class:`~parley.protocol.call.CallRecord` of one leg, seen from outside the proxy: who
called whom on it, rather than the proxy's role.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from typing import TypeAlias

import msgspec

from parley.ids import DeviceId, IdentityId
from parley.protocol.call import CallRecord, EndReason, Role
from parley.protocol.proxy import Binding, Pool
from parley.protocol.proxy_state import MessageId


class Leg(enum.StrEnum):
    """Which leg of a proxied call a record is about: the one the start came in on, or one the proxy
    placed."""

    INBOUND = "inbound"  # the start came in on it: the caller is a party, the proxy answers
    OUTBOUND = "outbound"  # the proxy placed it, with the same cid and call_id


class LegRecord(msgspec.Struct, frozen=True, kw_only=True):
    """One ended leg of a proxied call. Times are Unix seconds; ``duration`` is the time
    connected (0 if never answered)."""

    call_id: str
    cid: str
    leg: Leg
    caller: IdentityId
    callee: IdentityId
    peer_device: DeviceId | None  # the party's device the leg was with, if it got that far
    started: float
    ringing: float | None
    answered: float | None
    ended: float
    duration: float
    reason: EndReason

    @classmethod
    def of(cls, record: CallRecord, proxy: IdentityId) -> LegRecord:
        """The record of a leg ``proxy`` (its identity) was on."""
        inbound = record.role is Role.CALLEE
        return cls(
            call_id=record.call_id,
            cid=record.cid,
            leg=Leg.INBOUND if inbound else Leg.OUTBOUND,
            caller=record.peer if inbound else proxy,
            callee=proxy if inbound else record.peer,
            peer_device=record.peer_device,
            started=record.started,
            ringing=record.ringing,
            answered=record.answered,
            ended=record.ended,
            duration=record.duration,
            reason=record.reason,
        )

    @property
    def party(self) -> IdentityId:
        """The identity at the far end of this leg (not the proxy)."""
        return self.caller if self.leg is Leg.INBOUND else self.callee


Route: TypeAlias = Binding | Pool
"""How the proxy treats one ``cid``: two legs, or a hunt group."""


def parties(routes: Iterable[Route]) -> set[IdentityId]:
    """Everyone who may call the proxy or be called by it on ``routes``."""
    found: set[IdentityId] = set()
    for route in routes:
        if isinstance(route, Binding):
            found.update((route.operator, route.customer))
        else:
            found.update((route.customer, *route.operators))
    return found


class BridgeRow(msgspec.Struct, frozen=True, kw_only=True):
    """One call_id the core keeps, as stored: ``state`` is the core's encoded
    :class:`~parley.protocol.proxy_state.Kept`; the plain columns beside it are what a
    bridge whose state cannot be read is ended by (its parties, its cid)."""

    call_id: str
    cid: str
    parties: tuple[IdentityId, ...]
    live: bool
    rank: int
    state: bytes


class Saved(msgspec.Struct, frozen=True, kw_only=True):
    """What one or more inputs changed, written in one transaction: the rows touched,
    the legs that ended, the messages not sent yet (``outbox``: replaces the last one;
    None leaves it), who is away (None: unchanged) and the messages these inputs were
    (``handled``). Ended rows beyond the newest ``keep`` are forgotten, and handled
    messages whose ``exp`` is before ``forget_before``."""

    rows: tuple[BridgeRow, ...] = ()
    legs: tuple[LegRecord, ...] = ()
    outbox: bytes | None = None
    away: bytes | None = None
    handled: tuple[MessageId, ...] = ()
    forget_before: int = 0
    keep: int = 1024
    # Written only while this holder has the lease (a standby that took over fences
    # off an active one that lost it); None: no lease in use.
    fence: str | None = None

    @property
    def writes_ended(self) -> bool:
        """Whether it writes an ended row: only then can there be more than ``keep``."""
        return any(not row.live for row in self.rows)

    @classmethod
    def of(cls, saves: Sequence[Saved]) -> Saved:
        """``saves`` (at least one) as one write, in order: a later row of a call wins,
        as does the last outbox and presence given; the limits are the last one's. In
        one pass: a store back from an outage may have thousands queued."""
        rows: dict[str, BridgeRow] = {}
        legs: list[LegRecord] = []
        handled: list[MessageId] = []
        outbox = away = None
        forget_before = 0
        for saved in saves:
            rows.update((row.call_id, row) for row in saved.rows)
            legs += saved.legs
            handled += saved.handled
            outbox = saved.outbox if saved.outbox is not None else outbox
            away = saved.away if saved.away is not None else away
            forget_before = max(forget_before, saved.forget_before)
        return cls(
            rows=tuple(rows.values()),
            legs=tuple(legs),
            outbox=outbox,
            away=away,
            handled=tuple(handled),
            forget_before=forget_before,
            keep=saves[-1].keep,
            fence=saves[-1].fence,
        )


class Resumable(msgspec.Struct, frozen=True, kw_only=True):
    """What a starting proxy resumes from: every row (by rank), the last outbox, who
    was away, the messages handled (not yet forgotten)."""

    rows: tuple[BridgeRow, ...] = ()
    outbox: bytes | None = None
    away: bytes | None = None
    handled: tuple[MessageId, ...] = ()

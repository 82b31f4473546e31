"""What the proxy writes: saves queued while the store was busy become one write."""

from __future__ import annotations

from parley.ids import IdentityId
from parley.protocol.call import EndReason
from parley.protocol.proxy_state import MessageId
from parley.proxy.records import BridgeRow, Leg, LegRecord, Saved

OLGA, APP = IdentityId("olga"), IdentityId("app")


def row(call_id: str, rank: int, live: bool = True) -> BridgeRow:
    return BridgeRow(call_id=call_id, cid="conv", parties=(OLGA,), live=live, rank=rank, state=b"")


def leg(call_id: str) -> LegRecord:
    return LegRecord(
        call_id=call_id,
        cid="conv",
        leg=Leg.INBOUND,
        caller=OLGA,
        callee=APP,
        peer_device=None,
        started=1.0,
        ringing=None,
        answered=None,
        ended=2.0,
        duration=0.0,
        reason=EndReason.HANGUP,
    )


def test_saves_in_order_become_one_write() -> None:
    saves = [
        Saved(rows=(row("k1", 1), row("k2", 2)), handled=(MessageId("olga", "j1", 61),)),
        Saved(outbox=b"first", away=b"away", forget_before=50, keep=10, fence="a"),
        Saved(rows=(row("k1", 3, live=False),), legs=(leg("k1"),), outbox=b"second"),
        Saved(handled=(MessageId("olga", "j2", 62),), forget_before=40, keep=20, fence="b"),
    ]
    merged = Saved.of(saves)
    # A call's later row wins, where the call first came.
    assert merged.rows == (row("k1", 3, live=False), row("k2", 2))
    assert merged.legs == (leg("k1"),)
    assert merged.handled == (MessageId("olga", "j1", 61), MessageId("olga", "j2", 62))
    # The last outbox and presence given (None leaves them); the furthest forgetting.
    assert (merged.outbox, merged.away, merged.forget_before) == (b"second", b"away", 50)
    assert (merged.keep, merged.fence) == (20, "b")  # the last save's limits


def test_one_save_is_itself_and_none_given_leaves_all_unchanged() -> None:
    alone = Saved(rows=(row("k1", 1),), outbox=b"out", keep=7, fence="a")
    assert Saved.of([alone]) == alone
    assert Saved.of([Saved(), Saved(keep=3)]) == Saved(keep=3)

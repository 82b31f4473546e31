"""The call state machine and the phone, through every race of DESIGN.md §3.

Time is an input: each test sets ``net.now`` or calls ``net.advance``; messages are
delivered in the order a test chooses.
"""

from __future__ import annotations

from typing import Any

import pytest
from tests.protocol.callnet import Net, addr

from parley.errors import CallIdInUse, IllegalTransition, UnknownCall
from parley.ids import DeviceId, IdentityId
from parley.protocol import call_wire as wire
from parley.protocol.call import (
    TRANSITIONS,
    Answered,
    Call,
    CallState,
    Dialed,
    EndReason,
    Offered,
    PickedUp,
    Role,
    state_diagram,
)
from parley.protocol.call_io import (
    Accept,
    Busy,
    Connected,
    Decline,
    Fail,
    Hangup,
    PeerBack,
    PeerGone,
    Place,
    Received,
    Ringing,
    Send,
)
from parley.protocol.call_phone import PhoneConfig
from parley.protocol.messages import MessageType, VoiceStop

START, ACCEPT = MessageType.VOICE_START, MessageType.VOICE_ACCEPT
STOP, BUSY = MessageType.VOICE_STOP, MessageType.VOICE_BUSY
A1, A2 = addr("alice", "a1"), addr("alice", "a2")
B1, B2 = addr("bob", "b1"), addr("bob", "b2")
C1 = addr("carol", "c1")
ALICE, BOB, CAROL = IdentityId("alice"), IdentityId("bob"), IdentityId("carol")


def net_of(*devices: tuple[str, str], config: PhoneConfig | None = None) -> Net:
    net = Net()
    for identity, device in devices:
        net.phone(identity, device, config)
    return net


def place(net: Net, at: Any, to: IdentityId, call_id: str, **kw: Any) -> list[Any]:
    return net.do(
        at, Place(now=net.now, recipient=to, cid="c", call_id=call_id, peer_info="offer", **kw)
    )


def sends(outputs: list[Any]) -> list[Send]:
    return [o for o in outputs if isinstance(o, Send)]


def reason_of(net: Net, at: Any, call_id: str) -> EndReason:
    (ended,) = [e for e in net.ended(at) if e.call_id == call_id]
    return ended.reason


# -- the table ---------------------------------------------------------------------------


@pytest.mark.parametrize("role", list(Role))
def test_state_diagram_mentions_every_transition(role: Role) -> None:
    diagram = state_diagram(role)
    assert diagram.startswith("stateDiagram-v2\n")
    for state, moves in TRANSITIONS[role].items():
        for event, new_state in moves.items():
            assert f"    {state} --> {new_state}: {event.__name__}\n" in diagram


def test_exactly_the_ending_events_lead_to_ended() -> None:
    for table in TRANSITIONS.values():
        for moves in table.values():
            for event, new_state in moves.items():
                assert ("reason" in event.__struct_fields__) == (new_state is CallState.ENDED)


def test_illegal_event_raises_and_changes_nothing() -> None:
    call = Call(
        role=Role.CALLEE,
        call_id="k",
        cid="c",
        peer=ALICE,
        peer_device=DeviceId("a1"),
        started=0,
        lifetime=60,
    )
    call.fire(Offered(), 1)
    with pytest.raises(IllegalTransition, match="Answered is not allowed"):
        call.fire(Answered(DeviceId("x")), 2)
    assert call.state is CallState.RINGING and call.peer_device == "a1"
    with pytest.raises(IllegalTransition):
        call.fire(Dialed(), 2)
    call.fire(PickedUp(), 3)
    assert (call.state, call.record) == (CallState.CONNECTED, None)


def test_illegal_commands_raise_and_change_nothing() -> None:
    net = net_of(("alice", "a1"), ("bob", "b1"))
    place(net, A1, BOB, "k1")
    with pytest.raises(IllegalTransition):
        net.do(A1, Accept(now=net.now, call_id="k1", peer_info="x"))
    with pytest.raises(IllegalTransition):
        net.do(A1, Decline(now=net.now, call_id="k1"))
    with pytest.raises(UnknownCall):
        net.do(A1, Hangup(now=net.now, call_id="nope"))
    with pytest.raises(CallIdInUse):
        place(net, A1, BOB, "k1")
    assert net.state(A1, "k1") is CallState.DIALING
    net.flush()
    with pytest.raises(IllegalTransition):  # ringing: decline or busy, not hang up
        net.do(B1, Hangup(now=net.now, call_id="k1"))
    assert net.state(B1, "k1") is CallState.RINGING
    net.do(A1, Hangup(now=net.now, call_id="k1"))
    with pytest.raises(IllegalTransition, match="has ended"):
        net.do(A1, Hangup(now=net.now, call_id="k1"))


# -- the wire ----------------------------------------------------------------------------


def test_reason_defaults_keep_old_peers_working() -> None:
    assert wire.end_reason(STOP, {}) is EndReason.HANGUP
    assert wire.end_reason(BUSY, {}) is EndReason.BUSY
    assert wire.end_reason(STOP, {"reason": "gone"}) is EndReason.GONE
    assert wire.end_reason(STOP, {"reason": "eaten by a grue"}) is EndReason.HANGUP


def test_lifetime_defaults_and_cap() -> None:
    assert wire.ring_lifetime({}, 60, 600) == 60
    assert wire.ring_lifetime({"lifetime": 10}, 60, 600) == 10
    assert wire.ring_lifetime({"lifetime": 1e9}, 60, 600) == 600
    for bad in (0, -5, "30", True, None):
        assert wire.ring_lifetime({"lifetime": bad}, 60, 600) == 60


def test_received_from_payload() -> None:
    payload = VoiceStop(
        iss="bob", sub="alice", aud="alice", iat=7, exp=9, jti="j", cid="c", call_id="k"
    )
    received = Received.from_payload(8.5, payload, DeviceId("b1"))
    assert (received.kind, received.issuer, received.device) == (STOP, BOB, "b1")
    assert (received.iat, received.call_id, received.data, received.peer_info) == (7, "k", {}, "")


# -- a call from start to end --------------------------------------------------------------


def test_call_connects_and_hangs_up_with_records() -> None:
    net = net_of(("alice", "a1"), ("bob", "b1"))
    (start,) = sends(place(net, A1, BOB, "k1", data={"x": 1}))
    assert start.kind is START and start.data == {"x": 1, "lifetime": 60}
    net.now += 1
    net.flush()
    (ringing,) = [o for o in net.outputs[B1] if isinstance(o, Ringing)]
    assert (ringing.peer, ringing.peer_device, ringing.peer_info) == (ALICE, "a1", "offer")
    assert ringing.replaces is None and ringing.data == start.data
    net.now += 2
    out = net.do(B1, Accept(now=net.now, call_id="k1", peer_info="answer"))
    assert [type(o) for o in out] == [Send, Connected]
    net.flush()
    (connected,) = [o for o in net.outputs[A1] if isinstance(o, Connected)]
    assert (connected.peer_device, connected.peer_info) == ("b1", "answer")
    net.now += 10
    (stop,) = sends(net.do(A1, Hangup(now=net.now, call_id="k1")))
    assert stop.kind is STOP and stop.data == {"reason": "hangup"}
    net.flush()
    (a_end,) = net.ended(A1)
    (b_end,) = net.ended(B1)
    assert a_end.record.role is Role.CALLER and b_end.record.role is Role.CALLEE
    assert (a_end.reason, b_end.reason) == (EndReason.HANGUP, EndReason.HANGUP)
    assert a_end.record.started == a_end.record.ringing == 1000
    assert (a_end.record.answered, a_end.record.ended, a_end.record.duration) == (1003, 1013, 10)
    assert (b_end.record.started, b_end.record.ringing, b_end.record.answered) == (1000, 1001, 1003)
    assert b_end.record.peer_device == "a1" and a_end.record.peer_device == "b1"
    assert net.at(A1).calls == {} and net.at(B1).calls == {}


@pytest.mark.parametrize(
    ("command", "kind", "reason"),
    [(Busy, BUSY, EndReason.BUSY), (Decline, STOP, EndReason.DECLINED)],
)
def test_callee_turns_the_call_down(command: Any, kind: MessageType, reason: EndReason) -> None:
    net = net_of(("alice", "a1"), ("bob", "b1"))
    place(net, A1, BOB, "k1")
    net.flush()
    (send,) = sends(net.do(B1, command(now=net.now, call_id="k1")))
    assert send.kind is kind and send.data == {"reason": reason.value}
    net.flush()
    assert reason_of(net, A1, "k1") is reason is reason_of(net, B1, "k1")


def test_fail_ends_with_failed_on_both_sides() -> None:
    net = net_of(("alice", "a1"), ("bob", "b1"))
    place(net, A1, BOB, "k1")
    net.flush()
    net.do(B1, Fail(now=net.now, call_id="k1"))
    net.flush()
    assert reason_of(net, A1, "k1") is EndReason.FAILED is reason_of(net, B1, "k1")


def test_a_bare_stop_from_an_old_peer_is_a_hangup() -> None:
    net = net_of(("alice", "a1"))
    place(net, A1, BOB, "k1")
    bare = Received(
        now=net.now, kind=STOP, issuer=BOB, device=DeviceId("b1"), iat=1000, cid="c", call_id="k1"
    )
    net.do(A1, bare)
    assert reason_of(net, A1, "k1") is EndReason.HANGUP


# -- ring lifetime -------------------------------------------------------------------------


def test_unanswered_start_ends_with_timeout_on_both_sides() -> None:
    net = net_of(("alice", "a1"), ("bob", "b1"), ("bob", "b2"))
    place(net, A1, BOB, "k1")
    net.now += 1
    net.flush()
    assert net.at(B1).next_deadline() == 1060 == net.at(A1).next_deadline()
    net.advance(58.5)
    assert net.state(B1, "k1") is CallState.RINGING
    net.advance(0.5)
    for at in (A1, B1, B2):
        (ended,) = net.ended(at)
        assert ended.reason is EndReason.TIMEOUT and ended.record.ended == 1060
    # The caller tells the callee's devices; they have stopped already and ignore it.
    assert [(e.to, e.kind, e.send.data) for e in net.pending] == [
        (B1, STOP, {"reason": "timeout"}),
        (B2, STOP, {"reason": "timeout"}),
    ]
    net.flush()
    assert len(net.ended(B1)) == 1 and net.at(A1).next_deadline() is None


def test_a_start_after_its_lifetime_never_rings() -> None:
    net = net_of(("alice", "a1"), ("bob", "b1"))
    place(net, A1, BOB, "k1", lifetime=20)
    held = net.take(B1, START)
    net.now += 20
    net.deliver(held)
    assert not any(isinstance(o, Ringing) for o in net.outputs[B1])
    (missed,) = net.ended(B1)
    assert missed.reason is EndReason.TIMEOUT and missed.record.ringing is None
    net.pending.append(held)  # a duplicate later still does nothing
    net.deliver(held)
    assert len(net.outputs[B1]) == 1 and net.at(B1).calls == {}


def test_lifetime_is_per_call_and_counted_from_iat() -> None:
    net = net_of(("alice", "a1"), ("bob", "b1"))
    (start,) = sends(place(net, A1, BOB, "k1", lifetime=10))
    assert start.data["lifetime"] == 10
    net.now += 4  # delivered late: rings for what is left
    net.flush()
    assert net.at(B1).calls["k1"].ring_deadline == 1010


def test_iat_ahead_of_our_clock_does_not_stretch_the_ringing() -> None:
    net = net_of(("bob", "b1"))
    early = Received(
        now=1000, kind=START, issuer=ALICE, device=DeviceId("a1"), iat=1005, cid="c", call_id="k1"
    )
    net.do(B1, early)
    assert net.at(B1).next_deadline() == 1060


def test_a_caller_cannot_make_us_ring_past_our_maximum() -> None:
    net = net_of(("alice", "a1"), ("bob", "b1"), config=PhoneConfig(max_ring_lifetime=90))
    place(net, A1, BOB, "k1", lifetime=1000)
    net.flush()
    assert net.at(B1).next_deadline() == 1090 == net.at(A1).next_deadline()


# -- glare -----------------------------------------------------------------------------------


@pytest.mark.parametrize("first", ["alice", "bob"])
def test_glare_lower_call_id_wins_and_the_call_connects(first: str) -> None:
    net = net_of(("alice", "a1"), ("alice", "a2"), ("bob", "b1"))
    place(net, A1, BOB, "k1")  # the lower call_id: alice's attempt wins
    place(net, B1, ALICE, "k2")
    if first == "alice":
        net.deliver_one(B1, START)
        net.deliver_one(A1, START)
    else:
        net.deliver_one(A1, START)
        net.deliver_one(B1, START)
    # The winner ignores the losing start; the loser gives its attempt up.
    assert net.state(A1, "k1") is CallState.DIALING and net.state(A1, "k2") is CallState.NEW
    assert reason_of(net, B1, "k2") is EndReason.ANSWERED_ELSEWHERE
    (ringing,) = [o for o in net.outputs[B1] if isinstance(o, Ringing)]
    assert (ringing.call_id, ringing.replaces) == ("k1", "k2")
    net.do(B1, Accept(now=net.now, call_id="k1", peer_info="answer"))
    net.flush()
    assert net.state(A1, "k1") is CallState.CONNECTED is net.state(B1, "k1")
    # alice's other device rang for bob's attempt and stopped with the loser's stop.
    assert reason_of(net, A2, "k2") is EndReason.ANSWERED_ELSEWHERE
    assert net.ended(A1) == [] and net.at(A2).calls == {}


def test_glare_duplicate_of_the_losing_start_stays_ignored() -> None:
    net = net_of(("alice", "a1"), ("bob", "b1"))
    place(net, A1, BOB, "k1")
    place(net, B1, ALICE, "k2")
    late = net.take(A1, START)
    net.deliver(late)
    net.do(A1, Hangup(now=net.now, call_id="k1"))
    net.pending.append(late)
    net.deliver(late)  # no longer dialling, but k2 is remembered: no ring
    assert net.at(A1).calls == {}


# -- several devices ---------------------------------------------------------------------


def test_first_accept_wins_and_the_other_device_stops() -> None:
    net = net_of(("alice", "a1"), ("bob", "b1"), ("bob", "b2"))
    place(net, A1, BOB, "k1")
    net.flush()
    net.do(B1, Accept(now=net.now, call_id="k1", peer_info="answer"))
    net.flush()
    assert reason_of(net, B2, "k1") is EndReason.ANSWERED_ELSEWHERE
    assert net.state(A1, "k1") is CallState.CONNECTED is net.state(B1, "k1")
    assert net.at(A1).calls["k1"].peer_device == "b1"
    assert net.pending == []  # no stop needed: the relay's copy told b2


def test_two_devices_accept_at_once_the_second_gets_answered_elsewhere() -> None:
    net = net_of(("alice", "a1"), ("bob", "b1"), ("bob", "b2"))
    place(net, A1, BOB, "k1")
    net.flush()
    net.do(B1, Accept(now=net.now, call_id="k1", peer_info="from b1"))
    net.do(B2, Accept(now=net.now, call_id="k1", peer_info="from b2"))
    net.deliver_one(A1, ACCEPT, B1)
    (stop,) = sends(net.deliver_one(A1, ACCEPT, B2))
    assert stop.data == {"reason": "answered_elsewhere", "answered_by": "b1"}
    net.flush()
    assert net.state(B1, "k1") is CallState.CONNECTED is net.state(A1, "k1")
    assert reason_of(net, B2, "k1") is EndReason.ANSWERED_ELSEWHERE
    assert net.ended(B1) == []


def test_a_sibling_decline_ends_the_ringing_everywhere() -> None:
    net = net_of(("alice", "a1"), ("bob", "b1"), ("bob", "b2"))
    place(net, A1, BOB, "k1")
    net.flush()
    net.do(B2, Decline(now=net.now, call_id="k1"))
    net.flush()
    assert {reason_of(net, at, "k1") for at in (A1, B1, B2)} == {EndReason.DECLINED}


def test_an_accept_after_the_caller_gave_up_is_told_so() -> None:
    net = net_of(("alice", "a1"), ("bob", "b1"))
    place(net, A1, BOB, "k1")
    net.flush()
    net.now += 59
    net.do(B1, Accept(now=net.now, call_id="k1", peer_info="answer"))
    net.advance(1)  # alice's lifetime ends while the accept is in flight
    net.flush()
    assert reason_of(net, A1, "k1") is EndReason.TIMEOUT is reason_of(net, B1, "k1")
    assert net.ended(B1)[0].record.answered == 1059


def test_a_late_accept_after_a_sibling_busy_ends_the_ghost() -> None:
    net = net_of(("alice", "a1"), ("bob", "b1"), ("bob", "b2"))
    place(net, A1, BOB, "k1")
    net.flush()
    net.do(B1, Busy(now=net.now, call_id="k1"))
    net.do(B2, Accept(now=net.now, call_id="k1", peer_info="answer"))
    net.deliver_one(A1, BUSY)
    net.flush()
    assert {reason_of(net, at, "k1") for at in (A1, B1, B2)} == {EndReason.BUSY}


# -- auto-busy ---------------------------------------------------------------------------


def connect(net: Net, caller: Any, callee: Any, call_id: str) -> None:
    place(net, caller, callee.identity, call_id)
    net.flush()
    net.do(callee, Accept(now=net.now, call_id=call_id, peer_info="answer"))
    net.flush()


def test_a_party_in_a_call_answers_busy() -> None:
    net = net_of(("alice", "a1"), ("bob", "b1"), ("bob", "b2"), ("carol", "c1"))
    connect(net, C1, B1, "k0")
    (busy,) = [s for s in sends(place(net, A1, BOB, "k1"))]
    net.deliver_one(B1, START)
    (refusal,) = [o for o in net.outputs[B1] if isinstance(o, Send) and o.call_id == "k1"]
    assert refusal.kind is BUSY and refusal.data == {"reason": "busy"}
    assert reason_of(net, B1, "k1") is EndReason.BUSY
    assert net.ended(B1)[-1].record.ringing is None
    net.flush()
    assert reason_of(net, A1, "k1") is EndReason.BUSY
    assert reason_of(net, B2, "k1") is EndReason.BUSY  # rang, then saw b1's busy
    assert net.state(B1, "k0") is CallState.CONNECTED
    assert busy.kind is START


def test_auto_busy_can_be_turned_off() -> None:
    config = PhoneConfig(auto_busy=False)
    net = net_of(("alice", "a1"), ("bob", "b1"), ("carol", "c1"), config=config)
    connect(net, C1, B1, "k0")
    place(net, A1, BOB, "k1")
    net.flush()
    assert net.state(B1, "k1") is CallState.RINGING


# -- no ghost calls ----------------------------------------------------------------------


def test_a_stop_before_its_start_never_rings() -> None:
    net = net_of(("alice", "a1"), ("bob", "b1"))
    place(net, A1, BOB, "k1")
    net.do(A1, Hangup(now=net.now, call_id="k1"))
    net.deliver_one(B1, STOP)
    net.deliver_one(B1, START)
    assert net.outputs[B1] == [] and net.at(B1).calls == {}


def test_duplicates_change_nothing() -> None:
    net = net_of(("alice", "a1"), ("bob", "b1"))
    place(net, A1, BOB, "k1")
    start = net.take(B1, START)
    net.deliver(start)
    net.pending.append(start)
    net.deliver(start)
    assert sum(isinstance(o, Ringing) for o in net.outputs[B1]) == 1
    net.do(B1, Accept(now=net.now, call_id="k1", peer_info="answer"))
    accept = net.take(A1, ACCEPT)
    net.deliver(accept)
    net.pending.append(accept)
    assert net.deliver(accept) == []
    net.do(B1, Hangup(now=net.now, call_id="k1"))
    stop = net.take(A1, STOP)
    net.deliver(stop)
    net.pending.append(stop)
    assert net.deliver(stop) == []
    assert len(net.ended(A1)) == 1 and net.at(A1).calls == {}


def test_own_copies_never_ring() -> None:
    net = net_of(("alice", "a1"), ("alice", "a2"), ("bob", "b1"))
    place(net, A1, BOB, "k1")
    net.flush()
    assert net.outputs[A2] == [] and net.at(A2).calls == {}


def test_a_siblings_accept_before_the_start_means_no_ring() -> None:
    net = net_of(("alice", "a1"), ("bob", "b1"), ("bob", "b2"))
    place(net, A1, BOB, "k1")
    net.deliver_one(B1, START)
    net.do(B1, Accept(now=net.now, call_id="k1", peer_info="answer"))
    net.deliver_one(B2, ACCEPT)  # the copy overtakes the start
    net.flush()
    assert net.outputs[B2] == []
    assert net.state(A1, "k1") is CallState.CONNECTED


def test_the_memory_of_ended_calls_is_bounded() -> None:
    net = net_of(("alice", "a1"), ("bob", "b1"), config=PhoneConfig(memory=3))
    for n in range(5):
        place(net, A1, BOB, f"k{n}")
        net.do(A1, Hangup(now=net.now, call_id=f"k{n}"))
    phone = net.at(A1)
    assert phone.record("k0") is None and phone.record("k4") is not None


# -- a party that disappears ---------------------------------------------------------------


def test_a_peer_gone_past_the_grace_period_ends_with_gone() -> None:
    net = net_of(("alice", "a1"), ("bob", "b1"))
    connect(net, A1, B1, "k1")
    net.offline.add(B1)
    net.do(A1, PeerGone(now=net.now, identity=BOB, device=DeviceId("b1")))
    assert net.at(A1).next_deadline() == net.now + 30
    net.advance(30)
    assert reason_of(net, A1, "k1") is EndReason.GONE
    net.offline.clear()
    net.flush()  # bob hears it when back
    assert reason_of(net, B1, "k1") is EndReason.GONE


def test_a_peer_back_within_the_grace_period_keeps_the_call() -> None:
    net = net_of(("alice", "a1"), ("bob", "b1"))
    connect(net, A1, B1, "k1")
    net.do(A1, PeerGone(now=net.now, identity=BOB, device=DeviceId("b1")))
    net.advance(29)
    net.do(A1, PeerBack(now=net.now, identity=BOB, device=DeviceId("b1")))
    assert net.at(A1).next_deadline() is None
    net.advance(100)
    assert net.state(A1, "k1") is CallState.CONNECTED


def test_presence_of_another_device_does_not_matter() -> None:
    net = net_of(("alice", "a1"), ("bob", "b1"))
    connect(net, A1, B1, "k1")
    net.do(A1, PeerGone(now=net.now, identity=BOB, device=DeviceId("b2")))
    assert net.at(A1).next_deadline() is None


def test_a_caller_that_vanishes_stops_the_ringing_with_gone() -> None:
    net = net_of(("alice", "a1"), ("bob", "b1"))
    place(net, A1, BOB, "k1", lifetime=120)
    net.do(B1, PeerGone(now=net.now, identity=ALICE, device=DeviceId("a1")))  # before the start
    net.flush()
    net.advance(30)
    assert reason_of(net, B1, "k1") is EndReason.GONE


def test_gone_does_not_touch_a_call_still_dialling() -> None:
    net = net_of(("alice", "a1"), ("bob", "b1"))
    place(net, A1, BOB, "k1")
    net.do(A1, PeerGone(now=net.now, identity=BOB, device=DeviceId("b1")))
    assert net.at(A1).next_deadline() == net.now + 60

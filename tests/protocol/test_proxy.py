"""The proxy core: two-leg forwarding as in the public docs, hunt groups, and legs that
always end together, carrying the reason across."""

from __future__ import annotations

from typing import Any

import pytest
from tests.protocol.callnet import Net, addr

from parley.errors import IllegalTransition, UnknownCall
from parley.ids import Address, DeviceId, IdentityId
from parley.protocol.call import CallState, EndReason, Role
from parley.protocol.call_io import (
    Accept,
    Busy,
    Connected,
    Decline,
    Fail,
    Hangup,
    PeerGone,
    Place,
    Send,
)
from parley.protocol.messages import MessageType
from parley.protocol.proxy import Binding, Pool, Proxy

START, ACCEPT = MessageType.VOICE_START, MessageType.VOICE_ACCEPT
STOP, BUSY = MessageType.VOICE_STOP, MessageType.VOICE_BUSY
P1 = addr("app", "p1")
O1 = addr("olga", "o1")  # the operator of the bound call
U1, U2 = addr("cust", "u1"), addr("cust", "u2")  # its customer, on two devices
A1, C1 = addr("alice", "a1"), addr("carol", "c1")  # the hunt group
D1 = addr("dave", "d1")  # a customer calling the hunt group
APP = IdentityId("app")


@pytest.fixture
def net() -> Net:
    net = Net()
    proxy = net.proxy("app", "p1", operators=("alice", "carol"))
    proxy.bind(
        Binding(
            cid="conv",
            operator=IdentityId("olga"),
            operator_name="Olga",
            customer=IdentityId("cust"),
        )
    )
    for at in (O1, U1, U2, A1, C1, D1):
        net.phone(at.identity, at.device)
    return net


def proxy_of(net: Net) -> Proxy:
    node = net.nodes[P1]
    assert isinstance(node, Proxy)
    return node


def call(net: Net, at: Address, cid: str = "conv", call_id: str = "k1", **kw: Any) -> None:
    net.do(at, Place(now=net.now, recipient=APP, cid=cid, call_id=call_id, peer_info="offer", **kw))


def reasons(net: Net, at: Address) -> list[EndReason]:
    return [e.reason for e in net.ended(at)]


def sent(net: Net, at: Address) -> list[Send]:
    return [o for o in net.outputs[at] if isinstance(o, Send)]


def assert_legs_together(proxy: Proxy) -> None:
    for bridge in proxy.bridges.values():
        assert bridge.inbound.live, bridge
        if bridge.winner is not None:
            assert bridge.outbound[bridge.winner].live, bridge
        else:
            assert any(leg.live for leg in bridge.outbound.values()), bridge


def step(net: Net) -> None:
    """Deliver everything, checking after each message that no leg outlives the other."""
    while ready := net.deliverable():
        net.deliver(ready[0])
        assert_legs_together(proxy_of(net))


# -- two legs ------------------------------------------------------------------------------


def test_forwarding_matches_the_public_docs() -> None:
    net = Net()
    net.proxy("app", "p1").bind(
        Binding(
            cid="conv",
            operator=IdentityId("olga"),
            operator_name="Olga",
            customer=IdentityId("cust"),
        )
    )
    for at in (O1, U1):
        net.phone(at.identity, at.device)
    call(net, O1, data={"note": "not forwarded"})
    step(net)
    (start,) = sent(net, P1)
    assert (start.kind, start.recipient, start.cid, start.call_id) == (START, "cust", "conv", "k1")
    assert start.peer_info == "offer" and start.data == {"operator_name": "Olga", "lifetime": 60}
    net.now += 2
    net.do(U1, Accept(now=net.now, call_id="k1", peer_info="answer"))
    step(net)
    accept = sent(net, P1)[-1]
    assert (accept.kind, accept.recipient, accept.peer_info) == (ACCEPT, "olga", "answer")
    (connected,) = [o for o in net.outputs[O1] if isinstance(o, Connected)]
    assert (connected.peer, connected.peer_device, connected.peer_info) == ("app", "p1", "answer")
    net.now += 30
    net.do(O1, Hangup(now=net.now, call_id="k1"))
    step(net)
    stop = sent(net, P1)[-1]
    assert (stop.kind, stop.recipient, stop.data) == (STOP, "cust", {"reason": "hangup"})
    assert reasons(net, U1) == [EndReason.HANGUP] == reasons(net, O1)
    records = {str(e.record.peer): e.record for e in net.ended(P1)}
    assert records["olga"].role is Role.CALLEE and records["cust"].role is Role.CALLER
    assert records["olga"].duration == records["cust"].duration == 30
    assert proxy_of(net).bridges == {}
    assert proxy_of(net).finished("k1") is not None


def test_customer_busy_goes_to_the_operator_as_busy(net: Net) -> None:
    call(net, O1)
    step(net)
    net.do(U1, Busy(now=net.now, call_id="k1"))
    step(net)
    assert sent(net, P1)[-1].kind is BUSY
    assert reasons(net, O1) == [EndReason.BUSY]
    assert reasons(net, U2) == [EndReason.BUSY]  # the customer's other device stopped ringing


def test_customer_hangs_up_the_operator_hears_it(net: Net) -> None:
    call(net, O1)
    step(net)
    net.do(U1, Accept(now=net.now, call_id="k1", peer_info="answer"))
    step(net)
    net.do(U1, Hangup(now=net.now, call_id="k1"))
    step(net)
    assert reasons(net, O1) == [EndReason.HANGUP]
    assert reasons(net, U2) == [EndReason.ANSWERED_ELSEWHERE]


def test_nobody_answers_both_legs_time_out(net: Net) -> None:
    call(net, O1)
    net.now += 1  # the forwarded start rings for what is left, in whole seconds
    step(net)
    assert sent(net, P1)[0].data["lifetime"] == 59
    net.advance(59)
    step(net)
    assert reasons(net, O1) == [EndReason.TIMEOUT] == reasons(net, U1)
    assert [e.reason for e in net.ended(P1)] == [EndReason.TIMEOUT] * 2
    assert proxy_of(net).next_deadline() is None


def connected_then_the_customer_gone(net: Net) -> None:
    """A call answered by the customer's u1, which then drops off the relay."""
    call(net, O1)
    step(net)
    net.do(U1, Accept(now=net.now, call_id="k1", peer_info="answer"))
    step(net)
    net.offline.add(U1)
    net.do(P1, PeerGone(now=net.now, identity=IdentityId("cust"), device=DeviceId("u1")))


def test_the_customer_vanishing_ends_the_operator_leg_with_gone(net: Net) -> None:
    connected_then_the_customer_gone(net)
    net.advance(30)
    assert proxy_of(net).bridges == {}
    step(net)
    assert reasons(net, O1) == [EndReason.GONE]
    net.offline.clear()
    step(net)
    assert reasons(net, U1) == [EndReason.GONE]


def test_a_failure_ends_both_legs(net: Net) -> None:
    call(net, O1)
    step(net)
    net.do(P1, Fail(now=net.now, call_id="k1"))
    step(net)
    assert reasons(net, O1) == [EndReason.FAILED] == reasons(net, U1)
    with pytest.raises(IllegalTransition):
        net.do(P1, Fail(now=net.now, call_id="k1"))
    with pytest.raises(UnknownCall):
        net.do(P1, Fail(now=net.now, call_id="nope"))


def test_a_start_from_anyone_but_the_operator_is_not_forwarded(net: Net) -> None:
    call(net, D1)  # dave on olga's cid
    step(net)
    assert sent(net, P1) == [] and proxy_of(net).bridges == {}


def test_a_start_past_its_lifetime_is_not_forwarded(net: Net) -> None:
    call(net, O1, lifetime=10)
    net.now += 9.5  # less than a whole second left
    step(net)
    assert sent(net, P1) == []
    assert reasons(net, P1) == [EndReason.TIMEOUT]


def test_a_start_with_exactly_one_second_left_rings_for_that_second(net: Net) -> None:
    # The boundary of the rule above: a whole second left is still forwarded.
    call(net, O1, lifetime=10)
    net.now += 9.0
    step(net)
    assert [s.data["lifetime"] for s in sent(net, P1)] == [1]
    assert reasons(net, P1) == []


def test_a_party_away_ends_its_call_exactly_when_the_grace_runs_out(net: Net) -> None:
    connected_then_the_customer_gone(net)
    net.advance(29.99)  # grace is 30 s
    assert len(proxy_of(net).bridges) == 1
    net.advance(0.01)
    assert proxy_of(net).bridges == {}


def test_a_second_customer_device_accepting_gets_answered_elsewhere(net: Net) -> None:
    call(net, O1)
    step(net)
    net.do(U1, Accept(now=net.now, call_id="k1", peer_info="u1"))
    net.do(U2, Accept(now=net.now, call_id="k1", peer_info="u2"))
    net.deliver_one(P1, ACCEPT, U1)
    net.deliver_one(P1, ACCEPT, U2)
    assert sent(net, P1)[-1].data == {"reason": "answered_elsewhere", "answered_by": "u1"}
    step(net)
    assert reasons(net, U2) == [EndReason.ANSWERED_ELSEWHERE] and reasons(net, U1) == []
    assert net.state(O1, "k1") is CallState.CONNECTED


def test_duplicates_and_a_stop_before_the_start_change_nothing(net: Net) -> None:
    call(net, O1)
    net.do(O1, Hangup(now=net.now, call_id="k1"))
    net.deliver_one(P1, STOP)
    net.deliver_one(P1, START)
    assert net.outputs[P1] == []
    call(net, O1, call_id="k2")
    start = net.take(P1, START)
    net.deliver(start)
    net.pending.append(start)
    assert net.deliver(start) == []
    assert len(proxy_of(net).bridges["k2"].outbound) == 1


# -- hunt groups ---------------------------------------------------------------------------


def test_hunt_rings_every_operator_and_the_first_accept_wins(net: Net) -> None:
    call(net, D1, cid="support")
    step(net)
    assert {s.recipient for s in sent(net, P1)} == {"alice", "carol"}
    net.do(C1, Accept(now=net.now, call_id="k1", peer_info="carol"))
    net.do(A1, Accept(now=net.now, call_id="k1", peer_info="alice"))  # too late
    step(net)
    assert reasons(net, A1) == [EndReason.ANSWERED_ELSEWHERE]
    (connected,) = [o for o in net.outputs[D1] if isinstance(o, Connected)]
    assert connected.peer_info == "carol"
    assert net.state(C1, "k1") is CallState.CONNECTED
    bridge = proxy_of(net).bridges["k1"]
    assert bridge.winner == "carol" and not bridge.outbound[IdentityId("alice")].live
    net.do(D1, Hangup(now=net.now, call_id="k1"))
    step(net)
    assert reasons(net, C1) == [EndReason.HANGUP]


def test_hunt_nobody_answers_the_customer_gets_timeout(net: Net) -> None:
    call(net, D1, cid="support", lifetime=30)
    step(net)
    net.advance(30)
    step(net)
    assert reasons(net, D1) == [EndReason.TIMEOUT]
    assert reasons(net, A1) == [EndReason.TIMEOUT] == reasons(net, C1)
    assert sent(net, P1)[-1].data == {"reason": "timeout"}


def test_hunt_one_declines_the_others_still_ring(net: Net) -> None:
    call(net, D1, cid="support")
    step(net)
    net.do(A1, Decline(now=net.now, call_id="k1"))
    step(net)
    assert net.state(D1, "k1") is CallState.DIALING
    net.do(C1, Decline(now=net.now, call_id="k1"))
    step(net)
    assert reasons(net, D1) == [EndReason.DECLINED]


def test_hunt_a_start_that_cannot_reach_one_operator_fails_only_their_leg(net: Net) -> None:
    call(net, D1, cid="support")
    step(net)
    # The relay refused the start to alice (say she never permitted the app).
    net.do(P1, Fail(now=net.now, call_id="k1", peer=IdentityId("alice")))
    step(net)
    bridge = proxy_of(net).bridges["k1"]
    assert not bridge.outbound[IdentityId("alice")].live
    assert net.state(D1, "k1") is CallState.DIALING
    net.do(C1, Accept(now=net.now, call_id="k1", peer_info="carol"))
    step(net)
    assert net.state(D1, "k1") is CallState.CONNECTED
    # Carol is on that call now, so the next start rings alice alone; when she cannot
    # be reached either, no leg is left and the customer hears "failed".
    call(net, U1, cid="support", call_id="k2")
    step(net)
    assert [s.recipient for s in sent(net, P1) if s.call_id == "k2"] == ["alice"]
    net.do(P1, Fail(now=net.now, call_id="k2", peer=IdentityId("alice")))
    step(net)
    assert reasons(net, U1) == [EndReason.FAILED]
    assert_legs_together(proxy_of(net))


def test_hunt_skips_operators_away_or_on_a_call_and_answers_busy_if_none(net: Net) -> None:
    net.do(P1, PeerGone(now=net.now, identity=IdentityId("alice"), device=DeviceId("a1")))
    call(net, D1, cid="support", call_id="k1")
    step(net)
    assert [s.recipient for s in sent(net, P1)] == ["carol"]
    net.do(C1, Accept(now=net.now, call_id="k1", peer_info="carol"))
    step(net)
    call(net, U1, cid="support", call_id="k2")  # carol is busy with dave now
    step(net)
    assert reasons(net, U1) == [EndReason.BUSY]
    assert sent(net, P1)[-1].kind is BUSY


def test_an_operator_calling_the_hunt_group_is_not_hunted(net: Net) -> None:
    call(net, A1, cid="support")
    step(net)
    assert sent(net, P1) == []


# -- hunt groups per cid -------------------------------------------------------------------


@pytest.fixture
def pool_net() -> Net:
    """A proxy with no hunt group of its own: only ``sales`` hunts, for dave."""
    net = Net()
    net.proxy("app", "p1").bind_pool(
        Pool(cid="sales", customer=IdentityId("dave"), operators=(A1.identity, C1.identity))
    )
    for at in (A1, C1, D1, U1):
        net.phone(at.identity, at.device)
    return net


def test_pool_rings_its_operators_and_the_first_accept_wins(pool_net: Net) -> None:
    net = pool_net
    call(net, D1, cid="sales")
    step(net)
    assert {s.recipient for s in sent(net, P1)} == {"alice", "carol"}
    assert all(s.data == {"lifetime": 60} for s in sent(net, P1))
    net.do(A1, Accept(now=net.now, call_id="k1", peer_info="alice"))
    step(net)
    assert reasons(net, C1) == [EndReason.ANSWERED_ELSEWHERE]
    assert net.state(D1, "k1") is CallState.CONNECTED
    net.do(A1, Hangup(now=net.now, call_id="k1"))
    step(net)
    assert reasons(net, D1) == [EndReason.HANGUP]


def test_pool_nobody_answers_the_customer_gets_timeout(pool_net: Net) -> None:
    net = pool_net
    call(net, D1, cid="sales", lifetime=20)
    step(net)
    net.advance(20)
    step(net)
    assert reasons(net, D1) == [EndReason.TIMEOUT]
    assert reasons(net, A1) == [EndReason.TIMEOUT] == reasons(net, C1)


def test_pool_takes_starts_only_from_its_customer_and_only_on_its_cid(pool_net: Net) -> None:
    net = pool_net
    call(net, U1, cid="sales")  # not the pool's customer
    call(net, D1, cid="other", call_id="k2")  # the customer, but no pool for that cid
    step(net)
    assert sent(net, P1) == [] and proxy_of(net).bridges == {}


def test_binding_a_cid_again_replaces_its_pool_and_back(pool_net: Net) -> None:
    net = pool_net
    proxy = proxy_of(net)
    proxy.bind(Binding(cid="sales", operator=A1.identity, operator_name="Al", customer=D1.identity))
    call(net, D1, cid="sales")  # dave is no longer the caller on this cid
    step(net)
    assert sent(net, P1) == []
    proxy.bind_pool(Pool(cid="sales", customer=D1.identity, operators=(C1.identity,)))
    call(net, D1, cid="sales", call_id="k2")
    step(net)
    assert [s.recipient for s in sent(net, P1)] == ["carol"]


def test_a_start_for_a_finished_call_gets_a_stop_with_a_detail(net: Net) -> None:
    call(net, O1)
    step(net)
    net.do(U1, Accept(now=net.now, call_id="k1", peer_info="answer"))
    step(net)
    net.do(U1, Hangup(now=net.now, call_id="k1"))
    step(net)
    assert reasons(net, O1) == [EndReason.HANGUP]
    # Another device of the operator places a call with the finished call's id.
    o2 = addr("olga", "o2")
    net.phone(o2.identity, o2.device)
    call(net, o2)
    step(net)
    stop = sent(net, P1)[-1]
    assert (stop.kind, stop.recipient, stop.call_id) == (STOP, "olga", "k1")
    assert stop.data["reason"] == "failed"
    assert "k1 has already ended (hangup)" in stop.data["detail"]
    (ended,) = net.ended(o2)
    assert ended.reason is EndReason.FAILED
    assert ended.detail is not None and "already ended" in ended.detail
    assert reasons(net, O1) == [EndReason.HANGUP]  # the ended call stays as it was
    assert proxy_of(net).bridges == {}


def test_a_failed_leg_carries_its_detail_to_the_other_leg(net: Net) -> None:
    call(net, O1)
    step(net)
    net.do(P1, Fail(now=net.now, call_id="k1", peer=IdentityId("cust"), detail="not permitted"))
    step(net)
    assert [e.detail for e in net.ended(O1)] == ["not permitted"]
    assert {e.record.detail for e in net.ended(P1)} == {"not permitted"}

"""The proxy core, fed messages directly: who may start, answer or end a proxied call (ids
compared by value, copies of the app's own messages ignored), what it sends when a leg's
time runs out (and when the tick comes late), draining, what it hands the store after an
input, the legs it re-announces on resume, and its configuration's defaults and form.
"""

from __future__ import annotations

from typing import Any

import pytest

from parley.ids import DeviceId, IdentityId
from parley.protocol.call import Call, CallState, EndReason, Role
from parley.protocol.call_io import Connected, Ended, Output, PeerGone, Received, Send, Tick
from parley.protocol.messages import MessageType
from parley.protocol.proxy import Binding, Bridge, Pool, Proxy, ProxyConfig
from parley.protocol.proxy_state import Away, Kept, Resume

START, ACCEPT = MessageType.VOICE_START, MessageType.VOICE_ACCEPT
STOP, BUSY = MessageType.VOICE_STOP, MessageType.VOICE_BUSY
APP, P1 = IdentityId("app"), DeviceId("p1")
OLGA, CUST = IdentityId("olga"), IdentityId("cust")  # the bound cid "conv"
ALICE, CAROL = IdentityId("alice"), IdentityId("carol")  # the hunt group
NOW = 1000.0


def fresh(value: str) -> str:
    """The same text as a new string object (as a decoded payload gives it)."""
    copy = "".join(list(value))
    assert copy == value and copy is not value
    return copy


def new_proxy(**kw: Any) -> Proxy:
    proxy = Proxy(APP, P1, operators=(ALICE, CAROL), **kw)
    proxy.bind(Binding(cid="conv", operator=OLGA, operator_name="Olga", customer=CUST))
    return proxy


def message(
    kind: MessageType,
    issuer: str,
    device: str,
    call_id: str = "k1",
    cid: str = "conv",
    now: float = NOW,
    iat: float | None = None,
    **data: Any,
) -> Received:
    return Received(
        now=now,
        kind=kind,
        issuer=IdentityId(issuer),
        device=DeviceId(device),
        iat=int(now if iat is None else iat),
        cid=cid,
        call_id=call_id,
        peer_info=f"from {issuer}",
        data=data,
    )


def sends(outputs: list[Output]) -> list[tuple[MessageType, str, dict[str, Any]]]:
    return [(o.kind, o.recipient, o.data) for o in outputs if isinstance(o, Send)]


def ends(outputs: list[Output]) -> list[tuple[str, EndReason, float]]:
    return [(str(o.record.peer), o.reason, o.record.ended) for o in outputs if isinstance(o, Ended)]


# -- the configuration and the constructors ------------------------------------------------


def test_the_records_and_the_config_are_built_by_keyword_only() -> None:
    binding: Any = Binding
    config: Any = ProxyConfig
    proxy: Any = Proxy
    with pytest.raises(TypeError):
        binding("conv", OLGA, "Olga", CUST)
    with pytest.raises(TypeError):
        config(60.0)
    with pytest.raises(TypeError):
        proxy(APP, P1, (ALICE,))
    made = proxy(identity=APP, device=P1, operators=(ALICE,), config=config(grace=5.0))
    assert (made.identity, made.device, made.operators, made.config.grace) == (
        APP,
        P1,
        (ALICE,),
        5.0,
    )


def test_a_start_that_does_not_say_rings_on_for_sixty_seconds() -> None:
    proxy = new_proxy()
    out = proxy.handle(message(START, "olga", "o1"))
    assert sends(out) == [(START, "cust", {"operator_name": "Olga", "lifetime": 60})]
    assert proxy.next_deadline() == NOW + 60


def test_by_default_a_caller_can_make_the_proxy_ring_ten_minutes_and_no_longer() -> None:
    proxy = new_proxy()
    out = proxy.handle(message(START, "olga", "o1", lifetime=10_000))
    assert sends(out) == [(START, "cust", {"operator_name": "Olga", "lifetime": 600})]
    assert proxy.next_deadline() == NOW + 600


def test_by_default_the_last_1024_ended_calls_are_remembered() -> None:
    proxy = new_proxy()
    for n in range(1025):
        proxy.handle(message(START, "olga", "o1", f"k{n}"))
        proxy.handle(message(STOP, "olga", "o1", f"k{n}"))
    assert proxy.bridges == {}
    assert proxy.finished("k0") is None
    assert proxy.finished("k1") is not None and proxy.finished("k1024") is not None


def test_a_bridge_made_by_hand_has_rank_zero() -> None:
    inbound = Call(
        role=Role.CALLEE,
        call_id="k1",
        cid="conv",
        peer=OLGA,
        peer_device=DeviceId("o1"),
        started=NOW,
        lifetime=60,
    )
    bridge = Bridge(inbound)
    assert (bridge.rank, bridge.call_id, bridge.winner, bridge.outbound) == (0, "k1", None, {})


# -- who may start, answer, end --------------------------------------------------------------


def test_the_copy_of_another_app_devices_start_is_not_hunted() -> None:
    proxy = new_proxy()
    # app:p2 placed a call on the hunt group's cid; p1 sees the copy, its ids new strings.
    assert proxy.handle(message(START, fresh("app"), "p2", cid="support")) == []
    assert proxy.bridges == {} and proxy.finished("k1") is None


@pytest.mark.parametrize("issuer", ["ann", "zoe"])  # before and after olga
def test_a_start_on_a_bound_cid_from_anyone_but_its_operator_is_not_forwarded(issuer: str) -> None:
    proxy = new_proxy()
    assert proxy.handle(message(START, issuer, "x1")) == []
    assert proxy.bridges == {}
    # The call_id is remembered: the operator cannot reuse it for a call.
    assert proxy.handle(message(START, "olga", "o1")) == []


@pytest.mark.parametrize("issuer", ["ann", "zoe"])  # before and after dave
def test_a_pool_takes_starts_only_from_its_customer(issuer: str) -> None:
    proxy = Proxy(APP, P1)
    proxy.bind_pool(Pool(cid="sales", customer=IdentityId("dave"), operators=(ALICE, CAROL)))
    assert proxy.handle(message(START, issuer, "x1", cid="sales")) == []
    out = proxy.handle(message(START, fresh("dave"), "d1", "k2", cid="sales"))
    assert [(kind, to) for kind, to, _ in sends(out)] == [(START, "alice"), (START, "carol")]


def test_an_accept_before_its_start_means_the_start_is_not_forwarded() -> None:
    proxy = new_proxy()
    assert proxy.handle(message(ACCEPT, "cust", "u1")) == []
    assert proxy.handle(message(START, "olga", "o1")) == []
    assert proxy.bridges == {}


def test_an_accept_from_a_party_not_called_is_ignored_and_the_call_goes_on() -> None:
    proxy = new_proxy()
    proxy.handle(message(START, "olga", "o1"))
    for issuer in ("ann", "zoe", "olga"):
        assert proxy.handle(message(ACCEPT, issuer, "x1")) == []
    assert proxy.take_changes().kept[0].live
    out = proxy.handle(message(ACCEPT, "cust", "u1"))
    assert sends(out) == [(ACCEPT, "olga", {})]
    assert proxy.bridges["k1"].winner == "cust"


# -- draining ---------------------------------------------------------------------------


def test_draining_answers_new_starts_busy_and_lets_live_calls_go_on() -> None:
    proxy = new_proxy()
    proxy.handle(message(START, "olga", "o1"))
    proxy.drain()
    out = proxy.handle(message(START, "olga", "o1", "k2"))
    assert sends(out) == [(BUSY, "olga", {"reason": "busy"})]
    assert ends(out) == [("olga", EndReason.BUSY, NOW)]
    assert proxy.handle(message(START, "dave", "d1", "k3", cid="support"))[-1] == Send(
        kind=BUSY,
        recipient=IdentityId("dave"),
        cid="support",
        call_id="k3",
        data={"reason": "busy"},
    )
    assert proxy.handle(message(START, "zoe", "z1", "k4")) == []  # not ours: not even busy
    out = proxy.handle(message(ACCEPT, "cust", "u1"))
    assert sends(out) == [(ACCEPT, "olga", {})]
    assert list(proxy.bridges) == ["k1"]


# -- time -----------------------------------------------------------------------------------


def test_when_both_legs_run_out_together_only_the_callee_is_told() -> None:
    """The caller owns its lifetime: its phone stops by itself, the customer's is told."""
    proxy = new_proxy()
    proxy.handle(message(START, "olga", "o1"))  # iat = now: both legs end at 1060
    out = proxy.handle(Tick(now=NOW + 60))
    assert sends(out) == [(STOP, "cust", {"reason": "timeout"})]
    assert sorted(ends(out)) == [
        ("cust", EndReason.TIMEOUT, NOW + 60),
        ("olga", EndReason.TIMEOUT, NOW + 60),
    ]


def test_when_the_forwarded_leg_runs_out_first_both_parties_are_told() -> None:
    proxy = new_proxy()
    proxy.handle(message(START, "olga", "o1", now=NOW + 0.5, iat=NOW))  # 59 s forwarded
    assert proxy.next_deadline() == NOW + 59.5
    out = proxy.handle(Tick(now=NOW + 59.5))
    assert sorted(sends(out)) == [
        (STOP, "cust", {"reason": "timeout"}),
        (STOP, "olga", {"reason": "timeout"}),
    ]
    assert proxy.bridges == {}


def test_a_late_tick_ends_the_legs_when_their_time_ran_out() -> None:
    proxy = new_proxy()
    proxy.handle(message(START, "olga", "o1"))
    out = proxy.handle(Tick(now=NOW + 75))  # the proxy was down at 1060
    assert sorted(ends(out)) == [
        ("cust", EndReason.TIMEOUT, NOW + 60),
        ("olga", EndReason.TIMEOUT, NOW + 60),
    ]


def test_a_tick_ends_the_calls_due_in_the_order_they_were_opened_and_only_those() -> None:
    proxy = new_proxy()
    for n, lifetime in enumerate((30, 20, 40, 58)):  # k1..k4; k4 rings until NOW + 60
        proxy.handle(message(START, "olga", "o1", call_id=f"k{n + 1}", lifetime=lifetime))
    assert proxy.next_deadline() == NOW + 20
    out = proxy.handle(Tick(now=NOW + 55))  # late: k1, k2 and k3 are due, not k4
    assert [(e.record.call_id, e.record.peer) for e in out if isinstance(e, Ended)] == [
        (call_id, peer) for call_id in ("k1", "k2", "k3") for peer in (OLGA, CUST)
    ]
    assert list(proxy.bridges) == ["k4"]
    assert proxy.next_deadline() == NOW + 58
    assert ends(proxy.handle(Tick(now=NOW + 57))) == []
    assert proxy.next_deadline() == NOW + 58


def test_a_call_answered_from_a_device_away_ends_gone_when_its_grace_ran_out() -> None:
    proxy = new_proxy()
    proxy.handle(PeerGone(now=NOW, identity=CUST, device=DeviceId("u1")))  # a report late
    proxy.handle(message(START, "olga", "o1"))
    assert proxy.next_deadline() == NOW + 60  # ringing
    proxy.handle(message(ACCEPT, "cust", "u1", now=NOW + 1))
    assert proxy.next_deadline() == NOW + 30  # answered by a device away since NOW
    out = proxy.handle(Tick(now=NOW + 100))  # late, past both deadlines it had
    assert sorted(ends(out)) == [
        ("cust", EndReason.GONE, NOW + 30),
        ("olga", EndReason.GONE, NOW + 30),
    ]
    assert proxy.next_deadline() is None


def test_outdated_deadlines_do_not_pile_up() -> None:
    proxy = new_proxy()
    for n in range(10):  # calls that ring throughout, on top of the heap
        proxy.handle(message(START, "olga", "o1", call_id=f"first{n}"))
    for n in range(300):  # two calls a round, each leaving its ringing deadline behind
        now = NOW + 1 + n
        pair = (f"k{n}a", f"k{n}b")
        for kind, issuer, device in ((START, "olga", "o1"), (ACCEPT, "cust", "u1")):
            for call_id in pair:
                proxy.handle(message(kind, issuer, device, call_id=call_id, now=now))
                assert proxy.next_deadline() == NOW + 60  # asked after each input, as runners do
        for call_id in pair:
            proxy.handle(message(STOP, "olga", "o1", call_id=call_id, now=now))
        assert proxy.next_deadline() == NOW + 60
        # White-box: the heap is rebuilt before its outdated entries outnumber the rest.
        assert len(proxy._deadline_heap) <= 2 * len(proxy.bridges) + 65


def connected(proxy: Proxy) -> None:
    proxy.handle(message(START, "olga", "o1"))
    proxy.handle(message(ACCEPT, "cust", "u1"))


def test_a_late_tick_ends_a_vanished_partys_call_when_the_grace_ran_out() -> None:
    proxy = new_proxy()
    connected(proxy)
    proxy.handle(PeerGone(now=NOW + 1, identity=CUST, device=DeviceId("u1")))
    out = proxy.handle(Tick(now=NOW + 100))
    assert sorted(ends(out)) == [
        ("cust", EndReason.GONE, NOW + 31),
        ("olga", EndReason.GONE, NOW + 31),
    ]


def test_the_operator_vanishing_is_told_gone_as_is_the_customer() -> None:
    proxy = new_proxy()
    connected(proxy)
    proxy.handle(PeerGone(now=NOW, identity=OLGA, device=DeviceId("o1")))
    out = proxy.handle(Tick(now=NOW + 30))
    assert sorted(sends(out)) == [
        (STOP, "cust", {"reason": "gone"}),
        (STOP, "olga", {"reason": "gone"}),  # heard when back
    ]


# -- what the store is given -------------------------------------------------------------


def test_the_store_is_given_tombstones_bridges_and_presence_with_their_ranks() -> None:
    proxy = new_proxy()
    assert not proxy.take_changes()
    proxy.handle(message(STOP, "zoe", "z1", "k0"))  # heard of only
    assert proxy.take_changes().kept == (Kept(call_id="k0", rank=1, live=False, bridge=None),)
    proxy.handle(message(START, "olga", "o1"))
    (opened,) = proxy.take_changes().kept
    assert (opened.call_id, opened.rank, opened.live) == ("k1", 2, True)
    proxy.handle(message(STOP, "olga", "o1"))
    (closed,) = proxy.take_changes().kept
    assert (closed.call_id, closed.rank, closed.live) == ("k1", 3, False)
    assert closed.bridge is not None and closed.bridge.inbound.state is CallState.ENDED
    proxy.handle(message(START, "olga", "o1", "k2"))
    assert [(k.call_id, k.rank) for k in proxy.take_changes().kept] == [("k2", 4)]
    proxy.handle(PeerGone(now=NOW, identity=OLGA, device=DeviceId("o9")))
    changes = proxy.take_changes()
    assert changes.away == (Away(identity=OLGA, device=DeviceId("o9"), since=NOW),)
    assert not proxy.take_changes()  # said once


# -- resume -------------------------------------------------------------------------------


def test_resume_re_announces_exactly_the_legs_that_are_up() -> None:
    proxy = new_proxy()
    connected(proxy)  # k1: olga <-> cust
    proxy.handle(message(START, "dave", "d1", "k2", cid="support"))  # ringing alice and carol
    restored = new_proxy()
    restored.restore(proxy.take_changes().kept)
    out = restored.handle(Resume(now=NOW + 1))
    assert out == restored.resumed()
    assert [(o.call_id, o.peer, o.peer_device) for o in out if isinstance(o, Connected)] == [
        ("k1", "olga", "o1"),
        ("k1", "cust", "u1"),
    ]
    assert len(out) == 2


def test_the_binding_cannot_be_changed_once_made() -> None:
    binding: Any = Binding(cid="conv", operator=OLGA, operator_name="Olga", customer=CUST)
    with pytest.raises(AttributeError):
        binding.customer = IdentityId("mallory")
    assert binding.customer == "cust"


def test_the_store_is_given_every_call_id_touched_since_the_last_time() -> None:
    proxy = new_proxy()
    proxy.handle(message(START, "olga", "o1"))  # a live bridge first
    proxy.handle(message(STOP, "zoe", "z1", "k0"))  # then a tombstone
    proxy.handle(message(START, "olga", "o1", "k2"))
    changes = proxy.take_changes()
    assert [(k.call_id, k.rank, k.live) for k in changes.kept] == [
        ("k1", 1, True),
        ("k0", 2, False),
        ("k2", 3, True),
    ]


def test_the_store_is_not_given_call_ids_forgotten_already() -> None:
    proxy = new_proxy(config=ProxyConfig(memory=1))
    proxy.handle(message(STOP, "zoe", "z1", "k0"))
    proxy.handle(message(STOP, "zoe", "z1", "k1"))  # k0 is forgotten
    proxy.handle(message(STOP, "zoe", "z1", "k2"))  # and k1
    assert proxy.take_changes().kept == (Kept(call_id="k2", rank=3, live=False, bridge=None),)


def test_a_start_long_past_its_lifetime_is_not_forwarded() -> None:
    proxy = new_proxy()
    out = proxy.handle(message(START, "olga", "o1", now=NOW + 30, iat=NOW, lifetime=10))
    assert sends(out) == []
    assert ends(out) == [("olga", EndReason.TIMEOUT, NOW + 30)]


def test_the_clock_may_start_anywhere() -> None:
    proxy = new_proxy()
    out = proxy.handle(message(START, "olga", "o1", now=5.0, iat=5))
    assert sends(out) == [(START, "cust", {"operator_name": "Olga", "lifetime": 60})]
    assert proxy.next_deadline() == 65.0


@pytest.mark.parametrize(("first", "second"), [("u1", "u2"), ("u2", "u1")])
def test_the_customer_device_that_accepts_second_is_told_who_has_the_call(
    first: str, second: str
) -> None:
    proxy = new_proxy()
    proxy.handle(message(START, "olga", "o1"))
    proxy.handle(message(ACCEPT, "cust", first))
    out = proxy.handle(message(ACCEPT, "cust", second))
    assert sends(out) == [(STOP, "cust", {"reason": "answered_elsewhere", "answered_by": first})]
    assert proxy.handle(message(ACCEPT, "cust", fresh(first))) == []  # a duplicate
    assert proxy.bridges["k1"].outbound[CUST].peer_device == first


def test_a_stop_from_another_device_of_the_customer_than_the_one_on_the_call_is_ignored() -> None:
    proxy = new_proxy()
    connected(proxy)  # with cust:u1
    for kind in (STOP, BUSY):
        assert proxy.handle(message(kind, "cust", "u0")) == []
        assert proxy.handle(message(kind, "cust", "u2")) == []
    assert list(proxy.bridges) == ["k1"]
    out = proxy.handle(message(STOP, fresh("cust"), fresh("u1")))
    assert sends(out) == [(STOP, "olga", {"reason": "hangup"})]


def test_a_stop_for_a_hunt_leg_already_ended_changes_nothing() -> None:
    proxy = new_proxy()
    proxy.handle(message(START, "dave", "d1", cid="support"))  # rings alice and carol
    out = proxy.handle(message(STOP, "alice", "a1", cid="support", reason="declined"))
    assert ends(out) == [("alice", EndReason.DECLINED, NOW)]
    assert proxy.handle(message(STOP, "alice", "a1", cid="support")) == []
    assert proxy.bridges["k1"].inbound.state is CallState.RINGING


def test_the_pool_and_the_config_are_built_by_keyword_and_cannot_be_changed() -> None:
    pool: Any = Pool(cid="sales", customer=CUST, operators=(ALICE,))
    config: Any = ProxyConfig()
    with pytest.raises(AttributeError):
        pool.customer = IdentityId("mallory")
    with pytest.raises(AttributeError):
        config.grace = 1.0
    make: Any = Pool
    with pytest.raises(TypeError):
        make("sales", CUST, (ALICE,))
    assert (pool.customer, config.grace) == ("cust", 30.0)


def test_a_customer_sorting_after_the_operator_hangs_up_and_the_operator_hears_it() -> None:
    proxy = Proxy(APP, P1)
    proxy.bind(Binding(cid="conv", operator=IdentityId("ann"), operator_name="Ann", customer=CUST))
    proxy.handle(message(START, "ann", "a1"))
    proxy.handle(message(ACCEPT, "cust", "u1"))
    assert proxy.bridges["k1"].leg_of(CUST) is proxy.bridges["k1"].outbound[CUST]
    out = proxy.handle(message(STOP, "cust", "u1"))
    assert sends(out) == [(STOP, "ann", {"reason": "hangup"})]
    assert proxy.bridges == {}


def test_the_operator_as_a_new_string_is_forwarded() -> None:
    proxy = new_proxy()
    out = proxy.handle(message(START, fresh("olga"), "o1"))
    assert sends(out) == [(START, "cust", {"operator_name": "Olga", "lifetime": 60})]


def test_a_stop_naming_this_proxy_device_as_the_winner_is_ignored() -> None:
    proxy = new_proxy()
    connected(proxy)
    stop = message(STOP, "olga", "o1", reason="answered_elsewhere", answered_by=fresh("p1"))
    assert proxy.handle(stop) == []
    assert proxy.bridges["k1"].inbound.state is CallState.CONNECTED

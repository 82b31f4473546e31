"""The phone and who may touch a call: messages about our call from a third identity (one
that sorts before the peer and one after), from another device of the peer, from the
caller itself, or from this very device are ignored; what a call is with decides glare
and auto-busy; and the configuration's defaults and form.

Identities and devices are compared by value: a peer's id that arrives as a new string
(decoded from a payload) is the same peer.
"""

from __future__ import annotations

from typing import Any

import pytest
from tests.protocol.callnet import Net, addr

from parley.ids import DeviceId, IdentityId
from parley.protocol.call import CallState, EndReason
from parley.protocol.call_io import (
    Accept,
    Connected,
    Decline,
    Ended,
    Hangup,
    PeerGone,
    Place,
    Received,
    Ringing,
    Send,
)
from parley.protocol.call_phone import PhoneConfig
from parley.protocol.messages import MessageType

START, ACCEPT = MessageType.VOICE_START, MessageType.VOICE_ACCEPT
STOP, BUSY = MessageType.VOICE_STOP, MessageType.VOICE_BUSY
A1, B1, D1 = addr("alice", "a1"), addr("bob", "b1"), addr("dave", "d1")
DAVE = IdentityId("dave")
# Third parties of a call between alice and dave: one sorts before dave, one after.
THIRD = [("bob", "b1"), ("eve", "e1")]


def fresh(value: str) -> str:
    """The same text as a new string object (as a decoded payload gives it)."""
    copy = "".join(list(value))
    assert copy == value and copy is not value
    return copy


def message(
    net: Net,
    kind: MessageType,
    issuer: str,
    device: str,
    call_id: str = "k1",
    **data: Any,
) -> Received:
    return Received(
        now=net.now,
        kind=kind,
        issuer=IdentityId(issuer),
        device=DeviceId(device),
        iat=int(net.now),
        cid="c",
        call_id=call_id,
        peer_info=f"from {issuer}:{device}",
        data=data,
    )


def place(net: Net, at: Any, to: IdentityId, call_id: str = "k1", **kw: Any) -> list[Any]:
    return net.do(
        at, Place(now=net.now, recipient=to, cid="c", call_id=call_id, peer_info="offer", **kw)
    )


def sends(outputs: list[Any]) -> list[Send]:
    return [o for o in outputs if isinstance(o, Send)]


def alice_dials_dave() -> Net:
    net = Net()
    net.phone("alice", "a1")
    place(net, A1, DAVE, "k5")
    net.pending.clear()
    return net


def dave_rings_for_alice() -> Net:
    """dave's d1 rings for alice's k1 (sent from a1)."""
    net = Net()
    net.phone("dave", "d1")
    net.do(D1, message(net, START, "alice", "a1"))
    assert net.state(D1, "k1") is CallState.RINGING
    return net


# -- the configuration -----------------------------------------------------------------------


def test_the_config_is_built_by_keyword_only() -> None:
    make: Any = PhoneConfig
    with pytest.raises(TypeError):
        make(60.0)
    assert make(ring_lifetime=30.0).ring_lifetime == 30.0


def test_by_default_a_caller_can_make_us_ring_ten_minutes_and_no_longer() -> None:
    net = Net()
    net.phone("dave", "d1")
    net.do(D1, message(net, START, "alice", "a1", lifetime=10_000))
    assert net.at(D1).next_deadline() == net.now + 600
    net.phone("alice", "a1")
    (start,) = sends(place(net, A1, DAVE, "k2", lifetime=10_000))
    assert start.data["lifetime"] == 600


# -- messages from this very device, and ids as new strings ---------------------------------


@pytest.mark.parametrize("kind", [ACCEPT, STOP, BUSY])
def test_a_message_from_this_very_device_does_not_end_the_ringing(kind: MessageType) -> None:
    net = Net()
    net.phone("bob", "b1")
    net.do(B1, message(net, START, "alice", "a1"))
    # bob:b1 itself, its ids as new strings: not a sibling's copy.
    assert net.do(B1, message(net, kind, fresh("bob"), fresh("b1"))) == []
    assert net.state(B1, "k1") is CallState.RINGING


def test_a_siblings_accept_with_ids_as_new_strings_ends_the_ringing() -> None:
    net = Net()
    net.phone("bob", "b1")
    net.do(B1, message(net, START, "alice", "a1"))
    net.do(B1, message(net, ACCEPT, fresh("bob"), fresh("b2")))
    (ended,) = net.ended(B1)
    assert ended.reason is EndReason.ANSWERED_ELSEWHERE


def test_an_accept_from_the_peer_as_a_new_string_connects() -> None:
    net = alice_dials_dave()
    out = net.do(A1, message(net, ACCEPT, fresh("dave"), fresh("d1"), "k5"))
    (connected,) = [o for o in out if isinstance(o, Connected)]
    assert (connected.peer, connected.peer_device, connected.peer_info) == (
        "dave",
        "d1",
        "from dave:d1",
    )
    assert net.state(A1, "k5") is CallState.CONNECTED


def test_a_stop_from_the_peer_as_a_new_string_ends_the_call() -> None:
    net = alice_dials_dave()
    net.do(A1, message(net, STOP, fresh("dave"), fresh("d1"), "k5", reason="declined"))
    (ended,) = net.ended(A1)
    assert ended.reason is EndReason.DECLINED


# -- third parties ---------------------------------------------------------------------------


@pytest.mark.parametrize(("identity", "device"), THIRD)
def test_an_accept_from_a_third_identity_is_ignored(identity: str, device: str) -> None:
    net = alice_dials_dave()
    assert net.do(A1, message(net, ACCEPT, identity, device, "k5")) == []
    assert net.state(A1, "k5") is CallState.DIALING
    assert net.at(A1).calls["k5"].peer_device is None
    # dave's own accept still connects the call.
    net.do(A1, message(net, ACCEPT, "dave", "d1", "k5"))
    assert net.state(A1, "k5") is CallState.CONNECTED


@pytest.mark.parametrize(("identity", "device"), THIRD)
@pytest.mark.parametrize("kind", [STOP, BUSY])
def test_an_ending_from_a_third_identity_is_ignored(
    identity: str, device: str, kind: MessageType
) -> None:
    net = alice_dials_dave()
    assert net.do(A1, message(net, kind, identity, device, "k5")) == []
    assert net.state(A1, "k5") is CallState.DIALING
    net.do(A1, message(net, ACCEPT, "dave", "d1", "k5"))
    assert net.do(A1, message(net, kind, identity, "d1", "k5")) == []  # d1 of someone else
    assert net.state(A1, "k5") is CallState.CONNECTED


@pytest.mark.parametrize(("identity", "device"), THIRD)
def test_a_callee_ignores_endings_from_a_third_identity(identity: str, device: str) -> None:
    net = dave_rings_for_alice()
    for kind in (STOP, BUSY):
        assert net.do(D1, message(net, kind, identity, device)) == []
        assert net.do(D1, message(net, kind, identity, "a1")) == []
    assert net.state(D1, "k1") is CallState.RINGING


@pytest.mark.parametrize("kind", [STOP, BUSY])
def test_an_ending_from_another_device_of_the_peer_than_the_one_on_the_call_is_ignored(
    kind: MessageType,
) -> None:
    net = alice_dials_dave()
    net.do(A1, message(net, ACCEPT, "dave", "d2", "k5"))
    assert net.do(A1, message(net, kind, "dave", "d1", "k5")) == []
    assert net.do(A1, message(net, kind, "dave", "d3", "k5")) == []
    assert net.state(A1, "k5") is CallState.CONNECTED
    net.do(A1, message(net, kind, "dave", "d2", "k5"))
    assert net.state(A1, "k5") is CallState.ENDED


def test_a_callee_ignores_an_ending_from_another_device_of_the_caller() -> None:
    net = dave_rings_for_alice()
    for device in ("a0", "a2"):
        assert net.do(D1, message(net, STOP, "alice", device)) == []
    assert net.state(D1, "k1") is CallState.RINGING
    net.do(D1, message(net, STOP, "alice", "a1"))
    assert net.state(D1, "k1") is CallState.ENDED


@pytest.mark.parametrize("device", ["a0", "a2"])
def test_an_accept_from_the_caller_itself_is_ignored(device: str) -> None:
    """The caller's devices never accept their own call: such an accept is nobody's."""
    net = dave_rings_for_alice()
    assert net.do(D1, message(net, ACCEPT, "alice", device)) == []
    assert net.state(D1, "k1") is CallState.RINGING
    net.do(D1, Accept(now=net.now, call_id="k1", peer_info="answer"))
    assert net.do(D1, message(net, ACCEPT, "alice", device)) == []
    assert net.state(D1, "k1") is CallState.CONNECTED


def test_an_accept_from_the_caller_of_a_call_that_ended_gets_no_reply() -> None:
    net = dave_rings_for_alice()
    net.do(D1, Decline(now=net.now, call_id="k1"))
    net.pending.clear()
    assert net.do(D1, message(net, ACCEPT, "alice", "a2")) == []
    assert net.do(D1, message(net, ACCEPT, "alice", "a1")) == []
    assert net.pending == []


def test_a_late_accept_of_our_ended_call_from_a_third_identity_gets_no_reply() -> None:
    net = alice_dials_dave()
    net.advance(60)
    net.pending.clear()
    for identity, device in THIRD:
        assert net.do(A1, message(net, ACCEPT, identity, device, "k5")) == []
    (stop,) = sends(net.do(A1, message(net, ACCEPT, "dave", "d1", "k5")))
    assert (stop.recipient, stop.data) == ("dave", {"reason": "timeout"})


# -- a second device's accept, either side of the winner in sort order ---------------------


@pytest.mark.parametrize(("first", "second"), [("d1", "d2"), ("d2", "d1")])
def test_the_device_that_accepts_second_is_told_who_has_the_call(first: str, second: str) -> None:
    net = alice_dials_dave()
    net.do(A1, message(net, ACCEPT, "dave", first, "k5"))
    (stop,) = sends(net.do(A1, message(net, ACCEPT, "dave", second, "k5")))
    assert (stop.kind, stop.recipient) == (STOP, "dave")
    assert stop.data == {"reason": "answered_elsewhere", "answered_by": first}
    assert net.do(A1, message(net, ACCEPT, "dave", first, "k5")) == []  # a duplicate
    assert net.at(A1).calls["k5"].peer_device == first


# -- what a call is with decides glare and auto-busy ---------------------------------------


@pytest.mark.parametrize(("identity", "device"), THIRD)
@pytest.mark.parametrize("call_id", ["k1", "k9"])  # below and above our k5
def test_a_start_from_a_third_identity_while_dialling_is_busy_not_glare(
    identity: str, device: str, call_id: str
) -> None:
    net = alice_dials_dave()
    out = net.do(A1, message(net, START, identity, device, call_id))
    (busy,) = sends(out)
    assert (busy.kind, busy.recipient, busy.call_id) == (BUSY, identity, call_id)
    (ended,) = [o for o in out if isinstance(o, Ended)]
    assert (ended.call_id, ended.reason) == (call_id, EndReason.BUSY)
    assert not any(isinstance(o, Ringing) for o in out)
    assert net.state(A1, "k5") is CallState.DIALING


@pytest.mark.parametrize(("identity", "device"), THIRD)
def test_without_auto_busy_a_third_identitys_start_rings_beside_our_dialling(
    identity: str, device: str
) -> None:
    net = Net()
    net.phone("alice", "a1", PhoneConfig(auto_busy=False))
    place(net, A1, DAVE, "k5")
    out = net.do(A1, message(net, START, identity, device, "k1"))
    (ringing,) = [o for o in out if isinstance(o, Ringing)]
    assert ringing.replaces is None
    assert sends(out) == []
    assert net.state(A1, "k5") is CallState.DIALING


def test_the_config_cannot_be_changed_once_made() -> None:
    config: Any = PhoneConfig()
    with pytest.raises(AttributeError):
        config.auto_busy = False
    assert config.auto_busy is True and hash(config) == hash(PhoneConfig())


def test_by_default_the_last_1024_ended_calls_are_remembered() -> None:
    net = Net()
    phone = net.phone("alice", "a1")
    for n in range(1025):
        place(net, A1, DAVE, f"k{n}")
        net.do(A1, Hangup(now=net.now, call_id=f"k{n}"))
    assert phone.record("k0") is None
    assert phone.record("k1") is not None and phone.record("k1024") is not None


# -- more ids as new strings ---------------------------------------------------------------


def test_glare_with_the_peer_as_a_new_string_gives_way() -> None:
    net = alice_dials_dave()  # k5
    out = net.do(A1, message(net, START, fresh("dave"), fresh("d1"), "k1"))
    (ringing,) = [o for o in out if isinstance(o, Ringing)]
    assert (ringing.call_id, ringing.replaces) == ("k1", "k5")
    (stop,) = sends(out)
    assert (stop.call_id, stop.data) == ("k5", {"reason": "answered_elsewhere"})


def test_glare_with_two_attempts_to_the_peer_ends_both_and_names_the_first() -> None:
    net = alice_dials_dave()  # k5
    place(net, A1, DAVE, "k6")
    out = net.do(A1, message(net, START, "dave", "d1", "k1"))
    (ringing,) = [o for o in out if isinstance(o, Ringing)]
    assert ringing.replaces == "k5"
    assert [(s.call_id, s.data["reason"]) for s in sends(out)] == [
        ("k5", "answered_elsewhere"),
        ("k6", "answered_elsewhere"),
    ]
    assert list(net.at(A1).calls) == ["k1"]


def test_a_late_accept_from_the_peer_as_a_new_string_is_told_the_call_is_over() -> None:
    net = alice_dials_dave()
    net.do(A1, Hangup(now=net.now, call_id="k5"))
    (stop,) = sends(net.do(A1, message(net, ACCEPT, fresh("dave"), "d1", "k5")))
    assert (stop.recipient, stop.data) == ("dave", {"reason": "hangup"})


def test_a_duplicate_accept_with_the_device_as_a_new_string_changes_nothing() -> None:
    net = alice_dials_dave()
    net.do(A1, message(net, ACCEPT, "dave", "d1", "k5"))
    assert net.do(A1, message(net, ACCEPT, "dave", fresh("d1"), "k5")) == []
    assert net.state(A1, "k5") is CallState.CONNECTED


def test_the_device_named_answered_by_as_a_new_string_keeps_the_call() -> None:
    net = dave_rings_for_alice()
    net.do(D1, Accept(now=net.now, call_id="k1", peer_info="answer"))
    stop = message(net, STOP, "alice", "a1", reason="answered_elsewhere", answered_by=fresh("d1"))
    assert net.do(D1, stop) == []
    assert net.state(D1, "k1") is CallState.CONNECTED


def test_a_peer_gone_named_by_a_new_string_still_ends_the_call_with_gone() -> None:
    net = alice_dials_dave()
    net.do(A1, message(net, ACCEPT, "dave", "d1", "k5"))
    net.do(A1, PeerGone(now=net.now, identity=IdentityId(fresh("dave")), device=DeviceId("d1")))
    assert net.at(A1).next_deadline() == net.now + 30
    net.advance(30)
    (ended,) = net.ended(A1)
    assert ended.reason is EndReason.GONE

"""Random interleavings of calls, messages, drops, duplicates, presence and time.

Five phones (bob on two devices) and a proxy (a bound two-leg cid for olga -> bob, and a
hunt group of alice and carol for bob's calls to the app) share a simulated relay that
delivers in any order, duplicates, drops, and holds messages for devices that are away.
Time moves only by rules, and every node is ticked at each deadline on the way.

Checked after every step:
- a device told that a call is over (a stop or busy for it, a sibling's accept) never
  rings for it afterwards: no ghost calls from stops before starts, duplicates, reordering;
- a call (per node, call_id and peer) ends at most once, and nothing happens to it after;
- every record has a reason and ordered times (started <= ringing <= answered <= ended);
- no device rings or dials past its lifetime;
- a live proxied call never has one leg up and the other ended (not even for 0 s);
- a live call is never also in the memory of ended calls.
- the proxy's next deadline is the earliest deadline of any of its legs.
- the proxy's count of live legs per party (whom a hunt skips) is what its calls hold.
At the end, with everyone back and nothing dropped any more, every call that rang or
dialled has ended or is connected; if no message was ever dropped, every connected call
has its partner connected to it; and after everyone hangs up, every call has ended exactly
once with a record.
"""

from __future__ import annotations

from collections import Counter

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule
from tests.protocol.callnet import Envelope, Net, addr

from parley.errors import IllegalTransition
from parley.ids import Address, DeviceId, IdentityId
from parley.protocol.call import CallState, EndReason
from parley.protocol.call_io import (
    Accept,
    Busy,
    Connected,
    Decline,
    Ended,
    Fail,
    Hangup,
    PeerBack,
    PeerGone,
    Place,
    Ringing,
    Send,
)
from parley.protocol.call_phone import Phone
from parley.protocol.messages import MessageType
from parley.protocol.proxy import Binding, Proxy

PHONES = [addr("alice", "a1"), addr("bob", "b1"), addr("bob", "b2"), addr("carol", "c1")]
PHONES.append(addr("olga", "o1"))
PROXIED = [addr("olga", "o1"), addr("bob", "b1"), addr("bob", "b2")]
P1 = addr("app", "p1")
APP = IdentityId("app")
CALLEES = sorted({a.identity for a in PHONES} | {APP})
MAX_LIFETIME = 60.0
ENDINGS = (MessageType.VOICE_STOP, MessageType.VOICE_BUSY)
ACCEPT = MessageType.VOICE_ACCEPT
Command = Accept | Busy | Decline | Hangup | Fail
COMMANDS: list[type[Busy | Decline | Hangup | Fail] | None] = [None, Busy, Decline, Hangup, Fail]

Key = tuple[Address, str, IdentityId]  # node, call_id, peer


class CallNetwork(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.net = Net()
        self.proxy = self.net.proxy("app", "p1", operators=("alice", "carol"))
        self.proxy.bind(
            Binding(
                cid="conv",
                operator=IdentityId("olga"),
                operator_name="Olga",
                customer=IdentityId("bob"),
            )
        )
        for at in PHONES:
            self.net.phone(at.identity, at.device)
        self.dropped = False
        self.placed = 0

    # -- helpers ------------------------------------------------------------------------

    def phone(self, at: Address) -> Phone:
        return self.net.at(at)

    def place(self, at: Address, to: IdentityId, n: int, lifetime: float | None) -> None:
        if at.identity == to or at in self.net.offline:
            return
        self.placed += 1
        cid = "direct"
        if to == APP:
            cid = "conv" if at.identity == "olga" else "support"
        call_id = f"{n:03d}-{self.placed}"  # random order between calls, never reused
        self.net.do(
            at,
            Place(
                now=self.net.now,
                recipient=to,
                cid=cid,
                call_id=call_id,
                peer_info=f"offer {call_id}",
                lifetime=lifetime,
            ),
        )
        self.settle()

    def settle(self) -> None:
        """The application's part of glare: accept at once a call that replaced ours."""
        for at in PHONES:
            phone = self.phone(at)
            for output in self.net.outputs[at]:
                if isinstance(output, Ringing) and output.replaces is not None:
                    call = phone.calls.get(output.call_id)
                    if call is not None and call.state is CallState.RINGING:
                        self.net.do(
                            at, Accept(now=self.net.now, call_id=call.call_id, peer_info="glare")
                        )

    def envelope(self, index: int, ready: bool = True) -> Envelope | None:
        pool = self.net.deliverable() if ready else self.net.pending
        return pool[index % len(pool)] if pool else None

    # -- rules --------------------------------------------------------------------------

    @rule(
        at=st.sampled_from(PHONES),
        to=st.sampled_from(CALLEES),
        n=st.integers(0, 999),
        lifetime=st.sampled_from([None, 5.0, 20.0]),
    )
    def place_call(self, at: Address, to: IdentityId, n: int, lifetime: float | None) -> None:
        self.place(at, to, n, lifetime)

    @rule(at=st.sampled_from(PHONES), to=st.sampled_from(CALLEES), n=st.integers(0, 999))
    def change_of_mind(self, at: Address, to: IdentityId, n: int) -> None:
        """Place a call and hang up at once: the stop may overtake its start."""
        placed = self.placed
        self.place(at, to, n, None)
        if self.placed > placed:
            call_id = f"{n:03d}-{self.placed}"
            self.net.do(at, Hangup(now=self.net.now, call_id=call_id))

    @rule(at=st.sampled_from(PROXIED), n=st.integers(0, 999))
    def call_the_app(self, at: Address, n: int) -> None:
        """Olga's bound call to bob, or bob's call to the hunt group (alice, carol)."""
        self.place(at, APP, n, None)

    @rule(x=st.sampled_from(PHONES), y=st.sampled_from(PHONES), n=st.integers(0, 999))
    def glare(self, x: Address, y: Address, n: int) -> None:
        """Both sides place a call to each other at the same instant."""
        if x.identity != y.identity:
            self.place(x, y.identity, n, None)
            self.place(y, x.identity, 999 - n, None)

    @rule(command=st.sampled_from(COMMANDS), index=st.integers(0, 20))
    def act(self, command: type[Busy | Decline | Hangup | Fail] | None, index: int) -> None:
        """A user (on a device that is online) does something to one of its calls;
        ``None`` is accept."""
        calls = [
            (at, call)
            for at in PHONES
            if at not in self.net.offline
            for call in sorted(self.phone(at).calls.values(), key=lambda c: c.call_id)
        ]
        if not calls:
            return
        at, call = calls[index % len(calls)]
        before, outputs = call.state, len(self.net.outputs[at])
        event: Command = (
            Accept(now=self.net.now, call_id=call.call_id, peer_info="answer")
            if command is None
            else command(now=self.net.now, call_id=call.call_id)
        )
        try:
            self.net.do(at, event)
        except IllegalTransition:
            assert call.state is before and len(self.net.outputs[at]) == outputs
            assert self.phone(at).calls[call.call_id] is call

    @rule(index=st.integers(0, 50))
    def deliver(self, index: int) -> None:
        envelope = self.envelope(index)
        if envelope is not None:
            self.net.deliver(envelope)
            self.settle()

    @rule()
    def catch_up(self) -> None:
        """The network delivers everything it can, in order."""
        self.net.flush()
        self.settle()

    @rule(index=st.integers(0, 50))
    def duplicate(self, index: int) -> None:
        envelope = self.envelope(index, ready=False)
        if envelope is not None:
            self.net.pending.append(envelope)

    @rule(index=st.integers(0, 50))
    def drop(self, index: int) -> None:
        envelope = self.envelope(index, ready=False)
        if envelope is not None:
            self.net.pending.remove(envelope)
            self.dropped = True

    @rule(seconds=st.sampled_from([0.5, 1.0, 4.0, 10.0, 29.0, 31.0, 61.0]))
    def advance(self, seconds: float) -> None:
        self.net.advance(seconds)
        self.settle()

    @rule(at=st.sampled_from([*PHONES, P1]), away=st.booleans())
    def presence(self, at: Address, away: bool) -> None:
        if away == (at in self.net.offline):
            return
        if away:
            self.net.offline.add(at)
        else:
            self.net.offline.discard(at)
        event = PeerGone if away else PeerBack
        for other in self.net.nodes:
            if other != at:
                self.net.do(other, event(now=self.net.now, identity=at.identity, device=at.device))

    @rule(index=st.integers(0, 5))
    def proxy_fails(self, index: int) -> None:
        bridges = sorted(self.proxy.bridges)
        if bridges:
            self.net.do(P1, Fail(now=self.net.now, call_id=bridges[index % len(bridges)]))

    # -- invariants ---------------------------------------------------------------------

    def histories(self) -> dict[Key, list[Ringing | Connected | Ended | Send]]:
        seen: dict[Key, list[Ringing | Connected | Ended | Send]] = {}
        for at, outputs in self.net.outputs.items():
            for output in outputs:
                if isinstance(output, Ended):
                    key = (at, output.call_id, output.record.peer)
                elif isinstance(output, Send):
                    if output.kind is not MessageType.VOICE_START:
                        continue
                    key = (at, output.call_id, output.recipient)
                else:
                    key = (at, output.call_id, output.peer)
                seen.setdefault(key, []).append(output)
        return seen

    @invariant()
    def a_call_ends_once_and_stays_ended(self) -> None:
        for key, history in self.histories().items():
            ends = [i for i, o in enumerate(history) if isinstance(o, Ended)]
            assert len(ends) <= 1, (key, history)
            assert not ends or ends[0] == len(history) - 1, (key, history)

    @invariant()
    def records_have_a_reason_and_ordered_times(self) -> None:
        for outputs in self.net.outputs.values():
            for output in outputs:
                if isinstance(output, Ended):
                    r = output.record
                    assert isinstance(r.reason, EndReason)
                    times = [r.started, r.ringing, r.answered, r.ended]
                    present = [t for t in times if t is not None]
                    assert present == sorted(present), r
                    if r.answered is None:
                        assert r.duration == 0, r
                    if r.answered is None and r.ringing is not None:  # it rang, unanswered
                        assert r.ended <= r.started + MAX_LIFETIME, r

    @invariant()
    def nothing_rings_past_its_lifetime(self) -> None:
        calls = [c for at in PHONES for c in self.phone(at).calls.values()]
        calls += [leg for bridge in self.proxy.bridges.values() for leg in bridge.legs()]
        for call in calls:
            if call.state in (CallState.DIALING, CallState.RINGING):
                assert self.net.now < call.ring_deadline <= call.started + MAX_LIFETIME, call

    @invariant()
    def no_ghost_rings(self) -> None:
        """A device that was told a call is over (its caller's stop, a sibling's answer)
        never rings for it afterwards, whatever duplicates or late starts arrive."""
        told = {
            (e.to, e.send.call_id)
            for e in self.net.delivered
            if e.kind in ENDINGS or (e.kind is ACCEPT and e.sender.identity == e.to.identity)
            if e.send.data.get("answered_by") != e.to.device
        }
        for at in PHONES:
            for call in self.phone(at).calls.values():
                if call.state is CallState.RINGING:
                    assert (at, call.call_id) not in told, call

    @invariant()
    def proxied_legs_end_together(self) -> None:
        for bridge in self.proxy.bridges.values():
            assert bridge.inbound.live, bridge
            if bridge.winner is not None:
                assert bridge.outbound[bridge.winner].live, bridge
            else:
                assert any(leg.live for leg in bridge.outbound.values()), bridge

    @invariant()
    def the_proxy_wakes_at_the_earliest_deadline_of_its_legs(self) -> None:
        legs = (leg for bridge in self.proxy.bridges.values() for leg in bridge.legs())
        earliest = min((d for leg in legs if (d := leg.deadline()) is not None), default=None)
        assert self.proxy.next_deadline() == earliest

    @invariant()
    def the_proxy_counts_each_partys_live_legs(self) -> None:
        # What the hunt group asks of it: an operator with a live leg is not hunted.
        live: dict[IdentityId, Counter[str]] = {}
        for bridge in self.proxy.bridges.values():
            for leg in bridge.legs():
                if leg.live:
                    live.setdefault(leg.peer, Counter())[leg.call_id] += 1
        assert self.proxy._live_legs == live

    @invariant()
    def live_calls_are_not_remembered_as_ended(self) -> None:
        for at in PHONES:
            phone = self.phone(at)
            for call_id, call in phone.calls.items():
                assert call.live and phone.record(call_id) is None

    # -- the end ------------------------------------------------------------------------

    def teardown(self) -> None:
        net = self.net
        for at in sorted(net.offline):
            self.presence(at, away=False)
        for _ in range(5):  # deliver everything; let every lifetime run out
            self.drain()
            net.advance(MAX_LIFETIME + 1)
            self.check_all()
        self.drain()
        for at in PHONES:
            for call in self.phone(at).calls.values():
                assert call.state is CallState.CONNECTED, call
        if not self.dropped:
            self.check_partners()
        for at in PHONES:
            for call in list(self.phone(at).calls.values()):
                net.do(at, Hangup(now=net.now, call_id=call.call_id))
        self.drain()
        assert self.proxy.bridges == {} or self.dropped, self.proxy.bridges
        for call_id in list(self.proxy.bridges):
            net.do(P1, Fail(now=net.now, call_id=call_id))
        net.flush()
        assert all(not self.phone(at).calls for at in PHONES)
        ends = Counter(
            key
            for key, history in self.histories().items()
            for output in history
            if isinstance(output, Ended)
        )
        for key in self.histories():
            assert ends[key] == 1, (key, self.histories()[key])

    def drain(self) -> None:
        """Deliver everything in order, one message at a time, checking as we go."""
        while ready := self.net.deliverable():
            self.net.deliver(ready[0])
            self.settle()
            self.check_all()

    def check_all(self) -> None:
        self.a_call_ends_once_and_stays_ended()
        self.records_have_a_reason_and_ordered_times()
        self.nothing_rings_past_its_lifetime()
        self.no_ghost_rings()
        self.proxied_legs_end_together()
        self.live_calls_are_not_remembered_as_ended()

    def check_partners(self) -> None:
        """Nothing lost: every connected call is connected to a call connected to it."""
        for at in PHONES:
            for call in self.phone(at).calls.values():
                assert call.peer_device is not None
                partner = self.net.nodes[Address(call.peer, call.peer_device)]
                if isinstance(partner, Proxy):
                    bridge = partner.bridges[call.call_id]
                    leg = bridge.leg_of(at.identity)
                else:
                    leg = partner.calls.get(call.call_id)
                assert leg is not None and leg.state is CallState.CONNECTED, (call, leg)
                assert leg.peer_device == DeviceId(at.device), (call, leg)


CallNetwork.TestCase.settings = settings(max_examples=200, stateful_step_count=60, deadline=None)
test_call_network = CallNetwork.TestCase

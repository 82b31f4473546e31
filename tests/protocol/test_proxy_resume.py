"""The proxy core saved after every input and restored at random steps behaves exactly
as one that never stopped.

Two cores take the same random inputs: starts, accepts, stops and busies from the
parties of a bound cid and of a hunt group (on the right cids and wrong ones, for
call_ids that exist and that do not), presence, failures and time. One runs on; after
every input the other hands what changed (:meth:`Proxy.take_changes`) to a store kept
here, which keeps the latest of each call_id and forgets ended ones beyond the memory
size as the real stores do; at random steps it is thrown away and a new core is built
from the store (:meth:`Proxy.restore`). After every step both gave the same outputs (or
refused the input alike), have the same deadline, and no live bridge has one leg up with
the other ended.
"""

from __future__ import annotations

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule
from tests.protocol.test_proxy import assert_legs_together

from parley.errors import ParleyError
from parley.ids import DeviceId, IdentityId
from parley.protocol.call import EndReason
from parley.protocol.call_io import Fail, Output, PeerBack, PeerGone, ProxyInput, Received, Tick
from parley.protocol.messages import MessageType
from parley.protocol.proxy import Binding, Pool, Proxy, ProxyConfig
from parley.protocol.proxy_state import (
    Away,
    Kept,
    decode_away,
    decode_kept,
    encode_away,
    encode_kept,
)

APP = IdentityId("app")
OLGA, BOB, EVE, ALICE, CAROL = (IdentityId(n) for n in ("olga", "bob", "eve", "alice", "carol"))
DEVICES = {OLGA: ["o1"], BOB: ["b1", "b2"], EVE: ["e1"], ALICE: ["a1"], CAROL: ["c1"]}
PARTIES = sorted(DEVICES)
CIDS = ["conv", "hunt", "other"]
CALL_IDS = ["k1", "k2", "k3", "k4", "k5"]
CONFIG = ProxyConfig(ring_lifetime=20, max_ring_lifetime=40, grace=5, memory=3)
KINDS = [
    MessageType.VOICE_START,
    MessageType.VOICE_ACCEPT,
    MessageType.VOICE_STOP,
    MessageType.VOICE_BUSY,
]


def new_core() -> Proxy:
    core = Proxy(APP, DeviceId("p1"), config=CONFIG)
    core.bind(Binding(cid="conv", operator=OLGA, operator_name="Olga", customer=BOB))
    core.bind_pool(Pool(cid="hunt", customer=EVE, operators=(ALICE, CAROL)))
    return core


class Store:
    """What a proxy store keeps of the core: the encoded form, as on disk."""

    def __init__(self) -> None:
        self.rows: dict[str, bytes] = {}
        self.away: bytes | None = None

    def save(self, core: Proxy) -> None:
        changes = core.take_changes()
        for kept in changes.kept:
            self.rows[kept.call_id] = encode_kept(kept)
        if changes.away is not None:
            self.away = encode_away(changes.away)
        ended = sorted((k for k in self.load() if not k.live), key=lambda k: k.rank)
        for gone in ended[: max(0, len(ended) - CONFIG.memory)]:
            del self.rows[gone.call_id]

    def load(self) -> list[Kept]:
        return [decode_kept(row) for row in self.rows.values()]

    def restored(self) -> Proxy:
        core = new_core()
        away: tuple[Away, ...] = () if self.away is None else decode_away(self.away)
        core.restore(self.load(), away)
        return core


class ResumedProxy(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.now = 1000.0
        self.steady = new_core()
        self.store = Store()
        self.resumed = new_core()
        self.kills = 0

    def feed(self, event: ProxyInput) -> None:
        expected: list[Output] | type[ParleyError]
        try:
            expected = self.steady.handle(event)
        except ParleyError as exc:
            expected = type(exc)
        got: list[Output] | type[ParleyError]
        try:
            got = self.resumed.handle(event)
        except ParleyError as exc:
            got = type(exc)
        self.store.save(self.resumed)
        assert got == expected, event

    @rule(
        party=st.sampled_from(PARTIES),
        device=st.integers(0, 1),
        kind=st.sampled_from(KINDS),
        cid=st.sampled_from(CIDS),
        call_id=st.sampled_from(CALL_IDS),
        reason=st.sampled_from([*EndReason, None]),
        lifetime=st.sampled_from([None, 1, 5, 30]),
        age=st.integers(0, 3),
    )
    def message(
        self,
        party: IdentityId,
        device: int,
        kind: MessageType,
        cid: str,
        call_id: str,
        reason: EndReason | None,
        lifetime: int | None,
        age: int,
    ) -> None:
        devices = DEVICES[party]
        data: dict[str, object] = {}
        if reason is not None and kind in (MessageType.VOICE_STOP, MessageType.VOICE_BUSY):
            data["reason"] = reason.value
        if lifetime is not None and kind is MessageType.VOICE_START:
            data["lifetime"] = lifetime
        self.feed(
            Received(
                now=self.now,
                kind=kind,
                issuer=party,
                device=DeviceId(devices[device % len(devices)]),
                iat=int(self.now) - age,
                cid=cid,
                call_id=call_id,
                peer_info="sdp",
                data=data,
            )
        )

    def receive(
        self,
        kind: MessageType,
        party: IdentityId,
        device: str,
        cid: str,
        call_id: str,
        **data: object,
    ) -> None:
        self.feed(
            Received(
                now=self.now,
                kind=kind,
                issuer=party,
                device=DeviceId(device),
                iat=int(self.now),
                cid=cid,
                call_id=call_id,
                peer_info="sdp",
                data=data,
            )
        )

    @rule(
        route=st.sampled_from([(OLGA, "conv"), (EVE, "hunt"), (BOB, "conv")]),
        call_id=st.sampled_from(CALL_IDS),
    )
    def place(self, route: tuple[IdentityId, str], call_id: str) -> None:
        party, cid = route
        self.receive(MessageType.VOICE_START, party, DEVICES[party][0], cid, call_id)

    def a_leg(self, pick: int, outbound: bool) -> tuple[IdentityId, str, str] | None:
        """A party of a live bridge (the inbound one, or one called): who, cid, call_id."""
        bridges = sorted(self.steady.bridges.values(), key=lambda b: b.call_id)
        if not bridges:
            return None
        bridge = bridges[pick % len(bridges)]
        legs = list(bridge.outbound.values()) if outbound else [bridge.inbound]
        return legs[pick % len(legs)].peer, bridge.cid, bridge.call_id

    @rule(pick=st.integers(0, 7), device=st.integers(0, 1))
    def answer(self, pick: int, device: int) -> None:
        leg = self.a_leg(pick, outbound=True)
        if leg is not None:
            party, cid, call_id = leg
            devices = DEVICES[party]
            self.receive(
                MessageType.VOICE_ACCEPT, party, devices[device % len(devices)], cid, call_id
            )

    @rule(
        pick=st.integers(0, 7),
        outbound=st.booleans(),
        kind=st.sampled_from([MessageType.VOICE_STOP, MessageType.VOICE_BUSY]),
        reason=st.sampled_from(list(EndReason)),
    )
    def hang_up(self, pick: int, outbound: bool, kind: MessageType, reason: EndReason) -> None:
        leg = self.a_leg(pick, outbound)
        if leg is not None:
            party, cid, call_id = leg
            self.receive(kind, party, DEVICES[party][0], cid, call_id, reason=reason.value)

    @rule(dt=st.sampled_from([0.5, 1.0, 3.0, 10.0]))
    def time_passes(self, dt: float) -> None:
        self.now += dt
        self.feed(Tick(now=self.now))

    @rule()
    def next_deadline_comes(self) -> None:
        deadline = self.steady.next_deadline()
        if deadline is not None:
            self.now = max(self.now, deadline)
        self.feed(Tick(now=self.now))

    @rule(party=st.sampled_from(PARTIES), device=st.integers(0, 1), back=st.booleans())
    def presence(self, party: IdentityId, device: int, back: bool) -> None:
        devices = DEVICES[party]
        which = DeviceId(devices[device % len(devices)])
        kind = PeerBack if back else PeerGone
        self.feed(kind(now=self.now, identity=party, device=which))

    @rule(call_id=st.sampled_from(CALL_IDS), peer=st.sampled_from([None, *PARTIES]))
    def failure(self, call_id: str, peer: IdentityId | None) -> None:
        self.feed(Fail(now=self.now, call_id=call_id, peer=peer, detail="refused"))

    @rule()
    def crash_and_restart(self) -> None:
        self.resumed = self.store.restored()
        self.kills += 1

    @invariant()
    def same_as_never_stopped(self) -> None:
        assert self.resumed.next_deadline() == self.steady.next_deadline()
        assert sorted(self.resumed.bridges) == sorted(self.steady.bridges)
        assert_legs_together(self.resumed)


ResumedProxy.TestCase.settings = settings(max_examples=150, stateful_step_count=60, deadline=None)
test_resumed_proxy = ResumedProxy.TestCase


def test_a_restored_core_starts_with_nothing_to_save() -> None:
    store = Store()
    core = new_core()
    core.handle(
        Received(
            now=1000.0,
            kind=MessageType.VOICE_START,
            issuer=OLGA,
            device=DeviceId("o1"),
            iat=1000,
            cid="conv",
            call_id="k1",
            peer_info="offer",
        )
    )
    store.save(core)
    restored = store.restored()
    assert not restored.take_changes()
    assert list(restored.bridges) == ["k1"]
    assert restored.bridges["k1"].outbound[BOB].state == "dialing"

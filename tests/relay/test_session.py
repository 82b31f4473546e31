"""The relay session on its own: frames in, queries answered by hand, effects out.

No relay, no store, no event loop: :class:`Node` answers the session's queries from
plain dictionaries and records every query and effect, so each test says exactly what
the session asked and did.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import msgspec
import pytest

from parley.errors import IllegalTransition, KeyChainError, RegistrationRefused
from parley.protocol import frames
from parley.protocol.frames import (
    Ack,
    Authenticate,
    DeviceRef,
    Done,
    ErrorCode,
    KeyCount,
    Send,
    Welcome,
)
from parley.protocol.keychain import KeyChain, KeyOp
from parley.relay import effects as fx
from parley.relay.bus.events import ChainChanged, PermitsChanged, Revoked
from parley.relay.config import RegistrationPolicy, RelayConfig
from parley.relay.directory import Registration
from parley.relay.effects import Effect, Query, Work
from parley.relay.invites import token_hash
from parley.relay.prekeys import InvalidKeys
from parley.relay.session import Phase, Session, covers, diagnose
from parley.relay.store import (
    Claim,
    IdentityKey,
    InboxRow,
    KeyStatus,
    StoreResult,
    StoreStatus,
)

from .helpers import FakeClock, Identity

F = TypeVar("F", bound=frames.Frame)

NONCE = b"n" * 32
KEY = IdentityKey(b"k" * 32, b"s" * 64)


@dataclass
class Node:
    """Answers queries as a node would, from what the test put here."""

    chains: dict[str, KeyChain] = field(default_factory=dict)
    permits: dict[str, set[str]] = field(default_factory=dict)
    keys: dict[str, dict[str, IdentityKey]] = field(default_factory=dict)
    confirmed: int = 0
    key_status: KeyStatus | None = None
    stored_from: bool = False
    store: Callable[[frames.Envelope], StoreResult] = lambda _: StoreResult(
        StoreStatus.STORED, (InboxRow("bob", "d1", 1),)
    )
    delivered: int = 0
    registration: Registration = Registration.CREATED
    wait: float | None = None  # what a Charge is answered: None, a token was there
    asked: list[Query[Any]] = field(default_factory=list)
    # A hook run before each answer, to change the world between two queries.
    before: Callable[[Query[Any]], None] = lambda _: None

    def answer(self, query: Query[Any]) -> Any:
        self.asked.append(query)
        self.before(query)
        match query:
            case fx.LoadChain(identity=identity):
                return self.chains.get(identity)
            case fx.LoadPermits(owner=owner):
                return self.permits.get(owner, set())
            case fx.LoadIdentityKeys(identity=identity):
                return self.keys.get(identity, {})
            case fx.LoadConfirmedOffset():
                return self.confirmed
            case fx.LoadKeyStatus():
                return self.key_status
            case fx.SaveKeys():
                return self.key_status
            case fx.LoadStoredFrom():
                return self.stored_from
            case fx.StoreEnvelope(envelope=envelope):
                return self.store(envelope)
            case fx.DeliveredUpTo():
                return self.delivered
            case fx.TakeKeys(identity=identity):
                claims = [
                    Claim("d1", b"o" * 32, False, KeyStatus(9, True)),
                    Claim("d2", b"f" * 32, True, KeyStatus(0, True)),
                    Claim("d3", b"p" * 32, False, KeyStatus(50, True)),
                    Claim("d4", b"q" * 32, False, KeyStatus(10, True)),
                ]
                return [], claims
            case fx.AppendEntry(identity=identity, entry=entry):
                chain = self.chains[identity]
                body = chain.check(entry)
                chain.append(entry)
                return body
            case fx.CreateIdentity():
                return self.registration
            case fx.Charge() | fx.ChargeRegistration():
                return self.wait
            case _:
                return None

    def run(self, work: Work[None]) -> list[Effect]:
        """Drive ``work`` to its end, spawned work included (run after it, in order)."""
        effects: list[Effect] = []
        spawned: list[Work[None]] = [work]
        while spawned:
            current = spawned.pop(0)
            try:
                step = next(current)
                while True:
                    if isinstance(step, Query):
                        try:
                            answer = self.answer(step)
                        except Exception as exc:
                            step = current.throw(exc)
                        else:
                            step = current.send(answer)
                    else:
                        if isinstance(step, fx.Spawn):
                            spawned.append(step.work)
                        effects.append(step)
                        step = current.send(None)
            except StopIteration:
                pass
        return effects


@pytest.fixture
def alice() -> Identity:
    return Identity.create("alice")


@pytest.fixture
def bob() -> Identity:
    return Identity.create("bob")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def node(alice: Identity, bob: Identity) -> Node:
    return Node(chains={"alice": alice.chain, "bob": bob.chain}, permits={"bob": {"alice"}})


def auth_frame(ident: Identity, device: str = "d1", resume_after: int = 0) -> Authenticate:
    message = frames.auth_message(NONCE, ident.id, device)
    return Authenticate(
        identity=ident.id,
        device=device,
        signature=ident.keys[device].sign(message),
        resume_after=resume_after,
    )


def session_of(
    ident: Identity, node: Node, clock: FakeClock, config: RelayConfig | None = None
) -> Session:
    """A session that authenticated as ``ident``'s d1."""
    session = Session(config or RelayConfig(), clock, NONCE)
    node.run(session.receive(auth_frame(ident)))
    assert session.phase is Phase.ACTIVE
    node.asked.clear()
    return session


def rejections(effects: list[Effect]) -> list[tuple[int | None, ErrorCode]]:
    return [(e.ref, e.code) for e in effects if isinstance(e, fx.Reject)]


def replies(effects: list[Effect]) -> list[frames.Frame]:
    return [e.frame for e in effects if isinstance(e, fx.Reply)]


def wire(frame: F) -> F:
    """``frame`` as the relay gets it: decoded, so none of its strings is the session's."""
    decoded = frames.decode_client_frame(frames.encode(frame))
    assert isinstance(decoded, type(frame))
    return decoded


def send(recipient: str = "bob", **fields: Any) -> Send:
    values: dict[str, Any] = {
        "ref": 7,
        "envelope_id": "e1",
        "recipient": recipient,
        "body": b"x",
        "expires_at": FakeClock().now + 60,
    }
    values.update(fields)
    return Send(**values)


# -- the handshake ----------------------------------------------------------------------


def test_the_challenge_carries_the_nonce_and_the_body_limit(clock: FakeClock) -> None:
    session = Session(RelayConfig(max_body=1234), clock, NONCE)
    assert session.challenge() == frames.Challenge(nonce=NONCE, max_body=1234)


def test_a_request_before_authenticating_is_refused_and_changes_nothing(
    node: Node, clock: FakeClock
) -> None:
    session = Session(RelayConfig(), clock, NONCE)
    effects = node.run(session.receive(send()))
    assert effects == [fx.Reject(7, ErrorCode.NOT_AUTHENTICATED, "authenticate first")]
    assert node.asked == []
    assert session.phase is Phase.HANDSHAKE


def test_authenticating_attaches_after_the_larger_of_both_offsets(
    alice: Identity, node: Node, clock: FakeClock
) -> None:
    node.confirmed = 5
    node.key_status = KeyStatus(50, True)
    session = Session(RelayConfig(), clock, NONCE)
    effects = node.run(session.receive(auth_frame(alice, resume_after=3)))
    assert effects == [
        fx.Reply(Welcome(identity="alice", device="d1", resume_after=5)),
        fx.Attach("alice", "d1", 5),
    ]
    assert session.phase is Phase.ACTIVE
    assert (session.identity, session.device) == ("alice", "d1")
    effects = Node(chains=node.chains, confirmed=5).run(
        Session(RelayConfig(), clock, NONCE).receive(auth_frame(alice, resume_after=9))
    )
    assert fx.Attach("alice", "d1", 9) in effects


@pytest.mark.parametrize(
    ("status", "told"),
    [
        (None, False),  # never published: nothing to count
        (KeyStatus(50, True), False),
        (KeyStatus(9, True), True),  # below ONE_TIME_KEYS_LOW = 10
        (KeyStatus(10, True), False),
        (KeyStatus(50, False), True),  # its fallback key was handed out
    ],
)
def test_a_device_low_on_keys_is_told_as_it_authenticates(
    alice: Identity, node: Node, clock: FakeClock, status: KeyStatus | None, told: bool
) -> None:
    node.key_status = status
    effects = node.run(Session(RelayConfig(), clock, NONCE).receive(auth_frame(alice)))
    counts = [f for f in replies(effects) if isinstance(f, KeyCount)]
    assert counts == (
        [KeyCount(one_time_keys=status.one_time_keys, fallback_key=status.fallback_key)]
        if told and status is not None
        else []
    )


def test_a_bad_signature_closes_with_auth_failed(
    alice: Identity, node: Node, clock: FakeClock
) -> None:
    session = Session(RelayConfig(), clock, NONCE)
    frame = msgspec.structs.replace(auth_frame(alice), signature=b"\0" * 64)
    effects = node.run(session.receive(frame))
    assert effects == [
        fx.Reject(None, ErrorCode.AUTH_FAILED, "bad signature"),
        fx.Close(4003, "auth_failed"),
    ]
    assert session.phase is Phase.CLOSED
    # A closed session does nothing more, whatever comes.
    assert node.run(session.receive(auth_frame(alice))) == []


def test_an_unknown_device_and_a_revoked_one_are_told_apart_only_with_its_key(
    alice: Identity, node: Node, clock: FakeClock
) -> None:
    alice.chain.append(alice.next_entry(KeyOp.ADD, "d2", "d1"))
    alice.chain.append(alice.next_entry(KeyOp.REVOKE, "d2", "d1"))
    proven = node.run(Session(RelayConfig(), clock, NONCE).receive(auth_frame(alice, "d2")))
    assert proven == [
        fx.Reject(None, ErrorCode.DEVICE_REVOKED, "this device was revoked"),
        fx.Close(4001, "device_revoked"),
    ]
    forged = msgspec.structs.replace(auth_frame(alice, "d2"), signature=b"\0" * 64)
    unproven = node.run(Session(RelayConfig(), clock, NONCE).receive(forged))
    assert rejections(unproven) == [(None, ErrorCode.AUTH_FAILED)]
    assert fx.Close(4003, "auth_failed") in unproven


def test_a_device_revoked_while_its_offset_is_read_is_refused(
    alice: Identity, node: Node, clock: FakeClock
) -> None:
    alice.chain.append(alice.next_entry(KeyOp.ADD, "d2", "d1"))

    def revoke_meanwhile(query: Query[Any]) -> None:
        if isinstance(query, fx.LoadConfirmedOffset):
            node.chains["alice"] = KeyChain.from_entries(
                "alice", [*alice.chain.entries, alice.next_entry(KeyOp.REVOKE, "d2", "d1")]
            )

    node.before = revoke_meanwhile
    session = Session(RelayConfig(), clock, NONCE)
    effects = node.run(session.receive(auth_frame(alice, "d2")))
    assert rejections(effects) == [(None, ErrorCode.DEVICE_REVOKED)]
    assert not any(isinstance(e, fx.Attach) for e in effects)
    assert session.phase is Phase.CLOSED


def test_timing_out_closes_only_before_authentication(
    alice: Identity, node: Node, clock: FakeClock
) -> None:
    waiting = Session(RelayConfig(), clock, NONCE)
    assert waiting.timed_out() == [fx.Close(4008, "authentication timeout")]
    assert waiting.phase is Phase.CLOSED
    with pytest.raises(IllegalTransition):
        session_of(alice, node, clock).timed_out()


def test_registering_answers_taken_and_invalid_chains(
    alice: Identity, node: Node, clock: FakeClock
) -> None:
    session = Session(RelayConfig(), clock, NONCE)
    register = frames.Register(ref=3, entry=alice.genesis, name="Alice")
    assert replies(node.run(session.receive(register))) == [
        frames.Registered(ref=3, identity="alice")
    ]
    assert fx.CreateIdentity(alice.genesis, "Alice", clock.now) in node.asked

    node.registration = Registration.TAKEN
    assert rejections(node.run(session.receive(register))) == [(3, ErrorCode.IDENTITY_EXISTS)]

    def invalid(query: Query[Any]) -> None:
        if isinstance(query, fx.CreateIdentity):
            raise KeyChainError("no")

    node.before = invalid
    assert rejections(node.run(session.receive(register))) == [(3, ErrorCode.INVALID_KEY_CHAIN)]
    assert session.phase is Phase.HANDSHAKE


# -- sending ----------------------------------------------------------------------------


def test_a_send_is_stored_then_acknowledged_then_routed(
    alice: Identity, node: Node, clock: FakeClock
) -> None:
    session = session_of(alice, node, clock)
    effects = node.run(session.receive(send(expires_at=clock.now + 10**9)))
    spawn, ack, route = effects
    assert isinstance(spawn, fx.Spawn)
    assert ack == fx.Reply(Ack(ref=7, envelope_id="e1"))
    assert isinstance(route, fx.Route)
    assert route.rows == (InboxRow("bob", "d1", 1),)
    envelope = route.envelope
    assert (envelope.sender, envelope.sender_device, envelope.recipient) == ("alice", "d1", "bob")
    assert envelope.sent_at == clock.now
    # No envelope outlives the relay's limit, whatever the sender asks for.
    assert envelope.expires_at == clock.now + RelayConfig().max_lifetime


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (StoreStatus.DUPLICATE, [fx.Reply(Ack(ref=7, envelope_id="e1"))]),
        (
            StoreStatus.CONFLICT,
            [
                fx.Reject(
                    7,
                    ErrorCode.CONFLICT,
                    "envelope_id is taken by another message (another sender or recipient)",
                )
            ],
        ),
    ],
)
def test_a_retry_is_acknowledged_once_stored_and_a_taken_id_refused(
    alice: Identity, node: Node, clock: FakeClock, status: StoreStatus, expected: list[Effect]
) -> None:
    node.store = lambda _: StoreResult(status)
    effects = node.run(session_of(alice, node, clock).receive(send()))
    assert effects[1:] == expected  # after the Spawn; nothing is routed


def test_a_store_that_fails_is_reported_and_the_session_goes_on(
    alice: Identity, node: Node, clock: FakeClock
) -> None:
    def broken(envelope: frames.Envelope) -> StoreResult:
        raise OSError("disk gone")

    node.store = broken
    session = session_of(alice, node, clock)
    assert rejections(node.run(session.receive(send()))) == [(7, ErrorCode.INTERNAL)]
    node.store = Node().store
    assert fx.Reply(Ack(ref=7, envelope_id="e1")) in node.run(session.receive(send()))


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        (send(body=b"x" * 101), ErrorCode.TOO_LARGE),
        (send(envelope_id=""), ErrorCode.MALFORMED),
        (send(envelope_id="e" * 129), ErrorCode.MALFORMED),
        (send(recipient="carol"), ErrorCode.UNKNOWN_RECIPIENT),
        (send(recipient="alice"), None),  # to one's own other devices: always allowed
        (send(expires_at=FakeClock().now), ErrorCode.EXPIRED),
        (send(expires_at=math.nan), ErrorCode.EXPIRED),
        (send(envelope_id="e" * 128, body=b"x" * 100), None),
        (send(envelope_id="e"), None),
    ],
)
def test_what_a_send_is_refused_for(
    alice: Identity, node: Node, clock: FakeClock, frame: Send, code: ErrorCode | None
) -> None:
    session = session_of(alice, node, clock, RelayConfig(max_body=100))
    effects = node.run(session.receive(frame))
    assert rejections(effects) == ([] if code is None else [(7, code)])
    assert any(isinstance(e, fx.Route) for e in effects) is (code is None)


def test_a_send_to_someone_who_does_not_permit_is_refused_unless_already_stored(
    alice: Identity, node: Node, clock: FakeClock
) -> None:
    node.permits = {}
    session = session_of(alice, node, clock)
    assert rejections(node.run(session.receive(send()))) == [(7, ErrorCode.NOT_PERMITTED)]
    assert fx.LoadStoredFrom("alice", "bob", "e1") in node.asked
    node.stored_from = True
    effects = node.run(session.receive(send()))
    assert effects == [fx.Reply(Ack(ref=7, envelope_id="e1"))]


def test_an_unknown_recipient_is_refused_even_for_a_stored_id(
    alice: Identity, node: Node, clock: FakeClock
) -> None:
    node.stored_from = True
    session = session_of(alice, node, clock)
    effects = node.run(session.receive(send(recipient="carol")))
    assert rejections(effects) == [(7, ErrorCode.UNKNOWN_RECIPIENT)]
    assert not any(isinstance(q, fx.LoadStoredFrom) for q in node.asked)


def test_a_send_must_be_encrypted_for_exactly_the_current_devices(
    alice: Identity, node: Node, clock: FakeClock
) -> None:
    node.keys = {"bob": {"d1": KEY}, "alice": {"d1": KEY, "d2": KEY}}
    session = session_of(alice, node, clock)
    right = [DeviceRef("alice", "d2", KEY.key), DeviceRef("bob", "d1", KEY.key)]
    for devices, refused in [
        (right, False),
        (right[:1], True),  # bob's device missing
        ([*right, DeviceRef("alice", "d1", KEY.key)], True),  # the sending device itself
        ([right[0], DeviceRef("bob", "d1", b"o" * 32)], True),  # an old identity key
        ([right[0], right[0]], True),  # as many refs, but one twice and bob's missing
    ]:
        effects = node.run(session.receive(send(devices=devices)))
        assert rejections(effects) == ([(7, ErrorCode.STALE_DEVICES)] if refused else [])


@pytest.mark.parametrize(
    "frame",
    [
        send(),
        frames.ClaimKeys(ref=7, identity="bob", sessions={}),
        frames.GetKeys(ref=7, identity="bob"),
        frames.Watch(ref=7, identities=["bob"]),
        frames.Unwatch(ref=7, identities=["bob"]),
        frames.Permit(ref=7, identity="bob"),
        frames.Unpermit(ref=7, identity="bob"),
        frames.ListConnections(ref=7),
        frames.PublishKeys(ref=7, identity_key=b"k" * 32, signature=b"s" * 64),
    ],
)
def test_every_request_is_charged_and_refused_with_a_retry_after_when_over_budget(
    alice: Identity, node: Node, clock: FakeClock, frame: frames.ClientFrame
) -> None:
    session = session_of(alice, node, clock)
    node.wait = 0.25
    effects = node.run(session.receive(frame))
    message = "too many requests; slow down"
    # Refused, and the connection left unread for as long: TCP holds the client back.
    assert effects == [
        fx.Reject(7, ErrorCode.RATE_LIMITED, message, retry_after=0.25),
        fx.Pause(0.25),
    ]
    # Charged to this device (and so its identity), and nothing else done.
    assert [q for q in node.asked if not isinstance(q, fx.LoadChain)] == [fx.Charge("alice", "d1")]


def test_a_confirm_takes_no_token_and_one_that_moves_nothing_is_not_written(
    alice: Identity, node: Node, clock: FakeClock
) -> None:
    node.confirmed = 3
    session = session_of(alice, node, clock)
    node.wait = 1.0  # over budget: a confirm goes through all the same
    node.delivered = 10
    for offset in (2, 3, 5, 5, 4, 6):
        node.run(session.receive(frames.Confirm(offset=offset)))
    saved = [q.offset for q in node.asked if isinstance(q, fx.SaveConfirm)]
    assert saved == [5, 6]
    assert not any(isinstance(q, fx.Charge) for q in node.asked)


def test_registrations_are_charged_to_the_address_and_names_bounded(
    alice: Identity, node: Node, clock: FakeClock
) -> None:
    session = Session(RelayConfig(max_name=5), clock, NONCE)
    long_name = frames.Register(ref=1, entry=alice.genesis, name="Alice!")
    assert rejections(node.run(session.receive(long_name))) == [(1, ErrorCode.MALFORMED)]
    assert not any(isinstance(q, fx.CreateIdentity) for q in node.asked)
    node.wait = 3.0
    fine = frames.Register(ref=2, entry=alice.genesis, name="Alice")
    assert node.run(session.receive(fine)) == [
        fx.Reject(
            2,
            ErrorCode.RATE_LIMITED,
            "too many registrations from this address; retry later",
            retry_after=3.0,
        ),
        fx.Pause(3.0),
    ]
    assert not any(isinstance(q, fx.CreateIdentity) for q in node.asked)


# -- other requests ---------------------------------------------------------------------


def test_a_revoked_device_is_refused_everything(
    alice: Identity, node: Node, clock: FakeClock
) -> None:
    alice.chain.append(alice.next_entry(KeyOp.ADD, "d2", "d1"))
    session = session_of(alice, node, clock)
    alice.chain.append(alice.next_entry(KeyOp.REVOKE, "d1", "d2"))  # by its other device
    requests: list[frames.ClientFrame] = [
        send(),
        frames.Confirm(offset=1),
        frames.Permit(ref=7, identity="bob"),
    ]
    for frame in requests:
        assert rejections(node.run(session.receive(frame))) == [
            (getattr(frame, "ref", None), ErrorCode.DEVICE_REVOKED)
        ]
    assert {type(q) for q in node.asked} == {fx.LoadChain}


def test_a_confirm_cannot_reach_past_what_was_delivered(
    alice: Identity, node: Node, clock: FakeClock
) -> None:
    session = session_of(alice, node, clock)
    node.delivered = 4
    effects = node.run(session.receive(frames.Confirm(offset=9)))
    assert fx.SaveConfirm("alice", "d1", 4) in node.asked
    assert [type(e) for e in effects] == [fx.Spawn]
    node.delivered = 0
    node.asked.clear()
    assert node.run(session.receive(frames.Confirm(offset=9))) == []
    assert not any(isinstance(q, fx.SaveConfirm) for q in node.asked)


def test_a_watch_is_all_or_nothing(
    alice: Identity, bob: Identity, node: Node, clock: FakeClock
) -> None:
    carol = Identity.create("carol")
    node.chains["carol"] = carol.chain
    session = session_of(alice, node, clock)
    watch = frames.Watch(ref=5, identities=["bob", "carol"])
    assert node.run(session.receive(watch)) == [
        fx.Reject(5, ErrorCode.NOT_PERMITTED, "'carol' does not accept messages from 'alice'")
    ]
    node.permits["carol"] = {"alice"}
    assert node.run(session.receive(watch)) == [
        fx.Reply(Done(ref=5)),
        fx.Watch("bob"),
        fx.Watch("carol"),
    ]
    unknown = frames.Watch(ref=6, identities=["bob", "dave"])
    assert rejections(node.run(session.receive(unknown))) == [(6, ErrorCode.UNKNOWN_IDENTITY)]
    unwatch = frames.Unwatch(ref=8, identities=["bob"])
    assert node.run(session.receive(unwatch)) == [fx.Unwatch("bob"), fx.Reply(Done(ref=8))]


def test_permitting_is_saved_published_and_unpermitting_stops_watches(
    alice: Identity, node: Node, clock: FakeClock
) -> None:
    session = session_of(alice, node, clock)
    assert node.run(session.receive(frames.Permit(ref=1, identity="bob"))) == [
        fx.Publish(PermitsChanged(owner="alice")),
        fx.Reply(Done(ref=1)),
    ]
    assert fx.SavePermit("alice", "bob") in node.asked
    assert rejections(node.run(session.receive(frames.Permit(ref=2, identity="zed")))) == [
        (2, ErrorCode.UNKNOWN_IDENTITY)
    ]
    assert not any(isinstance(q, fx.SavePermit) and q.peer == "zed" for q in node.asked)
    assert node.run(session.receive(frames.Unpermit(ref=3, identity="bob"))) == [
        fx.Publish(PermitsChanged(owner="alice")),
        fx.UnwatchBy(watcher="bob", owner="alice"),
        fx.Reply(Done(ref=3)),
    ]
    assert fx.SaveUnpermit("alice", "bob") in node.asked


def test_revoking_a_device_publishes_and_kicks_it(
    alice: Identity, node: Node, clock: FakeClock
) -> None:
    session = session_of(alice, node, clock)
    add = alice.next_entry(KeyOp.ADD, "d2", "d1")
    effects = node.run(session.receive(frames.AppendKey(ref=1, entry=add)))
    assert effects == [fx.Reply(Done(ref=1)), fx.Publish(ChainChanged(identity="alice"))]
    revoke = alice.next_entry(KeyOp.REVOKE, "d2", "d1")
    effects = node.run(session.receive(frames.AppendKey(ref=2, entry=revoke)))
    assert effects == [
        fx.Reply(Done(ref=2)),
        fx.Publish(ChainChanged(identity="alice")),
        fx.Publish(Revoked(identity="alice", device="d2")),
        fx.Revoke("alice", "d2"),
    ]
    stale = node.run(session.receive(frames.AppendKey(ref=3, entry=revoke)))
    assert rejections(stale) == [(3, ErrorCode.INVALID_KEY_CHAIN)]


def test_claims_need_a_permit_and_tell_devices_low_on_keys(
    alice: Identity, bob: Identity, node: Node, clock: FakeClock
) -> None:
    session = session_of(alice, node, clock)
    node.permits = {}
    claim = frames.ClaimKeys(ref=4, identity="bob", sessions={})
    assert rejections(node.run(session.receive(claim))) == [(4, ErrorCode.NOT_PERMITTED)]
    node.permits = {"bob": {"alice"}}
    effects = node.run(session.receive(claim))
    assert replies(effects) == [frames.ClaimedKeys(ref=4, identity="bob", devices=[])]
    # Low (9 < 10) and fallback handed out: told; 50 or exactly 10 left: not.
    assert [e for e in effects if isinstance(e, fx.TellKeysLow)] == [
        fx.TellKeysLow("bob", "d1", KeyStatus(9, True)),
        fx.TellKeysLow("bob", "d2", KeyStatus(0, True)),
    ]
    assert fx.TakeKeys("bob", {}, None) in node.asked
    own = wire(frames.ClaimKeys(ref=5, identity="alice", sessions={}))
    node.run(session.receive(own))
    # Claiming one's own identity's keys never claims the asking device's.
    assert fx.TakeKeys("alice", {}, "d1") in node.asked


def test_a_second_authenticate_is_unsupported(
    alice: Identity, node: Node, clock: FakeClock
) -> None:
    session = session_of(alice, node, clock)
    assert rejections(node.run(session.receive(auth_frame(alice)))) == [
        (None, ErrorCode.UNSUPPORTED)
    ]
    assert session.phase is Phase.ACTIVE


# -- pure helpers -----------------------------------------------------------------------


def test_undecodable_frames_are_answered_with_their_ref_when_readable(clock: FakeClock) -> None:
    session = Session(RelayConfig(), clock, NONCE)
    unknown_tag = msgspec.msgpack.encode({"t": "nope", "ref": 12})
    assert session.undecodable(unknown_tag, "bad") == fx.Reject(12, ErrorCode.UNSUPPORTED, "bad")
    assert diagnose(msgspec.msgpack.encode({"t": "send", "ref": True})) == (
        ErrorCode.MALFORMED,
        None,
    )
    assert diagnose(msgspec.msgpack.encode([1, 2])) == (ErrorCode.MALFORMED, None)
    assert diagnose(b"\xc1") == (ErrorCode.MALFORMED, None)
    assert diagnose(b"\x91" * 1200 + b"\x00") == (ErrorCode.MALFORMED, None)
    assert session.undecodable(None, "text") == fx.Reject(None, ErrorCode.MALFORMED, "text")


def test_covers_wants_every_device_but_the_sender_s_own() -> None:
    keys = {"bob": {"d1": KEY}, "alice": {"d1": KEY}}
    assert covers([DeviceRef("bob", "d1", KEY.key)], "alice", "d1", keys)
    assert not covers([], "alice", "d1", keys)
    duplicated = [DeviceRef("bob", "d1", KEY.key)] * 2
    assert not covers(duplicated, "alice", "d1", keys)


@pytest.mark.parametrize(
    ("policy", "token", "expected", "invite"),
    [
        (RegistrationPolicy.OPEN, None, None, None),
        (RegistrationPolicy.OPEN, "t0k3n", None, None),  # not needed: not used up either
        (RegistrationPolicy.TOKEN, "t0k3n", None, token_hash("t0k3n")),
        (RegistrationPolicy.TOKEN, "t", None, token_hash("t")),  # MAX_TOKEN is 1-128
        (RegistrationPolicy.TOKEN, "x" * 128, None, token_hash("x" * 128)),
        (RegistrationPolicy.TOKEN, None, ErrorCode.INVALID_INVITE, None),
        (RegistrationPolicy.TOKEN, "x" * 129, ErrorCode.MALFORMED, None),
        (RegistrationPolicy.TOKEN, "", ErrorCode.MALFORMED, None),
        (RegistrationPolicy.CLOSED, "t0k3n", ErrorCode.REGISTRATION_CLOSED, None),
    ],
)
def test_registration_follows_the_relay_s_policy(
    alice: Identity,
    node: Node,
    clock: FakeClock,
    policy: RegistrationPolicy,
    token: str | None,
    expected: ErrorCode | None,
    invite: bytes | None,
) -> None:
    session = Session(RelayConfig(registration=policy), clock, NONCE)
    register = frames.Register(ref=1, entry=alice.genesis, token=token)
    effects = node.run(session.receive(register))
    created = [q for q in node.asked if isinstance(q, fx.CreateIdentity)]
    if expected is None:
        assert replies(effects) == [frames.Registered(ref=1, identity="alice")]
        assert [q.invite for q in created] == [invite]
    else:
        assert rejections(effects) == [(1, expected)]
        assert created == []
        assert not any(isinstance(q, fx.ChargeRegistration) for q in node.asked)


def test_an_invitation_the_store_refuses_is_answered_invalid_invite(
    alice: Identity, node: Node, clock: FakeClock
) -> None:
    def refuse(query: Query[Any]) -> None:
        if isinstance(query, fx.CreateIdentity):
            raise RegistrationRefused("used", code="invalid_invite")

    node.before = refuse
    session = Session(RelayConfig(registration=RegistrationPolicy.TOKEN), clock, NONCE)
    register = frames.Register(ref=1, entry=alice.genesis, token="t0k3n")
    assert node.run(session.receive(register)) == [fx.Reject(1, ErrorCode.INVALID_INVITE, "used")]


def test_a_long_wait_pauses_the_connection_only_so_long(
    alice: Identity, node: Node, clock: FakeClock
) -> None:
    session = session_of(alice, node, clock)
    node.wait = 60.0
    effects = node.run(session.receive(frames.ListConnections(ref=1)))
    assert effects[-1] == fx.Pause(5.0)  # then it may try again, and is told again


# -- limits and orderings a client sees --------------------------------------------------


@pytest.mark.parametrize(("length", "code"), [(128, None), (129, ErrorCode.MALFORMED)])
def test_a_name_is_at_most_128_characters_by_default(
    alice: Identity, node: Node, clock: FakeClock, length: int, code: ErrorCode | None
) -> None:
    session = Session(RelayConfig(), clock, NONCE)
    register = frames.Register(ref=1, entry=alice.genesis, name="n" * length)
    effects = node.run(session.receive(register))
    if code is None:
        assert effects == [fx.Reply(frames.Registered(ref=1, identity="alice"))]
    else:
        assert effects == [fx.Reject(1, code, "a name is at most 128 characters")]


def test_a_device_claiming_an_identity_sorted_before_its_own_may_get_every_device(
    alice: Identity, bob: Identity, node: Node, clock: FakeClock
) -> None:
    node.permits["alice"] = {"bob"}
    session = session_of(bob, node, clock)
    claim = wire(frames.ClaimKeys(ref=4, identity="alice", sessions={}))
    node.run(session.receive(claim))
    assert [q for q in node.asked if isinstance(q, fx.TakeKeys)] == [fx.TakeKeys("alice", {}, None)]


def test_a_sender_sorted_after_its_recipient_must_encrypt_for_every_recipient_device(
    alice: Identity, bob: Identity, node: Node, clock: FakeClock
) -> None:
    # Only the sending device itself is left out, wherever it sorts among the others.
    node.permits["alice"] = {"bob"}
    node.keys = {"alice": {"d1": KEY, "d2": KEY}, "bob": {"d1": KEY, "d0": KEY}}
    session = session_of(bob, node, clock)
    right = [
        DeviceRef("alice", "d1", KEY.key),
        DeviceRef("alice", "d2", KEY.key),
        DeviceRef("bob", "d0", KEY.key),
    ]
    for devices, refused in [(right, False), (right[1:], True), (right[:2], True)]:
        effects = node.run(session.receive(send("alice", devices=devices)))
        assert rejections(effects) == ([(7, ErrorCode.STALE_DEVICES)] if refused else [])


def test_a_recipient_with_300_devices_can_be_sent_to(
    alice: Identity, node: Node, clock: FakeClock
) -> None:
    # No limit on devices: counts past any small-int cache compare as numbers.
    node.keys = {"bob": {f"d{i}": KEY for i in range(300)}}
    session = session_of(alice, node, clock)
    devices = [DeviceRef("bob", f"d{i}", KEY.key) for i in range(300)]
    effects = node.run(session.receive(send(devices=devices)))
    assert rejections(effects) == []
    assert fx.Reply(Ack(ref=7, envelope_id="e1")) in effects
    effects = node.run(session.receive(send(devices=devices[1:])))
    assert rejections(effects) == [(7, ErrorCode.STALE_DEVICES)]


def publish_frame(ident: Identity, identity_key: bytes = b"k" * 32) -> frames.PublishKeys:
    message = frames.identity_key_message(ident.id, "d1", identity_key)
    return frames.PublishKeys(
        ref=7,
        identity_key=identity_key,
        signature=ident.keys["d1"].sign(message),
        one_time_keys=[b"o" * 32],
        fallback_key=b"f" * 32,
    )


def test_published_keys_are_saved_published_and_counted(
    alice: Identity, node: Node, clock: FakeClock
) -> None:
    node.key_status = KeyStatus(1, True)
    session = session_of(alice, node, clock)
    frame = publish_frame(alice)
    effects = node.run(session.receive(frame))
    assert effects == [
        fx.Publish(ChainChanged(identity="alice")),
        fx.Reply(KeyCount(ref=7, one_time_keys=1, fallback_key=True)),
    ]
    key = IdentityKey(frame.identity_key, frame.signature)
    assert fx.SaveKeys("alice", "d1", key, [b"o" * 32], b"f" * 32) in node.asked


def test_published_keys_that_do_not_check_are_refused_malformed_and_not_saved(
    alice: Identity, node: Node, clock: FakeClock
) -> None:
    session = session_of(alice, node, clock)
    short = publish_frame(alice, identity_key=b"k" * 31)
    assert node.run(session.receive(short)) == [
        fx.Reject(7, ErrorCode.MALFORMED, "an identity key is 32 bytes")
    ]
    assert not any(isinstance(q, fx.SaveKeys) for q in node.asked)


def test_published_keys_the_store_refuses_are_refused_malformed_and_not_announced(
    alice: Identity, node: Node, clock: FakeClock
) -> None:
    def full(query: Query[Any]) -> None:
        if isinstance(query, fx.SaveKeys):
            raise InvalidKeys("a device holds at most 200 one-time keys")

    node.before = full
    session = session_of(alice, node, clock)
    assert node.run(session.receive(publish_frame(alice))) == [
        fx.Reject(7, ErrorCode.MALFORMED, "a device holds at most 200 one-time keys")
    ]

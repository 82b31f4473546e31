"""The inbox alone: deliveries put in by hand, opened in the clear, verified for real.

The inbox's parts around it are its real State, Handlers and Verifier; the sealed body
is the signed payload itself (opening is :mod:`parley.client.e2ee`'s, tested there),
and the connection records the confirms. Deliveries put before ``start()`` are one
backlog, so the batches they form are known exactly.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pytest

from parley.client.connection import Connection
from parley.client.e2ee import EndToEnd
from parley.client.handlers import Handlers, Observed
from parley.client.inbox import BATCH, Inbox
from parley.client.state import State
from parley.client.verify import Verifier
from parley.crypto import jws
from parley.crypto.keys import SigningKey
from parley.errors import DeliveryTimeout, RelayConnectionError, RelayError
from parley.protocol.frames import Deliver, Envelope
from parley.protocol.messages import Message, VoiceStart, VoiceStop

from .helpers import WAIT, KnownKeys

NOW = 1_900_000_000
SELF, DEVICE = "i-middle", "d-same"
BELOW, ABOVE = "i-aaaa", "i-zzzz"  # other identities, on both sides of ours in sort order


class _Relay:
    """The connection as the inbox uses it: confirms, and whether it has failed."""

    def __init__(self) -> None:
        self.confirms: list[int] = []
        self.failure: RelayError | None = None
        self._changed = asyncio.Event()

    async def confirm(self, offset: int) -> None:
        self.confirms.append(offset)
        self._changed.set()

    async def confirmed(self, offset: int) -> None:
        """Wait for a confirm of ``offset``: everything before it has been handled."""
        async with asyncio.timeout(WAIT):
            while offset not in self.confirms:
                self._changed.clear()
                await self._changed.wait()


@dataclass
class _Plain:
    """Sealed bodies that are the payload itself; an envelope id may first fail to open
    (errors raised in turn) or wait on a gate."""

    failures: dict[str, list[Exception]] = field(default_factory=dict)
    gates: dict[str, asyncio.Event] = field(default_factory=dict)
    opening: asyncio.Event = field(default_factory=asyncio.Event)

    async def open(self, envelope: Envelope, sender_keys_version: int) -> bytes:
        errors = self.failures.get(envelope.id)
        if errors:
            raise errors.pop(0)
        gate = self.gates.get(envelope.id)
        if gate is not None:
            self.opening.set()
            await gate.wait()
        return envelope.body

    def wrap_kept(self, payload: bytes) -> Callable[[], bytes]:
        return lambda: payload

    def unwrap_kept(self, kept: bytes) -> bytes:
        return kept


class Harness:
    def __init__(self, state: State) -> None:
        self.keys = {name: SigningKey.generate() for name in (SELF, BELOW, ABOVE)}
        self.now = NOW
        self.state = state
        self.relay = _Relay()
        self.plain = _Plain()
        self.handlers = Handlers()
        self.rejected: Counter[str] = Counter()
        self.handled: list[tuple[str, str]] = []  # (issuer, call_id)
        self.observed: list[tuple[str, bool]] = []  # (call_id, own copy)
        self.handlers.subscribe(
            VoiceStop, lambda issuer, m: self.handled.append((issuer, m.call_id))
        )
        self.handlers.observe(self._observe)
        self.inbox = Inbox(
            identity=SELF,
            device=DEVICE,
            connection=cast(Connection, self.relay),
            state=state,
            e2ee=cast(EndToEnd, self.plain),
            verifier=Verifier(SELF, KnownKeys(self.keys), state, lambda: self.now),
            handlers=self.handlers,
            rejected=self.rejected,
            clock=lambda: self.now,
        )
        self._offset = 0

    def _handle(self, issuer: str, message: VoiceStop) -> None:
        self.handled.append((issuer, message.call_id))

    def _observe(self, observed: Observed) -> None:
        self.observed.append((getattr(observed.message, "call_id", ""), observed.own_copy))

    def deliver(
        self,
        call_id: str,
        *,
        sender: str = BELOW,
        recipient: str = SELF,
        device: str = "d-1",
        offset: int | None = None,
        kind: type[Message] = VoiceStop,
        **claims: Any,
    ) -> Deliver:
        """Put a signed message from ``sender`` in the inbox, at the next offset."""
        fields: dict[str, Any] = dict(sub=recipient, aud=recipient, iat=self.now)
        fields.update(exp=self.now + 60, jti=uuid.uuid4().hex, cid="cid-1", call_id=call_id)
        fields.update(claims)
        token = jws.sign(kind(iss=sender, **fields), self.keys[sender], kid=device)
        if offset is None:
            self._offset += 1
            offset = self._offset
        envelope = Envelope(
            id=call_id,
            sender=sender,
            sender_device=device,
            recipient=recipient,
            body=token,
            sent_at=self.now,
            expires_at=self.now + 60,
        )
        deliver = Deliver(offset=offset, envelope=envelope, sender_keys_version=1)
        self.inbox.put(deliver)
        return deliver

    @property
    def call_ids(self) -> list[str]:
        return [call_id for _, call_id in self.handled]


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[Harness]:
    state = State(tmp_path / "state.db", identity=SELF, device=DEVICE)
    harness = Harness(state)
    yield harness
    await harness.inbox.stop()
    state.close()


async def test_a_backlog_is_handled_in_order_and_confirmed_every_batch(harness: Harness) -> None:
    for i in range(1, 201):
        harness.deliver(f"m{i}")
    harness.inbox.start()
    await harness.relay.confirmed(200)
    assert harness.call_ids == [f"m{i}" for i in range(1, 201)]
    # The relay hears a confirm of each batch's last offset: at least every BATCH.
    assert BATCH == 64
    assert harness.relay.confirms == [64, 128, 192, 200]
    assert harness.state.offset == 200


async def test_a_lone_delivery_is_confirmed_at_once(harness: Harness) -> None:
    harness.inbox.start()
    harness.deliver("first")
    await harness.relay.confirmed(1)
    harness.deliver("second")
    await harness.relay.confirmed(2)
    assert harness.relay.confirms == [1, 2] and harness.call_ids == ["first", "second"]


async def test_redelivered_offsets_are_skipped_not_rejected(harness: Harness) -> None:
    harness.inbox.start()
    first, second, third = (harness.deliver(f"m{i}") for i in (1, 2, 3))
    await harness.relay.confirmed(3)
    for again in (second, third, first):  # below and at the last offset processed
        harness.inbox.put(again)
    harness.deliver("m4")
    await harness.relay.confirmed(4)
    assert harness.call_ids == ["m1", "m2", "m3", "m4"]
    assert harness.rejected == Counter()  # skipped by offset, never seen as replays
    assert harness.relay.confirms == [3, 4]


async def test_a_rejected_delivery_does_not_hold_back_the_rest_of_its_batch(
    harness: Harness,
) -> None:
    harness.deliver("expired", exp=NOW - 1)
    harness.deliver("good")
    harness.inbox.start()
    await harness.relay.confirmed(2)
    assert harness.call_ids == ["good"] and harness.relay.confirms == [2]
    assert harness.rejected == Counter(expired=1)


async def test_messages_from_other_identities_reach_the_handlers(harness: Harness) -> None:
    # Device ids belong to their identity: another identity's device may share ours.
    for sender in (BELOW, ABOVE):
        harness.deliver(f"from-{sender}", sender=sender, device=DEVICE)
    # What is signed decides, not the envelope's recipient (relay metadata).
    for sender in (BELOW, ABOVE):
        harness.deliver(f"for-us-{sender}", sender=sender, recipient=ABOVE, sub=SELF, aud=SELF)
    harness.inbox.start()
    await harness.relay.confirmed(4)
    assert harness.handled == [
        (BELOW, f"from-{BELOW}"),
        (ABOVE, f"from-{ABOVE}"),
        (BELOW, f"for-us-{BELOW}"),
        (ABOVE, f"for-us-{ABOVE}"),
    ]
    assert harness.observed == [(c, False) for c in harness.call_ids]


async def test_copies_of_our_own_sends_reach_observers_only(harness: Harness) -> None:
    for to in (BELOW, ABOVE):  # another device of ours sent these, to either side
        harness.deliver(f"to-{to}", sender=SELF, recipient=to, device="d-other")
    harness.deliver("this-device", sender=SELF, recipient=ABOVE, device=DEVICE)
    harness.deliver("last")
    harness.inbox.start()
    await harness.relay.confirmed(4)
    assert harness.call_ids == ["last"]
    # What this very device sent to us was not sealed for it: nobody sees it.
    assert harness.observed == [(f"to-{BELOW}", True), (f"to-{ABOVE}", True), ("last", False)]
    assert harness.rejected == Counter()


async def test_a_message_without_a_handler_is_dropped_and_logged(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="parley.client.inbox")
    harness.deliver("unhandled", kind=VoiceStart, peer_info="v=0")
    harness.deliver("handled")
    harness.inbox.start()
    await harness.relay.confirmed(2)
    assert harness.call_ids == ["handled"]
    dropped = [r.getMessage() for r in caplog.records if "no handler" in r.getMessage()]
    assert dropped == ["no handler for chat.voice.start; dropped offset 1"]


async def test_a_delivery_that_cannot_be_verified_yet_is_retried(harness: Harness) -> None:
    harness.deliver("before")
    later = harness.deliver("later")
    harness.plain.failures[later.envelope.id] = [DeliveryTimeout("keys"), RelayError("busy")]
    harness.deliver("after")
    harness.inbox.start()
    await harness.relay.confirmed(3)
    assert harness.call_ids == ["before", "later", "after"]
    # What came before it was committed and confirmed before the retries.
    assert harness.relay.confirms == [1, 3]


async def test_the_inbox_stops_once_the_connection_has_failed(harness: Harness) -> None:
    harness.deliver("before")
    doomed = harness.deliver("doomed")
    harness.plain.failures[doomed.envelope.id] = [RelayConnectionError("gone")] * 3
    harness.relay.failure = RelayError("this device was revoked")
    harness.deliver("never")
    harness.inbox.start()
    task = harness.inbox._task
    assert task is not None
    async with asyncio.timeout(WAIT):
        await task  # ends by itself: no retrying on a connection that will not come back
    assert harness.call_ids == ["before"] and harness.relay.confirms == [1]
    assert harness.state.offset == 1


async def test_a_stop_hands_what_was_recorded_to_the_handlers(harness: Harness) -> None:
    harness.deliver("recorded")
    stuck = harness.deliver("stuck")
    harness.plain.gates[stuck.envelope.id] = asyncio.Event()  # never opens
    harness.inbox.start()
    task = harness.inbox._task
    async with asyncio.timeout(WAIT):
        await harness.plain.opening.wait()
    await harness.inbox.stop()
    assert task is not None and task.done()
    assert harness.call_ids == ["recorded"] and harness.relay.confirms == [1]
    assert harness.state.offset == 1  # "stuck" comes again after a restart


async def test_a_handler_that_stops_the_inbox_ends_it_when_it_returns(harness: Harness) -> None:
    async def stop_here(issuer: str, message: VoiceStop) -> None:
        harness.handled.append((issuer, message.call_id))
        await harness.inbox.stop()  # as a handler closing the client does

    harness.handlers.subscribe(VoiceStop, stop_here)
    harness.deliver("last one")
    harness.inbox.start()
    task = harness.inbox._task
    assert task is not None
    async with asyncio.timeout(WAIT):
        await task
    assert harness.call_ids == ["last one"] and harness.relay.confirms == [1]


async def test_expired_replay_entries_are_pruned_every_256_records(harness: Harness) -> None:
    harness.inbox.start()
    first = [harness.deliver(f"early{i}") for i in range(100)]
    await harness.relay.confirmed(100)
    harness.now = NOW + 61  # the first hundred have expired
    for i in range(155):
        harness.deliver(f"late{i}", exp=harness.now + 60)
    await harness.relay.confirmed(255)
    early_jti = jws.parse(first[0].envelope.body).message.jti
    assert harness.state.is_seen(BELOW, early_jti)  # 255 records: no prune yet
    last = harness.deliver("the 256th", exp=harness.now + 60)
    await harness.relay.confirmed(256)
    assert not harness.state.is_seen(BELOW, early_jti)
    late_jti = jws.parse(last.envelope.body).message.jti
    assert harness.state.is_seen(BELOW, late_jti)
    harness.now = NOW + 200  # and again, every 256
    for i in range(255):
        harness.deliver(f"later{i}", exp=harness.now + 60)
    await harness.relay.confirmed(511)
    assert harness.state.is_seen(BELOW, late_jti)
    harness.deliver("the 512th", exp=harness.now + 60)
    await harness.relay.confirmed(512)
    assert not harness.state.is_seen(BELOW, late_jti)


class _Saver:
    """An observer's ``until_saved``: notes, at each call, the offset the state file had
    recorded by then and the call ids the harness's observers had seen."""

    def __init__(self, harness: Harness) -> None:
        self.calls: list[tuple[int, int]] = []  # (state offset, observed so far)
        self._harness = harness

    async def __call__(self) -> None:
        self.calls.append((self._harness.state.offset, len(self._harness.observed)))


def _saving(harness: Harness) -> _Saver:
    saver = _Saver(harness)
    harness.handlers.observe(lambda observed: None, before_record=True, until_saved=saver)
    return saver


async def test_a_backlog_is_saved_once_before_any_of_it_is_recorded(harness: Harness) -> None:
    saver = _saving(harness)
    first, second, _ = (harness.deliver(f"m{i}") for i in (1, 2, 3))
    harness.deliver("expired", exp=NOW - 1)  # rejected: recorded in its place all the same
    for again in (second, first):  # redelivered while the first ones are held: skipped
        harness.inbox.put(again)
    harness.deliver("m5")
    harness.inbox.start()
    await harness.relay.confirmed(5)
    # One save for the whole backlog, before anything of it was recorded.
    assert saver.calls == [(0, 0)]
    assert harness.call_ids == ["m1", "m2", "m3", "m5"]
    assert harness.rejected == Counter(expired=1)
    assert harness.state.offset == 5 and harness.relay.confirms == [5]


async def test_each_batch_of_a_long_backlog_is_saved_before_its_records(harness: Harness) -> None:
    saver = _saving(harness)
    for i in range(1, BATCH + 3):
        harness.deliver(f"m{i}")
    harness.inbox.start()
    await harness.relay.confirmed(BATCH + 2)
    # A batch is at most BATCH deliveries, held ones too; each is saved before its
    # records, after the batch before it was handed on.
    assert saver.calls == [(0, 0), (BATCH, BATCH)]
    assert harness.relay.confirms == [BATCH, BATCH + 2]

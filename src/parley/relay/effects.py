"""What a relay session asks of its node, and what it tells it to do.

A :class:`~parley.relay.session.Session` does no I/O. Handling a frame is a generator
(:data:`Work`) that yields steps:

- a :class:`Query` needs an answer from the node (a key chain, the permits, a store
  write's result); the node answers it, usually from a cache or the store, and sends the
  answer back into the generator with ``send`` (or a failure with ``throw``);
- an :class:`Effect` needs none (a reply to write, an event to publish, a delivery to
  route); the node applies it at once, without waiting for anything, so effects keep the
  order they were yielded in, and nothing runs between a query's answer and the effects
  that follow it.

Each query class names the type of its answer, so ``answer = yield from ask(query)``
is typed. Tests drive a session by answering its queries themselves.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from typing import Any, Generic, TypeAlias, TypeVar

from parley.protocol.frames import ClaimedDevice, Envelope, ErrorCode, Frame
from parley.protocol.keychain import ChainEntry, EntryBody, KeyChain
from parley.relay.bus.events import BusEvent
from parley.relay.directory import Registration
from parley.relay.store import Claim, IdentityKey, InboxRow, KeyStatus, StoreResult

T = TypeVar("T")


class Query(Generic[T]):
    """A question the node answers; ``T`` is the type of the answer."""

    __slots__ = ()


class Effect:
    """Something the node does at once; it answers nothing."""

    __slots__ = ()


Step: TypeAlias = "Query[Any] | Effect"
Work: TypeAlias = Generator[Step, Any, T]


def ask(query: Query[T]) -> Generator[Step, Any, T]:
    """Yield ``query`` and return its answer, typed: ``x = yield from ask(query)``."""
    answer: T = yield query
    return answer


# -- queries ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LoadChain(Query[KeyChain | None]):
    """The key chain of ``identity`` (None: no such identity)."""

    identity: str


@dataclass(frozen=True, slots=True)
class LoadPermits(Query[set[str]]):
    """Who ``owner`` accepts messages from (the answer must not be changed)."""

    owner: str


@dataclass(frozen=True, slots=True)
class LoadIdentityKeys(Query[dict[str, IdentityKey]]):
    """The published identity keys of ``identity``'s active devices."""

    identity: str


@dataclass(frozen=True, slots=True)
class LoadConfirmedOffset(Query[int]):
    identity: str
    device: str


@dataclass(frozen=True, slots=True)
class LoadKeyStatus(Query[KeyStatus | None]):
    """What a device holds; None if it published no identity key."""

    identity: str
    device: str


@dataclass(frozen=True, slots=True)
class LoadStoredFrom(Query[bool]):
    """Whether an envelope ``envelope_id`` from ``sender`` to ``recipient`` is stored."""

    sender: str
    recipient: str
    envelope_id: str


@dataclass(frozen=True, slots=True)
class DeliveredUpTo(Query[int]):
    """The highest offset written to this session's connection."""


@dataclass(frozen=True, slots=True)
class Charge(Query[float | None]):
    """Take a token from the budgets of ``identity:device``: None if taken, else the
    seconds until one is there."""

    identity: str
    device: str


@dataclass(frozen=True, slots=True)
class ChargeRegistration(Query[float | None]):
    """Take a token from the registration budget of this connection's network address:
    None if taken, else the seconds until one is there."""


@dataclass(frozen=True, slots=True)
class CreateIdentity(Query[Registration]):
    """Register the identity ``genesis`` creates; raises KeyChainError if invalid."""

    genesis: ChainEntry
    name: str | None
    now: float
    invite: bytes | None = None  # an invitation token's hash, used up if it registers


@dataclass(frozen=True, slots=True)
class AppendEntry(Query[EntryBody]):
    """Extend a key chain; raises KeyChainError if ``entry`` does not extend it."""

    identity: str
    entry: ChainEntry


@dataclass(frozen=True, slots=True)
class SavePermit(Query[None]):
    owner: str
    peer: str


@dataclass(frozen=True, slots=True)
class SaveUnpermit(Query[None]):
    owner: str
    peer: str


@dataclass(frozen=True, slots=True)
class StoreEnvelope(Query[StoreResult]):
    envelope: Envelope


@dataclass(frozen=True, slots=True)
class SaveConfirm(Query[None]):
    """Everything up to ``offset`` was handled by the device: delete it."""

    identity: str
    device: str
    offset: int


@dataclass(frozen=True, slots=True)
class SaveKeys(Query[KeyStatus]):
    """Store checked keys; raises InvalidKeys past the one-time key limit."""

    identity: str
    device: str
    key: IdentityKey
    one_time_keys: list[bytes]
    fallback_key: bytes | None


@dataclass(frozen=True, slots=True)
class TakeKeys(Query[tuple[list[ClaimedDevice], list[Claim]]]):
    """Claim a key of every device of ``identity`` but ``exclude`` that ``sessions``
    (device → identity key the claimer has a session with) does not cover."""

    identity: str
    sessions: dict[str, bytes]
    exclude: str | None


# -- effects ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Reply(Effect):
    frame: Frame


@dataclass(frozen=True, slots=True)
class Reject(Effect):
    """Answer ``ref`` with a typed error (counted by code)."""

    ref: int | None
    code: ErrorCode
    message: str
    retry_after: float | None = None


@dataclass(frozen=True, slots=True)
class Close(Effect):
    """Write what is queued, then close the connection with ``code``."""

    code: int
    reason: str


@dataclass(frozen=True, slots=True)
class Attach(Effect):
    """The connection now serves ``identity:device``: deliver its inbox after
    ``resume_after``, count it present, tell the other nodes."""

    identity: str
    device: str
    resume_after: int


@dataclass(frozen=True, slots=True)
class Publish(Effect):
    event: BusEvent


@dataclass(frozen=True, slots=True)
class Route(Effect):
    """``envelope`` is stored in ``rows``: push it to the devices connected here."""

    envelope: Envelope
    rows: tuple[InboxRow, ...]


@dataclass(frozen=True, slots=True)
class Revoke(Effect):
    """``identity:device`` was revoked: close its connections, forget its keys."""

    identity: str
    device: str


@dataclass(frozen=True, slots=True)
class TellKeysLow(Effect):
    """Tell ``identity:device``, wherever it is connected, what it holds now."""

    identity: str
    device: str
    status: KeyStatus


@dataclass(frozen=True, slots=True)
class Watch(Effect):
    """Send this connection the presence of ``identity``, now and on every change."""

    identity: str


@dataclass(frozen=True, slots=True)
class Unwatch(Effect):
    identity: str


@dataclass(frozen=True, slots=True)
class UnwatchBy(Effect):
    """``owner`` no longer permits ``watcher``: stop telling it ``owner``'s presence."""

    watcher: str
    owner: str


@dataclass(frozen=True, slots=True)
class Pause(Effect):
    """Read nothing more from this connection for ``seconds``: a client over its budget
    is held back by TCP flow control instead of being answered frame by frame, so a
    flood costs the relay no more than the requests it lets through."""

    seconds: float


@dataclass(frozen=True, slots=True)
class Spawn(Effect):
    """Run ``work`` beside the connection's next frames (a store write that may join a
    group commit); works spawned by one session start in the order spawned."""

    work: Work[None]

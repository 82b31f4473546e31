"""One client connection's protocol, sans I/O: frames in; replies, store work, events out.

A :class:`Session` decides everything the relay says to one connection: the challenge,
who it is once authenticated, what each request is answered, which envelope is stored
and routed, which bus event another node needs. It reads nothing and writes nothing
itself: :meth:`Session.receive` returns the frame's :data:`~parley.relay.effects.Work`,
a generator of queries (answered by the node, from its caches or the store) and effects
(applied by the node at once); see :mod:`parley.relay.effects`. ``relay/core.py`` is the
asyncio driver that answers and applies them.

A client's mistakes are answered with a typed :class:`~parley.protocol.frames.Error`
and never end the session; only failing to authenticate (or a revocation, which the node
applies to every session of the device) closes it.

The session's phases follow :data:`TRANSITIONS`: ``handshake`` (only Register and
Authenticate are served) → ``active`` → ``closed``.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable, Iterator
from typing import get_args

import msgspec

from parley.crypto.keys import VerifyKey
from parley.errors import BadSignature, IllegalTransition, KeyChainError, RegistrationRefused
from parley.protocol import frames
from parley.protocol.frames import (
    ONE_TIME_KEYS_LOW,
    Ack,
    AppendKey,
    Authenticate,
    Challenge,
    ClaimedKeys,
    ClaimKeys,
    ClientFrame,
    Confirm,
    Connections,
    DeviceRef,
    Done,
    Envelope,
    ErrorCode,
    GetKeys,
    KeyChainFrame,
    KeyCount,
    ListConnections,
    Permit,
    PublishKeys,
    Register,
    Registered,
    Send,
    Unpermit,
    Unwatch,
    Watch,
    Welcome,
)
from parley.protocol.keychain import KeyChain, KeyOp
from parley.relay import effects as fx
from parley.relay.bus.events import ChainChanged, PermitsChanged, Revoked
from parley.relay.config import RegistrationPolicy, RelayConfig
from parley.relay.directory import Registration
from parley.relay.effects import Effect, Work, ask
from parley.relay.invites import MAX_TOKEN, token_hash
from parley.relay.prekeys import InvalidKeys, check_publish
from parley.relay.store import IdentityKey, StoreStatus

logger = logging.getLogger(__name__)

# WebSocket close codes (4000-4999 is the private-use range of RFC 6455 §7.4.2).
CLOSE_REVOKED = 4001
CLOSE_AUTH_FAILED = 4003
CLOSE_AUTH_TIMEOUT = 4008
CLOSE_REPLACED = 4009  # the device connected to another relay node
CLOSE_GOING_AWAY = 1001  # RFC 6455 §7.4.1: the server is going down
CLOSE_TRY_AGAIN_LATER = 1013  # IANA-registered: a limit was reached, come back later

MAX_ENVELOPE_ID = 128
# Longest a connection over its budget is left unread at once (then it may try again).
MAX_PAUSE = 5.0
_CLIENT_TAGS = frozenset(cls.__struct_config__.tag for cls in get_args(ClientFrame))
_raw_decoder = msgspec.msgpack.Decoder()


class Phase(enum.StrEnum):
    HANDSHAKE = "handshake"
    ACTIVE = "active"
    CLOSED = "closed"


class Outcome(enum.StrEnum):
    AUTHENTICATED = "authenticated"
    REFUSED = "refused"  # authentication failed, or the device is revoked
    TIMED_OUT = "timed_out"


TRANSITIONS: dict[tuple[Phase, Outcome], Phase] = {
    (Phase.HANDSHAKE, Outcome.AUTHENTICATED): Phase.ACTIVE,
    (Phase.HANDSHAKE, Outcome.REFUSED): Phase.CLOSED,
    (Phase.HANDSHAKE, Outcome.TIMED_OUT): Phase.CLOSED,
}


class Session:
    """One connection. ``nonce``: the challenge it must sign (random, from the node)."""

    def __init__(self, config: RelayConfig, clock: Callable[[], float], nonce: bytes) -> None:
        self._config = config
        self._clock = clock
        self._nonce = nonce
        self.phase = Phase.HANDSHAKE
        self.identity: str | None = None
        self.device: str | None = None
        self._confirmed = 0  # the highest offset confirmed over this session

    def challenge(self) -> Challenge:
        """The first frame of the connection."""
        return Challenge(nonce=self._nonce, max_body=self._config.max_body)

    def receive(self, frame: ClientFrame) -> Work[None]:
        """What handling ``frame`` takes."""
        match self.phase:
            case Phase.HANDSHAKE:
                return self._handshake(frame)
            case Phase.ACTIVE:
                return self._request(frame)
            case Phase.CLOSED:
                return _nothing()

    def undecodable(self, data: bytes | None, reason: str) -> fx.Reject:
        """The answer to a message that is not a client frame (``data`` None: not even
        a binary message)."""
        code, ref = (ErrorCode.MALFORMED, None) if data is None else diagnose(data)
        return fx.Reject(ref, code, reason)

    def timed_out(self) -> list[Effect]:
        """Not authenticated within the time allowed."""
        self._fire(Outcome.TIMED_OUT)
        return [fx.Close(CLOSE_AUTH_TIMEOUT, "authentication timeout")]

    def _fire(self, outcome: Outcome) -> None:
        try:
            self.phase = TRANSITIONS[(self.phase, outcome)]
        except KeyError:
            raise IllegalTransition(f"session: {outcome} in phase {self.phase}") from None

    # -- before authentication --------------------------------------------------------

    def _handshake(self, frame: ClientFrame) -> Work[None]:
        match frame:
            case Authenticate():
                yield from self._authenticate(frame)
            case Register():
                yield from self._register(frame)
            case _:
                ref = getattr(frame, "ref", None)
                yield fx.Reject(ref, ErrorCode.NOT_AUTHENTICATED, "authenticate first")

    def _register(self, frame: Register) -> Work[None]:
        policy = self._config.registration
        if policy is RegistrationPolicy.CLOSED:
            msg = "this relay registers no new identities"
            yield fx.Reject(frame.ref, ErrorCode.REGISTRATION_CLOSED, msg)
            return
        if frame.token is not None and not 0 < len(frame.token) <= MAX_TOKEN:
            yield fx.Reject(frame.ref, ErrorCode.MALFORMED, f"a token is 1-{MAX_TOKEN} characters")
            return
        if policy is RegistrationPolicy.TOKEN and frame.token is None:
            msg = "this relay registers invited identities only: give an invitation token"
            yield fx.Reject(frame.ref, ErrorCode.INVALID_INVITE, msg)
            return
        wait = yield from ask(fx.ChargeRegistration())
        if wait is not None:
            msg = "too many registrations from this address; retry later"
            yield fx.Reject(frame.ref, ErrorCode.RATE_LIMITED, msg, retry_after=wait)
            yield fx.Pause(min(wait, MAX_PAUSE))
            return
        if frame.name is not None and len(frame.name) > self._config.max_name:
            msg = f"a name is at most {self._config.max_name} characters"
            yield fx.Reject(frame.ref, ErrorCode.MALFORMED, msg)
            return
        invite = (
            token_hash(frame.token)
            if policy is RegistrationPolicy.TOKEN and frame.token is not None
            else None
        )
        create = fx.CreateIdentity(frame.entry, frame.name, self._clock(), invite)
        try:
            outcome = yield from ask(create)
        except KeyChainError as exc:
            yield fx.Reject(frame.ref, ErrorCode.INVALID_KEY_CHAIN, str(exc))
            return
        except RegistrationRefused as exc:
            yield fx.Reject(frame.ref, ErrorCode.INVALID_INVITE, str(exc))
            return
        identity = frame.entry.decoded().identity
        if outcome is Registration.TAKEN:
            yield fx.Reject(frame.ref, ErrorCode.IDENTITY_EXISTS, f"{identity!r} is taken")
            return
        if outcome is Registration.CREATED:
            logger.info("registered identity %s", identity)
        yield fx.Reply(Registered(ref=frame.ref, identity=identity))

    def _authenticate(self, frame: Authenticate) -> Work[None]:
        identity, device = frame.identity, frame.device
        message = frames.auth_message(self._nonce, identity, device)
        chain = yield from ask(fx.LoadChain(identity))
        if chain is None or device not in chain.active:
            # A revoked device learns that it is revoked only by proving it holds the key.
            revoked = chain.revoked.get(device) if chain is not None else None
            if revoked is not None and _verifies(revoked, message, frame.signature):
                yield from self._refuse(ErrorCode.DEVICE_REVOKED, "this device was revoked")
            else:
                yield from self._refuse(ErrorCode.AUTH_FAILED, "unknown identity or device")
            return
        if not _verifies(chain.active[device], message, frame.signature):
            yield from self._refuse(ErrorCode.AUTH_FAILED, "bad signature")
            return
        confirmed = yield from ask(fx.LoadConfirmedOffset(identity, device))
        chain = yield from ask(fx.LoadChain(identity))
        if chain is None or device not in chain.active:  # revoked while we were reading
            yield from self._refuse(ErrorCode.DEVICE_REVOKED, "this device was revoked")
            return
        resume_after = max(frame.resume_after, confirmed)
        self._fire(Outcome.AUTHENTICATED)
        self.identity, self.device = identity, device
        self._confirmed = confirmed
        yield fx.Reply(Welcome(identity=identity, device=device, resume_after=resume_after))
        yield fx.Attach(identity, device, resume_after)
        # Keys claimed while the device was away may have left it low, or handed out its
        # fallback key (or it never published one): say so now.
        status = yield from ask(fx.LoadKeyStatus(identity, device))
        if status is not None and (
            status.one_time_keys < ONE_TIME_KEYS_LOW or not status.fallback_key
        ):
            count = KeyCount(one_time_keys=status.one_time_keys, fallback_key=status.fallback_key)
            yield fx.Reply(count)

    def _refuse(self, code: ErrorCode, message: str) -> Iterator[Effect]:
        self._fire(Outcome.REFUSED)
        yield fx.Reject(None, code, message)
        close_code = CLOSE_REVOKED if code is ErrorCode.DEVICE_REVOKED else CLOSE_AUTH_FAILED
        yield fx.Close(close_code, code.value)

    # -- requests ---------------------------------------------------------------------

    def _request(self, frame: ClientFrame) -> Work[None]:
        identity, device = self.identity, self.device
        assert identity is not None and device is not None
        chain = yield from ask(fx.LoadChain(identity))
        if chain is None or device not in chain.active:
            # A frame read just before this device was revoked: refuse, do nothing.
            ref = getattr(frame, "ref", None)
            yield fx.Reject(ref, ErrorCode.DEVICE_REVOKED, "this device was revoked")
            return
        if isinstance(frame, Confirm):
            # A device cannot confirm (and so delete) what it has not been sent; a confirm
            # that moves nothing costs nothing, so it takes no token either.
            offset = min(frame.offset, (yield from ask(fx.DeliveredUpTo())))
            if offset > self._confirmed:
                self._confirmed = offset
                yield fx.Spawn(_asked(fx.SaveConfirm(identity, device, offset)))
            return
        if not isinstance(frame, Authenticate):
            wait = yield from ask(fx.Charge(identity, device))
            if wait is not None:
                ref = getattr(frame, "ref", None)
                msg = "too many requests; slow down"
                yield fx.Reject(ref, ErrorCode.RATE_LIMITED, msg, retry_after=wait)
                yield fx.Pause(min(wait, MAX_PAUSE))
                return
        yield from self._serve_request(identity, device, chain, frame)

    def _serve_request(
        self, identity: str, device: str, chain: KeyChain, frame: ClientFrame
    ) -> Work[None]:
        match frame:
            case Send():
                yield from self._send(identity, device, frame)
            case Permit(ref=ref, identity=peer):
                if (yield from ask(fx.LoadChain(peer))) is None:
                    yield fx.Reject(ref, ErrorCode.UNKNOWN_IDENTITY, f"no identity {peer!r}")
                    return
                yield from ask(fx.SavePermit(identity, peer))
                yield fx.Publish(PermitsChanged(owner=identity))
                yield fx.Reply(Done(ref=ref))
            case Unpermit(ref=ref, identity=peer):
                yield from ask(fx.SaveUnpermit(identity, peer))
                yield fx.Publish(PermitsChanged(owner=identity))
                yield fx.UnwatchBy(watcher=peer, owner=identity)
                yield fx.Reply(Done(ref=ref))
            case Watch(ref=ref, identities=watched):
                yield from self._watch(identity, ref, watched)
            case Unwatch(ref=ref, identities=watched):
                for whose in watched:
                    yield fx.Unwatch(whose)
                yield fx.Reply(Done(ref=ref))
            case ListConnections(ref=ref):
                peers = sorted((yield from ask(fx.LoadPermits(identity))))
                yield fx.Reply(Connections(ref=ref, identities=peers))
            case GetKeys(ref=ref, identity=whose):
                found = yield from ask(fx.LoadChain(whose))
                if found is None:
                    yield fx.Reject(ref, ErrorCode.UNKNOWN_IDENTITY, f"no identity {whose!r}")
                    return
                entries = list(found.entries)
                yield fx.Reply(KeyChainFrame(ref=ref, identity=whose, entries=entries))
            case AppendKey():
                yield from self._append_key(identity, frame)
            case PublishKeys():
                yield from self._publish_keys(identity, device, chain, frame)
            case ClaimKeys():
                yield from self._claim_keys(identity, device, frame)
            case Register():
                yield from self._register(frame)
            case Authenticate():
                yield fx.Reject(None, ErrorCode.UNSUPPORTED, "already authenticated")

    def _may_message(self, sender: str, recipient: str) -> Work[tuple[ErrorCode, str] | None]:
        """Why ``sender`` may not message (watch, claim keys of) ``recipient``, if not."""
        if (yield from ask(fx.LoadChain(recipient))) is None:
            return ErrorCode.UNKNOWN_IDENTITY, f"no identity {recipient!r}"
        if recipient != sender and sender not in (yield from ask(fx.LoadPermits(recipient))):
            return (
                ErrorCode.NOT_PERMITTED,
                f"{recipient!r} does not accept messages from {sender!r}",
            )
        return None

    def _watch(self, watcher: str, ref: int, watched: list[str]) -> Work[None]:
        # All or nothing: check every identity before watching any.
        for whose in watched:
            refusal = yield from self._may_message(watcher, whose)
            if refusal is not None:
                yield fx.Reject(ref, *refusal)
                return
        # Done first, so the client knows the watch is on before the first Presence.
        yield fx.Reply(Done(ref=ref))
        for whose in watched:
            yield fx.Watch(whose)

    def _send(self, sender: str, device: str, frame: Send) -> Work[None]:
        ref = frame.ref
        now = self._clock()
        if len(frame.body) > self._config.max_body:
            limit = self._config.max_body
            yield fx.Reject(ref, ErrorCode.TOO_LARGE, f"body is over {limit} bytes")
            return
        if not 0 < len(frame.envelope_id) <= MAX_ENVELOPE_ID:
            msg = f"envelope_id must be 1-{MAX_ENVELOPE_ID} characters"
            yield fx.Reject(ref, ErrorCode.MALFORMED, msg)
            return
        refusal = yield from self._send_refusal(sender, device, frame, now)
        if refusal is not None:
            # A retry of a Send stored before things changed (a permission revoked, a
            # device added, its expiry reached) was delivered: say so, not "refused".
            if refusal[0] is not ErrorCode.UNKNOWN_RECIPIENT and (
                yield from ask(fx.LoadStoredFrom(sender, frame.recipient, frame.envelope_id))
            ):
                yield fx.Reply(Ack(ref=ref, envelope_id=frame.envelope_id))
            else:
                yield fx.Reject(ref, *refusal)
            return
        envelope = Envelope(
            id=frame.envelope_id,
            sender=sender,
            sender_device=device,
            recipient=frame.recipient,
            body=frame.body,
            sent_at=now,
            expires_at=min(frame.expires_at, now + self._config.max_lifetime),
        )
        # Stored beside the next frames so that a connection's Sends pipeline into one
        # group commit; spawned work starts in order, so one client's envelopes keep theirs.
        yield fx.Spawn(_store_and_route(ref, envelope))

    def _send_refusal(
        self, sender: str, device: str, frame: Send, now: float
    ) -> Work[tuple[ErrorCode, str] | None]:
        """Why ``frame`` may not be stored now, if it may not."""
        refusal = yield from self._may_message(sender, frame.recipient)
        if refusal is not None:
            code, message = refusal
            if code is ErrorCode.UNKNOWN_IDENTITY:
                return ErrorCode.UNKNOWN_RECIPIENT, message
            return refusal
        keys: dict[str, dict[str, IdentityKey]] = {}
        for whose in sorted({frame.recipient, sender}):
            keys[whose] = yield from ask(fx.LoadIdentityKeys(whose))
        if not covers(frame.devices, sender, device, keys):
            msg = "the message is not encrypted for the current devices; claim keys again"
            return ErrorCode.STALE_DEVICES, msg
        # Written as "not later than now" so that NaN counts as expired too.
        if not frame.expires_at > now:
            return ErrorCode.EXPIRED, "expires_at has passed"
        return None

    def _append_key(self, identity: str, frame: AppendKey) -> Work[None]:
        try:
            body = yield from ask(fx.AppendEntry(identity, frame.entry))
        except KeyChainError as exc:
            yield fx.Reject(frame.ref, ErrorCode.INVALID_KEY_CHAIN, str(exc))
            return
        yield fx.Reply(Done(ref=frame.ref))
        logger.info("key chain of %s now has %s %s", identity, body.op, body.device)
        yield fx.Publish(ChainChanged(identity=identity))
        if body.op is KeyOp.REVOKE:
            yield fx.Publish(Revoked(identity=identity, device=body.device))
            yield fx.Revoke(identity, body.device)

    def _publish_keys(
        self, identity: str, device: str, chain: KeyChain, frame: PublishKeys
    ) -> Work[None]:
        try:
            check_publish(identity, device, chain.active[device], frame)
            key = IdentityKey(frame.identity_key, frame.signature)
            save = fx.SaveKeys(identity, device, key, frame.one_time_keys, frame.fallback_key)
            status = yield from ask(save)
        except InvalidKeys as exc:
            yield fx.Reject(frame.ref, ErrorCode.MALFORMED, str(exc))
            return
        yield fx.Publish(ChainChanged(identity=identity))  # its published keys changed
        yield fx.Reply(
            KeyCount(
                ref=frame.ref,
                one_time_keys=status.one_time_keys,
                fallback_key=status.fallback_key,
            )
        )

    def _claim_keys(self, claimer: str, device: str, frame: ClaimKeys) -> Work[None]:
        ref, whose = frame.ref, frame.identity
        # Only those who may message an identity may use up its one-time keys.
        refusal = yield from self._may_message(claimer, whose)
        if refusal is not None:
            yield fx.Reject(ref, *refusal)
            return
        exclude = device if whose == claimer else None
        devices, claims = yield from ask(fx.TakeKeys(whose, frame.sessions, exclude))
        yield fx.Reply(ClaimedKeys(ref=ref, identity=whose, devices=devices))
        for claim in claims:
            if claim.status.one_time_keys < ONE_TIME_KEYS_LOW or claim.fallback:
                yield fx.TellKeysLow(whose, claim.device, claim.status)


def _store_and_route(ref: int, envelope: Envelope) -> Work[None]:
    try:
        result = yield from ask(fx.StoreEnvelope(envelope))
    except Exception:  # the store failed, not the client: say so, keep the session
        logger.exception("storing envelope %s failed", envelope.id)
        yield fx.Reject(ref, ErrorCode.INTERNAL, "the relay could not store this")
        return
    # Effects only from here on: the node applies them as they come, so the pushes of
    # envelopes stored one after the other stay in commit (offset) order.
    if result.status is StoreStatus.CONFLICT:
        msg = "envelope_id is taken by another message (another sender or recipient)"
        yield fx.Reject(ref, ErrorCode.CONFLICT, msg)
        return
    yield fx.Reply(Ack(ref=ref, envelope_id=envelope.id))
    if result.status is StoreStatus.STORED:
        yield fx.Route(envelope, result.rows)


def _asked(query: fx.Query[None]) -> Work[None]:
    yield from ask(query)


def _nothing() -> Work[None]:
    return
    yield  # a generator that yields nothing


def covers(
    refs: list[DeviceRef], sender: str, device: str, keys: dict[str, dict[str, IdentityKey]]
) -> bool:
    """Whether ``refs`` are exactly the devices a Send from ``sender:device`` must be
    encrypted for: every device in ``keys`` (the recipient's and the sender's active
    devices with a published identity key) but the sending one."""
    expected = {
        (whose, d, k.key)
        for whose, devices in keys.items()
        for d, k in devices.items()
        if (whose, d) != (sender, device)
    }
    return (
        len(refs) == len(expected)
        and {(r.identity, r.device, r.identity_key) for r in refs} == expected
    )


def diagnose(data: bytes) -> tuple[ErrorCode, int | None]:
    """Why a frame did not decode, and its ``ref`` if one can be read to answer it."""
    try:
        raw = _raw_decoder.decode(data)
    except (msgspec.DecodeError, RecursionError):  # msgspec's bound on nesting
        return ErrorCode.MALFORMED, None
    if not isinstance(raw, dict):
        return ErrorCode.MALFORMED, None
    ref = raw.get("ref")
    ref = ref if isinstance(ref, int) and not isinstance(ref, bool) else None
    tag = raw.get("t")
    if isinstance(tag, str) and tag not in _CLIENT_TAGS:
        return ErrorCode.UNSUPPORTED, ref
    return ErrorCode.MALFORMED, ref


def _verifies(key: VerifyKey, message: bytes, signature: bytes) -> bool:
    try:
        key.verify(message, signature)
    except BadSignature:
        return False
    return True

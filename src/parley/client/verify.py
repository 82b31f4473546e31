"""The receive checks of DESIGN.md §2, in one place.

A payload (the signed JWS, once :mod:`.e2ee` has opened the envelope's sealed body)
becomes a typed message only after all of them pass:

1. it parses as a compact EdDSA JWS whose claims decode to a known message type;
2. ``iss`` is the sender the relay authenticated (checked before any key lookup, so
   a forged ``iss`` cannot make us fetch the chains of arbitrary identities);
3. the signature verifies against the issuer's *current* key for the header ``kid``
   (a revoked device raises :class:`RevokedKey`);
4. ``aud`` is this identity (for the copy of what another device of this identity
   sent, the recipient it was sent to); 5. ``exp`` has not passed; 6. ``iat`` is at most
   :data:`MAX_CLOCK_SKEW` seconds ahead; 7. ``jti`` has not been seen from this issuer.

Each failure is a typed :class:`VerificationError` or :class:`ProtocolError`;
:func:`rejection_reason` names it for counting and logging.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple, TypeAlias

from parley.client.directory import Directory
from parley.client.state import State
from parley.crypto import jws
from parley.errors import (
    Expired,
    IssuedInFuture,
    KeyChainError,
    MalformedMessage,
    ProtocolError,
    Replayed,
    UnknownMessageType,
    VerificationError,
    WrongAudience,
    WrongIssuer,
)
from parley.protocol.frames import Envelope
from parley.protocol.messages import Message

MAX_CLOCK_SKEW = 5.0

Rejection: TypeAlias = VerificationError | ProtocolError | KeyChainError
# What :meth:`Verifier.verify` raises for a message that must be dropped, for ``except``.
REJECTIONS = (VerificationError, ProtocolError, KeyChainError)


class Verified(NamedTuple):
    message: Message
    device: str  # the issuer's device that signed it (the JWS ``kid``)


def rejection_reason(error: Rejection) -> str:
    """A short stable name for counting rejections (``client.rejected``)."""
    if isinstance(error, VerificationError):
        return error.reason
    if isinstance(error, UnknownMessageType):
        return "unknown_type"
    if isinstance(error, MalformedMessage):
        return "malformed"
    if isinstance(error, KeyChainError):
        return "invalid_key_chain"
    return "protocol"


class Verifier:
    def __init__(
        self, identity: str, directory: Directory, state: State, clock: Callable[[], float]
    ) -> None:
        self._identity = identity
        self._directory = directory
        self._state = state
        self._clock = clock

    async def verify(
        self, envelope: Envelope, payload: bytes, sender_keys_version: int
    ) -> Verified:
        """The typed message ``payload`` (from ``envelope``), or a :data:`Rejection`.

        Key fetches may also raise connection errors (:class:`DeliveryTimeout`,
        :class:`RelayConnectionError`, :class:`RelayError`): those say nothing about the
        message, so the caller retries rather than drops it.
        """
        token = jws.parse(payload)
        message = token.message
        if message.iss != envelope.sender:
            raise WrongIssuer(f"signed by {message.iss!r} but sent by {envelope.sender!r}")
        key = await self._directory.current_key(message.iss, token.header.kid, sender_keys_version)
        jws.verify_signature(token, key)
        # A copy of our own message is addressed to whom we sent it, not to us.
        audience = envelope.recipient if message.iss == self._identity else self._identity
        if message.aud != audience:
            raise WrongAudience(f"addressed to {message.aud!r}, not {audience!r}")
        now = self._clock()
        # RFC 7519 §4.1.4: not accepted on or after exp.
        if now >= message.exp:
            raise Expired(f"expired {now - message.exp:.0f} s ago")
        if message.iat > now + MAX_CLOCK_SKEW:
            raise IssuedInFuture(f"issued {message.iat - now:.0f} s in the future")
        if self._state.is_seen(message.iss, message.jti):
            raise Replayed(f"message id {message.jti!r} from {message.iss} was seen before")
        return Verified(message, token.header.kid)

"""Signing, sealing and sending messages.

Every payload is a compact JWS of a typed message, sealed for the recipient's devices
and the sender's other devices (:mod:`.e2ee`). If the relay answers that the devices it
was sealed for are out of date (one was added, revoked or re-keyed), the device lists
are fetched again and the same envelope is sealed and sent again.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import TypedDict, TypeVar

from parley.client.connection import Connection
from parley.client.e2ee import EndToEnd
from parley.credentials import Credentials
from parley.crypto import jws
from parley.errors import MalformedFrame, NotConnected, StaleDevices
from parley.protocol.frames import Ack, DeviceRef, Send
from parley.protocol.messages import Message

log = logging.getLogger(__name__)

M = TypeVar("M", bound=Message)

# Device lists can change again while they are fetched; past this, give up.
STALE_RETRIES = 3


class Claims(TypedDict):
    """The registered claims every payload carries besides its own fields."""

    iss: str
    sub: str
    aud: str
    iat: int
    exp: int
    jti: str


class Sender:
    def __init__(
        self,
        credentials: Credentials,
        connection: Connection,
        *,
        message_lifetime: float,
        clock: Callable[[], float],
    ) -> None:
        self._credentials = credentials
        self._connection = connection
        self._lifetime = message_lifetime
        self._clock = clock
        self._e2ee: EndToEnd | None = None
        self._sent_observers: list[Callable[[Message], None]] = []

    def observe_sent(self, observer: Callable[[Message], None]) -> Callable[[], None]:
        """Call ``observer`` with every message this device sent, once the relay acked
        it; returns a function that stops the observing."""
        self._sent_observers.append(observer)
        return lambda: self._sent_observers.remove(observer)

    def attach(self, e2ee: EndToEnd | None) -> None:
        """Seal with ``e2ee`` from now on (the client has opened its state)."""
        self._e2ee = e2ee

    def claims(self, recipient: str) -> Claims:
        now = int(self._clock())
        return Claims(
            iss=self._credentials.identity,
            sub=recipient,
            aud=recipient,
            iat=now,
            exp=now + int(self._lifetime),
            jti=_new_id(),
        )

    async def send(self, message: M) -> M:
        """Sign ``message`` and send it to ``message.aud``; returns it after the relay's Ack."""
        body = jws.sign(message, self._credentials.secret_key, kid=self._credentials.device)
        await self.send_signed(message.aud, body, float(message.exp))
        for observer in list(self._sent_observers):
            try:
                observer(message)
            except Exception:  # an observer's bug must not turn a sent message into an error
                log.exception("sent-message observer failed on %s", message.typ.value)
        return message

    async def send_signed(self, recipient: str, payload: bytes, expires_at: float) -> None:
        """Seal an already signed ``payload`` for ``recipient`` and send it."""
        if self._e2ee is None:
            raise NotConnected("the client is not connected")
        # One envelope id per message, reused if the Send is resent after a reconnect,
        # so the relay stores it once.
        envelope_id = _new_id()
        for attempt in range(1, STALE_RETRIES + 1):
            body, devices = await self._e2ee.seal(envelope_id, recipient, payload)
            try:
                await self._send(envelope_id, recipient, body, devices, expires_at)
            except StaleDevices:
                if attempt == STALE_RETRIES:
                    raise
                await self._e2ee.refresh(recipient, devices)
            else:
                return

    async def _send(
        self,
        envelope_id: str,
        recipient: str,
        body: bytes,
        devices: list[DeviceRef],
        expires_at: float,
    ) -> None:
        ack = await self._connection.request(
            lambda ref: Send(
                ref=ref,
                envelope_id=envelope_id,
                recipient=recipient,
                body=body,
                expires_at=expires_at,
                devices=devices,
            ),
            Ack,
        )
        if ack.envelope_id != envelope_id:
            raise MalformedFrame(f"ack names envelope {ack.envelope_id}, sent {envelope_id}")


class _SortableIds:
    """128-bit ids in 32 hex digits, as a uuid4's hex, but ordered by time: 48 bits of
    milliseconds since the epoch, then 80 random bits (the layout of RFC 9562's UUIDv7,
    without its version bits). Stores keep ids in unique B-tree indexes (the relay's
    envelope ids, the ``jti`` values each receiver has seen): ids that arrive in about the order
    they are indexed land on the same few pages, where random ones dirty one page each
    per commit (measured on the relay's SQLite store: a third of its time per message).

    The random parts come from ``os.urandom`` 256 at a time: a message needs two ids
    (its ``jti`` and its envelope id), and a system call for each was a measurable part
    of sending one. A forked child starts afresh, so the two processes never hand out
    the same ids."""

    _PER_READ = 256
    _RANDOM_BYTES = 10

    def __init__(self, clock: Callable[[], int] = time.time_ns) -> None:
        self._clock = clock
        self._random: list[str] = []
        os.register_at_fork(after_in_child=self._random.clear)

    def __call__(self) -> str:
        if not self._random:
            size = self._RANDOM_BYTES
            pool = os.urandom(size * self._PER_READ).hex()
            self._random.extend(pool[i : i + 2 * size] for i in range(0, len(pool), 2 * size))
        milliseconds = (self._clock() // 1_000_000) & 0xFFFF_FFFF_FFFF
        return f"{milliseconds:012x}{self._random.pop()}"


_new_id = _SortableIds()

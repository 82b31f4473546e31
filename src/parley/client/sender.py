"""Signing and sending messages: every payload is a compact JWS of a typed message."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import TypedDict, TypeVar

from parley.client.connection import Connection
from parley.credentials import Credentials
from parley.crypto import jws
from parley.errors import MalformedFrame
from parley.protocol.frames import Ack, Send
from parley.protocol.messages import Message

M = TypeVar("M", bound=Message)


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

    def claims(self, recipient: str) -> Claims:
        now = int(self._clock())
        return Claims(
            iss=self._credentials.identity,
            sub=recipient,
            aud=recipient,
            iat=now,
            exp=now + int(self._lifetime),
            jti=uuid.uuid4().hex,
        )

    async def send(self, message: M) -> M:
        """Sign ``message`` and send it to ``message.aud``; returns it after the relay's Ack."""
        body = jws.sign(message, self._credentials.secret_key, kid=self._credentials.device)
        # One envelope id per message, reused if the Send is resent after a reconnect,
        # so the relay stores it once.
        envelope_id = uuid.uuid4().hex
        ack = await self._connection.request(
            lambda ref: Send(
                ref=ref,
                envelope_id=envelope_id,
                recipient=message.aud,
                body=body,
                expires_at=float(message.exp),
            ),
            Ack,
        )
        if ack.envelope_id != envelope_id:
            raise MalformedFrame(f"ack names envelope {ack.envelope_id}, sent {envelope_id}")
        return message

"""A bare relay session that sends any body it is given: the attacker's tool in tests.

It speaks the wire protocol directly (frames over a real WebSocket), authenticating
with real credentials, so a test can put forged or replayed payloads on the wire that
the SDK itself would never produce.
"""

from __future__ import annotations

import itertools
import time
import uuid
from types import TracebackType

from parley.credentials import Credentials
from parley.crypto import jws
from parley.crypto.keys import SigningKey
from parley.protocol import frames
from parley.protocol.messages import Message, VoiceStart
from parley.transport.websocket import WebSocketTransport, connect_websocket


class RawSession:
    def __init__(self, creds: Credentials, url: str) -> None:
        self.creds = creds
        self.url = url
        self._refs = itertools.count(1)
        self._transport: WebSocketTransport | None = None

    async def __aenter__(self) -> RawSession:
        self._transport = await connect_websocket(self.url)
        challenge = frames.decode_relay_frame(await self._transport.recv())
        assert isinstance(challenge, frames.Challenge)
        signature = self.creds.secret_key.sign(
            frames.auth_message(challenge.nonce, self.creds.identity, self.creds.device)
        )
        await self._transport.send(
            frames.encode(
                frames.Authenticate(
                    identity=self.creds.identity, device=self.creds.device, signature=signature
                )
            )
        )
        welcome = frames.decode_relay_frame(await self._transport.recv())
        assert isinstance(welcome, frames.Welcome), welcome
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._transport is not None:
            await self._transport.close()

    async def send_body(self, recipient: str, body: bytes) -> frames.RelayFrame:
        """Send ``body`` as an envelope; returns the relay's reply (Ack or Error)."""
        assert self._transport is not None
        ref = next(self._refs)
        await self._transport.send(
            frames.encode(
                frames.Send(
                    ref=ref,
                    envelope_id=uuid.uuid4().hex,
                    recipient=recipient,
                    body=body,
                    expires_at=time.time() + 300,
                )
            )
        )
        while True:
            frame = frames.decode_relay_frame(await self._transport.recv())
            if getattr(frame, "ref", None) == ref:
                return frame


def voice_start(
    *,
    iss: str,
    aud: str,
    jti: str | None = None,
    iat: float | None = None,
    exp: float | None = None,
    cid: str = "cid",
    call_id: str = "k",
) -> VoiceStart:
    now = time.time()
    return VoiceStart(
        iss=iss,
        sub=aud,
        aud=aud,
        iat=int(now if iat is None else iat),
        exp=int(now + 300 if exp is None else exp),
        jti=jti or uuid.uuid4().hex,
        cid=cid,
        call_id=call_id,
        peer_info="sdp",
    )


def signed(message: Message, key: SigningKey, kid: str) -> bytes:
    return jws.sign(message, key, kid)

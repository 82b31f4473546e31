"""The attacker's tools in tests: payloads the SDK itself would never sign or send.

:func:`send_payload` seals any bytes properly with a real client's Olm sessions and
sends them, so the receiver opens them fine and what refuses them is the receive checks
on the signed payload itself (signature, issuer, audience, expiry, replay).
"""

from __future__ import annotations

import time
import uuid

from parley.client import Client
from parley.crypto import jws
from parley.crypto.keys import SigningKey
from parley.protocol.messages import Message, VoiceStart


async def send_payload(client: Client, recipient: str, payload: bytes) -> None:
    """Seal ``payload`` as is for ``recipient`` and send it; raises if the relay refuses."""
    await client._sender.send_signed(recipient, payload, time.time() + 300)


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

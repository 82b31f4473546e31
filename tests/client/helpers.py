"""Test helpers: a real relay core over in-memory transports, and transport wrappers."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import msgspec
from tests import waits

from parley.client import Client, register_identity
from parley.client.directory import Directory
from parley.credentials import Credentials
from parley.crypto import jws
from parley.crypto.keys import SigningKey, VerifyKey, b64url_encode
from parley.protocol.frames import (
    Authenticate,
    Confirm,
    Send,
    decode_client_frame,
    encode,
)
from parley.protocol.messages import Message, VoiceStop
from parley.relay import Relay
from parley.transport import Transport
from parley.transport.memory import memory_pair

WAIT = waits.WAIT


class Wrapper:
    """A transport that forwards to ``inner``; subclasses filter or rewrite frames."""

    def __init__(self, inner: Transport) -> None:
        self.inner = inner

    @property
    def remote(self) -> str:
        return self.inner.remote

    @property
    def source(self) -> str:
        return self.inner.source

    async def send(self, data: bytes) -> None:
        await self.inner.send(data)

    def write_now(self, data: bytes) -> bool:
        return False  # everything goes through send(), which subclasses filter

    async def recv(self) -> bytes:
        return await self.inner.recv()

    async def close(self, code: int = 1000, reason: str = "") -> None:
        await self.inner.close(code, reason)


class SwallowSends(Wrapper):
    """Relay side: the relay never sees a Send, so it never acks one."""

    async def recv(self) -> bytes:
        while True:
            data = await self.inner.recv()
            if not isinstance(decode_client_frame(data), Send):
                return data


class DropConfirms(Wrapper):
    """Client side: Confirm frames are lost, as if the client crashed before sending them."""

    async def send(self, data: bytes) -> None:
        if not isinstance(decode_client_frame(data), Confirm):
            await self.inner.send(data)


class ForgetResume(Wrapper):
    """Client side: ask the relay to resume from the start, so it redelivers everything."""

    async def send(self, data: bytes) -> None:
        frame = decode_client_frame(data)
        if isinstance(frame, Authenticate):
            data = encode(msgspec.structs.replace(frame, resume_after=0))
        await self.inner.send(data)


@dataclass
class Trip:
    """Shared by the transports of one link, so a fault happens once across reconnects."""

    fired: bool = False


class DropAfterFirstSend(Wrapper):
    """Client side: the first Send reaches the relay, then the connection drops."""

    def __init__(self, inner: Transport, trip: Trip) -> None:
        super().__init__(inner)
        self.trip = trip

    async def send(self, data: bytes) -> None:
        await self.inner.send(data)
        if not self.trip.fired and isinstance(decode_client_frame(data), Send):
            self.trip.fired = True
            await self.inner.close()


@dataclass
class RelayLink:
    """A connector to an in-process relay; keeps the client ends so tests can drop them."""

    relay: Relay
    client_side: Callable[[Transport], Transport] = lambda t: t
    relay_side: Callable[[Transport], Transport] = lambda t: t
    transports: list[Transport] = field(default_factory=list)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    async def __call__(self) -> Transport:
        client_end, relay_end = memory_pair()
        task = asyncio.get_running_loop().create_task(self.relay.handle(self.relay_side(relay_end)))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        transport = self.client_side(client_end)
        self.transports.append(transport)
        return transport

    def with_client_side(self, wrap: Callable[[Transport], Transport]) -> RelayLink:
        return RelayLink(self.relay, client_side=wrap, relay_side=self.relay_side)

    async def drop(self) -> None:
        """Close the newest client transport, as a network failure would."""
        await self.transports[-1].close()

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


class Received:
    """A handler that records ``(issuer, payload)`` and lets a test await them."""

    def __init__(self) -> None:
        self.items: list[tuple[str, Message]] = []
        self._taken = 0
        self._changed = asyncio.Event()

    def __call__(self, issuer: str, payload: Message) -> None:
        self.items.append((issuer, payload))
        self._changed.set()

    async def until(self, count: int) -> None:
        """Wait until at least ``count`` messages have been handled."""
        async with asyncio.timeout(WAIT):
            while len(self.items) < count:
                self._changed.clear()
                await self._changed.wait()

    async def next(self) -> tuple[str, Message]:
        """The next handled message not returned by an earlier call."""
        await self.until(self._taken + 1)
        self._taken += 1
        return self.items[self._taken - 1]

    @property
    def call_ids(self) -> list[str]:
        return [str(payload["call_id"]) for _, payload in self.items]


async def eventually(predicate: Callable[[], object]) -> None:
    """Wait until ``predicate()`` is true: for state no event signals (counters)."""
    async with asyncio.timeout(WAIT):
        while not predicate():  # noqa: ASYNC110 - nothing to wait on but the condition
            await asyncio.sleep(0.01)


@dataclass
class World:
    """Identities and clients on one relay; everything is closed at teardown."""

    relay: Relay
    link: RelayLink
    tmp_path: Path
    clients: list[Client] = field(default_factory=list)
    links: list[RelayLink] = field(default_factory=list)

    async def identity(self, name: str) -> Credentials:
        return await register_identity("memory://relay", name=name, connector=self.link)

    def client(
        self,
        credentials: Credentials,
        *,
        state_path: Path | str | None = None,
        link: RelayLink | None = None,
        ack_timeout: float = WAIT,
        clock: Callable[[], float] = time.time,
    ) -> Client:
        if link is not None:
            self.links.append(link)
        client = Client(
            credentials,
            state_path=state_path or self.state_path(credentials),
            connector=link or self.link,
            ack_timeout=ack_timeout,
            clock=clock,
        )
        self.clients.append(client)
        return client

    async def connected(
        self,
        credentials: Credentials,
        *,
        state_path: Path | str | None = None,
        link: RelayLink | None = None,
    ) -> Client:
        client = self.client(credentials, state_path=state_path, link=link)
        await client.connect()
        return client

    def state_path(self, credentials: Credentials) -> Path:
        """Each device's own state file, so its Olm account outlives one client."""
        return self.tmp_path / f"{credentials.identity}.{credentials.device}.state.db"

    async def permit(self, owner: Credentials, *others: Credentials) -> None:
        """``owner`` accepts messages from ``others`` (a short-lived client)."""
        async with Client(owner, state_path=self.state_path(owner), connector=self.link) as client:
            for other in others:
                await client.connections.permit(other.identity)

    async def raw(self, credentials: Credentials) -> Client:
        """A connected client to send hand-made payloads with (see :func:`inject`)."""
        return await self.connected(credentials)

    async def aclose(self) -> None:
        for client in self.clients:
            await client.close()
        for link in [self.link, *self.links]:
            await link.aclose()


def stop_token(
    sender: Credentials,
    recipient: str,
    *,
    call_id: str = "c1",
    iss: str | None = None,
    aud: str | None = None,
    iat: int | None = None,
    exp: int | None = None,
    jti: str | None = None,
    key: SigningKey | None = None,
    kid: str | None = None,
) -> bytes:
    """A signed ``chat.voice.stop`` with any claim overridden."""
    now = int(time.time())
    message = VoiceStop(
        iss=sender.identity if iss is None else iss,
        sub=recipient,
        aud=recipient if aud is None else aud,
        iat=now if iat is None else iat,
        exp=now + 60 if exp is None else exp,
        jti=uuid.uuid4().hex if jti is None else jti,
        cid="cid-1",
        call_id=call_id,
    )
    return jws.sign(message, key or sender.secret_key, kid=kid or sender.device)


def raw_token(key: SigningKey, kid: str, claims: bytes) -> bytes:
    """A correctly signed JWS around arbitrary claim bytes."""
    header = b64url_encode(b'{"alg":"EdDSA","kid":"' + kid.encode() + b'"}')
    signing_input = f"{header}.{b64url_encode(claims)}".encode()
    return signing_input + b"." + b64url_encode(key.sign(signing_input)).encode()


async def inject(client: Client, recipient: str, payload: bytes) -> None:
    """Seal ``payload`` as is, properly, and send it in a fresh envelope: what the
    receiver's checks see is exactly these bytes."""
    await client._sender.send_signed(recipient, payload, time.time() + 60)


class KnownKeys(Directory):
    """The directory of a relay that serves exactly these keys, one per identity (for
    a Verifier tested alone)."""

    def __init__(self, keys: dict[str, SigningKey]) -> None:
        self._keys = keys

    async def current_key(self, identity: str, kid: str, min_version: int) -> VerifyKey:
        return self._keys[identity].public_key

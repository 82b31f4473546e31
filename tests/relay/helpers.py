"""Relay test helpers: identities with real keys, a fake clock, a raw-frame client."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from tests import waits

from parley.crypto.keys import SigningKey
from parley.errors import TransportClosed
from parley.protocol import frames
from parley.protocol.keychain import ChainEntry, KeyChain, KeyOp, genesis_entry, make_entry
from parley.relay import Relay
from parley.transport import Transport
from parley.transport.memory import MemoryTransport, memory_pair

WAIT = waits.WAIT

F = TypeVar("F", bound=frames.Frame)


class FakeClock:
    """The relay's clock, moved by hand."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Identity:
    """An identity with its device keys and the key chain the relay should hold."""

    id: str
    keys: dict[str, SigningKey] = field(default_factory=dict)
    chain: KeyChain = field(init=False)

    def __post_init__(self) -> None:
        self.chain = KeyChain(self.id)

    @classmethod
    def create(cls, identity: str, device: str = "d1") -> Identity:
        ident = cls(identity)
        key = SigningKey.generate()
        ident.keys[device] = key
        ident.chain.append(genesis_entry(identity, device, key))
        return ident

    @property
    def genesis(self) -> ChainEntry:
        return self.chain.entries[0]

    def next_entry(self, op: KeyOp, device: str, signer: str) -> ChainEntry:
        """The entry that adds (with a fresh key) or revokes ``device``; not applied."""
        if op is KeyOp.ADD:
            key = SigningKey.generate()
            self.keys[device] = key
        public = self.keys[device].public_key
        return make_entry(
            identity=self.id,
            seq=self.chain.version,
            prev=self.chain.head,
            op=op,
            device=device,
            public_key=public,
            signer=signer,
            signer_key=self.keys[signer],
        )


class Peer:
    """The client end of one in-memory connection to a relay, speaking raw frames."""

    def __init__(
        self,
        relay: Relay,
        name: str = "peer",
        wrap: Callable[[MemoryTransport], Transport] | None = None,
    ) -> None:
        self.transport, relay_end = memory_pair(name)
        self.relay_end: MemoryTransport = relay_end
        served = wrap(relay_end) if wrap is not None else relay_end
        self.task = asyncio.create_task(relay.handle(served))
        self.refs = itertools.count(1)
        self.challenge: frames.Challenge | None = None

    async def send(self, frame: frames.Frame) -> None:
        await self.transport.send(frames.encode(frame))

    async def recv(self) -> frames.RelayFrame:
        data = await asyncio.wait_for(self.transport.recv(), WAIT)
        return frames.decode_relay_frame(data)

    async def expect(self, kind: type[F]) -> F:
        frame = await self.recv()
        assert isinstance(frame, kind), frame
        return frame

    async def start(self) -> frames.Challenge:
        self.challenge = await self.expect(frames.Challenge)
        return self.challenge

    async def register(self, ident: Identity, name: str | None = None) -> frames.RelayFrame:
        await self.send(frames.Register(ref=next(self.refs), entry=ident.genesis, name=name))
        return await self.recv()

    async def authenticate(
        self, ident: Identity, device: str = "d1", resume_after: int = 0
    ) -> frames.RelayFrame:
        if self.challenge is None:
            await self.start()
        assert self.challenge is not None
        message = frames.auth_message(self.challenge.nonce, ident.id, device)
        await self.send(
            frames.Authenticate(
                identity=ident.id,
                device=device,
                signature=ident.keys[device].sign(message),
                resume_after=resume_after,
            )
        )
        return await self.recv()

    async def request(
        self, make: Callable[..., frames.Frame], **fields: object
    ) -> frames.RelayFrame:
        """Send a request with a fresh ``ref`` and return the first reply."""
        await self.send(make(ref=next(self.refs), **fields))
        return await self.recv()

    async def send_to(
        self, recipient: str, body: bytes, envelope_id: str, expires_at: float
    ) -> frames.RelayFrame:
        return await self.request(
            frames.Send,
            envelope_id=envelope_id,
            recipient=recipient,
            body=body,
            expires_at=expires_at,
        )

    async def closed(self) -> int | None:
        """Wait until the relay closes this connection; returns its close code."""
        with contextlib.suppress(TransportClosed):
            while True:
                await asyncio.wait_for(self.transport.recv(), WAIT)
        await asyncio.wait_for(self.task, WAIT)
        return self.relay_end.close_code

    async def close(self) -> None:
        await self.transport.close()
        await asyncio.wait_for(self.task, WAIT)


async def online(
    relay: Relay,
    ident: Identity,
    device: str = "d1",
    resume: int = 0,
    wrap: Callable[[MemoryTransport], Transport] | None = None,
) -> Peer:
    """An authenticated connection for ``ident``'s ``device``."""
    peer = Peer(relay, f"{ident.id}:{device}", wrap)
    welcome = await peer.authenticate(ident, device, resume)
    assert isinstance(welcome, frames.Welcome), welcome
    return peer


async def enroll(relay: Relay, ident: Identity) -> None:
    """Register ``ident`` over a connection of its own."""
    peer = Peer(relay, "enroll")
    await peer.start()
    assert isinstance(await peer.register(ident), frames.Registered)
    await peer.close()


def rejected(relay: Relay, reason: str) -> float:
    value = relay.metrics.registry.get_sample_value(
        "parley_relay_rejected_total", {"reason": reason}
    )
    return value or 0.0


def counter(relay: Relay, name: str) -> float:
    return relay.metrics.registry.get_sample_value(name) or 0.0

"""Load for the benchmarks under ``benchmarks/``: signed voice messages between pairs.

Each benchmark prints a rate and the ratio against a reference measured in the same run;
what they share lives here so every one of them measures the same thing the same way.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path

from parley.client import Client
from parley.client.registration import register_identity

# A session description about as large as a real one with a few candidates.
PEER_INFO = "v=0\r\n" + "a=candidate:1 1 udp 2122260223 127.0.0.1 50000 typ host\r\n" * 4


@dataclass(frozen=True)
class Result:
    name: str
    messages: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.messages / self.seconds

    def line(self) -> str:
        return (
            f"{self.name:<10} {self.messages:>7} messages in {self.seconds:7.3f} s"
            f" = {self.rate:9.1f} msg/s"
        )


async def voice_pairs(
    name: str, relay_url: str, workdir: Path, *, senders: int, messages: int, window: int
) -> Result:
    """``senders`` new identities each send ``messages`` starts to their own receiver,
    at most ``window`` unacknowledged at a time; timed until every one was handled."""
    total = senders * messages
    received = 0
    done = asyncio.Event()

    def count(issuer: str, payload: object) -> None:
        nonlocal received
        received += 1
        if received == total:
            done.set()

    pairs: list[tuple[Client, Client]] = []
    try:
        for _ in range(senders):
            sender = await register_identity(relay_url)
            receiver = await register_identity(relay_url)
            rx = Client(receiver, state_path=workdir / f"{receiver.identity}.db")
            tx = Client(sender, state_path=workdir / f"{sender.identity}.db")
            pairs.append((tx, rx))
            rx.voice().on_start(count)
            await rx.connect()
            await tx.connect()
            await rx.connections.permit(sender.identity)

        async def send(tx: Client, recipient: str) -> None:
            gate = asyncio.Semaphore(window)
            voice = tx.voice()

            async def one(i: int) -> None:
                async with gate:
                    await voice.start(recipient, "bench", f"call-{i}", PEER_INFO, {"n": i})

            await asyncio.gather(*(one(i) for i in range(messages)))

        start = time.perf_counter()
        await asyncio.gather(*(send(tx, rx.id) for tx, rx in pairs))
        await asyncio.wait_for(done.wait(), 300)
        return Result(name, total, time.perf_counter() - start)
    finally:
        for tx, rx in pairs:
            await tx.close()
            await rx.close()

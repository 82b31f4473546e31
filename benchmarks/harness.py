"""Load for the benchmarks under ``benchmarks/``: signed voice messages between pairs.

Each benchmark prints a rate and the ratio against a reference measured in the same run;
what they share lives here so every one of them measures the same thing the same way.
"""

from __future__ import annotations

import asyncio
import math
import re
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path

from parley.client import Client
from parley.client.registration import register_identity
from parley.processes import ChildProcess
from parley.protocol.messages import VoiceStart

# A relay whose limits are out of the way: the benchmarks measure the relay, not its
# request budgets (which a flood benchmark measures on its own).
UNLIMITED_RELAY_ARGS = (
    "--rate",
    "1e9",
    "--burst",
    "1000000000",
    "--identity-rate",
    "1e9",
    "--identity-burst",
    "1000000000",
    "--registration-rate",
    "1e9",
    "--registration-burst",
    "1000000000",
)

# A session description about as large as a real one with a few candidates.
PEER_INFO = "v=0\r\n" + "a=candidate:1 1 udp 2122260223 127.0.0.1 50000 typ host\r\n" * 4


@dataclass(frozen=True)
class Result:
    name: str
    messages: int
    seconds: float
    # From the same start until the relay had acknowledged (stored) every message, where
    # the load knows it; ``seconds`` runs until every one was handled.
    stored_seconds: float | None = None

    @property
    def rate(self) -> float:
        return self.messages / self.seconds

    def line(self) -> str:
        return (
            f"{self.name:<10} {self.messages:>7} messages in {self.seconds:7.3f} s"
            f" = {self.rate:9.1f} msg/s"
        )


@dataclass(frozen=True)
class Latency:
    """Latency samples of one mode, in seconds: p50 is their median, p99 by nearest
    rank."""

    name: str
    samples: Sequence[float]

    def percentile(self, q: float) -> float:
        ordered = sorted(self.samples)
        return ordered[max(0, math.ceil(q * len(ordered)) - 1)]

    @property
    def p50(self) -> float:
        return statistics.median(self.samples)

    @property
    def p99(self) -> float:
        return self.percentile(0.99)

    def line(self) -> str:
        return (
            f"{self.name:<10} p50 {self.p50 * 1000:7.2f} ms  p99 {self.p99 * 1000:7.2f} ms"
            f"  (n={len(self.samples)})"
        )


async def voice_pairs(
    name: str, relay_url: str, workdir: Path, *, senders: int, messages: int, window: int
) -> Result:
    """``senders`` new identities each send ``messages`` starts to their own receiver,
    at most ``window`` unacknowledged at a time; timed until every one was handled."""
    placement = [(relay_url, relay_url)] * senders
    return await placed_voice_pairs(name, placement, workdir, messages=messages, window=window)


async def placed_voice_pairs(
    name: str,
    placement: Sequence[tuple[str, str]],
    workdir: Path,
    *,
    messages: int,
    window: int,
    around: Callable[[], AbstractAsyncContextManager[object]] | None = None,
) -> Result:
    """:func:`voice_pairs` with one pair per ``(sender URL, receiver URL)`` of
    ``placement``: each identity is registered on, and connects to, its own relay node.
    ``around``, if given, makes a context entered just before the timed part and left
    just after it (to sample what the timed part cost, say)."""
    total = len(placement) * messages
    received = 0
    done = asyncio.Event()

    def count(issuer: str, payload: object) -> None:
        nonlocal received
        received += 1
        if received == total:
            done.set()

    pairs: list[tuple[Client, Client]] = []
    try:
        for sender_url, receiver_url in placement:
            sender = await register_identity(sender_url)
            receiver = await register_identity(receiver_url)
            rx = Client(receiver, state_path=workdir / f"{receiver.identity}.db")
            tx = Client(sender, state_path=workdir / f"{sender.identity}.db")
            pairs.append((tx, rx))
            rx.voice().on_start(count)
            await rx.connect()
            await tx.connect()
            await rx.connections.permit(sender.identity)

        async def send(tx: Client, recipient: str) -> None:
            # ``window`` workers taking turns: at most that many unacknowledged, and no
            # task per message for the load itself to pay for.
            voice = tx.voice()
            numbers = iter(range(messages))

            async def worker() -> None:
                for i in numbers:
                    await voice.start(recipient, "bench", f"call-{i}", PEER_INFO, {"n": i})

            await asyncio.gather(*(worker() for _ in range(min(window, messages))))

        async with nullcontext() if around is None else around():
            start = time.perf_counter()
            await asyncio.gather(*(send(tx, rx.id) for tx, rx in pairs))
            stored = time.perf_counter() - start
            await asyncio.wait_for(done.wait(), 300)
            elapsed = time.perf_counter() - start
        return Result(name, total, elapsed, stored)
    finally:
        for tx, rx in pairs:
            await tx.close()
            await rx.close()


PARLEY = (sys.executable, "-m", "parley")


async def run_parley(*args: str) -> None:
    """Run a ``parley`` command a benchmark needs (``proxy bind`` and the like); a
    failure ends the benchmark with its error output."""
    proc = await asyncio.create_subprocess_exec(
        *PARLEY, *args, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
    )
    _, err = await proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"parley {' '.join(args)} failed: {err.decode()}")


class LatencyProbe:
    """A sender and a receiver on each node; a start one at a time, timed from just
    before sending to the receiver's handler."""

    def __init__(self, workdir: Path) -> None:
        self._workdir = workdir
        self._clients: list[Client] = []
        self._arrivals: dict[str, asyncio.Future[float]] = {}
        self._serial = 0

    async def pair_up(self, urls: Sequence[str]) -> tuple[list[Client], list[Client]]:
        """(senders, receivers), one of each on every node; every receiver permits every
        sender."""
        senders: list[Client] = []
        receivers: list[Client] = []
        for url in urls:
            for group in (senders, receivers):
                creds = await register_identity(url)
                client = Client(creds, state_path=self._workdir / f"{creds.identity}.db")
                self._clients.append(client)
                group.append(client)
        for receiver in receivers:
            receiver.voice().on_start(self._arrived)
        await asyncio.gather(*(client.connect() for client in self._clients))
        for receiver in receivers:
            for sender in senders:
                await receiver.connections.permit(sender.id)
        return senders, receivers

    def _arrived(self, issuer: str, payload: VoiceStart) -> None:
        now = time.perf_counter()
        future = self._arrivals.pop(payload.call_id, None)
        if future is not None and not future.done():
            future.set_result(now)

    async def one(self, sender: Client, receiver: Client) -> float:
        self._serial += 1
        call_id = f"latency-{self._serial}"
        arrival: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self._arrivals[call_id] = arrival
        began = time.perf_counter()
        await sender.voice().start(receiver.id, "bench", call_id, PEER_INFO, {"n": self._serial})
        return await asyncio.wait_for(arrival, 30) - began

    async def close(self) -> None:
        for client in self._clients:
            await client.close()


async def serve_echo(port: int = 0) -> None:
    """A bare ``websockets`` echo server on loopback (each message sent back as it is),
    saying where it listens; runs until killed."""
    from websockets.asyncio.server import ServerConnection, serve

    async def echo(ws: ServerConnection) -> None:
        async for message in ws:
            await ws.send(message)

    async with serve(echo, "127.0.0.1", port, compression=None, max_size=None) as server:
        bound = next(iter(server.sockets)).getsockname()[1]
        print(f"echo listening on ws://127.0.0.1:{bound}", flush=True)
        await asyncio.Future()


@asynccontextmanager
async def echo_process(script: str) -> AsyncIterator[tuple[int, str]]:
    """(pid, URL) of :func:`serve_echo` in a process of its own, ``script --echo-server``
    (a benchmark script that calls :func:`serve_echo` for that flag); stopped after."""
    server = ChildProcess(
        [sys.executable, script, "--echo-server"],
        re.compile(r"listening on (ws://\S+)"),
        name="echo server",
    )
    listening = await server.start()
    try:
        yield server.pid, listening.group(1)
    finally:
        await server.stop()


def run_in_workdir(main: Callable[[Path], Awaitable[None]], prefix: str) -> None:
    """``asyncio.run(main(a fresh temporary directory))``, SIGTERM taken as SIGINT: either
    cancels ``main``, so what it started and made is cleaned up on the way out; then
    exit status 130."""

    async def go() -> None:
        task = asyncio.current_task()
        assert task is not None
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
        with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
            await main(Path(tmp))

    try:
        asyncio.run(go())
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("interrupted; what the run started and created is gone", file=sys.stderr)
        raise SystemExit(130) from None

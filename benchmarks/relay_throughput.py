"""Signed voice messages per second through the relay, against a bare websockets echo.

N senders each send M ``chat.voice.start`` messages to their own receiver through a relay
process (signed, stored durably, acknowledged, delivered, verified, confirmed). In the
same run, N clients push M messages of the same size through a bare ``websockets`` echo
server process and read them back. Both use the same window of unacknowledged messages
per sender. The ratio relay / echo is the figure to watch.

    python benchmarks/relay_throughput.py [--senders 4] [--messages 2000] [--window 32]
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve

from parley.client import Client
from parley.client.registration import register_identity
from parley.credentials import Credentials
from parley.crypto import jws
from parley.crypto.keys import SigningKey
from parley.processes import ChildProcess, RelayProcess
from parley.protocol.messages import VoiceStart

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
            f"{self.name:<6} {self.messages:>7} messages in {self.seconds:7.3f} s"
            f" = {self.rate:9.1f} msg/s"
        )


async def bench_relay(senders: int, messages: int, window: int, workdir: Path) -> Result:
    async with RelayProcess(workdir / "relay", extra_args=["--rate", "1000000"]) as relay:
        pairs: list[tuple[Credentials, Credentials]] = [
            (await register_identity(relay.url), await register_identity(relay.url))
            for _ in range(senders)
        ]
        clients: list[Client] = []
        done = asyncio.Event()
        received = 0
        total = senders * messages

        def count(issuer: str, payload: object) -> None:
            nonlocal received
            received += 1
            if received == total:
                done.set()

        for n, (sender, receiver) in enumerate(pairs):
            rx = Client(receiver, state_path=workdir / f"rx{n}.db")
            rx.voice().on_start(count)
            tx = Client(sender, state_path=workdir / f"tx{n}.db")
            clients += [rx, tx]
        for client in clients:
            await client.connect()
        for sender, receiver in pairs:
            rx_client = next(c for c in clients if c.id == receiver.identity)
            await rx_client.connections.permit(sender.identity)

        async def send(tx: Client, recipient: str) -> None:
            gate = asyncio.Semaphore(window)
            voice = tx.voice()

            async def one(i: int) -> None:
                async with gate:
                    await voice.start(recipient, "bench", f"call-{i}", PEER_INFO, {"n": i})

            await asyncio.gather(*(one(i) for i in range(messages)))

        start = time.perf_counter()
        await asyncio.gather(
            *(send(next(c for c in clients if c.id == s.identity), r.identity) for s, r in pairs)
        )
        await asyncio.wait_for(done.wait(), 300)
        elapsed = time.perf_counter() - start
        for client in clients:
            await client.close()
    return Result("relay", total, elapsed)


async def echo_server(port: int) -> None:
    async def echo(ws: ServerConnection) -> None:
        async for message in ws:
            await ws.send(message)

    async with serve(echo, "127.0.0.1", port, compression=None) as server:
        bound = next(iter(server.sockets)).getsockname()[1]
        print(f"echo listening on ws://127.0.0.1:{bound}", flush=True)
        await asyncio.Future()


async def bench_echo(senders: int, messages: int, window: int, size: int) -> Result:
    server = ChildProcess(
        [sys.executable, __file__, "--echo-server"],
        re.compile(r"listening on (ws://\S+)"),
        name="echo server",
    )
    match = await server.start()
    url = match.group(1)
    payload = b"x" * size

    async def client() -> None:
        async with connect(url, compression=None) as ws:
            credit = asyncio.Semaphore(window)

            async def reader() -> None:
                for _ in range(messages):
                    await ws.recv()
                    credit.release()

            reading = asyncio.create_task(reader())
            for _ in range(messages):
                await credit.acquire()
                await ws.send(payload)
            await reading

    try:
        start = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(senders)))
        elapsed = time.perf_counter() - start
    finally:
        await server.stop()
    return Result("echo", senders * messages, elapsed)


def signed_size() -> int:
    """Bytes of one benchmark message as the relay sees it, for a fair echo."""
    message = VoiceStart(
        iss="a" * 16,
        sub="b" * 16,
        aud="b" * 16,
        iat=0,
        exp=0,
        jti="j" * 32,
        cid="bench",
        call_id="call-0000",
        peer_info=PEER_INFO,
        data={"n": 0},
    )
    return len(jws.sign(message, SigningKey.generate(), "d-xxxxxxxxxx"))


async def main(args: argparse.Namespace) -> None:
    if args.echo_server:
        await echo_server(0)
        return
    with tempfile.TemporaryDirectory(prefix="parley-bench-") as tmp:
        relay = await bench_relay(args.senders, args.messages, args.window, Path(tmp))
    echo = await bench_echo(args.senders, args.messages, args.window, size=signed_size())
    print(f"senders={args.senders} messages/sender={args.messages} window={args.window}")
    print(relay.line() + "  (signed, stored, acked, delivered, verified)")
    print(echo.line() + "  (bare websockets echo, same message count)")
    print(f"ratio relay/echo = {relay.rate / echo.rate:.3f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--senders", type=int, default=4)
    parser.add_argument("--messages", type=int, default=2000, help="per sender")
    parser.add_argument("--window", type=int, default=32, help="unacknowledged per sender")
    parser.add_argument("--echo-server", action="store_true", help=argparse.SUPPRESS)
    asyncio.run(main(parser.parse_args()))

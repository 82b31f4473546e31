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
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as benchmarks/<name>.py

from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve

from benchmarks.harness import PEER_INFO, UNLIMITED_RELAY_ARGS, Result, voice_pairs
from parley.crypto import jws
from parley.crypto.keys import SigningKey
from parley.processes import ChildProcess, RelayProcess
from parley.protocol.messages import VoiceStart


async def bench_relay(senders: int, messages: int, window: int, workdir: Path) -> Result:
    async with RelayProcess(workdir / "relay", extra_args=UNLIMITED_RELAY_ARGS) as relay:
        return await voice_pairs(
            "relay", relay.url, workdir, senders=senders, messages=messages, window=window
        )


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
    print(relay.line() + "  (signed, sealed, stored, acked, delivered, opened, verified)")
    print(echo.line() + "  (bare websockets echo, same message count)")
    print(f"ratio relay/echo = {relay.rate / echo.rate:.3f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--senders", type=int, default=4)
    parser.add_argument("--messages", type=int, default=2000, help="per sender")
    parser.add_argument("--window", type=int, default=32, help="unacknowledged per sender")
    parser.add_argument("--echo-server", action="store_true", help=argparse.SUPPRESS)
    asyncio.run(main(parser.parse_args()))

"""One identity flooding a relay from eight connections, while four pairs are measured.

A real ``parley relay`` with its default limits. Four pairs of SDK clients (in this
process) send starts one at a time, round robin, and time each from just before the send
to the receiver's handler: first alone (the baseline), then while a flooder (its own
process, raw frames over eight WebSockets of one device, as fast as the sockets take
them) tries to send as much as it can. Printed: p50 and p99 of both, their ratios (the
goal: p99 under flood at most twice the baseline's), and what the flooder got: frames
acknowledged and refused ``rate_limited`` (with retry-after), connections closed because
a device may keep only four.

    python benchmarks/relay_flood.py [--samples 1000] [--relay-args "..."] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as benchmarks/<name>.py

from websockets.asyncio.client import ClientConnection, connect

from benchmarks.harness import Latency, LatencyProbe
from parley.client import Client
from parley.crypto.keys import SigningKey
from parley.processes import RelayProcess
from parley.protocol import frames
from parley.protocol.keychain import genesis_entry

PAIRS = 4
CONNECTIONS = 8


# -- the flooder (its own process) ------------------------------------------------------


async def flood(url: str) -> None:
    """Register an identity and flood from eight connections until SIGTERM; print what
    came back as one JSON line."""
    key = SigningKey.generate()
    identity = f"flooder{os.getpid()}"
    entry = genesis_entry(identity, "d1", key)
    outcomes: Counter[str] = Counter()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    first = await _open(url)
    await first.recv(decode=False)  # the challenge: registering needs no answer to it
    await first.send(frames.encode(frames.Register(ref=0, entry=entry)))
    assert isinstance(frames.decode_relay_frame(await first.recv(decode=False)), frames.Registered)
    await first.close()

    async def one(n: int) -> None:
        ws = await _open(url)
        challenge = frames.decode_relay_frame(await ws.recv(decode=False))
        assert isinstance(challenge, frames.Challenge)
        signature = key.sign(frames.auth_message(challenge.nonce, identity, "d1"))
        await ws.send(
            frames.encode(frames.Authenticate(identity=identity, device="d1", signature=signature))
        )

        async def read() -> None:
            with contextlib.suppress(Exception):
                async for data in ws:
                    assert isinstance(data, bytes)
                    frame = frames.decode_relay_frame(data)
                    name = (
                        frame.code.value
                        if isinstance(frame, frames.Error)
                        else type(frame).__name__.lower()
                    )
                    outcomes[name] += 1

        reader = asyncio.create_task(read())
        sent = 0
        with contextlib.suppress(Exception):
            while not stop.is_set():
                send = frames.Send(
                    ref=sent,
                    envelope_id=f"{n}-{sent}",
                    recipient=identity,
                    body=b"x" * 64,
                    expires_at=time.time() + 60,
                )
                await ws.send(frames.encode(send))
                sent += 1
                outcomes["sent"] += 1
        reader.cancel()
        ws.transport.abort()

    tasks = [asyncio.create_task(one(n)) for n in range(CONNECTIONS)]
    await stop.wait()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    print(json.dumps(dict(outcomes)), flush=True)


async def _open(url: str) -> ClientConnection:
    return await connect(url, max_size=None, compression=None)


# -- the measurement ----------------------------------------------------------------------


def limited(http_url: str, limit: str) -> float:
    """The relay's ``parley_relay_limited_total`` for ``limit``."""
    with urllib.request.urlopen(http_url + "/metrics", timeout=10) as response:
        text = response.read().decode()
    prefix = f'parley_relay_limited_total{{limit="{limit}"}} '
    return sum(float(line[len(prefix) :]) for line in text.splitlines() if line.startswith(prefix))


ROUND_SECONDS = 1 / 40  # a start per probe pair at most 40 times a second


def cpu(pid: int) -> float:
    """CPU seconds (user + system) process ``pid`` has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def sample(
    probe: LatencyProbe, pairs: list[tuple[Client, Client]], samples: int
) -> list[float]:
    taken: list[float] = []
    while len(taken) < samples:
        began = time.monotonic()
        for sender, receiver in pairs:
            taken.append(await probe.one(sender, receiver))
        # Each probe device stays under the default request budget (50/s): the probes
        # are phones, not flooders, and must never be refused themselves.
        await asyncio.sleep(max(0.0, began + ROUND_SECONDS - time.monotonic()))
    return taken[:samples]


async def run(args: argparse.Namespace, workdir: Path) -> None:
    print(f"{os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.2f} at the start")
    async with RelayProcess(workdir / "relay", extra_args=args.relay_args.split()) as relay:
        probe = LatencyProbe(workdir)
        try:
            senders, receivers = await probe.pair_up([relay.url] * PAIRS)
            pairs = list(zip(senders, receivers, strict=True))
            await sample(probe, pairs, PAIRS * 3)  # warm up: sessions, chains, permits
            baseline = Latency("baseline", await sample(probe, pairs, args.samples))
            flooder = await asyncio.create_subprocess_exec(
                sys.executable,
                __file__,
                "--flood",
                relay.url,
                stdout=asyncio.subprocess.PIPE,
            )
            await asyncio.sleep(1.0)  # the flood under way on every connection
            relay_cpu, flooder_cpu, began = cpu(relay.pid), cpu(flooder.pid), time.monotonic()
            flooded = Latency("flooded", await sample(probe, pairs, args.samples))
            wall = time.monotonic() - began
            relay_cpu, flooder_cpu = cpu(relay.pid) - relay_cpu, cpu(flooder.pid) - flooder_cpu
            flooder.send_signal(signal.SIGTERM)
            out, _ = await asyncio.wait_for(flooder.communicate(), 60)
            replaced = await asyncio.to_thread(limited, relay.http_url, "connections")
        finally:
            await probe.close()
    got = json.loads(out.decode().strip().splitlines()[-1])
    print(
        f"{PAIRS} pairs, one start at a time round robin, {args.samples} samples each mode;"
        f" flooder: one identity, {CONNECTIONS} connections of one device, default limits"
    )
    print(baseline.line())
    print(flooded.line())
    ratio = flooded.p99 / baseline.p99
    verdict = "met" if ratio <= 2.0 else "NOT met"
    print(
        f"ratio flooded/baseline p99 = {ratio:.3f} (goal <= 2: {verdict})"
        f"  p50 = {flooded.p50 / baseline.p50:.3f}"
    )
    print(
        f"while flooded: relay {relay_cpu / wall:.0%} of a CPU,"
        f" flooder {flooder_cpu / wall:.0%}, over {wall:.2f} s"
    )
    print(
        f"flooder: sent {got.get('sent', 0)}, acknowledged {got.get('ack', 0)},"
        f" refused rate_limited {got.get('rate_limited', 0)};"
        f" the relay closed {replaced:.0f} of its {CONNECTIONS} connections (4 per device)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=None)
    parser.add_argument("--quick", action="store_true", help="a few samples: a smoke run")
    parser.add_argument(
        "--relay-args",
        default="",
        help='more `parley relay` options, e.g. "--rate 50 --burst 100" (default: none)',
    )
    parser.add_argument("--flood", metavar="URL", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.flood:
        asyncio.run(flood(args.flood))
        return
    if args.samples is None:
        args.samples = 20 if args.quick else 1000
    with tempfile.TemporaryDirectory(prefix="parley-flood-") as tmp:
        asyncio.run(run(args, Path(tmp)))


if __name__ == "__main__":
    main()

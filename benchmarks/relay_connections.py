"""Idle authenticated connections on one relay process: relay memory per connection.

A real ``parley relay`` (SQLite; limits on registrations and unauthenticated connections
raised so that setting up is not what is measured). Holder processes register one
identity each for N devices' worth of connections, then open and authenticate them
(raw frames over real WebSockets) and keep them idle. Printed: the relay's RSS before
and after, the growth per connection (the goal: at most 10 KB), the time to accept and
authenticate them all, and how long it then takes for one message to every connection
(sent by a last client, each holder reading its connections' deliveries).

    python benchmarks/relay_connections.py [--connections 10000] [--holders 4] [--loop auto]
                                           [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as benchmarks/<name>.py

from websockets.asyncio.client import ClientConnection, connect

from benchmarks.harness import UNLIMITED_RELAY_ARGS
from parley.crypto.keys import SigningKey
from parley.processes import RelayProcess
from parley.protocol import frames
from parley.protocol.keychain import genesis_entry

# Setting up (registering, authenticating thousands at once) is not what is measured.
SETUP_ARGS = (*UNLIMITED_RELAY_ARGS, "--preauth-per-source", "100000")
OPEN_AT_ONCE = 64
MAX_HOLD = 600.0  # seconds a holder process lives at most


# -- a holder process -----------------------------------------------------------------------


class Held:
    def __init__(self, ws: ClientConnection, identity: str) -> None:
        self.ws = ws
        self.identity = identity


async def _frame(ws: ClientConnection) -> frames.RelayFrame:
    return frames.decode_relay_frame(await ws.recv(decode=False))


async def _hold_one(
    url: str, identity: str, key: SigningKey, register: bool, permit: str | None = None
) -> Held:
    ws = await connect(url, compression=None, max_size=None, ping_interval=None)
    challenge = await _frame(ws)
    assert isinstance(challenge, frames.Challenge)
    if register:
        entry = genesis_entry(identity, "d1", key)
        await ws.send(frames.encode(frames.Register(ref=0, entry=entry)))
        assert isinstance(await _frame(ws), frames.Registered)
    signature = key.sign(frames.auth_message(challenge.nonce, identity, "d1"))
    await ws.send(
        frames.encode(frames.Authenticate(identity=identity, device="d1", signature=signature))
    )
    while not isinstance(await _frame(ws), frames.Welcome):
        pass
    if permit is not None:
        await ws.send(frames.encode(frames.Permit(ref=1, identity=permit)))
        while not isinstance(await _frame(ws), frames.Done):
            pass
    return Held(ws, identity)


async def hold(url: str, count: int, prefix: str) -> None:
    """Open ``count`` authenticated connections (one identity each), say so, then wait;
    on SIGUSR1 read one Deliver on each and say how long that took; exit on SIGTERM,
    when the relay closes a connection, or after MAX_HOLD seconds, whichever is first
    (so a holder never outlives a benchmark that died)."""
    async with asyncio.timeout(MAX_HOLD):
        await _hold(url, count, prefix)


async def _hold(url: str, count: int, prefix: str) -> None:
    loop = asyncio.get_running_loop()
    deliver, stop = asyncio.Event(), asyncio.Event()
    loop.add_signal_handler(signal.SIGUSR1, deliver.set)
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    keys = [SigningKey.generate() for _ in range(count)]
    window = asyncio.Semaphore(OPEN_AT_ONCE)

    async def one(n: int) -> Held:
        async with window:
            return await _hold_one(url, f"{prefix}{n}", keys[n], register=True, permit="sender")

    held = await asyncio.gather(*(one(n) for n in range(count)))
    print(json.dumps({"held": len(held), "identities": [h.identity for h in held]}), flush=True)
    # The relay closing a connection (it stopped) ends the holder: reading fails.
    relay_gone = asyncio.ensure_future(held[0].ws.wait_closed())

    def end(_: object) -> None:
        deliver.set()
        stop.set()

    relay_gone.add_done_callback(end)
    await deliver.wait()
    began = time.perf_counter()

    async def until_delivered(h: Held) -> None:
        while not isinstance(await _frame(h.ws), frames.Deliver):
            pass

    await asyncio.gather(*(until_delivered(h) for h in held))
    print(json.dumps({"delivered_in": time.perf_counter() - began}), flush=True)
    await stop.wait()
    for h in held:
        h.ws.transport.abort()


# -- the run ----------------------------------------------------------------------------------


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for {pid}")


async def _line(proc: asyncio.subprocess.Process) -> dict[str, object]:
    assert proc.stdout is not None
    line = await proc.stdout.readline()
    if not line:
        raise SystemExit("a holder process ended early")
    decoded: dict[str, object] = json.loads(line)
    return decoded


async def run(args: argparse.Namespace, workdir: Path) -> None:
    per_holder = args.connections // args.holders
    total = per_holder * args.holders
    relay_args = (*SETUP_ARGS, "--loop", args.loop)
    async with RelayProcess(workdir / "relay", extra_args=relay_args) as relay:
        sender = await _hold_one(relay.url, "sender", key := SigningKey.generate(), True)
        await asyncio.sleep(0.5)
        before = rss(relay.pid)
        began = time.perf_counter()
        holders = [
            await asyncio.create_subprocess_exec(
                sys.executable,
                __file__,
                "--hold",
                relay.url,
                str(per_holder),
                f"h{n}x",
                stdout=asyncio.subprocess.PIPE,
            )
            for n in range(args.holders)
        ]
        try:
            ready = [await _line(proc) for proc in holders]
            accepted_in = time.perf_counter() - began
            await asyncio.sleep(1.0)  # let the relay settle (its writers idle)
            after = rss(relay.pid)
            identities = [i for r in ready for i in r["identities"]]  # type: ignore[attr-defined]
            # One message to each, all at once; each holder reads its deliveries.
            for proc in holders:
                proc.send_signal(signal.SIGUSR1)
            sent_began = time.perf_counter()
            for ref, identity in enumerate(identities):
                await sender.ws.send(
                    frames.encode(
                        frames.Send(
                            ref=ref,
                            envelope_id=f"hello-{identity}",
                            recipient=identity,
                            body=b"hello",
                            expires_at=time.time() + 600,
                        )
                    )
                )
            delivered = [await _line(proc) for proc in holders]
            all_in = time.perf_counter() - sent_began
            slowest = max(float(d["delivered_in"]) for d in delivered)  # type: ignore[arg-type]
        finally:
            for proc in holders:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
            for proc in holders:
                await proc.wait()
            sender.ws.transport.abort()
    del key
    per_connection = (after - before) / total
    verdict = "met" if per_connection <= 10_000 else "NOT met"
    print(
        f"{total} idle authenticated connections ({args.holders} holder processes;"
        f" relay --loop {args.loop})"
    )
    print(
        f"relay RSS {before / 2**20:.1f} MiB -> {after / 2**20:.1f} MiB:"
        f" {per_connection / 1000:.2f} KB per connection (goal <= 10 KB: {verdict})"
    )
    print(f"accepted and authenticated (each registering first) in {accepted_in:.2f} s")
    print(
        f"then one message to each: all delivered {all_in:.2f} s after the first send"
        f" (slowest holder {slowest:.2f} s after its signal)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=None)
    parser.add_argument("--holders", type=int, default=4)
    parser.add_argument(
        "--loop", default="auto", choices=("auto", "uvloop", "asyncio"), help="the relay's"
    )
    parser.add_argument("--quick", action="store_true", help="a few hundred: a smoke run")
    parser.add_argument(
        "--hold", nargs=3, metavar=("URL", "COUNT", "PREFIX"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.hold:
        url, count, prefix = args.hold
        asyncio.run(hold(url, int(count), prefix))
        return
    if args.connections is None:
        args.connections = 400 if args.quick else 10_000
    with tempfile.TemporaryDirectory(prefix="parley-conns-") as tmp:
        asyncio.run(run(args, Path(tmp)))


if __name__ == "__main__":
    main()

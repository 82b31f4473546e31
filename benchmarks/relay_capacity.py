"""Relay capacity: replayed real envelopes from many devices to many, against a bare echo.

Load-generator processes (``--generators``, 2 by default: one per core here) each set
up their own devices before anything is timed: ``--devices`` identities of one device
each, registered and connected through the SDK (``parley.client.Client``), every device
permitting the ``--fanout`` devices before it to write to it. Each device then sends
through the SDK's real path (signed ``chat.voice.start``, sealed with Olm for the
recipient's device) to the ``--fanout`` devices after it, round robin; a capturing
transport keeps each encoded ``Send`` frame instead of sending it (and answers with the
Ack the relay would give). Those frames are what is replayed: no cryptography runs in
the timed part.

Timed part: every generator opens one raw WebSocket per device (authenticated with the
device's key), sends that device's frames with at most ``--window`` unacknowledged on
the connection, reads Acks, reads Deliver frames on the receiving connections and
confirms them (one Confirm per burst of deliveries, as the SDK does). A message counts
when it was delivered; the run ends when every one was, and the Confirms are out.
Printed: messages/s of the real relay (``parley relay``, SQLite, ``synchronous=FULL``,
the limits of ``UNLIMITED_RELAY_ARGS``), then of a bare ``websockets`` echo server
process driven by the same generator code with the same frames, connections and
windows (an echoed frame counts as its Ack and its delivery), and the ratio relay/echo
(target: at least 0.5). Both are the best of several runs (``--rounds``,
``--echo-rounds``; each relay run with frames of its own), every run's rate printed,
since this machine's figures wander from one run to the next. Then a run paced at half
the best relay rate, with fresh frames: p50 and p99 delivery latency (from the send of a
frame to its Deliver).

By default, where PostgreSQL and Redis answer (``--postgres``, ``--redis``), the same is
measured on a relay backed by them (no target yet; the same load and rounds, unless
``--pg-messages`` and ``--pg-paced`` say otherwise), with its ratio to the same echo:
the run gets a database of its own (``parley_bench_<hex>``, migrated, dropped at the
end) and a Redis key prefix of its own (its keys deleted at the end), as in
``relay_cluster.py``. Where they do not answer it says so; ``--no-postgres`` skips it.

Generators are bounded: their sizes are fixed before the run, every phase has a time
limit, and each exits when its parent goes away (its stdin closes) or after
``GENERATOR_LIFE`` seconds.

    python benchmarks/relay_capacity.py [--generators 2] [--devices 16] [--fanout 4]
        [--messages 1200] [--paced 200] [--window 16] [--rounds 3] [--echo-rounds 3]
        [--pg-messages 1200] [--pg-paced 200] [--no-postgres] [--relay-url URL] [--quick]

``--relay-url`` drives a relay started by hand (under a profiler, say) instead of a fresh
one, and skips PostgreSQL.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as benchmarks/<name>.py

from websockets.asyncio.client import ClientConnection, connect

from benchmarks.harness import (
    PEER_INFO,
    UNLIMITED_RELAY_ARGS,
    Latency,
    Result,
    echo_process,
    run_in_workdir,
    serve_echo,
)
from benchmarks.relay_cluster import (
    DEFAULT_POSTGRES,
    DEFAULT_REDIS,
    process_cpu,
    services_for_run,
    unreachable,
)
from parley.client import Client
from parley.client.connection import websocket_connector
from parley.client.registration import register_identity
from parley.credentials import Credentials
from parley.processes import RelayProcess
from parley.protocol import frames
from parley.transport import Transport

GENERATOR_LIFE = 600.0  # seconds a generator process lives at most
PHASE_LIMIT = 180.0  # seconds any one phase of a generator may take
SEAL_AT_ONCE = 64  # concurrent SDK sends per device while building (one Olm save each turn)
START_DELAY = 0.3  # seconds between "go" and the common start, so all begin together
# A message lives long enough for any run; the relay caps it at its own maximum anyway.
MESSAGE_LIFETIME = 3600.0
ANSWER_LIMIT = 64 * 2**20  # bytes of one generator's answer line (latency samples)


# -- building the load, once, through the SDK ---------------------------------------------


class Capturing:
    """A transport to the relay that keeps every ``Send`` instead of sending it and
    answers it with the Ack the relay would give; everything else goes through."""

    def __init__(self, inner: Transport, kept: list[tuple[str, bytes]]) -> None:
        self._inner = inner
        self._kept = kept
        self._incoming: asyncio.Queue[bytes | Exception] = asyncio.Queue()
        self._pump = asyncio.ensure_future(self._read())

    @property
    def remote(self) -> str:
        return self._inner.remote

    @property
    def source(self) -> str:
        return self._inner.source

    async def _read(self) -> None:
        try:
            while True:
                self._incoming.put_nowait(await self._inner.recv())
        except Exception as exc:  # handed to whoever reads next
            self._incoming.put_nowait(exc)

    async def send(self, data: bytes) -> None:
        frame = frames.decode_client_frame(data)
        if isinstance(frame, frames.Send):
            self._kept.append((frame.envelope_id, data))
            ack = frames.Ack(ref=frame.ref, envelope_id=frame.envelope_id)
            self._incoming.put_nowait(frames.encode(ack))
            return
        await self._inner.send(data)

    def write_now(self, data: bytes) -> bool:
        return False  # the client sends through send(), which keeps the Sends

    async def recv(self) -> bytes:
        item = await self._incoming.get()
        if isinstance(item, Exception):
            self._incoming.put_nowait(item)
            raise item
        return item

    async def close(self, code: int = 1000, reason: str = "") -> None:
        self._pump.cancel()
        await self._inner.close(code, reason)


@dataclass
class Device:
    """One device of the load: its credentials and the frames it replays, by phase."""

    credentials: Credentials
    frames: dict[str, list[tuple[str, bytes]]] = field(default_factory=dict)


async def prepare(url: str, devices: int, fanout: int, counts: dict[str, int]) -> list[Device]:
    """``devices`` registered devices, each with ``counts[phase]`` real Send frames per
    phase to the ``fanout`` devices after it (which permit it)."""
    credentials = await asyncio.gather(*(register_identity(url) for _ in range(devices)))
    load = [Device(creds) for creds in credentials]
    kept: list[list[tuple[str, bytes]]] = [[] for _ in load]
    relay = websocket_connector(url)

    def capturing(into: list[tuple[str, bytes]]) -> Callable[[], Awaitable[Transport]]:
        async def connector() -> Transport:
            return Capturing(await relay(), into)

        return connector

    clients = [
        Client(d.credentials, connector=capturing(k), message_lifetime=MESSAGE_LIFETIME)
        for d, k in zip(load, kept, strict=True)
    ]
    try:
        await asyncio.gather(*(client.connect() for client in clients))
        for n, client in enumerate(clients):
            for step in range(1, fanout + 1):
                await client.connections.permit(clients[(n - step) % devices].id)

        async def build(n: int, count: int) -> None:
            voice, gate = clients[n].voice(), asyncio.Semaphore(SEAL_AT_ONCE)

            async def one(i: int) -> None:
                recipient = clients[(n + 1 + i % fanout) % devices].id
                async with gate:
                    await voice.start(recipient, "capacity", f"call-{i}", PEER_INFO, {"n": i})

            await asyncio.gather(*(one(i) for i in range(count)))

        for phase, count in counts.items():
            await asyncio.gather(*(build(n, count) for n in range(devices)))
            for device, frames_kept in zip(load, kept, strict=True):
                device.frames[phase] = list(frames_kept)
                frames_kept.clear()
    finally:
        for client in clients:
            await client.close()
    return load


# -- the timed part: raw connections replaying the frames -----------------------------------


class Run:
    """What one timed phase of one generator has sent and seen delivered."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.sent_at: dict[str, float] = {}
        self.latencies: list[float] = []
        self.errors: list[str] = []
        self.done = asyncio.Event()
        if expected == 0:
            self.done.set()

    def delivered(self, envelope_id: str) -> None:
        began = self.sent_at.pop(envelope_id, None)
        if began is None:  # not ours, or delivered again: counted once
            return
        self.latencies.append(time.monotonic() - began)
        if len(self.latencies) == self.expected:
            self.done.set()

    def failed(self, why: str) -> None:
        self.errors.append(why)
        self.done.set()


async def relay_frame(ws: ClientConnection) -> frames.RelayFrame:
    return frames.decode_relay_frame(await ws.recv(decode=False))


class Link:
    """One device's connection, to the relay (authenticated) or to the echo server."""

    def __init__(self, ws: ClientConnection, window: int, echo: bool) -> None:
        self.ws = ws
        self.echo = echo
        self.window = asyncio.Semaphore(window)
        self.run: Run | None = None
        self._offset = 0  # the last delivered offset; confirmed up to ``_confirmed``
        self._confirmed = 0
        self._wake = asyncio.Event()
        self._tasks = [asyncio.ensure_future(self._read()), asyncio.ensure_future(self._confirm())]

    @classmethod
    async def open(cls, url: str, device: Device, window: int, echo: bool) -> Link:
        ws = await connect(url, compression=None, max_size=None, ping_interval=None)
        if not echo:
            challenge = await relay_frame(ws)
            assert isinstance(challenge, frames.Challenge), challenge
            creds = device.credentials
            signature = creds.secret_key.sign(
                frames.auth_message(challenge.nonce, creds.identity, creds.device)
            )
            auth = frames.Authenticate(
                identity=creds.identity, device=creds.device, signature=signature
            )
            await ws.send(frames.encode(auth))
            while not isinstance(reply := await relay_frame(ws), frames.Welcome):
                if isinstance(reply, frames.Error):
                    raise SystemExit(f"{creds.identity} not authenticated: {reply.message}")
        return cls(ws, window, echo)

    async def send(self, run: Run, envelope_id: str, data: bytes) -> None:
        await self.window.acquire()
        run.sent_at[envelope_id] = time.monotonic()
        await self.ws.send(data)

    async def _read(self) -> None:
        try:
            while True:
                data = await self.ws.recv(decode=False)
                run = self.run
                if run is None:
                    continue
                if self.echo:  # the echo is the Ack and the delivery at once
                    sent = frames.decode_client_frame(data)
                    assert isinstance(sent, frames.Send)
                    self.window.release()
                    run.delivered(sent.envelope_id)
                    continue
                frame = frames.decode_relay_frame(data)
                if isinstance(frame, frames.Ack):
                    self.window.release()
                elif isinstance(frame, frames.Deliver):
                    self._offset = frame.offset
                    self._wake.set()
                    run.delivered(frame.envelope.id)
                elif isinstance(frame, frames.Error):
                    self.window.release()
                    run.failed(f"{frame.code}: {frame.message}")
        except Exception as exc:  # the connection went away: the run cannot finish
            if self.run is not None:
                self.run.failed(f"connection lost: {exc!r}")

    async def _confirm(self) -> None:
        # One Confirm per burst: every Deliver read since the last one is confirmed.
        while True:
            await self._wake.wait()
            self._wake.clear()
            await self.flush()

    async def flush(self) -> None:
        if self._offset > self._confirmed:
            self._confirmed = self._offset
            await self.ws.send(frames.encode(frames.Confirm(offset=self._confirmed)))

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self.ws.transport.abort()


class Generator:
    """One generator process's devices, frames and connections."""

    def __init__(self) -> None:
        self.load: list[Device] = []
        self.links: list[Link] = []

    async def prepare(self, cmd: dict[str, Any]) -> dict[str, Any]:
        self.load = await prepare(cmd["url"], cmd["devices"], cmd["fanout"], cmd["counts"])
        sizes = [len(data) for d in self.load for _, data in d.frames["throughput"]]
        return {
            "frames": sum(len(f) for d in self.load for f in d.frames.values()),
            "frame_bytes": sum(sizes) / max(1, len(sizes)),
        }

    async def connect(self, cmd: dict[str, Any]) -> dict[str, Any]:
        await self.disconnect({})
        self.links = list(
            await asyncio.gather(
                *(Link.open(cmd["url"], d, cmd["window"], cmd["echo"]) for d in self.load)
            )
        )
        return {"connections": len(self.links)}

    async def disconnect(self, cmd: dict[str, Any]) -> dict[str, Any]:
        for link in self.links:
            await link.close()
        self.links = []
        return {}

    async def drive(self, cmd: dict[str, Any]) -> dict[str, Any]:
        """Send one phase's frames (as fast as the windows allow, or paced at
        ``cmd["rate"]`` messages/s); until every one was delivered and confirmed."""
        phase, rate = cmd["phase"], cmd.get("rate")
        plan = [d.frames[phase] for d in self.load]
        run = Run(sum(len(p) for p in plan))
        for link in self.links:
            link.run = run
        await asyncio.sleep(max(0.0, cmd["start_at"] - time.monotonic()))
        began = time.monotonic()

        async def flat_out(link: Link, frames_: list[tuple[str, bytes]]) -> None:
            for envelope_id, data in frames_:
                await link.send(run, envelope_id, data)

        async def paced(rate: float) -> None:
            # Round robin over the devices, message k due at began + k / rate.
            order = [
                (link, p[i])
                for i in range(max(len(p) for p in plan))
                for link, p in zip(self.links, plan, strict=True)
                if i < len(p)
            ]
            for k, (link, (envelope_id, data)) in enumerate(order):
                delay = began + k / rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                await link.send(run, envelope_id, data)

        senders = (
            [paced(rate)]
            if rate
            else [flat_out(link, p) for link, p in zip(self.links, plan, strict=True)]
        )
        sending = asyncio.ensure_future(asyncio.gather(*senders))
        try:
            async with asyncio.timeout(PHASE_LIMIT):
                await run.done.wait()
                if not run.errors:
                    await sending
                    for link in self.links:
                        await link.flush()
        except TimeoutError:
            run.failed(f"{phase}: {len(run.latencies)} of {run.expected} delivered in time")
        finally:
            sending.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sending
        ended = time.monotonic()
        for link in self.links:
            link.run = None
        return {
            "delivered": len(run.latencies),
            "began": began,
            "ended": ended,
            "latencies": run.latencies if rate else [],
            "errors": run.errors[:5],
        }


async def generate() -> None:
    """A generator process: one JSON command a line on stdin, one JSON answer a line on
    stdout. It ends when stdin closes (its parent is gone), even in the middle of a
    command, or after GENERATOR_LIFE seconds."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    generator = Generator()
    commands = {
        "prepare": generator.prepare,
        "connect": generator.connect,
        "disconnect": generator.disconnect,
        "drive": generator.drive,
    }
    async with asyncio.timeout(GENERATOR_LIFE):
        try:
            line = await reader.readline()
            while line:
                cmd = json.loads(line)
                work = asyncio.ensure_future(commands[cmd["cmd"]](cmd))
                following = asyncio.ensure_future(reader.readline())
                await asyncio.wait({work, following}, return_when=asyncio.FIRST_COMPLETED)
                if not work.done():  # stdin closed (or spoke out of turn): stop here
                    work.cancel()
                    return
                sys.stdout.write(json.dumps(work.result()) + "\n")
                sys.stdout.flush()
                line = await following
        finally:
            await generator.disconnect({})


# -- the parent: generator processes, relays, the echo ------------------------------------


class Generators:
    """The generator processes, asked the same command at once."""

    def __init__(
        self, procs: Sequence[asyncio.subprocess.Process], devices: int, fanout: int
    ) -> None:
        self._procs = list(procs)
        self.devices = devices
        self.fanout = fanout

    @classmethod
    @asynccontextmanager
    async def started(cls, count: int, devices: int, fanout: int) -> AsyncIterator[Generators]:
        procs = [
            await asyncio.create_subprocess_exec(
                sys.executable,
                __file__,
                "--generator",
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                limit=ANSWER_LIMIT,
            )
            for _ in range(count)
        ]
        try:
            yield cls(procs, devices, fanout)
        finally:
            for proc in procs:
                assert proc.stdin is not None
                proc.stdin.close()
            for proc in procs:
                try:
                    await asyncio.wait_for(proc.wait(), 10)
                except TimeoutError:
                    with contextlib.suppress(ProcessLookupError):
                        proc.kill()
                    await proc.wait()

    async def ask(self, cmd: dict[str, Any]) -> list[dict[str, Any]]:
        async def one(proc: asyncio.subprocess.Process) -> dict[str, Any]:
            assert proc.stdin is not None and proc.stdout is not None
            proc.stdin.write((json.dumps(cmd) + "\n").encode())
            await proc.stdin.drain()
            line = await asyncio.wait_for(proc.stdout.readline(), PHASE_LIMIT + 30)
            if not line:
                raise SystemExit(f"a generator process ended during {cmd['cmd']}")
            answer: dict[str, Any] = json.loads(line)
            return answer

        return list(await asyncio.gather(*(one(proc) for proc in self._procs)))

    @property
    def pids(self) -> list[int]:
        return [proc.pid for proc in self._procs]

    async def drive(
        self, name: str, phase: str, server: int, rate: float | None = None
    ) -> Measured:
        """Every generator sends its frames of ``phase`` from one common start; the
        figures of all together, and the CPU that ``server`` (a pid) and they used."""
        start_at = time.monotonic() + START_DELAY
        per = None if rate is None else rate / len(self._procs)
        before = [process_cpu(pid) for pid in (server, *self.pids)]
        answers = await self.ask(
            {"cmd": "drive", "phase": phase, "start_at": start_at, "rate": per}
        )
        spent = [process_cpu(pid) - b for pid, b in zip((server, *self.pids), before, strict=True)]
        errors = [e for a in answers for e in a["errors"]]
        if errors:
            raise SystemExit(f"{name}: the load did not go through: {errors[:5]}")
        seconds = max(a["ended"] for a in answers) - min(a["began"] for a in answers)
        delivered = sum(a["delivered"] for a in answers)
        latencies = [x for a in answers for x in a["latencies"]]
        return Measured(
            Result(name, delivered, seconds),
            Latency(name, latencies),
            spent[0] if server else None,
            sum(spent[1:]),
        )


@dataclass(frozen=True)
class Measured:
    result: Result
    latency: Latency
    # CPU seconds the server (relay or echo) and the generators used, start to end.
    server_cpu: float | None  # None: not a process of this run (--relay-url)
    generator_cpu: float

    def cpu_line(self, server: str) -> str:
        used = "  n/a" if self.server_cpu is None else f"{self.server_cpu:5.2f}"
        return (
            f"  cpu s: {server} {used}  generators {self.generator_cpu:5.2f}"
            f"  over {self.result.seconds:.2f} s wall"
        )


@dataclass(frozen=True)
class Figures:
    """One relay's capacity, its latency at half of it, the size of its frames."""

    full: Measured
    half_rate: float
    half: Measured
    frame_bytes: float

    def lines(self, note: str) -> list[str]:
        half = self.half
        return [
            f"{self.full.result.line()}  ({note})",
            self.full.cpu_line("relay"),
            f"{half.latency.line()}  paced at {self.half_rate:.1f} msg/s"
            f" ({half.result.rate:.1f} delivered), send -> Deliver",
        ]


def throughput_phases(rounds: int) -> list[str]:
    """The flat-out phases, each with frames of its own (a frame replayed would be a
    duplicate, acknowledged and not delivered again)."""
    return ["throughput", *(f"throughput-{n}" for n in range(2, rounds + 1))]


def best_of(rounds: list[Measured]) -> Measured:
    return max(rounds, key=lambda measured: measured.result.rate)


def rounds_line(name: str, rounds: list[Measured]) -> str:
    rates = ", ".join(f"{measured.result.rate:.0f}" for measured in rounds)
    return f"  {name} rounds, msg/s: {rates} (the best counts)"


async def relay_figures(
    gens: Generators,
    name: str,
    relay: int,
    url: str,
    sizes: tuple[int, int, int],
    window: int,
) -> Figures:
    """Prepare the load on the relay at ``url`` (pid ``relay``): ``sizes`` are the
    messages per device flat out, paced, and the flat-out rounds; drive it flat out
    that many times (the best counts, as for the echo), then paced at half that rate."""
    began = time.monotonic()
    messages, paced, rounds = sizes
    phases = throughput_phases(rounds)
    prepared = await gens.ask(
        {
            "cmd": "prepare",
            "url": url,
            "devices": gens.devices,
            "fanout": gens.fanout,
            "counts": {**dict.fromkeys(phases, messages), "paced": paced},
        }
    )
    frame_bytes = sum(p["frame_bytes"] for p in prepared) / len(prepared)
    print(f"{name}: load prepared in {time.monotonic() - began:.1f} s", flush=True)
    await gens.ask({"cmd": "connect", "url": url, "window": window, "echo": False})
    measured = [await gens.drive(name, phase, relay) for phase in phases]
    if rounds > 1:
        print(rounds_line(name, measured), flush=True)
    full = best_of(measured)
    half_rate = full.result.rate / 2
    half = await gens.drive(name, "paced", relay, half_rate)
    await gens.ask({"cmd": "disconnect"})
    return Figures(full, half_rate, half, frame_bytes)


async def echo_figure(gens: Generators, window: int, rounds: int) -> Measured:
    """The same frames through the echo server, the same connections and windows; the
    best of ``rounds``."""
    async with echo_process(__file__) as (pid, url):
        await gens.ask({"cmd": "connect", "url": url, "window": window, "echo": True})
        measured = [await gens.drive("echo", "throughput", pid) for _ in range(rounds)]
        await gens.ask({"cmd": "disconnect"})
    if rounds > 1:
        print(rounds_line("echo", measured), flush=True)
    return best_of(measured)


@asynccontextmanager
async def sqlite_relay(workdir: Path, url: str | None, loop: str) -> AsyncIterator[tuple[int, str]]:
    """(pid, URL) of a fresh SQLite relay, or (0, ``url``) for the one running there."""
    if url is not None:
        yield 0, url
        return
    relay_args = (*UNLIMITED_RELAY_ARGS, "--loop", loop)
    async with RelayProcess(workdir / "sqlite", extra_args=relay_args) as relay:
        yield relay.pid, relay.url


async def run(args: argparse.Namespace, workdir: Path) -> None:
    print(
        f"{os.cpu_count()} CPUs, shared by the relay (or echo) and {args.generators} generator"
        f" processes; load average {os.getloadavg()[0]:.2f} at the start"
    )
    async with Generators.started(args.generators, args.devices, args.fanout) as gens:
        async with sqlite_relay(workdir, args.relay_url, args.loop) as (pid, url):
            sqlite = await relay_figures(
                gens, "sqlite", pid, url, (args.messages, args.paced, args.rounds), args.window
            )
        echo = await echo_figure(gens, args.window, args.echo_rounds)
    total = args.generators * args.devices * args.messages
    print(
        f"load: {args.generators} generators x {args.devices} devices, each sending to the"
        f" {args.fanout} after it; window {args.window} per connection;"
        f" {args.messages} messages per device = {total} (then {args.paced} per device paced);"
        f" Send frames of {sqlite.frame_bytes:.0f} bytes, signed and sealed beforehand"
    )
    where = (
        "the relay at " + args.relay_url
        if args.relay_url
        else f"SQLite, synchronous=FULL, --loop {args.loop}"
    )
    for line in sqlite.lines(f"{where}: stored, acked, delivered, confirmed"):
        print(line)
    print(
        f"{echo.result.line()}  (bare websockets echo: same frames, connections, windows;"
        f" best of {args.echo_rounds})"
    )
    print(echo.cpu_line("echo "))
    ratio = sqlite.full.result.rate / echo.result.rate
    print(f"ratio relay/echo = {ratio:.3f} (target >= 0.5: {'met' if ratio >= 0.5 else 'NOT met'})")
    if args.no_postgres or args.relay_url:
        return
    reason = await unreachable(args.postgres, args.redis)
    if reason is not None:
        print(f"{reason}: no PostgreSQL figure")
        return
    async with (
        services_for_run(args.postgres, args.redis) as services,
        Generators.started(args.generators, args.devices, args.fanout) as gens,
        RelayProcess(
            workdir / "pg", extra_args=(*services.node_args(), "--loop", args.loop)
        ) as relay,
    ):
        sizes = (args.pg_messages, args.pg_paced, args.rounds)
        pg = await relay_figures(gens, "postgres", relay.pid, relay.url, sizes, args.window)
    for line in pg.lines(f"PostgreSQL store + Redis bus, {args.pg_messages} per device"):
        print(line)
    print(f"ratio postgres/echo = {pg.full.result.rate / echo.result.rate:.3f} (no target)")
    print(
        f"cleaned up: database {services.database} dropped,"
        f" Redis keys under {services.prefix} deleted"
    )


# Every size: what it is, its --quick value, its value otherwise.
SIZES = {
    "devices": ("devices per generator", 4, 16),
    "fanout": ("recipients per device", 2, 4),
    "messages": ("per device, flat out", 20, 1200),
    "paced": ("per device, at half the rate", 10, 200),
    "window": ("unacknowledged per connection", 4, 16),
    "rounds": ("relay runs flat out, the best counts", 1, 3),
    "echo_rounds": ("echo runs, the best counts", 1, 3),
    "pg_messages": ("per device on PostgreSQL, flat out", 20, 1200),
    "pg_paced": ("per device on PostgreSQL, paced", 10, 200),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--generators", type=int, default=2, help="load processes (2)")
    for name, (what, _, full) in SIZES.items():
        parser.add_argument("--" + name.replace("_", "-"), type=int, help=f"{what} ({full})")
    parser.add_argument("--postgres", default=DEFAULT_POSTGRES, help="a maintenance database")
    parser.add_argument("--redis", default=DEFAULT_REDIS)
    parser.add_argument(
        "--loop", default="auto", choices=("auto", "uvloop", "asyncio"), help="the relay's"
    )
    parser.add_argument("--no-postgres", action="store_true", help="the SQLite relay only")
    parser.add_argument(
        "--relay-url", help="drive this running relay (to profile it) instead of starting one"
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes, for the smoke test")
    parser.add_argument("--generator", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--echo-server", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.generator:
        asyncio.run(generate())
        return
    if args.echo_server:
        asyncio.run(serve_echo())
        return
    for name, (_, quick, full) in SIZES.items():
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else full)

    run_in_workdir(lambda workdir: run(args, workdir), "parley-capacity-")


if __name__ == "__main__":
    main()

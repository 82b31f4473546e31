"""Relay nodes on one PostgreSQL store and one Redis bus, beside one SQLite node: delivery
latency same-node against cross-node, and throughput with one node against two, in one run.

Every relay is a real ``parley relay`` process; every client is an SDK ``Client`` in this
process, so every figure includes the client-side cryptography (signing, sealing with
Olm, opening, verifying). The run gets a PostgreSQL database of its own
(``parley_bench_<hex>``, migrated, dropped ``WITH (FORCE)`` at the end) and a Redis key
prefix of its own (its keys deleted at the end).

- latency: two PostgreSQL nodes; a sender and a receiver on each. One message at a time,
  from just before the sender sends a ``chat.voice.start`` to the moment the receiver's
  handler runs. Same-node (sender and receiver on one node) and cross-node (stored by
  one node, woken over Redis and delivered by the other) samples are interleaved, both
  directions alike; p50 and p99 of each and their ratio (the goal: cross-node p50 at
  most twice same-node). The same on one SQLite node, for reference.
- throughput: N senders each send M starts to their own receiver, W unacknowledged per
  sender, timed until every one was handled (stored, acknowledged, delivered, opened,
  verified): on one SQLite node, one PostgreSQL node, and two PostgreSQL nodes with the
  pairs spread over them as a load balancer would (some pairs across nodes). Fresh relay
  processes and identities for each mode in each round; rounds alternate the order; the
  best round of each mode is reported, with the CPU seconds each part used in it.

Without a reachable PostgreSQL or Redis it says so and reports the SQLite figures only.

    python benchmarks/relay_cluster.py [--latency-samples 400] [--senders 4]
        [--messages 1000] [--window 32] [--rounds 3] [--postgres DSN] [--redis URL] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import secrets
import signal
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as benchmarks/<name>.py

from benchmarks.harness import (
    UNLIMITED_RELAY_ARGS,
    Latency,
    LatencyProbe,
    Result,
    placed_voice_pairs,
)
from parley.processes import RelayProcess

DEFAULT_POSTGRES = "postgresql://postgres@127.0.0.1:5432/postgres"
DEFAULT_REDIS = "redis://127.0.0.1:6379/0"
RELAY_ARGS = UNLIMITED_RELAY_ARGS  # the benchmark measures the relay, not its limits
DATABASE_PREFIX = "parley_bench_"
LOOPBACK = ("127.0.0.1", "localhost", "::1")
MODES = ("sqlite", "pg-1node", "pg-2nodes")
# Lines of a relay's own output that deserve a look (the ready line and access logs do not).
_TROUBLE = re.compile(r"\b(WARNING|ERROR|CRITICAL|Traceback)\b")


# -- PostgreSQL and Redis for the run ----------------------------------------------------


@dataclass(frozen=True)
class Services:
    """The run's own database and Redis prefix."""

    admin_dsn: str
    database: str
    redis_url: str
    prefix: str

    @property
    def dsn(self) -> str:
        return urlsplit(self.admin_dsn)._replace(path="/" + self.database).geturl()

    @property
    def bus(self) -> str:
        return f"{self.redis_url}{'&' if '?' in self.redis_url else '?'}prefix={self.prefix}"

    def node_args(self) -> list[str]:
        return [*RELAY_ARGS, "--store", self.dsn, "--bus", self.bus]


async def unreachable(admin_dsn: str, redis_url: str) -> str | None:
    """Why PostgreSQL or Redis cannot be used for the run, or None when both answer."""
    try:
        import asyncpg
        import redis.asyncio
        from redis.exceptions import RedisError
    except ImportError as exc:
        return f"{exc.name} is not installed (pip install 'parley[postgres,redis]')"
    try:
        conn = await asyncpg.connect(admin_dsn, timeout=3)
        await conn.close()
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        return f"PostgreSQL is not reachable at {admin_dsn} ({type(exc).__name__}: {exc})"
    client = redis.asyncio.Redis.from_url(redis_url, socket_connect_timeout=3, socket_timeout=3)
    try:
        await client.ping()
    except (OSError, TimeoutError, RedisError) as exc:
        return f"Redis is not reachable at {redis_url} ({type(exc).__name__}: {exc})"
    finally:
        await client.aclose()
    return None


@asynccontextmanager
async def fresh_database(admin_dsn: str, name: str) -> AsyncIterator[str]:
    """A new empty database ``name`` on ``admin_dsn``'s server, its DSN; dropped
    afterwards, whatever happened in between."""
    import asyncpg

    admin = await asyncpg.connect(admin_dsn, timeout=10)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        yield urlsplit(admin_dsn)._replace(path="/" + name).geturl()
    finally:
        admin = await asyncpg.connect(admin_dsn, timeout=10)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


@asynccontextmanager
async def services_for_run(admin_dsn: str, redis_url: str) -> AsyncIterator[Services]:
    """A fresh migrated database and a fresh Redis prefix; both gone afterwards, whatever
    happened in between."""
    from parley.relay.store.postgres import migrate

    token = secrets.token_hex(6)
    services = Services(admin_dsn, DATABASE_PREFIX + token, redis_url, f"parley-bench-{token}")
    try:
        async with fresh_database(admin_dsn, services.database):
            await migrate(services.dsn)
            yield services
    finally:
        await delete_keys(redis_url, services.prefix)


async def delete_keys(redis_url: str, prefix: str) -> int:
    import redis.asyncio

    client = redis.asyncio.Redis.from_url(redis_url, socket_connect_timeout=3, socket_timeout=3)
    try:
        keys = [key async for key in client.scan_iter(match=f"{prefix}:*", count=1000)]
        if keys:
            await client.delete(*keys)
        return len(keys)
    finally:
        await client.aclose()


# -- CPU accounting ------------------------------------------------------------------------

_TICKS = os.sysconf("SC_CLK_TCK")


def process_cpu(pid: int) -> float:
    """User + system CPU seconds of a process on this machine (0 if it is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


@dataclass
class CpuSample:
    client: float
    relays: dict[int, float]
    postgres: dict[int, float] = field(default_factory=dict)
    redis: float | None = None


@dataclass(frozen=True)
class Cpu:
    """CPU seconds each part used during one measurement."""

    wall: float
    client: float
    relays: float
    postgres: float | None
    redis: float | None

    def line(self) -> str:
        parts = [f"client {self.client:5.2f}", f"relays {self.relays:5.2f}"]
        if self.postgres is not None:
            parts.append(f"postgres {self.postgres:5.2f}")
        if self.redis is not None:
            parts.append(f"redis {self.redis:5.2f}")
        return f"  cpu s: {'  '.join(parts)}  over {self.wall:.2f} s wall"


class CpuMeter:
    """Samples this process, the relay nodes, the PostgreSQL backends of the run's
    database and the Redis server (when they run on this machine)."""

    def __init__(self, relays: Sequence[RelayProcess], services: Services | None) -> None:
        self._relays = [relay.pid for relay in relays]
        self._services = services
        self._local = services is not None and urlsplit(services.admin_dsn).hostname in LOOPBACK
        self._redis_pid: int | None = None

    async def sample(self) -> CpuSample:
        sample = CpuSample(time.process_time(), {pid: process_cpu(pid) for pid in self._relays})
        if self._services is not None and self._local:
            sample.postgres = {pid: process_cpu(pid) for pid in await self._backends()}
            redis_pid = await self._redis()
            if redis_pid is not None:
                sample.redis = process_cpu(redis_pid)
        return sample

    async def _backends(self) -> list[int]:
        import asyncpg

        assert self._services is not None
        conn = await asyncpg.connect(self._services.admin_dsn, timeout=10)
        try:
            rows = await conn.fetch(
                "SELECT pid FROM pg_stat_activity WHERE datname = $1", self._services.database
            )
        finally:
            await conn.close()
        return [int(row["pid"]) for row in rows]

    async def _redis(self) -> int | None:
        assert self._services is not None
        if self._redis_pid is None and urlsplit(self._services.redis_url).hostname in LOOPBACK:
            import redis.asyncio

            client = redis.asyncio.Redis.from_url(self._services.redis_url, socket_timeout=3)
            try:
                info = await client.info("server")
            finally:
                await client.aclose()
            self._redis_pid = int(info["process_id"])
        return self._redis_pid

    @staticmethod
    def between(before: CpuSample, after: CpuSample, wall: float) -> Cpu:
        def spent(old: dict[int, float], new: dict[int, float]) -> float:
            return sum(cpu - old.get(pid, 0.0) for pid, cpu in new.items())

        postgres = None if not after.postgres else spent(before.postgres, after.postgres)
        redis = None
        if before.redis is not None and after.redis is not None:
            redis = after.redis - before.redis
        return Cpu(
            wall, after.client - before.client, spent(before.relays, after.relays), postgres, redis
        )


# -- relay processes -----------------------------------------------------------------------


@dataclass
class Nodes:
    """Relay processes started for one measurement; their troubling log lines."""

    relays: list[RelayProcess]

    @property
    def urls(self) -> list[str]:
        return [relay.url for relay in self.relays]

    def trouble(self) -> list[str]:
        return [line for relay in self.relays for line in relay.lines if _TROUBLE.search(line)]


@asynccontextmanager
async def relay_nodes(
    workdir: Path, name: str, count: int, services: Services | None
) -> AsyncIterator[Nodes]:
    """``count`` PostgreSQL nodes on the run's store and bus, or one SQLite node."""
    args = list(RELAY_ARGS) if services is None else services.node_args()
    relays = [RelayProcess(workdir / f"{name}-{n}", extra_args=args) for n in range(count)]
    try:
        started = await asyncio.gather(*(relay.start() for relay in relays), return_exceptions=True)
        for outcome in started:
            if isinstance(outcome, BaseException):
                raise outcome
        yield Nodes(relays)
    finally:
        for relay in relays:
            await relay.stop()


# -- latency -------------------------------------------------------------------------------


async def cluster_latency(
    urls: Sequence[str], workdir: Path, *, samples: int, warmup: int
) -> tuple[Latency, Latency]:
    """Same-node and cross-node latency on two nodes, interleaved."""
    probe = LatencyProbe(workdir)
    try:
        (s0, s1), (r0, r1) = await probe.pair_up(urls)
        # Each cycle: one sample of each mode per sender, so both directions and both
        # nodes count alike, and drift over the run touches both modes the same.
        cycle = [(s0, r0, True), (s0, r1, False), (s1, r1, True), (s1, r0, False)]
        for _ in range(warmup):  # Olm sessions, chains and permits cached
            for sender, receiver, _same in cycle:
                await probe.one(sender, receiver)
        same: list[float] = []
        cross: list[float] = []
        while len(same) < samples or len(cross) < samples:
            for sender, receiver, is_same in cycle:
                bucket = same if is_same else cross
                if len(bucket) < samples:
                    bucket.append(await probe.one(sender, receiver))
        return Latency("same-node", same), Latency("cross-node", cross)
    finally:
        await probe.close()


async def single_latency(url: str, workdir: Path, *, samples: int, warmup: int) -> Latency:
    probe = LatencyProbe(workdir)
    try:
        (sender,), (receiver,) = await probe.pair_up([url])
        for _ in range(warmup * 2):
            await probe.one(sender, receiver)
        return Latency("sqlite", [await probe.one(sender, receiver) for _ in range(samples)])
    finally:
        await probe.close()


# -- throughput ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Measured:
    result: Result
    cpu: Cpu


def spread(urls: Sequence[str], pairs: int) -> list[tuple[str, str]]:
    """Pair ``i``'s sender and receiver over the nodes as a balancer would: with two
    nodes and four pairs, two pairs within a node (one on each) and two across."""
    count = len(urls)
    return [(urls[i % count], urls[(i // count) % count]) for i in range(pairs)]


async def throughput(
    mode: str, round_: int, args: argparse.Namespace, services: Services | None, workdir: Path
) -> tuple[Measured, list[str]]:
    """One mode's throughput on fresh relay processes; the nodes' troubling lines too."""
    count = 2 if mode == "pg-2nodes" else 1
    backing = None if mode == "sqlite" else services
    async with relay_nodes(workdir, f"{mode}-r{round_}", count, backing) as nodes:
        meter = CpuMeter(nodes.relays, backing)
        spent: list[Cpu] = []

        @asynccontextmanager
        async def metered() -> AsyncIterator[None]:
            before = await meter.sample()
            began = time.perf_counter()
            yield
            wall = time.perf_counter() - began
            spent.append(CpuMeter.between(before, await meter.sample(), wall))

        result = await placed_voice_pairs(
            mode,
            spread(nodes.urls, args.senders),
            workdir / "clients",
            messages=args.messages,
            window=args.window,
            around=metered,
        )
        return Measured(result, spent[0]), nodes.trouble()


def pairs_across(nodes: int, pairs: int) -> int:
    """How many of ``pairs`` :func:`spread` puts across two nodes of ``nodes``."""
    placement = spread([f"node{n}" for n in range(nodes)], pairs)
    return sum(1 for sender, receiver in placement if sender != receiver)


# -- the run -------------------------------------------------------------------------------


QUICK = {
    "latency_samples": 10,
    "warmup": 1,
    "senders": 2,
    "messages": 20,
    "window": 4,
    "rounds": 1,
}
FULL = {
    "latency_samples": 400,
    "warmup": 5,
    "senders": 4,
    "messages": 1000,
    "window": 32,
    "rounds": 3,
}


def resolve(args: argparse.Namespace) -> argparse.Namespace:
    """Flags given win; the rest come from the quick or the full sizes."""
    for name, value in (QUICK if args.quick else FULL).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    return args


def figures(
    best: dict[str, Measured],
    latencies: Sequence[Latency],
    args: argparse.Namespace,
    placement: str,
) -> list[str]:
    lines = [
        f"latency: one message at a time, send -> receiver's handler,"
        f" {args.latency_samples} samples per mode (after {args.warmup} warm-up rounds)",
    ]
    notes = {
        "same-node": "  (PostgreSQL: sender and receiver on one node)",
        "cross-node": "  (PostgreSQL: stored on one node, Redis wake-up, delivered by the other)",
        "sqlite": "  (one SQLite node, for reference)",
    }
    by_name = {latency.name: latency for latency in latencies}
    lines += [latency.line() + notes[latency.name] for latency in latencies]
    if "same-node" in by_name:
        same, cross = by_name["same-node"], by_name["cross-node"]
        ratio = cross.p50 / same.p50
        verdict = "met" if ratio <= 2.0 else "NOT met"
        lines.append(
            f"ratio cross/same latency p50 = {ratio:.3f} (goal <= 2: {verdict})"
            f"  p99 = {cross.p99 / same.p99:.3f}"
        )
    lines.append(
        f"throughput: senders={args.senders} messages/sender={args.messages}"
        f" window={args.window}, best of {args.rounds} round(s), order alternating"
    )
    descriptions = {
        "sqlite": "  (one node, SQLite)",
        "pg-1node": "  (one node, PostgreSQL store + Redis bus)",
        "pg-2nodes": f"  (two nodes, one PostgreSQL + one Redis; {placement})",
    }
    for mode in MODES:
        if mode in best:
            result = best[mode].result
            lines.append(result.line() + descriptions[mode])
            stored = result.stored_seconds or result.seconds
            lines.append(
                f"  all stored (acknowledged) after {stored:.3f} s,"
                f" all handled after {result.seconds:.3f} s"
            )
            lines.append(best[mode].cpu.line())
    if "pg-2nodes" in best:
        two, one = best["pg-2nodes"].result, best["pg-1node"].result
        lines.append(f"ratio 2-node/1-node PG throughput = {two.rate / one.rate:.3f}")
        ratio = one.rate / best["sqlite"].result.rate
        lines.append(f"ratio PG 1-node/SQLite throughput = {ratio:.3f}")
    return lines


async def run(args: argparse.Namespace, workdir: Path) -> None:
    (workdir / "clients").mkdir()
    print(
        "every figure includes the client-side cryptography (sign, seal with Olm, open,"
        " verify) of SDK clients in this one process"
    )
    print(
        f"{os.cpu_count()} CPUs here, shared by these clients, every relay node,"
        f" PostgreSQL and Redis; load average {os.getloadavg()[0]:.2f} at the start"
    )
    reason = await unreachable(args.postgres, args.redis)
    best: dict[str, Measured] = {}
    latencies: list[Latency] = []
    trouble: list[str] = []

    async def measure(mode: str, round_: int, services: Services | None) -> None:
        measured, lines = await throughput(mode, round_, args, services, workdir)
        trouble.extend(lines)
        if mode not in best or measured.result.rate > best[mode].result.rate:
            best[mode] = measured

    async def sqlite_latency() -> None:
        async with relay_nodes(workdir, "sqlite-latency", 1, None) as nodes:
            latencies.append(
                await single_latency(
                    nodes.urls[0],
                    workdir / "clients",
                    samples=args.latency_samples,
                    warmup=args.warmup,
                )
            )
            trouble.extend(nodes.trouble())

    if reason is not None:
        print(f"{reason}: reporting the SQLite figures only")
        await sqlite_latency()
        for round_ in range(args.rounds):
            await measure("sqlite", round_, None)
        placement = ""
    else:
        async with services_for_run(args.postgres, args.redis) as services:
            print(
                f"PostgreSQL: database {services.database} (fresh, dropped at the end);"
                f" Redis: {args.redis} prefix {services.prefix} (keys deleted at the end)"
            )
            async with relay_nodes(workdir, "latency", 2, services) as nodes:
                same, cross = await cluster_latency(
                    nodes.urls,
                    workdir / "clients",
                    samples=args.latency_samples,
                    warmup=args.warmup,
                )
                latencies += [same, cross]
                trouble.extend(nodes.trouble())
            await sqlite_latency()
            for round_ in range(args.rounds):
                order = MODES if round_ % 2 == 0 else tuple(reversed(MODES))
                for mode in order:
                    await measure(mode, round_, services)
        placement = f"{pairs_across(2, args.senders)} of {args.senders} pairs across nodes"
    for line in figures(best, latencies, args, placement):
        print(line)
    print(f"relay nodes logged {len(trouble)} warning/error lines")
    for line in trouble[:10]:
        print(f"  {line}")
    print(f"load average {os.getloadavg()[0]:.2f} at the end")
    if reason is None:
        print(
            f"cleaned up: database {services.database} dropped,"
            f" Redis keys under {services.prefix} deleted"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--latency-samples", type=int, help="per mode, one at a time (400)")
    parser.add_argument("--warmup", type=int, help="untimed rounds before the latency (5)")
    parser.add_argument("--senders", type=int, help="sender/receiver pairs (4)")
    parser.add_argument("--messages", type=int, help="per sender (1000)")
    parser.add_argument("--window", type=int, help="unacknowledged per sender (32)")
    parser.add_argument("--rounds", type=int, help="throughput runs of each mode (3)")
    parser.add_argument("--postgres", default=DEFAULT_POSTGRES, help="a maintenance database")
    parser.add_argument("--redis", default=DEFAULT_REDIS)
    parser.add_argument("--quick", action="store_true", help="tiny sizes, for the smoke test")
    args = resolve(parser.parse_args())

    async def go() -> None:
        # SIGTERM as SIGINT: the run stops its relays and drops its database either way.
        task = asyncio.current_task()
        assert task is not None
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
        with tempfile.TemporaryDirectory(prefix="parley-bench-") as tmp:
            await run(args, Path(tmp))

    try:
        asyncio.run(go())
    except (KeyboardInterrupt, asyncio.CancelledError):
        # Cleaned up on the way out: relays stopped, database dropped, keys deleted.
        print("interrupted; what the run started and created is gone", file=sys.stderr)
        raise SystemExit(130) from None


if __name__ == "__main__":
    main()

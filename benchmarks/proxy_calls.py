"""Proxied calls per second, and the call setup latency the proxy adds, against direct
calls in the same run.

One relay process and one ``parley proxy`` process (its own event loop and SQLite store;
with ``--store-postgres DSN``, its store in a fresh database on that PostgreSQL server
instead, dropped afterwards).
P operator/customer pairs in this process are plain SDK clients: the customer accepts
every start at once, the operator hangs up as soon as the accept arrives, and a call is
done when the customer has the stop. Each pair places its calls through the proxy
(operator -> app -> customer, the pair's cid bound with ``parley proxy bind``) and, as
the reference, straight to the customer. Every proxied call must leave two leg records
in the proxy's store; the throughput run counts until they are there.

This machine's speed drifts from minute to minute, so the two modes are measured side
by side rather than one after the other:

- calls per second: N calls per pair, W in flight per pair, in K rounds alternating
  direct and proxied; each round's rate is printed, the best of each mode reported, and
  the ratio of the bests proxied / direct.
- CPU: what each process (this one, the relay, the proxy) spent during the proxied
  rounds, in cores and in milliseconds per call (the three share this machine's cores).
- setup latency: L calls per mode, one at a time, direct and proxied taking turns,
  from the moment the operator starts sending the start to the moment its client
  handles the accept; p50 and p99, and the ratio of the medians proxied / direct.
- ``--held N``: N more calls placed through the proxy first, connected and left up until
  the end (a proxy in the middle of a busy day), then hung up.
- paced setup latency: calls started at a steady R calls/s for S seconds (open loop:
  a late call does not hold the next back), p50 and p99 per mode.

    python benchmarks/proxy_calls.py [--pairs 4] [--calls 100] [--window 4] [--rounds 3]
        [--latency-calls 30] [--paced-rate 200] [--paced-seconds 5] [--held 0]
        [--store-postgres postgresql://postgres@127.0.0.1:5432/postgres]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import secrets
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as benchmarks/<name>.py

from benchmarks.harness import PARLEY, UNLIMITED_RELAY_ARGS, Latency, run_parley
from benchmarks.relay_cluster import DATABASE_PREFIX, fresh_database, process_cpu
from parley.client import Client
from parley.client.registration import register_identity
from parley.processes import ChildProcess, RelayProcess
from parley.protocol.messages import VoiceAccept, VoiceStart, VoiceStop
from parley.proxy import ProxyStore, open_proxy_store

OFFER = "v=0\r\n" + "a=candidate:1 1 udp 2122260223 127.0.0.1 50000 typ host\r\n" * 4
ANSWER = OFFER.replace("50000", "50001")


@dataclass
class Pair:
    """An operator and a customer; futures resolved by their handlers, by call_id."""

    operator: Client
    customer: Client
    cid: str
    accepted: dict[str, asyncio.Future[None]] = field(default_factory=dict)
    stopped: dict[str, asyncio.Future[None]] = field(default_factory=dict)

    def subscribe(self) -> None:
        customer = self.customer.voice()

        async def ring(issuer: str, payload: VoiceStart) -> None:
            await customer.accept(issuer, payload.cid, payload.call_id, ANSWER)

        customer.on_start(ring)
        customer.on_stop(lambda _, p: _resolve(self.stopped, p))
        self.operator.voice().on_accept(lambda _, p: _resolve(self.accepted, p))

    async def call(self, target: str, call_id: str) -> float:
        """One call to ``target`` (the app or the customer); returns the setup latency."""
        setup = await self.connect(target, call_id)
        await self.hang_up(target, call_id)
        return setup

    async def connect(self, target: str, call_id: str) -> float:
        """Place a call and return its setup latency once it is accepted."""
        accepted = self.accepted[call_id] = asyncio.get_running_loop().create_future()
        began = time.perf_counter()
        await self.operator.voice().start(target, self.cid, call_id, OFFER, {"lifetime": 60})
        await asyncio.wait_for(accepted, 30)
        return time.perf_counter() - began

    async def hang_up(self, target: str, call_id: str) -> None:
        """Stop a connected call; return once the customer has the stop."""
        stopped = self.stopped[call_id] = asyncio.get_running_loop().create_future()
        await self.operator.voice().stop(target, self.cid, call_id)
        await asyncio.wait_for(stopped, 30)


async def _sixteen_at_a_time(steps: Iterable[Awaitable[object]]) -> None:
    gate = asyncio.Semaphore(16)

    async def one(step: Awaitable[object]) -> None:
        async with gate:
            await step

    await asyncio.gather(*(one(step) for step in steps))


def _resolve(waiting: dict[str, asyncio.Future[None]], payload: VoiceAccept | VoiceStop) -> None:
    future = waiting.pop(payload.call_id, None)
    if future is not None and not future.done():
        future.set_result(None)


@dataclass(frozen=True)
class Throughput:
    name: str
    calls: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.calls / self.seconds

    def line(self) -> str:
        return (
            f"{self.name:<8} {self.calls:>6} calls in {self.seconds:7.3f} s"
            f" = {self.rate:8.1f} calls/s"
        )


class Bench:
    def __init__(self, pairs: list[Pair], app: str, store: ProxyStore) -> None:
        self.pairs = pairs
        self.app = app
        self.store = store  # the proxy's, opened here too: its leg records are counted
        self._serial = 0

    def target(self, pair: Pair, proxied: bool) -> str:
        return self.app if proxied else pair.customer.id

    def call_id(self) -> str:
        self._serial += 1
        return f"call-{self._serial}"

    async def hold(self, count: int) -> list[tuple[Pair, str]]:
        """``count`` calls through the proxy, connected and left up."""
        held = [(self.pairs[n % len(self.pairs)], self.call_id()) for n in range(count)]
        await _sixteen_at_a_time(pair.connect(self.app, call_id) for pair, call_id in held)
        return held

    async def release(self, held: list[tuple[Pair, str]]) -> None:
        await _sixteen_at_a_time(pair.hang_up(self.app, call_id) for pair, call_id in held)

    async def latency(self, calls: int) -> tuple[Latency, Latency]:
        """Direct and proxied calls taking turns (each going first every other time)."""
        samples: dict[bool, list[float]] = {False: [], True: []}
        for n in range(calls):
            pair = self.pairs[n % len(self.pairs)]
            for proxied in (False, True) if n % 2 == 0 else (True, False):
                samples[proxied].append(await pair.call(self.target(pair, proxied), self.call_id()))
        return Latency("direct", samples[False]), Latency("proxied", samples[True])

    async def paced(self, name: str, proxied: bool, rate: float, seconds: float) -> Latency:
        """Calls started every ``1 / rate`` seconds, round the pairs, for ``seconds``."""
        loop = asyncio.get_running_loop()
        began = loop.time()
        calls = []
        for n in range(max(1, round(rate * seconds))):
            await asyncio.sleep(max(0.0, began + n / rate - loop.time()))
            pair = self.pairs[n % len(self.pairs)]
            call = pair.call(self.target(pair, proxied), self.call_id())
            calls.append(asyncio.ensure_future(call))
        return Latency(name, await asyncio.gather(*calls))

    async def throughput(self, name: str, proxied: bool, calls: int, window: int) -> Throughput:
        legs_before = await self.legs()

        async def run(pair: Pair) -> None:
            gate = asyncio.Semaphore(window)

            async def one() -> None:
                async with gate:
                    await pair.call(self.target(pair, proxied), self.call_id())

            await asyncio.gather(*(one() for _ in range(calls)))

        began = time.perf_counter()
        await asyncio.gather(*(run(pair) for pair in self.pairs))
        total = calls * len(self.pairs)
        if proxied:
            expected = legs_before + 2 * total
            while await self.legs() < expected:  # noqa: ASYNC110 - written by the proxy process
                await asyncio.sleep(0.005)
        return Throughput(name, total, time.perf_counter() - began)

    async def legs(self) -> int:
        return len(await self.store.records())


@asynccontextmanager
async def _closing(store: ProxyStore) -> AsyncIterator[ProxyStore]:
    try:
        yield store
    finally:
        await store.close()


async def bench(args: argparse.Namespace, workdir: Path, store: str) -> None:
    async with RelayProcess(workdir / "relay", extra_args=UNLIMITED_RELAY_ARGS) as relay:
        app = await register_identity(relay.url, name="app")
        app.save(workdir / "app.json")
        pairs: list[Pair] = []
        for n in range(args.pairs):
            operator = Client(await register_identity(relay.url), state_path=workdir / f"o{n}.db")
            customer = Client(await register_identity(relay.url), state_path=workdir / f"c{n}.db")
            pair = Pair(operator, customer, cid=f"bench-{n}")
            pair.subscribe()
            pairs.append(pair)
            await operator.connect()
            await customer.connect()
            for party, other in ((operator, customer), (customer, operator)):
                await party.connections.permit(app.identity)
                await party.connections.permit(other.id)
            await run_parley(
                "proxy", "bind", "--store", store, pair.cid,
                "--operator", operator.id, "--customer", customer.id,
            )  # fmt: skip
        proxy = ChildProcess(
            [*PARLEY, "proxy", "--credentials", str(workdir / "app.json"), "--store", store],
            re.compile(r"parley proxy ready"),
            name="parley proxy",
        )
        async with proxy, _closing(open_proxy_store(store)) as records:
            run = Bench(pairs, app.identity, records)
            for pair in pairs:  # sessions and caches warm in both modes
                for via_proxy in (False, True):
                    await pair.call(run.target(pair, via_proxy), run.call_id())
            held = await run.hold(args.held)
            direct_setup, proxied_setup = await run.latency(args.latency_calls)
            pids = {"bench": os.getpid(), "relay": relay.pid, "proxy": proxy.pid}
            spent = dict.fromkeys(pids, 0.0)
            rounds: dict[bool, list[Throughput]] = {False: [], True: []}
            for _ in range(args.rounds):
                rounds[False].append(await run.throughput("direct", False, args.calls, args.window))
                before = {name: process_cpu(pid) for name, pid in pids.items()}
                rounds[True].append(await run.throughput("proxied", True, args.calls, args.window))
                for name, pid in pids.items():
                    spent[name] += process_cpu(pid) - before[name]
            paced_direct = await run.paced("direct", False, args.paced_rate, args.paced_seconds)
            paced_proxied = await run.paced("proxied", True, args.paced_rate, args.paced_seconds)
            await run.release(held)
            legs = await run.legs()
        for pair in pairs:
            await pair.operator.close()
            await pair.customer.close()
    report(
        args, Results(rounds, spent, direct_setup, proxied_setup, paced_direct, paced_proxied, legs)
    )


@dataclass(frozen=True)
class Results:
    rounds: dict[bool, list[Throughput]]  # by proxied
    cpu: dict[str, float]  # seconds each process spent in the proxied rounds
    direct_setup: Latency
    proxied_setup: Latency
    paced_direct: Latency
    paced_proxied: Latency
    legs: int


def report(args: argparse.Namespace, results: Results) -> None:
    print(
        f"pairs={args.pairs} calls/pair={args.calls} window={args.window}"
        f" latency calls={args.latency_calls}"
        f" proxy store={'PostgreSQL' if args.store_postgres else 'SQLite'}"
    )
    if args.held:
        print(f"{args.held} more calls connected through the proxy and left up meanwhile")
    rounds = results.rounds
    print(f"best of {args.rounds} alternating rounds per mode")
    for mode, name in ((False, "direct"), (True, "proxied")):
        print(f"  {name} rounds, calls/s: " + ", ".join(f"{r.rate:.0f}" for r in rounds[mode]))
    direct = max(rounds[False], key=lambda r: r.rate)
    proxied = max(rounds[True], key=lambda r: r.rate)
    seconds = sum(r.seconds for r in rounds[True])
    calls = sum(r.calls for r in rounds[True])
    print(direct.line() + "  (operator -> customer)")
    print(proxied.line() + "  (operator -> parley proxy -> customer, both legs recorded)")
    print(f"ratio proxied/direct calls/s = {proxied.rate / direct.rate:.3f}")
    cores = ", ".join(
        f"{name} {cpu / seconds:.2f} ({cpu / calls * 1000:.2f} ms/call)"
        for name, cpu in results.cpu.items()
    )
    print(f"CPU during the proxied rounds, cores (per call): {cores}")
    print("setup, one call at a time, the modes taking turns:")
    print(results.direct_setup.line())
    extra = (results.proxied_setup.p50 - results.direct_setup.p50) * 1000
    print(results.proxied_setup.line() + f"  extra {extra:+.2f} ms")
    ratio = results.proxied_setup.p50 / results.direct_setup.p50
    print(f"ratio proxied/direct setup latency (median) = {ratio:.3f}")
    print(f"setup, paced at {args.paced_rate:g} calls/s for {args.paced_seconds:g} s:")
    print(results.paced_direct.line())
    print(results.paced_proxied.line())
    print(f"leg records in the proxy's store: {results.legs}")


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="parley-bench-") as tmp:
        if not args.store_postgres:
            await bench(args, Path(tmp), str(Path(tmp) / "app.proxy.db"))
            return
        name = f"{DATABASE_PREFIX}proxy_{secrets.token_hex(6)}"
        async with fresh_database(args.store_postgres, name) as dsn:
            await bench(args, Path(tmp), dsn)
        print(f"cleaned up: database {name} dropped")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--pairs", type=int, default=4, help="operator/customer pairs")
    parser.add_argument("--calls", type=int, default=100, help="per pair, per mode")
    parser.add_argument("--window", type=int, default=4, help="calls in flight per pair")
    parser.add_argument("--rounds", type=int, default=3, help="throughput rounds per mode")
    parser.add_argument(
        "--held", type=int, default=0, help="calls up through the proxy during the runs"
    )
    parser.add_argument("--latency-calls", type=int, default=30, help="per mode, one at a time")
    parser.add_argument("--paced-rate", type=float, default=200.0, help="calls/s of the paced run")
    parser.add_argument("--paced-seconds", type=float, default=5.0, help="per mode")
    parser.add_argument(
        "--store-postgres",
        metavar="DSN",
        help="the proxy's store in a fresh database on this server (a maintenance database)",
    )
    asyncio.run(main(parser.parse_args()))

"""Time from placing a call to its first audio frame, direct and through the calling
proxy, in the same run.

One relay process and one ``parley proxy`` process (its own event loop and SQLite
store). An operator and a customer in this process each run a :class:`Softphone` (real
aiortc stacks, DTLS-SRTP over the loopback interface only): the operator plays a
440 Hz tone, the customer a 1000 Hz tone and answers every call at once. The operator
calls the customer straight (direct) and through the proxy (the app's identity with a
cid bound to the pair by ``parley proxy bind``; the proxy forwards the SDP unchanged,
so the media flows between the two parties either way). One call at a time, direct and
proxied alternating (the order flips every round) so that noise on the machine hits
both alike; one warm-up call per mode is not counted.

A call is timed from just before ``Softphone.call()`` (the offer is gathered first:
that is part of placing a call) until the caller's ``wait_audio()`` returns, i.e. the
first frame of the customer's audio arrived at the operator. The caller then hangs up,
and the next call starts once both sides' media is torn down. Printed: median and 95th
percentile per mode, where the time went (start sent, answer in, first audio), and the
ratios proxied / direct. Most of the time after the answer is not the network: with
aiortc 1.16 the media is connected (ICE, DTLS) some 25 ms after the answer, the first
RTP packet follows within a few ms, and the receiver's jitter buffer then holds the
first four packets (80 ms of audio) before it hands out the first frame.

    python benchmarks/call_media.py [--calls 30]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as benchmarks/<name>.py

from benchmarks.harness import PARLEY, run_parley
from parley.client import Client
from parley.client.registration import register_identity
from parley.ice import IceConfig
from parley.media import MediaCall, Softphone
from parley.processes import ChildProcess, RelayProcess
from parley.protocol.call_io import Connected
from parley.proxy import SqliteProxyStore

LOOPBACK = IceConfig(hosts=("127.0.0.1",))  # never any other interface
TIMEOUT = 20.0  # seconds for any one step of a call


@dataclass(frozen=True)
class Sample:
    """One call's milestones, in seconds from just before ``call()``."""

    sent: float  # call() returned: offer gathered, start sent
    answered: float  # the answer arrived (Connected)
    audio: float  # the first frame of the peer's audio arrived


@dataclass(frozen=True)
class Latency:
    name: str
    samples: list[Sample]

    @property
    def audio(self) -> list[float]:
        return [s.audio for s in self.samples]

    @property
    def median(self) -> float:
        return statistics.median(self.audio)

    @property
    def p95(self) -> float:
        return p95(self.audio)

    def line(self) -> str:
        return (
            f"{self.name + ':':<9} median {self.median:.3f} s  p95 {self.p95:.3f} s"
            f"  (n={len(self.samples)})"
        )

    def phases(self) -> str:
        sent = statistics.median(s.sent for s in self.samples)
        answered = statistics.median(s.answered for s in self.samples)
        return (
            f"{self.name + ':':<9} start sent {sent:.3f} s, answer in {answered:.3f} s,"
            f" first audio {self.median:.3f} s (medians)"
        )


def p95(values: list[float]) -> float:
    """The 95th percentile, nearest rank (as ``proxy_calls.py`` computes it)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


class Bench:
    def __init__(self, caller: Softphone, callee: Softphone, app: str, cid: str) -> None:
        self.caller = caller
        self.callee = callee
        self.app = app
        self.cid = cid
        self.answered: asyncio.Queue[MediaCall] = asyncio.Queue()
        self.answers = 0

    async def answer_all(self) -> None:
        """The customer: answers every call ringing there, at once."""
        async for incoming in self.callee.incoming():
            self.answered.put_nowait(await self.callee.answer(incoming))
            self.answers += 1

    async def call(self, proxied: bool) -> Sample:
        """One call, placed, heard, hung up, and ended on both sides."""
        target, cid = (self.app, self.cid) if proxied else (self.callee.client.id, None)
        began = time.perf_counter()
        media = await self.caller.call(target, cid=cid)
        sent = time.perf_counter() - began
        assert media.call is not None
        answered = asyncio.ensure_future(_connected(media))
        try:
            await media.wait_audio(timeout=TIMEOUT)
            audio = time.perf_counter() - began
            answer = await asyncio.wait_for(answered, TIMEOUT) - began
        finally:
            answered.cancel()
            await media.hangup()
        await asyncio.wait_for(media.wait_ended(), TIMEOUT)
        peer = await asyncio.wait_for(self.answered.get(), TIMEOUT)
        await asyncio.wait_for(peer.wait_ended(), TIMEOUT)
        return Sample(sent=sent, answered=answer, audio=audio)


async def _connected(media: MediaCall) -> float:
    """When the caller's call connected (the answer arrived), on the perf_counter clock."""
    assert media.call is not None
    async for event in media.call.events():
        if isinstance(event, Connected):
            return time.perf_counter()
    raise RuntimeError(f"call {media.call_id} ended without an answer")


async def bench(args: argparse.Namespace, workdir: Path) -> None:
    async with RelayProcess(workdir / "relay") as relay:
        app = await register_identity(relay.url, name="app")
        app.save(workdir / "app.json")
        store = workdir / "app.proxy.db"
        operator = Client(await register_identity(relay.url), state_path=workdir / "o.db")
        customer = Client(await register_identity(relay.url), state_path=workdir / "c.db")
        caller = Softphone(operator, source="tone:440", ice=LOOPBACK)
        callee = Softphone(customer, source="tone:1000", ice=LOOPBACK)
        await operator.connect()
        await customer.connect()
        for party, other in ((operator, customer), (customer, operator)):
            await party.connections.permit(app.identity)
            await party.connections.permit(other.id)
        cid = "bench-media"
        await run_parley(
            "proxy", "bind", "--store", str(store), cid,
            "--operator", operator.id, "--customer", customer.id,
        )  # fmt: skip
        proxy = ChildProcess(
            [*PARLEY, "proxy", "--credentials", str(workdir / "app.json"), "--store", str(store)],
            re.compile(r"parley proxy ready"),
            name="parley proxy",
        )
        run = Bench(caller, callee, app.identity, cid)
        answering = asyncio.ensure_future(run.answer_all())
        try:
            async with proxy:
                for via_proxy in (False, True):  # sessions, caches and codecs warm
                    await run.call(via_proxy)
                results: dict[bool, list[Sample]] = {False: [], True: []}
                for n in range(args.calls):
                    for via_proxy in (False, True) if n % 2 == 0 else (True, False):
                        results[via_proxy].append(await run.call(via_proxy))
                legs = await _legs(store, 2 * (args.calls + 1))
        finally:
            answering.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await answering
            await caller.close()
            await callee.close()
            await operator.close()
            await customer.close()

    direct = Latency("direct", results[False])
    proxied = Latency("proxied", results[True])
    print(
        f"calls={args.calls} per mode, one at a time, alternating"
        " (plus one warm-up call per mode, not counted)"
    )
    print("place() -> first audio frame at the caller:")
    print(direct.line() + "  (operator -> customer)")
    print(proxied.line() + "  (operator -> parley proxy -> customer; media direct)")
    print(
        f"ratio proxied/direct: median {proxied.median / direct.median:.2f}x"
        f"  p95 {proxied.p95 / direct.p95:.2f}x"
    )
    extra = (proxied.median - direct.median) * 1000
    print(f"extra through the proxy (median): {extra:+.1f} ms")
    print("where the time went:")
    print(direct.phases())
    print(proxied.phases())
    print(f"calls answered by the customer: {run.answers}")
    print(f"leg records in the proxy's store: {legs}")


async def _legs(store: Path, expected: int) -> int:
    """The proxy's leg records, once ``expected`` are there (or after a few seconds)."""
    proxy_store = SqliteProxyStore(store)
    try:
        deadline = time.monotonic() + 10
        while True:
            count = len(await proxy_store.records())
            if count >= expected or time.monotonic() > deadline:
                return count
            await asyncio.sleep(0.05)
    finally:
        await proxy_store.close()


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="parley-bench-") as tmp:
        await bench(args, Path(tmp))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--calls", type=int, default=30, help="per mode, one at a time")
    asyncio.run(main(parser.parse_args()))

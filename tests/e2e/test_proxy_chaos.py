"""The calling proxy survives its own crash: a real ``parley relay`` and ``parley proxy``,
operator/customer pairs calling through it for half a minute while the proxy is
SIGKILLed and started again at random moments: while a call rings, just after an accept,
while connected, just after a hang-up.

The parties are SDK phones (``client.calls()``). Each pair calls again only once both of
its phones are free, so a ``busy`` can only come from a leg the proxy forgot. Checked
afterwards: every call ended on both phones (none stuck), the two ends of every call
within the proxy's downtime around them + 2 s of each other, no call refused busy, and
the proxy's store has one record per leg, ended when the phone on that leg ended.

The randomness is seeded (``PARLEY_CHAOS_SEED`` to replay a run); the seed and the
figures (calls, kills, downtime, worst end gap) are printed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import re
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from tests.conftest import Register
from tests.e2e.test_proxy import parley

from parley.client import Client
from parley.client.phone_call import Call, IncomingCall
from parley.errors import ParleyError
from parley.processes import ChildProcess
from parley.protocol.call import CallRecord, EndReason
from parley.protocol.call_io import Connected
from parley.protocol.call_phone import PhoneConfig
from parley.proxy import Leg, LegRecord, SqliteProxyStore

pytestmark = pytest.mark.e2e

PAIRS = 3
RUN = 30.0  # seconds of calling
KILLS = 8
LIFETIME = 6.0  # the operators' ring lifetime
SLACK = 2.0  # beyond the proxy's downtime, how far apart the two ends of a call may be
STUCK = 20.0  # a call not over this long after it could have been is stuck
PHASES = ("ringing", "accepted", "connected", "hangup")
PHONE = PhoneConfig(grace=15.0)  # a proxy down for a moment is no peer gone


@dataclass
class Plan:
    """What the customer does with one call, and who hangs up."""

    answer: bool
    ring_out: bool
    delay: float
    talk: float
    customer_hangs_up: bool


@dataclass
class Pair:
    cid: str
    operator: Client
    customer: Client
    rng: random.Random
    plan: Plan | None = None
    phases: dict[str, asyncio.Event] = field(
        default_factory=lambda: {phase: asyncio.Event() for phase in PHASES}
    )
    placed: list[Call] = field(default_factory=list)
    rang: dict[str, IncomingCall] = field(default_factory=dict)  # at the customer
    tasks: set[asyncio.Task[None]] = field(default_factory=set)

    def reached(self, phase: str) -> None:
        self.phases[phase].set()

    def new_plan(self) -> Plan:
        roll = self.rng.random()
        return Plan(
            answer=roll < 0.8,
            ring_out=0.8 <= roll < 0.9,
            delay=self.rng.uniform(0.0, 1.5),
            talk=self.rng.uniform(0.3, 3.0),
            customer_hangs_up=self.rng.random() < 0.5,
        )

    def free(self) -> bool:
        return not self.operator.calls().live and not self.customer.calls().live


@dataclass
class Downtime:
    killed: float
    ready: float


async def wait_for(predicate: Callable[[], bool], seconds: float) -> bool:
    """Poll ``predicate`` until true or ``seconds`` pass."""
    try:
        async with asyncio.timeout(seconds):
            while not predicate():  # noqa: ASYNC110 - phones moved by other processes
                await asyncio.sleep(0.05)
    except TimeoutError:
        return False
    return True


async def operate(pair: Pair, app: str, until: float, killer: asyncio.Future[None]) -> None:
    """The operator: call, hang up per the plan, call again once both phones are free;
    for ``RUN`` seconds and until the last kill."""
    calls = pair.operator.calls()
    while time.time() < until or not killer.done():
        pair.plan = plan = pair.new_plan()
        try:
            call = await calls.place(app, "offer", cid=pair.cid, lifetime=LIFETIME)
        except ParleyError:
            await asyncio.sleep(0.2)  # the relay was busy: not what is measured here
            continue
        pair.placed.append(call)
        try:
            async with asyncio.timeout(STUCK):
                async for update in call.events():
                    if isinstance(update, Connected):
                        pair.reached("connected")
                        if not plan.customer_hangs_up:
                            await asyncio.sleep(plan.talk)
                            await call.hangup()
                            pair.reached("hangup")
        except TimeoutError:
            return  # stuck: the checks after the run say so
        if not await wait_for(pair.free, STUCK):
            return


async def answer(pair: Pair) -> None:
    """The customer: accept, decline or let ring, per the operator's plan."""
    async for incoming in pair.customer.calls().incoming():
        assert isinstance(incoming, IncomingCall)
        pair.rang[incoming.call_id] = incoming
        pair.reached("ringing")
        plan = pair.plan
        if plan is None or plan.ring_out:
            continue
        task = asyncio.ensure_future(handle(pair, incoming, plan))
        pair.tasks.add(task)
        task.add_done_callback(pair.tasks.discard)


async def handle(pair: Pair, incoming: IncomingCall, plan: Plan) -> None:
    await asyncio.sleep(plan.delay)
    with contextlib.suppress(ParleyError):  # it stopped ringing meanwhile
        if not plan.answer:
            await incoming.decline()
            return
        call = await incoming.accept("answer")
        pair.reached("accepted")
        if plan.customer_hangs_up:
            await asyncio.sleep(plan.talk)
            await call.hangup()
            pair.reached("hangup")


async def kill_and_restart(
    proxy: ChildProcess, pairs: list[Pair], rng: random.Random, downtimes: list[Downtime]
) -> None:
    for _ in range(KILLS):
        await asyncio.sleep(rng.uniform(0.5, 1.5))
        pair, phase = rng.choice(pairs), rng.choice(PHASES)
        pair.phases[phase].clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5.0):
                await pair.phases[phase].wait()
        await asyncio.sleep(rng.uniform(0.0, 0.1))
        killed = time.time()
        await proxy.kill()
        await asyncio.sleep(rng.uniform(0.1, 1.0))
        await proxy.start()
        downtimes.append(Downtime(killed, time.time()))


def down_between(downtimes: list[Downtime], start: float, end: float) -> float:
    """Seconds the proxy was down from a little before ``start`` up to ``end``."""
    return sum(
        min(d.ready, end) - max(d.killed, start - SLACK)
        for d in downtimes
        if d.killed <= end and d.ready >= start - SLACK
    )


@pytest.fixture
async def chaos_pairs(
    register: Register,
) -> AsyncIterator[tuple[Path, list[Pair], random.Random]]:
    _, app_path = await register("app")
    app = Client.from_credentials(app_path)
    seed = int(os.environ.get("PARLEY_CHAOS_SEED", str(random.randrange(1 << 32))))
    print(f"\nproxy chaos seed {seed} (PARLEY_CHAOS_SEED={seed} to replay)")
    rng = random.Random(seed)
    clients: list[Client] = []
    pairs = []
    for i in range(PAIRS):
        ends = []
        for role in ("op", "cust"):
            _, path = await register(f"{role}{i}")
            client = Client.from_credentials(path)
            client.calls(PHONE)
            await client.connect()
            await client.connections.permit(app.id)
            clients.append(client)
            ends.append(client)
        pairs.append(Pair(f"conv{i}", ends[0], ends[1], random.Random(rng.random())))
        await parley(
            "proxy", "bind", "-c", str(app_path), f"conv{i}",
            "--operator", ends[0].id, "--customer", ends[1].id,
        )  # fmt: skip
    try:
        yield app_path, pairs, random.Random(rng.random())  # the killer's draws
    finally:
        for client in clients:
            await client.close()


async def test_legs_end_together_across_proxy_crashes(
    chaos_pairs: tuple[Path, list[Pair], random.Random],
) -> None:
    app_path, pairs, killer_rng = chaos_pairs
    app = Client.from_credentials(app_path).id
    proxy = ChildProcess(
        [sys.executable, "-m", "parley", "proxy", "-c", str(app_path),
         "--ring-lifetime", str(LIFETIME), "--grace", "15"],
        re.compile(r"parley proxy ready as (\S+)"),
        name="parley proxy",
        ready_timeout=30.0,
    )  # fmt: skip
    await proxy.start()
    downtimes: list[Downtime] = []
    until = time.time() + RUN
    answering = [asyncio.ensure_future(answer(pair)) for pair in pairs]
    try:
        killer = asyncio.ensure_future(kill_and_restart(proxy, pairs, killer_rng, downtimes))
        await asyncio.gather(killer, *(operate(pair, app, until, killer) for pair in pairs))
        # Everything ends: nothing stuck on either phone.
        stuck = not await wait_for(lambda: all(p.free() for p in pairs), STUCK)
    finally:
        for task in answering:
            task.cancel()
        assert await proxy.stop() == 0

    gaps: list[float] = []
    problems: list[str] = []
    records = await proxy_records(app_path)
    for pair in pairs:
        for call in pair.placed:
            mine = call.record
            if mine is None:
                problems.append(f"{call.call_id}: operator's call never ended")
                continue
            if mine.reason is EndReason.BUSY:
                problems.append(f"{call.call_id}: refused busy")
            theirs = customer_record(pair, call.call_id)
            legs = [r for r in records if r.call_id == call.call_id]
            problems += check_records(call.call_id, mine, theirs, legs, downtimes)
            if theirs is None:
                continue
            gap = abs(mine.ended - theirs.ended)
            gaps.append(gap)
            allowed = SLACK + down_between(
                downtimes, min(mine.ended, theirs.ended), max(mine.ended, theirs.ended)
            )
            if gap > allowed:
                problems.append(f"{call.call_id}: ends {gap:.2f} s apart (allowed {allowed:.2f})")
    total = sum(len(p.placed) for p in pairs)
    down = sum(d.ready - d.killed for d in downtimes)
    # A kill after the proxy saved a message and before its client recorded it: the
    # message comes again and the restarted proxy skips it (logged at info).
    repeats = sum("was handled already" in line for line in proxy.lines)
    print(
        f"proxy chaos: {total} calls ({len(gaps)} reached the customer), {len(downtimes)} "
        f"kills, {down:.1f} s down in all (longest {max(d.ready - d.killed for d in downtimes):.2f}"
        f" s), worst end gap {max(gaps, default=0.0):.2f} s, {repeats} messages delivered"
        " again and skipped"
    )
    assert not stuck, f"calls still live on a phone {STUCK} s after the run: {problems}"
    assert len(downtimes) == KILLS
    assert total >= PAIRS * 3, "too few calls to say anything"
    assert not problems, "\n".join(problems)


def customer_record(pair: Pair, call_id: str) -> CallRecord | None:
    """The customer's record of the call, if it rang there."""
    call = pair.rang.get(call_id)
    return None if call is None else call.record


def check_records(
    call_id: str,
    mine: CallRecord,
    theirs: CallRecord | None,
    legs: list[LegRecord],
    downtimes: list[Downtime],
) -> list[str]:
    """One record per leg in the proxy's store, each ended about when its phone did."""
    problems = []
    by_leg = {(r.leg, r.party): r for r in legs}
    if len(by_leg) != len(legs):
        problems.append(f"{call_id}: a leg recorded twice: {legs}")
    ends = {Leg.INBOUND: mine, Leg.OUTBOUND: theirs}
    for leg in legs:
        phone = ends[leg.leg]
        if phone is None:
            continue
        allowed = SLACK + down_between(
            downtimes, min(phone.ended, leg.ended), max(phone.ended, leg.ended)
        )
        if abs(phone.ended - leg.ended) > allowed:
            problems.append(
                f"{call_id}: {leg.leg} leg recorded ended at {leg.ended:.2f},"
                f" its phone at {phone.ended:.2f}"
            )
    if theirs is not None and {leg.leg for leg in legs} != {Leg.INBOUND, Leg.OUTBOUND}:
        problems.append(f"{call_id}: records {sorted(by_leg)}, not one per leg")
    return problems


async def proxy_records(app_path: Path) -> list[LegRecord]:
    store = SqliteProxyStore(app_path.with_name(app_path.stem + ".proxy.db"))
    try:
        return await store.records()
    finally:
        await store.close()

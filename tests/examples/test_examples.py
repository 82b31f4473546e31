"""Every script in examples/ runs against a real relay process."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from tests.conftest import Register

from parley.client import Client
from parley.processes import ChildProcess
from parley.protocol.messages import Message, VoiceStart
from parley.proxy import SqliteProxyStore

pytestmark = pytest.mark.e2e

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
PROXY = EXAMPLES / "voice_proxy.py"
Scenario = Callable[[Register, Path], Awaitable[None]]


class Inbox:
    """Collects what a client's handlers receive, for assertions."""

    def __init__(self) -> None:
        self.items: asyncio.Queue[tuple[str, Message]] = asyncio.Queue()

    def __call__(self, issuer: str, payload: Message) -> None:
        self.items.put_nowait((issuer, payload))

    async def next(self) -> tuple[str, Message]:
        return await asyncio.wait_for(self.items.get(), 15)


async def _bind(db: Path, cid: str, operator: str, customer: str) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(PROXY),
        "--db",
        str(db),
        "bind",
        cid,
        operator,
        customer,
        "--operator-name",
        "Bob",
    )
    assert await proc.wait() == 0


async def voice_proxy(register: Register, tmp_path: Path) -> None:
    (app, app_path), (op, op_path), (cu, cu_path) = [
        await register(name) for name in ("app", "operator", "customer")
    ]
    db = tmp_path / "calls.db"
    await _bind(db, "cid-accept", op.identity, cu.identity)
    await _bind(db, "cid-busy", op.identity, cu.identity)
    proxy = ChildProcess(
        [sys.executable, str(PROXY), "--db", str(db), "run", "--credentials", str(app_path)],
        re.compile(r"\[voice_proxy\] ready"),
        name="voice proxy",
    )
    async with (
        proxy,
        Client.from_credentials(op_path) as operator,
        Client.from_credentials(cu_path) as customer,
    ):
        await operator.connections.permit(app.identity)
        await customer.connections.permit(app.identity)
        at_operator, at_customer = Inbox(), Inbox()
        for voice, inbox in ((operator.voice(), at_operator), (customer.voice(), at_customer)):
            for subscribe in (voice.on_start, voice.on_accept, voice.on_busy, voice.on_stop):
                subscribe(inbox)

        # Accept path: start reaches the customer with the operator's name, accept comes
        # back with the customer's session description, the hang-up reaches the customer.
        await operator.voice().start(app.identity, "cid-accept", "k1", "offer-sdp", {})
        issuer, ring = await at_customer.next()
        assert issuer == app.identity
        assert (ring.typ.value, ring.cid, ring["call_id"], ring["peer_info"], ring["data"]) == (
            "chat.voice.start",
            "cid-accept",
            "k1",
            "offer-sdp",
            {"operator_name": "Bob"},
        )
        await customer.voice().accept(app.identity, "cid-accept", "k1", "answer-sdp")
        issuer, accepted = await at_operator.next()
        assert (issuer, accepted.typ.value, accepted["peer_info"]) == (
            app.identity,
            "chat.voice.accept",
            "answer-sdp",
        )
        await operator.voice().stop(app.identity, "cid-accept", "k1")
        _, stopped = await at_customer.next()
        assert (stopped.typ.value, stopped.cid, stopped["call_id"]) == (
            "chat.voice.stop",
            "cid-accept",
            "k1",
        )

        # Busy path: the customer's busy goes back to the operator.
        await operator.voice().start(app.identity, "cid-busy", "k2", "offer-2", {})
        _, ring = await at_customer.next()
        assert (ring.cid, ring["call_id"]) == ("cid-busy", "k2")
        await customer.voice().busy(app.identity, "cid-busy", "k2")
        _, busy = await at_operator.next()
        assert (busy.typ.value, busy.cid, busy["call_id"]) == ("chat.voice.busy", "cid-busy", "k2")

        # A hang-up from the customer side goes to the operator.
        await customer.voice().stop(app.identity, "cid-busy", "k2")
        _, stopped = await at_operator.next()
        assert (stopped.typ.value, stopped.cid) == ("chat.voice.stop", "cid-busy")

        # Nothing else arrived anywhere: a last call through the proxy is the next thing
        # each side gets (the proxy forwards to each party in order).
        await operator.voice().start(app.identity, "cid-accept", "k3", "offer-3", {})
        _, ring = await at_customer.next()
        assert (ring.typ.value, ring["call_id"]) == ("chat.voice.start", "k3")
        await customer.voice().stop(app.identity, "cid-accept", "k3")
        _, stopped = await at_operator.next()
        assert (stopped.typ.value, stopped.cid) == ("chat.voice.stop", "cid-accept")
        assert at_operator.items.empty() and at_customer.items.empty()
    assert any("received start from" in line for line in proxy.lines)


async def softphone_call(register: Register, tmp_path: Path) -> None:
    (_, alice_path), (bob, bob_path) = [await register(name) for name in ("alice", "bob")]
    async with (
        Client.from_credentials(alice_path) as alice,
        Client.from_credentials(bob_path) as bob_client,
    ):
        await alice.connections.permit(bob.identity)
        await bob_client.connections.permit(alice.id)
    script = EXAMPLES / "softphone_call.py"
    env = {**os.environ, "PARLEY_ICE_HOSTS": "127.0.0.1"}
    answering = ChildProcess(
        [sys.executable, str(script), "answer", str(bob_path), "--play", "tone:1000"],
        re.compile(r"\[softphone\] ready"),
        name="answering softphone",
        env=env,
    )
    async with answering:
        calling = await asyncio.create_subprocess_exec(
            sys.executable, str(script), "call", str(alice_path), bob.identity,
            "--play", "tone:440", "--seconds", "1.5",
            stdout=asyncio.subprocess.PIPE, env=env,
        )  # fmt: skip
        out, _ = await asyncio.wait_for(calling.communicate(), 60)
        assert calling.returncode == 0
        assert await asyncio.wait_for(answering.wait(), 30) == 0
    assert "ended: hangup" in out.decode()
    assert heard(out.decode()) == pytest.approx(1000, abs=5)
    assert heard("\n".join(answering.lines)) == pytest.approx(440, abs=5)


async def _run_example(*args: str, cwd: Path | None = None) -> str:
    """Run ``python examples/ARGS...``; its stdout, once it exited 0."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(EXAMPLES / args[0]), *args[1:], stdout=asyncio.subprocess.PIPE, cwd=cwd
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, out
    return out.decode()


async def voice_messages(register: Register, tmp_path: Path) -> None:
    (op, op_path), (app, _) = [await register(name) for name in ("operator", "app")]
    async with Client.from_credentials(tmp_path / "app.json") as app_client:
        await app_client.connections.permit(op.identity)
        voice, stops = app_client.voice(), Inbox()

        @voice.on_start
        async def on_start(issuer: str, payload: VoiceStart) -> None:
            assert payload["data"] == {"operator_name": "Bob"}
            await voice.accept(issuer, payload.cid, payload.call_id, "answer-sdp")

        voice.on_stop(stops)
        out = await _run_example("voice_messages.py", str(op_path), app.identity)
        issuer, stop = await stops.next()
    assert out.splitlines() == [f"{app.identity} cid-1 call-1 answer-sdp"]
    assert (issuer, stop.cid, stop["call_id"]) == (op.identity, "cid-1", "call-1")


async def calls(register: Register, tmp_path: Path) -> None:
    (alice, alice_path), (bob, bob_path) = [await register(name) for name in ("alice", "bob")]
    answering = ChildProcess(
        [sys.executable, str(EXAMPLES / "calls.py"), "answer", str(bob_path), alice.identity],
        re.compile(r"ready as"),
        name="answering example",
    )
    async with answering:
        out = await _run_example("calls.py", "place", str(alice_path), bob.identity)
        assert await asyncio.wait_for(answering.wait(), 30) == 0
    lines = out.splitlines()
    assert lines[:4] == ["Dialing", "Connected", "answer: answer-sdp", "Ended"], out
    assert lines[4].startswith("hangup ") and float(lines[4].split()[1]) >= 0, out
    assert "ended: hangup" in answering.lines


async def proxy_in_python(register: Register, tmp_path: Path) -> None:
    parties = [await register(name) for name in ("app", "op", "cu", "op1", "op2")]
    ids = [creds.identity for creds, _ in parties[1:]]
    out = await _run_example("proxy_in_python.py", "cid-1", *ids, cwd=tmp_path)
    assert out == "[]\n"  # no call has ended yet
    store = SqliteProxyStore(tmp_path / "app.proxy.db")
    try:
        routes = await store.routes()
    finally:
        await store.close()
    assert sorted(route.cid for route in routes) == ["cid-1", "sales"]


def heard(output: str) -> float:
    match = re.search(r"heard ([\d.]+) Hz", output)
    assert match, output
    return float(match.group(1))


SCENARIOS: dict[str, Scenario] = {
    "voice_proxy.py": voice_proxy,
    "softphone_call.py": softphone_call,
    "voice_messages.py": voice_messages,
    "calls.py": calls,
    "proxy_in_python.py": proxy_in_python,
}


def test_every_example_has_a_scenario() -> None:
    assert sorted(p.name for p in EXAMPLES.glob("*.py")) == sorted(SCENARIOS)


@pytest.mark.parametrize("name", sorted(SCENARIOS))
async def test_example(name: str, register: Register, tmp_path: Path) -> None:
    await SCENARIOS[name](register, tmp_path)

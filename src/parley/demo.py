"""``parley demo``: a relay, the calling proxy and two parties, with a transcript.

Everything runs for real: the relay and the proxy (``parley proxy``, with its calls bound
by ``parley proxy bind``) are their own processes on a real socket, the operator and the
customer are SDK clients in this process. Two calls go through the proxy: one accepted
and hung up, one answered busy. Every message on both legs is printed as it happens, the
proxy's records of both legs close the transcript, and the demo succeeds only when every
message the proxy should forward arrived with the right content.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from parley.client import Client
from parley.client.registration import register_identity
from parley.credentials import Credentials
from parley.errors import ChildProcessFailed
from parley.processes import ChildProcess, RelayProcess
from parley.protocol.messages import Message
from parley.proxy.report import records_table
from parley.proxy.store import SqliteProxyStore

WAIT = 10.0  # seconds a forwarded message may take before the demo calls it lost


def sample_offer(party: str) -> str:
    """A session description in SDP syntax; the parties here only negotiate, not talk."""
    session = secrets.randbelow(2**62)
    return "\r\n".join(
        [
            "v=0",
            f"o=- {session} 2 IN IP4 127.0.0.1",
            f"s=parley demo {party}",
            "t=0 0",
            "m=audio 9 UDP/TLS/RTP/SAVPF 111",
            "c=IN IP4 0.0.0.0",
            "a=rtpmap:111 opus/48000/2",
            "a=sendrecv",
            "",
        ]
    )


@dataclass
class Expectation:
    """A message the proxy must forward: who should receive what."""

    receiver: str
    typ: str
    cid: str
    call_id: str
    peer_info: str | None = None
    data: dict[str, Any] | None = None
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    problem: str | None = None

    def check(self, message: Message) -> None:
        peer_info = getattr(message, "peer_info", None)
        if self.peer_info is not None and peer_info != self.peer_info:
            self.problem = "peer_info changed on the way"
        elif self.data is not None and not self.data.items() <= self._data(message).items():
            self.problem = f"data was {self._data(message)!r}, without {self.data!r}"
        self.arrived.set()

    @staticmethod
    def _data(message: Message) -> dict[str, Any]:
        # Keys beyond the expected ones are the proxy's own (the ring lifetime, a reason).
        return dict(getattr(message, "data", None) or {})


class Transcript:
    def __init__(self, console: Console, names: dict[str, str]) -> None:
        self.console = console
        self.names = names
        self.started = time.monotonic()
        self.expected: list[Expectation] = []

    def _name(self, identity: str) -> str:
        return self.names.get(identity, identity)

    def line(self, sender: str, receiver: str, verb: str, message: Message) -> None:
        extra = ""
        if peer_info := getattr(message, "peer_info", None):
            extra += f" peer_info: {len(peer_info)}-byte SDP"
        if data := getattr(message, "data", None):
            extra += f" data: {data}"
        call_id = message.get("call_id", "-")
        self.console.print(
            f"[dim]{time.monotonic() - self.started:6.3f}s[/dim] "
            f"[bold]{self._name(sender):>8} → {self._name(receiver):<8}[/bold] {verb:<8} "
            f"[cyan]{message.typ.value.removeprefix('chat.voice.'):<6}[/cyan] "
            f"{message.cid}/{call_id}{extra}",
            soft_wrap=True,
        )

    def sent(self, sender: str, receiver: str, message: Message) -> None:
        self.line(sender, receiver, "sent", message)

    def received(self, receiver: str, issuer: str, message: Message) -> None:
        self.line(issuer, receiver, "received", message)
        for expectation in self.expected:
            if (
                not expectation.arrived.is_set()
                and expectation.receiver == receiver
                and expectation.typ == message.typ.value
                and expectation.cid == message.cid
                and expectation.call_id == message["call_id"]
            ):
                expectation.check(message)
                return
        self.console.print(f"[red]unexpected {message.typ.value} at {self._name(receiver)}[/red]")

    def expect(self, expectation: Expectation) -> Expectation:
        self.expected.append(expectation)
        return expectation

    async def wait(self, expectation: Expectation) -> bool:
        try:
            await asyncio.wait_for(expectation.arrived.wait(), WAIT)
        except TimeoutError:
            expectation.problem = f"did not arrive within {WAIT:.0f} s"
        return expectation.problem is None


async def run_demo(console: Console, keep: Path | None = None) -> bool:
    if keep is not None:
        await asyncio.to_thread(keep.mkdir, parents=True, exist_ok=True)
        return await _run_in(console, keep)
    with tempfile.TemporaryDirectory(prefix="parley-demo-") as tmp:
        return await _run_in(console, Path(tmp))


async def _run_in(console: Console, workdir: Path) -> bool:
    console.rule("[bold]Parley demo: a call through a proxy")
    console.print(f"working directory: {workdir}")
    async with RelayProcess(workdir / "relay") as relay:
        console.print(f"relay: {relay.url} (pid {relay.pid}, SQLite in {relay.data_dir})")
        app, operator, customer = [
            await register_identity(relay.url, name=name)
            for name in ("support app", "Bob", "Carol")
        ]
        for creds, filename in ((app, "app"), (operator, "operator"), (customer, "customer")):
            creds.save(workdir / f"{filename}.json")
        names: dict[str, str] = {
            app.identity: "app",
            operator.identity: "operator",
            customer.identity: "customer",
        }
        for identity, role in names.items():
            console.print(f"identity {role:<8} {identity}")

        store = workdir / "app.proxy.db"
        cids = [f"conv-{secrets.token_hex(4)}" for _ in range(2)]
        for cid in cids:
            await _run_script(
                [
                    *PARLEY,
                    "proxy",
                    "bind",
                    "--store",
                    str(store),
                    cid,
                    "--operator",
                    operator.identity,
                    "--customer",
                    customer.identity,
                    "--operator-name",
                    "Bob",
                ],
                console,
            )
        proxy = ChildProcess(
            [*PARLEY, "proxy", "--credentials", str(workdir / "app.json"), "--store", str(store)],
            re.compile(r"parley proxy ready"),
            name="parley proxy",
            on_line=lambda line: _proxy_line(console, line),
        )
        async with proxy:
            transcript = Transcript(console, names)
            ok = await _place_calls(transcript, app, operator, customer, workdir, cids)
    _summary(console, transcript)
    await _records(console, store, names)
    return ok


PARLEY = (sys.executable, "-m", "parley")


def _proxy_line(console: Console, line: str) -> None:
    """The proxy's own lines; its log lines (connections and the like) stay out."""
    if line.startswith("parley proxy"):
        console.print(f"[dim]        {line}[/dim]", soft_wrap=True)


async def _records(console: Console, store_path: Path, names: dict[str, str]) -> None:
    """What ``parley calls`` shows: the proxy's record of every leg."""
    store = SqliteProxyStore(store_path)
    try:
        records = await store.records()
    finally:
        await store.close()
    console.print(records_table(records, names=names, title="call records (parley calls)"))


async def _run_script(argv: list[str], console: Console) -> None:
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    output, _ = await proc.communicate()
    for line in output.decode().splitlines():
        console.print(f"[dim]        {line}[/dim]", soft_wrap=True)
    if proc.returncode != 0:
        raise ChildProcessFailed(f"{' '.join(argv[1:5])} exited with {proc.returncode}")


async def _place_calls(
    transcript: Transcript,
    app: Credentials,
    operator_creds: Credentials,
    customer_creds: Credentials,
    workdir: Path,
    cids: list[str],
) -> bool:
    operator = Client(operator_creds, state_path=workdir / "operator.state.db")
    customer = Client(customer_creds, state_path=workdir / "customer.state.db")
    answer = sample_offer("customer")
    offer = sample_offer("operator")
    # What the customer does with each ringing call: the first is answered, the second busy.
    busy_cids = {cids[1]}

    async with operator, customer:
        await operator.connections.permit(app.identity)
        await customer.connections.permit(app.identity)
        op_voice, cu_voice = operator.voice(), customer.voice()

        def record(receiver: str) -> Any:
            def handler(issuer: str, payload: Message) -> None:
                transcript.received(receiver, issuer, payload)

            return handler

        for handler_set, who in ((op_voice, operator.id), (cu_voice, customer.id)):
            handler_set.on_accept(record(who))
            handler_set.on_busy(record(who))
            handler_set.on_stop(record(who))

        async def customer_rings(issuer: str, payload: Message) -> None:
            transcript.received(customer.id, issuer, payload)
            call_id = payload["call_id"]
            if payload.cid in busy_cids:
                reply: Message = await cu_voice.busy(issuer, payload.cid, call_id)
            else:
                reply = await cu_voice.accept(issuer, payload.cid, call_id, answer)
            transcript.sent(customer.id, issuer, reply)

        cu_voice.on_start(customer_rings)

        results: list[bool] = []
        for cid in cids:
            call_id = f"call-{secrets.token_hex(4)}"
            transcript.console.rule(f"call {cid}", style="dim")
            ring = transcript.expect(
                Expectation(
                    customer.id, "chat.voice.start", cid, call_id, offer, {"operator_name": "Bob"}
                )
            )
            if cid in busy_cids:
                answered = transcript.expect(
                    Expectation(operator.id, "chat.voice.busy", cid, call_id)
                )
            else:
                answered = transcript.expect(
                    Expectation(operator.id, "chat.voice.accept", cid, call_id, answer)
                )
            transcript.sent(
                operator.id,
                app.identity,
                await op_voice.start(app.identity, cid, call_id, offer, {}),
            )
            results.append(await transcript.wait(ring))
            results.append(await transcript.wait(answered))
            if cid not in busy_cids and results[-1]:
                hung_up = transcript.expect(
                    Expectation(customer.id, "chat.voice.stop", cid, call_id)
                )
                transcript.sent(
                    operator.id, app.identity, await op_voice.stop(app.identity, cid, call_id)
                )
                results.append(await transcript.wait(hung_up))
        return all(results)


def _summary(console: Console, transcript: Transcript) -> None:
    table = Table(title="forwarded by the proxy", title_justify="left")
    for column in ("to", "message", "cid", "call_id", "result"):
        table.add_column(column)
    for e in transcript.expected:
        result = "[green]arrived[/green]" if e.problem is None else f"[red]{e.problem}[/red]"
        table.add_row(transcript.names.get(e.receiver, e.receiver), e.typ, e.cid, e.call_id, result)
    console.print(table)
    lost = sum(e.problem is not None for e in transcript.expected)
    total = len(transcript.expected)
    if lost:
        console.print(f"[bold red]{lost} of {total} forwarded messages missing or wrong[/bold red]")
    else:
        console.print(f"[bold green]all {total} forwarded messages accounted for[/bold green]")

"""``parley demo``: a relay, the calling proxy and two softphones, with a transcript.

Everything runs for real: the relay and the proxy (``parley proxy``, with its calls bound
by ``parley proxy bind``) are their own processes on a real socket; the operator and the
customer are SDK clients in this process, each with a softphone (:mod:`parley.media`,
WebRTC audio with aiortc). Two calls go through the proxy:

1. the operator's softphone, playing a 440 Hz tone, calls the customer; the customer's
   softphone answers, playing 1000 Hz. The proxy forwards the session descriptions
   unchanged, so the audio goes straight from one softphone to the other (DTLS-SRTP, on
   the loopback interface unless ``PARLEY_ICE_HOSTS`` names other addresses). Both
   record what they hear for two seconds, then the operator hangs up;
2. the operator calls again, and the customer answers busy.

Every message on both legs is printed as it happens, then the frequency each side
measured in what it heard, the messages the proxy forwarded, and the proxy's records of
both legs. The demo succeeds only when every message the proxy should forward arrived
with the right content and each side heard the other's tone (within ±5 Hz).

``--keep DIR`` keeps the files in ``DIR``. Each run starts afresh there: the files an
earlier run left (its relay's data, credentials, state files, proxy store, recordings)
are replaced, with new identities, so the same folder works any number of times. Files
of other names in ``DIR`` are left alone.

SIGTERM stops the demo as SIGINT does: the relay and the proxy processes are stopped,
the temporary folder is removed, and the demo exits 1.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import re
import secrets
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
from rich.console import Console
from rich.table import Table

from parley.client import Client
from parley.client.registration import register_identity
from parley.credentials import Credentials
from parley.errors import ChildProcessFailed, InvalidSessionDescription, ParleyError
from parley.ice import IceConfig
from parley.media import MediaCall, MediaStats, Softphone
from parley.media.analysis import dominant_frequency, read_wav
from parley.processes import ChildProcess, RelayProcess
from parley.protocol import session_description
from parley.protocol.call import EndReason
from parley.protocol.messages import (
    Message,
    MessageType,
)
from parley.protocol.session_description import SdpType
from parley.proxy.report import records_table
from parley.proxy.store import SqliteProxyStore

WAIT = 10.0  # seconds a message, an answer or the audio may take before the demo gives up
TALK = 2  # seconds the first call stays up, with a line a second of what each side hears
OPERATOR_TONE = 440.0  # Hz, what the operator's softphone plays
CUSTOMER_TONE = 1000.0  # Hz, what the customer's softphone plays
TOLERANCE = 5.0  # Hz: a side heard the other's tone if it measured it this close
SETTLE = 0.5  # seconds at the start of a recording left out of the measurement
LOOPBACK = ("127.0.0.1",)
SHORT_ID = 8  # characters of a call id shown
_LONG_ID = re.compile(r"\b[0-9a-f]{32}\b")  # a softphone's call id, in the proxy's lines


@dataclass
class Expectation:
    """A message the proxy must forward: ``sender``'s message of ``typ`` in ``cid`` must
    reach ``receiver`` with the same call_id and peer_info, and ``data`` among its data."""

    sender: str
    receiver: str
    typ: MessageType
    cid: str
    data: dict[str, Any] | None = None
    sent: Message | None = None
    problem: str | None = None

    def check(self, message: Message) -> None:
        assert self.sent is not None
        peer_info = getattr(self.sent, "peer_info", None)
        if peer_info is not None and getattr(message, "peer_info", None) != peer_info:
            self.problem = "peer_info changed on the way"
        elif self.data is not None and not self.data.items() <= self._data(message).items():
            self.problem = f"data was {self._data(message)!r}, without {self.data!r}"

    @staticmethod
    def _data(message: Message) -> dict[str, Any]:
        # Keys beyond the expected ones are the proxy's own (the ring lifetime, a reason).
        return dict(getattr(message, "data", None) or {})


@dataclass
class Hearing:
    """What one side measured in the recording of what it heard."""

    who: str
    expected: float  # the other side's tone
    heard: float | None = None  # the dominant frequency; None: nothing to measure
    seconds: float = 0.0  # of audio measured
    note: str = ""

    @property
    def ok(self) -> bool:
        return self.heard is not None and abs(self.heard - self.expected) <= TOLERANCE


@dataclass
class Transcript:
    """Every message the parties sent and received, printed as it happens; what the proxy
    should have forwarded, and what each side heard."""

    console: Console
    names: dict[str, str]
    started: float = field(default_factory=time.monotonic)
    sent_log: list[tuple[str, Message]] = field(default_factory=list)  # (sender, message)
    received_log: list[tuple[str, Message]] = field(default_factory=list)  # (receiver, ...)
    expected: list[Expectation] = field(default_factory=list)
    hearings: list[Hearing] = field(default_factory=list)
    _claimed: set[int] = field(default_factory=set)  # received_log indices matched
    _changed: asyncio.Event = field(default_factory=asyncio.Event)
    _lifetime_told: bool = False

    def name(self, identity: str) -> str:
        return self.names.get(identity, identity)

    def stamp(self) -> str:
        return f"[dim]{time.monotonic() - self.started:6.3f}s[/dim]"

    def line(self, sender: str, receiver: str, verb: str, message: Message) -> None:
        extra = ""
        if peer_info := getattr(message, "peer_info", None):
            extra += f" peer_info: {_describe_peer_info(peer_info)}"
        if data := getattr(message, "data", None):
            extra += f" data: {data}"
        call_id = _short(message.get("call_id", "-"))
        self.console.print(
            f"{self.stamp()} "
            f"[bold]{self.name(sender):>8} → {self.name(receiver):<8}[/bold] {verb:<8} "
            f"[cyan]{message.typ.value.removeprefix('chat.voice.'):<6}[/cyan] "
            f"{message.cid}/{call_id}{extra}",
            soft_wrap=True,
        )

    def sent(self, sender: str, receiver: str, message: Message) -> None:
        self.line(sender, receiver, "sent", message)
        self.sent_log.append((sender, message))
        self._changed.set()

    def received(self, receiver: str, issuer: str, message: Message) -> None:
        self.line(issuer, receiver, "received", message)
        self.received_log.append((receiver, message))
        self._explain_lifetime(message)
        self._changed.set()

    def _explain_lifetime(self, message: Message) -> None:
        """Once: why the forwarded start's ``lifetime`` is not the one the caller sent."""
        if self._lifetime_told or message.typ is not MessageType.VOICE_START:
            return
        forwarded = Expectation._data(message).get("lifetime")
        sent = next(
            (
                Expectation._data(m).get("lifetime")
                for _, m in reversed(self.sent_log)
                if m.typ is MessageType.VOICE_START and m.get("call_id") == message.get("call_id")
            ),
            None,
        )
        if forwarded is None or sent is None or forwarded == sent:
            return
        self._lifetime_told = True
        self.note(
            f"[dim]  (lifetime: the seconds the call may ring. The proxy passes on what is "
            f"left of the operator's {sent} s, in whole seconds rounded down, so the "
            f"customer never rings longer than the operator waits: {forwarded} s)[/dim]"
        )

    def note(self, text: str) -> None:
        self.console.print(f"{self.stamp()} {text}", soft_wrap=True)

    async def forwarded(
        self,
        sender: str,
        typ: MessageType,
        cid: str,
        receiver: str,
        data: dict[str, Any] | None = None,
    ) -> bool:
        """Wait for ``sender`` to send its message of ``typ`` in ``cid`` and for the proxy
        to bring it to ``receiver``; True when it arrived as it should."""
        expectation = Expectation(sender, receiver, typ, cid, data)
        self.expected.append(expectation)
        try:
            expectation.sent = await self._until(lambda: self._find_sent(expectation))
        except TimeoutError:
            expectation.problem = f"{self.name(sender)} sent none within {WAIT:.0f} s"
            return False
        try:
            message = await self._until(lambda: self._claim_received(expectation))
        except TimeoutError:
            expectation.problem = f"did not arrive within {WAIT:.0f} s"
            return False
        expectation.check(message)
        return expectation.problem is None

    def unexpected(self) -> list[tuple[str, Message]]:
        """Messages that arrived without being one the proxy should have forwarded."""
        return [m for i, m in enumerate(self.received_log) if i not in self._claimed]

    async def _until(self, find: Callable[[], Message | None]) -> Message:
        async with asyncio.timeout(WAIT):
            while (found := find()) is None:
                self._changed.clear()
                await self._changed.wait()
            return found

    def _find_sent(self, e: Expectation) -> Message | None:
        taken = {id(other.sent) for other in self.expected if other.sent is not None}
        for sender, message in self.sent_log:
            if (
                sender == e.sender
                and message.typ is e.typ
                and message.cid == e.cid
                and id(message) not in taken
            ):
                return message
        return None

    def _claim_received(self, e: Expectation) -> Message | None:
        assert e.sent is not None
        for i, (receiver, message) in enumerate(self.received_log):
            if (
                i not in self._claimed
                and receiver == e.receiver
                and message.typ is e.typ
                and message.cid == e.cid
                and message.get("call_id") == e.sent.get("call_id")
            ):
                self._claimed.add(i)
                return message
        return None


def _short(call_id: str) -> str:
    """A call id as the transcript shows it: the softphones' are 32 characters long."""
    return call_id if len(call_id) <= SHORT_ID else f"{call_id[:SHORT_ID]}…"


def _describe_peer_info(peer_info: str) -> str:
    for kind in SdpType:
        with contextlib.suppress(InvalidSessionDescription):
            sdp = session_description.parse(peer_info, kind).sdp
            return f"{len(sdp.encode())}-byte SDP {kind.value}"
    return f"{len(peer_info)} characters, not a session description"


def _reporter(transcript: Transcript, sender: str) -> Callable[[Message], None]:
    def report(message: Message) -> None:
        transcript.sent(sender, message.aud, message)

    return report


async def run_demo(console: Console, keep: Path | None = None) -> bool:
    """Run the demo; True if everything arrived and was heard. SIGTERM stops it as
    SIGINT does (children stopped, temporary folder removed); it then returns False."""
    if logging.getLogger().level > logging.DEBUG:
        # The WebRTC stack's connection chatter stays out of the transcript too.
        for name in ("aiortc", "aioice"):
            logging.getLogger(name).setLevel(logging.WARNING)
    loop = asyncio.get_running_loop()
    me = asyncio.current_task()
    assert me is not None
    terminated = False

    def on_sigterm() -> None:
        nonlocal terminated
        terminated = True
        me.cancel()

    loop.add_signal_handler(signal.SIGTERM, on_sigterm)
    try:
        if keep is not None:
            await asyncio.to_thread(_fresh_folder, keep)
            return await _run_in(console, keep)
        with tempfile.TemporaryDirectory(prefix="parley-demo-") as tmp:
            return await _run_in(console, Path(tmp))
    except asyncio.CancelledError:
        if not terminated:
            raise
        me.uncancel()
        where = "its files kept" if keep is not None else "its temporary folder removed"
        console.print(f"[red]demo stopped by SIGTERM: relay and proxy stopped, {where}[/red]")
        return False
    finally:
        loop.remove_signal_handler(signal.SIGTERM)


# What a run leaves in its folder (each with its SQLite -wal/-shm files, if any).
_RUN_FILES = (
    "app.json",
    "operator.json",
    "customer.json",
    "app.state.db",
    "operator.state.db",
    "customer.state.db",
    "app.proxy.db",
    "operator-heard.wav",
    "customer-heard.wav",
)


def _fresh_folder(folder: Path) -> None:
    """Make ``folder`` ready for a run: remove what an earlier run left (a kept folder is
    replaced, not reused: new identities, an empty relay and proxy store)."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(folder / "relay", ignore_errors=True)
    for name in _RUN_FILES:
        for path in folder.glob(f"{name}*"):
            if path.is_file():
                path.unlink()


def _ice() -> IceConfig:
    """The environment's ICE settings; host candidates on loopback unless it names some
    (everything in the demo runs on this machine)."""
    ice = IceConfig.from_env()
    return ice if ice.hosts else msgspec.structs.replace(ice, hosts=LOOPBACK)


async def _run_in(console: Console, workdir: Path) -> bool:
    console.rule("[bold]Parley demo: a real call through a proxy")
    console.print(f"working directory: {workdir}")
    ice = _ice()
    async with RelayProcess(workdir / "relay") as relay:
        console.print(
            f"relay listening on {relay.url} (pid {relay.pid}, SQLite in {relay.data_dir})"
        )
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
        console.print(
            f"softphones: operator plays {OPERATOR_TONE:g} Hz, customer plays "
            f"{CUSTOMER_TONE:g} Hz; ICE host candidates on {', '.join(ice.hosts)}"
        )
        console.print(f"(call ids are shown by their first {SHORT_ID} characters)")

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
            console.print(f"[dim]        (proxy pid {proxy.pid})[/dim]")
            transcript = Transcript(console, names)
            ok = await _place_calls(transcript, app, operator, customer, workdir, cids, ice)
    ok = _summary(console, transcript) and ok
    await _records(console, store, names)
    return ok


PARLEY = (sys.executable, "-m", "parley")


def _proxy_line(console: Console, line: str) -> None:
    """The proxy's own lines; its log lines (connections and the like) stay out."""
    if line.startswith("parley proxy"):
        line = _LONG_ID.sub(lambda m: _short(m[0]), line)
        console.print(f"[dim]        {line}[/dim]", soft_wrap=True)


async def _records(console: Console, store_path: Path, names: dict[str, str]) -> None:
    """What ``parley calls`` shows: the proxy's record of every leg."""
    store = SqliteProxyStore(store_path)
    try:
        records = await store.records()
    finally:
        await store.close()
    shown = [msgspec.structs.replace(r, call_id=_short(r.call_id)) for r in records]
    console.print(records_table(shown, names=names, title="call records (parley calls)"))


async def _run_script(argv: list[str], console: Console) -> None:
    """Run a ``parley`` command; its output only if it fails (the bindings it writes show
    once, as the proxy takes them up)."""
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    output, _ = await proc.communicate()
    if proc.returncode != 0:
        for line in output.decode().splitlines():
            console.print(f"[dim]        {line}[/dim]", soft_wrap=True)
        raise ChildProcessFailed(f"{' '.join(argv[1:5])} exited with {proc.returncode}")


async def _place_calls(
    transcript: Transcript,
    app: Credentials,
    operator_creds: Credentials,
    customer_creds: Credentials,
    workdir: Path,
    cids: list[str],
    ice: IceConfig,
) -> bool:
    operator = Client(operator_creds, state_path=workdir / "operator.state.db")
    customer = Client(customer_creds, state_path=workdir / "customer.state.db")
    # Both legs in the transcript: what each party sends, as the relay took it.
    for party in (operator, customer):
        party.observe_sent(_reporter(transcript, party.id))
    op_phone = Softphone(operator, source=f"tone:{OPERATOR_TONE:g}", ice=ice)
    cu_phone = Softphone(customer, source=f"tone:{CUSTOMER_TONE:g}", ice=ice)
    # The customer answers the first call and turns the second down as busy.
    answered: dict[str, asyncio.Future[MediaCall]] = {
        cids[0]: asyncio.get_running_loop().create_future()
    }

    def record(receiver: str) -> Any:
        def handler(issuer: str, payload: Message) -> None:
            transcript.received(receiver, issuer, payload)

        return handler

    # The apps' own handlers see every message beside the softphones.
    for voice, who in ((operator.voice(), operator.id), (customer.voice(), customer.id)):
        voice.on_start(record(who))
        voice.on_accept(record(who))
        voice.on_busy(record(who))
        voice.on_stop(record(who))

    async with operator, customer:
        await operator.connections.permit(app.identity)
        await customer.connections.permit(app.identity)
        answering = asyncio.create_task(
            _customer_answers(cu_phone, answered, workdir / "customer-heard.wav"),
            name="parley-demo-customer",
        )
        try:
            first = await _answered_call(
                transcript,
                op_phone,
                app.identity,
                operator.id,
                customer.id,
                cids[0],
                answered,
                workdir / "operator-heard.wav",
                workdir / "customer-heard.wav",
            )
            second = await _busy_call(
                transcript, op_phone, app.identity, operator.id, customer.id, cids[1]
            )
        finally:
            answering.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await answering
            await op_phone.close()
            await cu_phone.close()
        return first and second


async def _customer_answers(
    phone: Softphone, answered: dict[str, asyncio.Future[MediaCall]], recording: Path
) -> None:
    """The customer's softphone: answer the calls the demo wants answered, busy the rest."""
    async for incoming in phone.incoming():
        future = answered.get(incoming.cid)
        if future is None or future.done():
            with contextlib.suppress(ParleyError):
                await incoming.busy()
            continue
        try:
            future.set_result(await phone.answer(incoming, record=recording))
        except ParleyError as exc:
            future.set_exception(exc)


async def _answered_call(
    transcript: Transcript,
    op_phone: Softphone,
    app: str,
    operator: str,
    customer: str,
    cid: str,
    answered: dict[str, asyncio.Future[MediaCall]],
    operator_heard: Path,
    customer_heard: Path,
) -> bool:
    """Call 1: placed, answered, both sides talk and record, the operator hangs up."""
    transcript.console.rule(
        f"call 1, {cid}: answered, {TALK} s of audio, hung up",
        style="dim",
    )
    results: list[bool] = []
    op_call = await op_phone.call(app, cid=cid, record=operator_heard)
    results.append(
        await transcript.forwarded(
            operator, MessageType.VOICE_START, cid, customer, {"operator_name": "Bob"}
        )
    )
    results.append(await transcript.forwarded(customer, MessageType.VOICE_ACCEPT, cid, operator))
    cu_call: MediaCall | None = None
    try:
        async with asyncio.timeout(WAIT):
            cu_call = await answered[cid]
            await op_call.wait_audio()
            await cu_call.wait_audio()
    except (TimeoutError, ParleyError) as exc:
        transcript.note(f"[red]the call's audio did not come up: {exc or 'timed out'}[/red]")
        results.append(False)
    else:
        transcript.note("[green]audio flowing both ways[/green], straight between the softphones")
        for _ in range(TALK):
            await asyncio.sleep(1.0)
            op_stats, cu_stats = await op_call.stats(), await cu_call.stats()
            transcript.note(
                f"  operator hears {_stats(op_stats)}  │  customer hears {_stats(cu_stats)}"
            )
    if op_call.call is not None and op_call.call.record is None:
        await op_call.hangup()
        results.append(await transcript.forwarded(operator, MessageType.VOICE_STOP, cid, customer))
    else:  # the media failed, which ended the call: no hang-up to forward
        reason = op_call.call.record.reason.value if op_call.call and op_call.call.record else "?"
        transcript.note(f"[red]the call ended before the hang-up ({reason})[/red]")
    for media in (op_call, cu_call):
        if media is not None:
            with contextlib.suppress(TimeoutError, ParleyError):
                await asyncio.wait_for(media.wait_ended(), WAIT)
    for who, expected, path in (
        ("operator", CUSTOMER_TONE, operator_heard),
        ("customer", OPERATOR_TONE, customer_heard),
    ):
        hearing = await _measure(who, expected, path)
        transcript.hearings.append(hearing)
        transcript.note(_hearing_line(hearing))
        results.append(hearing.ok)
    return all(results)


async def _busy_call(
    transcript: Transcript, op_phone: Softphone, app: str, operator: str, customer: str, cid: str
) -> bool:
    """Call 2: placed, and the customer answers busy."""
    transcript.console.rule(f"call 2, {cid}: the customer is busy", style="dim")
    op_call = await op_phone.call(app, cid=cid)
    results = [
        await transcript.forwarded(
            operator, MessageType.VOICE_START, cid, customer, {"operator_name": "Bob"}
        ),
        await transcript.forwarded(customer, MessageType.VOICE_BUSY, cid, operator),
    ]
    try:
        ended = await asyncio.wait_for(op_call.wait_ended(), WAIT)
    except (TimeoutError, ParleyError) as exc:
        transcript.note(f"[red]the operator's call did not end: {exc or 'timed out'}[/red]")
        return False
    if ended.reason is EndReason.BUSY:
        transcript.note("the operator's softphone: call ended, busy")
    else:
        transcript.note(f"[red]the operator's call ended {ended.reason.value}, not busy[/red]")
    return all(results) and ended.reason is EndReason.BUSY


def _stats(stats: MediaStats) -> str:
    level = "-inf" if math.isinf(stats.level_dbfs) else f"{stats.level_dbfs:.1f}"
    rtt = "-" if stats.round_trip is None else f"{stats.round_trip * 1000:.1f} ms"
    return f"{stats.packets_received:3d} packets, level {level} dBFS, RTT {rtt}"


async def _measure(who: str, expected: float, path: Path) -> Hearing:
    """The dominant frequency of the recording, its first half second left out (the
    connection settling)."""
    hearing = Hearing(who, expected)
    try:
        samples, rate = await asyncio.to_thread(read_wav, path)
    except ParleyError as exc:
        hearing.note = str(exc)
        return hearing
    usable = samples[int(rate * SETTLE) :]
    hearing.seconds = len(usable) / rate
    if hearing.seconds < SETTLE:
        hearing.note = f"only {len(samples) / rate:.2f} s recorded"
        return hearing
    hearing.heard = dominant_frequency(usable, rate)
    return hearing


def _hearing_line(h: Hearing) -> str:
    other = "customer" if h.who == "operator" else "operator"
    if h.heard is None:
        return f"[red]{h.who} heard nothing to measure: {h.note}[/red]"
    verdict = (
        f"[green]✓ the {other}'s tone[/green]" if h.ok else f"[red]✗ not the {other}'s tone[/red]"
    )
    return (
        f"{h.who} heard {h.heard:.1f} Hz in {h.seconds:.1f} s of audio "
        f"(the {other} plays {h.expected:g} Hz): {verdict}"
    )


def _summary(console: Console, transcript: Transcript) -> bool:
    table = Table(title="forwarded by the proxy", title_justify="left")
    for column in ("to", "message", "cid", "call_id", "result"):
        table.add_column(column)
    for e in transcript.expected:
        result = "[green]arrived[/green]" if e.problem is None else f"[red]{e.problem}[/red]"
        call_id = "-" if e.sent is None else _short(e.sent.get("call_id", "-"))
        table.add_row(transcript.name(e.receiver), e.typ.value, e.cid, call_id, result)
    console.print(table)
    for receiver, message in transcript.unexpected():
        console.print(
            f"[yellow]also received by {transcript.name(receiver)}: {message.typ.value} "
            f"{message.cid}/{_short(message.get('call_id', '-'))}[/yellow]",
            soft_wrap=True,
        )
    lost = sum(e.problem is not None for e in transcript.expected)
    total = len(transcript.expected)
    if lost:
        console.print(f"[bold red]{lost} of {total} forwarded messages missing or wrong[/bold red]")
    else:
        console.print(f"[bold green]all {total} forwarded messages accounted for[/bold green]")
    heard = [h for h in transcript.hearings if h.ok]
    if transcript.hearings and len(heard) == len(transcript.hearings):
        console.print(
            "[bold green]each side heard the other's tone:[/bold green] "
            + ", ".join(f"{h.who} {h.heard:.1f} Hz" for h in heard)
        )
    else:
        console.print("[bold red]the two sides did not both hear each other's tone[/bold red]")
    return lost == 0 and bool(transcript.hearings) and len(heard) == len(transcript.hearings)

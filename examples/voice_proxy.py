"""A calling proxy: the app sits between an operator and a customer.

This is the proxy from the public Voice docs, in Python. A small SQLite table maps each
conversation id (cid) to its operator and customer; ``start`` from the operator goes to
the customer with the operator's name, ``accept`` from the customer goes back to the
operator, and ``stop`` and ``busy`` go to whichever side did not send them.

    # record a call, then run the proxy with the app's credentials
    python examples/voice_proxy.py --db calls.db bind CID OPERATOR CUSTOMER --operator-name Bob
    python examples/voice_proxy.py --db calls.db run --credentials app.json

The proxy permits every party in its table when it starts, so bind calls first.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from parley import Client, VoiceAccept, VoiceBusy, VoiceStart, VoiceStop


@dataclass(frozen=True)
class Call:
    cid: str
    operator: str
    operator_name: str
    customer: str


class CallTable:
    """cid -> (operator, customer): the app's own record of which call is whose."""

    def __init__(self, path: Path) -> None:
        self._db = sqlite3.connect(path)
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS calls (cid TEXT PRIMARY KEY, operator TEXT NOT NULL,"
            " operator_name TEXT NOT NULL, customer TEXT NOT NULL)"
        )
        self._db.commit()

    def bind(self, call: Call) -> None:
        with self._db:
            self._db.execute(
                "INSERT OR REPLACE INTO calls VALUES (?, ?, ?, ?)",
                (call.cid, call.operator, call.operator_name, call.customer),
            )

    def find(self, cid: str) -> Call | None:
        row = self._db.execute(
            "SELECT cid, operator, operator_name, customer FROM calls WHERE cid = ?", (cid,)
        ).fetchone()
        return Call(*row) if row else None

    def parties(self) -> set[str]:
        rows = self._db.execute("SELECT operator, customer FROM calls").fetchall()
        return {party for row in rows for party in row}


def say(text: str) -> None:
    print(f"[voice_proxy] {text}", flush=True)


async def run_proxy(credentials: Path, table: CallTable) -> None:
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)

    async with Client.from_credentials(credentials) as client:
        for party in sorted(table.parties()):
            await client.connections.permit(party)
        voice = client.voice()

        @voice.on_start
        async def on_start(issuer: str, payload: VoiceStart) -> None:
            call = table.find(payload.cid)
            if call is None or issuer != call.operator:
                say(f"ignored start from {issuer}: no call {payload.cid} for that operator")
                return
            say(f"received start from {issuer}, redirecting...")
            await voice.start(
                call.customer,
                payload.cid,
                payload.call_id,
                payload.peer_info,
                {"operator_name": call.operator_name},
            )

        @voice.on_accept
        async def on_accept(issuer: str, payload: VoiceAccept) -> None:
            call = table.find(payload.cid)
            if call is None or issuer != call.customer:
                return
            say(f"received acceptation from {issuer}, redirecting...")
            await voice.accept(call.operator, payload.cid, payload.call_id, payload.peer_info)

        @voice.on_stop
        async def on_stop(issuer: str, payload: VoiceStop) -> None:
            call = table.find(payload.cid)
            if call is None or issuer not in (call.operator, call.customer):
                return
            other = call.customer if issuer == call.operator else call.operator
            say(f"received stop from {issuer}, redirecting to {other}")
            await voice.stop(other, payload.cid, payload.call_id)

        @voice.on_busy
        async def on_busy(issuer: str, payload: VoiceBusy) -> None:
            call = table.find(payload.cid)
            if call is None or issuer not in (call.operator, call.customer):
                return
            other = call.customer if issuer == call.operator else call.operator
            say(f"received busy from {issuer}, redirecting...")
            await voice.busy(other, payload.cid, payload.call_id)

        say(f"ready as {client.id}")
        await stopping.wait()
    say("stopped")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--db", type=Path, required=True, help="SQLite file of calls")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run the proxy")
    run.add_argument("--credentials", type=Path, required=True, help="the app's credentials")
    bind = commands.add_parser("bind", help="record a call: cid -> operator, customer")
    bind.add_argument("cid")
    bind.add_argument("operator")
    bind.add_argument("customer")
    bind.add_argument("--operator-name", required=True)
    args = parser.parse_args(argv)

    table = CallTable(args.db)
    if args.command == "bind":
        table.bind(Call(args.cid, args.operator, args.operator_name, args.customer))
        say(f"bound {args.cid}: operator {args.operator} <-> customer {args.customer}")
    else:
        asyncio.run(run_proxy(args.credentials, table))


if __name__ == "__main__":
    main()

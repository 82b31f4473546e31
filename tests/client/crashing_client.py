"""A receiving client that kills its own process at a chosen point (for test_inbox_crash).

    python crashing_client.py CREDENTIALS HANDLED_FILE SENTINEL [--kill-at-commit N |
                                                                 --kill-in-handler CALL_ID]

Each start it handles is appended to HANDLED_FILE (one call id a line, written at once,
so the line survives the kill). ``--kill-at-commit N`` sends SIGKILL as the N-th
transaction that records inbox offsets starts its COMMIT: that batch is not written.
``--kill-in-handler CALL_ID`` sends it from the handler of that start, after its line:
the rest of its batch is written and never handed on. Without either, it exits once
it has handled SENTINEL.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from pathlib import Path
from typing import TextIO

from parley.client import Client
from parley.protocol.messages import VoiceStart


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def kill_at_commit(client: Client, nth: int) -> None:
    """SIGKILL as the ``nth`` transaction that records an offset starts to commit."""
    state = client._state  # the test reaches into its own client's state
    assert state is not None
    recording = False
    seen = 0

    def trace(statement: str) -> None:
        nonlocal recording, seen
        if statement.startswith("INSERT INTO meta VALUES ('offset'"):
            recording = True
        elif statement == "COMMIT" and recording:
            recording = False
            seen += 1
            if seen == nth:
                _die()

    state._writer.set_trace_callback(trace)


async def main(args: argparse.Namespace, handled: TextIO) -> None:
    done = asyncio.Event()

    def on_start(issuer: str, payload: VoiceStart) -> None:
        handled.write(payload.call_id + "\n")
        if payload.call_id == args.kill_in_handler:
            _die()
        if payload.call_id == args.sentinel:
            done.set()

    client = Client.from_credentials(args.credentials)
    client.voice().on_start(on_start)
    await client.connect()
    if args.kill_at_commit:
        kill_at_commit(client, args.kill_at_commit)
    print("connected", flush=True)
    await done.wait()
    await client.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("credentials")
    parser.add_argument("handled")
    parser.add_argument("sentinel")
    parser.add_argument("--kill-at-commit", type=int, default=0)
    parser.add_argument("--kill-in-handler", default=None)
    arguments = parser.parse_args(sys.argv[1:])
    # Line-buffered: each line is written at once and survives the kill.
    with Path(arguments.handled).open("a", buffering=1) as handled_file:
        asyncio.run(main(arguments, handled_file))

"""A client's state file, opened and read as a client does at start: :class:`State`,
its offset, cached chains, kept payloads, Olm account and sessions (:class:`OlmDevice`)
-> values, or StateFileError (or StateError: another device's file, another key's Olm
state).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as fuzz/<target>.py

import contextlib
import tempfile

from fuzz import samples
from fuzz.harness import Target, main
from parley.client.olm import OlmDevice
from parley.client.state import State
from parley.errors import StateError, StateFileError

_PATH = Path(tempfile.mkdtemp(prefix="parley-fuzz-")) / "alice.state.db"


def parse(data: bytes) -> OlmDevice:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{_PATH}{suffix}").unlink(missing_ok=True)
    _PATH.write_bytes(data)
    state = State(_PATH, identity="alice", device="d1")
    with contextlib.closing(state):
        state.is_seen("bob", "j")
        state.load_chain("alice")
        for offset in range(state.offset, state.offset + 3):
            state.load_opened(offset)
        return OlmDevice(samples.ALICE, state)


TARGET = Target(
    name="state_file",
    parse=parse,
    errors=(StateFileError, StateError),
    seeds=lambda: [samples.state_file()],
)

if __name__ == "__main__":
    main(TARGET)

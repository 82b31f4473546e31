"""The local state file: offsets, seen message ids, cached chains, one owner."""

from __future__ import annotations

from pathlib import Path

import pytest

from parley.client.state import MEMORY, Seen, State
from parley.crypto.keys import SigningKey
from parley.errors import StateError
from parley.protocol.keychain import KeyOp, make_entry


def _open(path: Path | str) -> State:
    return State(path, identity="bob", device="d-1")


def test_offset_and_seen_survive_a_restart(tmp_path: Path) -> None:
    state = _open(tmp_path / "s.db")
    assert state.offset == 0
    state.record(3, Seen("alice", "j1", 100))
    state.record(4)
    state.close()

    state = _open(tmp_path / "s.db")
    assert state.offset == 4
    assert state.is_seen("alice", "j1")
    assert not state.is_seen("carol", "j1")  # replay keys are per issuer
    state.close()


def test_prune_forgets_expired_ids_only() -> None:
    state = _open(MEMORY)
    state.record(1, Seen("alice", "old", 100))
    state.record(2, Seen("alice", "new", 300))
    state.prune_seen(200)
    assert not state.is_seen("alice", "old")
    assert state.is_seen("alice", "new")
    state.close()


def test_chains_round_trip(tmp_path: Path) -> None:
    key = SigningKey.generate()
    entry = make_entry(
        identity="alice",
        seq=0,
        prev=b"",
        op=KeyOp.ADD,
        device="d-a",
        public_key=key.public_key,
        signer="d-a",
        signer_key=key,
    )
    state = _open(tmp_path / "s.db")
    assert state.load_chain("alice") is None
    state.save_chain("alice", [entry])
    state.save_chain("alice", [entry, entry])
    assert state.load_chain("alice") == [entry, entry]
    state.close()


def test_a_state_file_belongs_to_one_device(tmp_path: Path) -> None:
    _open(tmp_path / "s.db").close()
    with pytest.raises(StateError, match="belongs to bob:d-1"):
        State(tmp_path / "s.db", identity="bob", device="d-2")

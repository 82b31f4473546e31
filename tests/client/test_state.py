"""The local state file: offsets, seen message ids, cached chains, one owner."""

from __future__ import annotations

from pathlib import Path

import pytest

from parley.client.state import MEMORY, OlmChanges, Seen, SessionRow, State
from parley.crypto.keys import SigningKey
from parley.errors import StateError
from parley.protocol.keychain import KeyOp, genesis_entry, make_entry


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


@pytest.mark.parametrize("device", ["d-0", "d-2"])  # sorting before ours and after it
def test_another_device_of_the_identity_cannot_open_it(tmp_path: Path, device: str) -> None:
    _open(tmp_path / "s.db").close()
    with pytest.raises(StateError, match=f"belongs to bob:d-1, not bob:{device}"):
        State(tmp_path / "s.db", identity="bob", device=device)


def test_identity_and_device_are_named(tmp_path: Path) -> None:
    # Two strings in a row are easily swapped, and a swap claims the file for no device.
    with pytest.raises(TypeError):
        State(tmp_path / "s.db", "bob", "d-1")  # type: ignore[call-arg]


def test_a_memory_state_named_by_any_equal_string() -> None:
    # ":memory:" read from a config is a string equal to MEMORY, not the same object.
    state = _open("".join([":memory", ":"]))
    state.record(1, Seen("alice", "j1", 100))
    assert state.is_seen("alice", "j1")  # written to the database it reads
    state.prune_seen(200)
    assert not state.is_seen("alice", "j1")
    state.close()


def test_the_olm_account_alone_is_written(tmp_path: Path) -> None:
    state = _open(tmp_path / "s.db")
    assert not OlmChanges()  # nothing to write
    state.save_olm(OlmChanges(account="account pickle"))
    state.close()
    state = _open(tmp_path / "s.db")
    assert state.load_olm_account() == "account pickle"
    state.close()


def test_dropped_sessions_are_deleted_and_the_others_kept(tmp_path: Path) -> None:
    kept = SessionRow("alice", "d-a", "s1", b"k" * 32, 1, "one")
    dropped = SessionRow("alice", "d-a", "s2", b"k" * 32, 2, "two")
    state = _open(tmp_path / "s.db")
    state.save_olm(OlmChanges(sessions=[kept, dropped]))
    state.save_olm(OlmChanges(dropped=[("alice", "d-a", "s2")]))
    state.close()
    state = _open(tmp_path / "s.db")
    assert state.load_olm_sessions() == [kept]
    state.close()


def test_a_written_chain_is_answered_from_the_file(tmp_path: Path) -> None:
    first = genesis_entry("alice", "d-a", SigningKey.generate())
    entries = [first]
    state = _open(tmp_path / "s.db")
    state.save_chain("alice", entries)
    # The caller's list changes after the write: the state answers what it wrote, as
    # it would after a restart.
    entries.append(genesis_entry("alice", "d-b", SigningKey.generate()))
    assert state.load_chain("alice") == [first]
    state.close()


def test_recording_an_offset_forgets_the_payloads_kept_at_or_below_it() -> None:
    state = _open(MEMORY)
    state.keep_opened(5, lambda: b"five")
    state.keep_opened(7, lambda: b"seven")
    state.keep_opened(8, lambda: b"eight")
    state.record(7)
    assert [state.load_opened(offset) for offset in (5, 7, 8)] == [None, None, b"eight"]
    state.close()


def test_payloads_are_not_written_without_olm_state(tmp_path: Path) -> None:
    # A transaction without Olm state leaves the file's sessions able to decrypt the
    # kept delivery again: its payload needs no copy at rest.
    state = _open(tmp_path / "s.db")
    state.keep_opened(7, lambda: b"seven")
    state.record(6)
    state.close()
    state = _open(tmp_path / "s.db")
    assert (state.offset, state.load_opened(7)) == (6, None)
    state.close()


def test_written_payloads_at_or_below_a_recorded_offset_are_dropped(tmp_path: Path) -> None:
    state = _open(tmp_path / "s.db")
    state.keep_opened(5, lambda: b"five")
    state.keep_opened(8, lambda: b"eight")
    state.save_olm(OlmChanges(account="spent"))  # the payloads go with it
    state.close()

    state = _open(tmp_path / "s.db")
    state.record(4)  # below both: both kept
    assert (state.load_opened(5), state.load_opened(8)) == (b"five", b"eight")
    state.record(7)  # 5 handled, 8 not yet
    assert (state.load_opened(5), state.load_opened(8)) == (None, b"eight")
    state.close()
    state = _open(tmp_path / "s.db")
    assert (state.load_opened(5), state.load_opened(8)) == (None, b"eight")
    state.close()

"""A client state file SQLite cannot use is a StateFileError naming the file."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import msgspec
import pytest

from parley.client.state import State
from parley.crypto.keys import SigningKey
from parley.errors import StateFileError
from parley.protocol.decoding import MIB
from parley.protocol.keychain import ChainEntry, genesis_entry


def test_a_file_that_is_not_a_database(tmp_path: Path) -> None:
    path = tmp_path / "alice.state.db"
    path.write_bytes(b"not a database " * 200)
    with pytest.raises(StateFileError, match=r"alice\.state\.db .*not a database"):
        State(path, identity="alice", device="d-1")


def _state_file(tmp_path: Path) -> Path:
    """A state file with a cached chain, closed."""
    path = tmp_path / "alice.state.db"
    state = State(path, identity="alice", device="d-1")
    state.save_chain("alice", [genesis_entry("alice", "d-1", SigningKey.generate())])
    state.record(3)
    state.close()
    return path


def _alter(path: Path, *statements: str) -> None:
    db = sqlite3.connect(path)
    with db:
        for statement in statements:
            db.execute(statement)
    db.close()


@pytest.mark.parametrize(
    "statement",
    [
        # A chain blob that is not msgpack, one nested past the limit, one of the wrong type.
        "UPDATE chains SET entries = X'C1'",
        "UPDATE chains SET entries = X'" + "91" * 5000 + "00'",
        "UPDATE chains SET entries = 7",
        # TEXT that is not UTF-8: SQLite keeps it, Python cannot read it.
        "UPDATE chains SET entries = CAST(X'C1' AS TEXT)",
    ],
)
def test_a_damaged_cached_chain_is_a_state_file_error(tmp_path: Path, statement: str) -> None:
    path = _state_file(tmp_path)
    _alter(path, statement)
    state = State(path, identity="alice", device="d-1")
    with pytest.raises(StateFileError, match=r"alice\.state\.db"):
        state.load_chain("alice")
    state.close()


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE meta SET value = 'seven' WHERE key = 'offset'",
        "UPDATE meta SET value = '" + "9" * 5000 + "' WHERE key = 'offset'",
        "UPDATE meta SET value = CAST(X'C1' AS TEXT) WHERE key = 'owner'",
    ],
)
def test_damaged_metadata_is_a_state_file_error(tmp_path: Path, statement: str) -> None:
    path = _state_file(tmp_path)
    _alter(path, statement)
    with pytest.raises(StateFileError, match=r"alice\.state\.db"):
        State(path, identity="alice", device="d-1")


def test_a_broken_schema_named_in_other_than_utf8_is_a_state_file_error(tmp_path: Path) -> None:
    # SQLite's message names the object; Python cannot decode that name (UnicodeDecodeError).
    path = _state_file(tmp_path)
    _alter(
        path,
        "PRAGMA writable_schema = ON",
        "UPDATE sqlite_master SET name = CAST(X'C1' AS TEXT), sql = 'CREATE INDEX' "
        "WHERE name = 'seen_exp'",
    )
    with pytest.raises(StateFileError, match=r"alice\.state\.db"):
        State(path, identity="alice", device="d-1")


def test_a_table_of_another_shape_is_a_state_file_error(tmp_path: Path) -> None:
    # Found by fuzz/state_file.py: an ``opened`` table whose offset may be NULL.
    path = _state_file(tmp_path)
    _alter(
        path,
        "DROP TABLE opened",
        "CREATE TABLE opened (offset, payload)",
        "INSERT INTO opened VALUES (NULL, X'00')",
    )
    with pytest.raises(StateFileError, match=r"alice\.state\.db"):
        State(path, identity="alice", device="d-1")


def test_olm_rows_of_the_wrong_type_are_a_state_file_error(tmp_path: Path) -> None:
    path = _state_file(tmp_path)
    _alter(
        path,
        "INSERT INTO olm_account VALUES (0, X'00')",
        "INSERT INTO olm_sessions VALUES ('bob', 'd1', 's', 'not bytes', 'not a rank', 'p')",
    )
    state = State(path, identity="alice", device="d-1")
    with pytest.raises(StateFileError):
        state.load_olm_account()
    with pytest.raises(StateFileError):
        state.load_olm_sessions()
    state.close()


def test_a_corrupt_page_met_after_opening_is_a_state_file_error(tmp_path: Path) -> None:
    path = _state_file(tmp_path)
    db = sqlite3.connect(path)
    (root,) = db.execute("SELECT rootpage FROM sqlite_master WHERE name = 'chains'").fetchone()
    (page_size,) = db.execute("PRAGMA page_size").fetchone()
    db.close()
    with path.open("r+b") as file:
        file.seek((root - 1) * page_size)
        file.write(b"\xff" * page_size)
    state = State(path, identity="alice", device="d-1")
    with pytest.raises(StateFileError, match="malformed"):
        state.load_chain("alice")
    state.close()


def test_an_offset_of_19_digits_is_read_back(tmp_path: Path) -> None:
    # The largest a relay's 64-bit offsets reach; one digit more is not an offset.
    path = _state_file(tmp_path)
    _alter(path, "UPDATE meta SET value = '9223372036854775807' WHERE key = 'offset'")
    state = State(path, identity="alice", device="d-1")
    assert state.offset == 2**63 - 1
    state.close()
    _alter(path, "UPDATE meta SET value = '10000000000000000000' WHERE key = 'offset'")
    with pytest.raises(StateFileError, match="'10000000000000000000' is not an inbox offset"):
        State(path, identity="alice", device="d-1")


def test_a_damaged_offset_is_quoted_up_to_40_characters(tmp_path: Path) -> None:
    path = _state_file(tmp_path)
    text = "0123456789x" * 10
    _alter(path, f"UPDATE meta SET value = '{text}' WHERE key = 'offset'")
    with pytest.raises(StateFileError) as raised:
        State(path, identity="alice", device="d-1")
    assert f"the offset {text[:40]!r} is not an inbox offset" in str(raised.value)


def _chain_of(size: int) -> list[ChainEntry]:
    """A chain of one entry whose encoding is ``size`` bytes long."""

    def chain(body: int) -> list[ChainEntry]:
        return [ChainEntry(body=b"b" * body, signature=b"s" * 64)]

    # From 64 KiB on, a body's length is written in the same four bytes: the rest of
    # the encoding is as long whatever the body.
    rest = len(msgspec.msgpack.encode(chain(2**16))) - 2**16
    entries = chain(size - rest)
    assert len(msgspec.msgpack.encode(entries)) == size
    return entries


@pytest.mark.parametrize("size", [16 * MIB, 16 * MIB + 1])
def test_a_cached_chain_is_read_back_up_to_16_mib(tmp_path: Path, size: int) -> None:
    path = tmp_path / "alice.state.db"
    state = State(path, identity="alice", device="d-1")
    chain = _chain_of(size)
    state.save_chain("bob", chain)
    state.close()
    state = State(path, identity="alice", device="d-1")
    if size <= 16 * MIB:
        assert state.load_chain("bob") == chain
    else:
        with pytest.raises(StateFileError, match=f"{size} long, over the {16 * MIB} allowed"):
            state.load_chain("bob")
    state.close()

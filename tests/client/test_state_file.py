"""A client state file SQLite cannot use is a StateFileError naming the file."""

from __future__ import annotations

from pathlib import Path

import pytest

from parley.client.state import State
from parley.errors import StateFileError


def test_a_file_that_is_not_a_database(tmp_path: Path) -> None:
    path = tmp_path / "alice.state.db"
    path.write_bytes(b"not a database " * 200)
    with pytest.raises(StateFileError, match=r"alice\.state\.db .*not a database"):
        State(path, identity="alice", device="d-1")

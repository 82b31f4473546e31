"""Bad input is one line naming what to fix, and changes nothing: a port out of range,
a relay URL without a scheme or with a path, a client state file that is not a database."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.test_cli import parley

from parley.processes import RelayProcess

pytestmark = pytest.mark.e2e


def _line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


async def test_a_port_out_of_range_creates_nothing(tmp_path: Path) -> None:
    data = tmp_path / "data"
    code, _, err = await parley("relay", "--port", "70000", "--data-dir", str(data))
    assert code == 1 and "--port 70000" in _line(err)
    assert not data.exists()


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("127.0.0.1:8765", "has no scheme: write ws://127.0.0.1:8765"),
        ("ws://h:1/x", "has a path (/x)"),
        ("http://h:1", "is not ws:// or wss://"),
    ],
)
async def test_a_bad_relay_url_is_one_line(tmp_path: Path, url: str, says: str) -> None:
    out = tmp_path / "a.json"
    code, _, err = await parley("identity", "new", "--relay", url, "--out", str(out))
    line = _line(err)
    assert code == 1 and "InvalidRelayUrl" in line and says in line
    assert not out.exists()


async def test_a_corrupt_state_file_is_one_line_naming_it(
    relay_process: RelayProcess, tmp_path: Path
) -> None:
    alice = tmp_path / "alice.json"
    code, _, err = await parley(
        "identity", "new", "--relay", relay_process.url, "--out", str(alice)
    )
    assert code == 0, err
    state = tmp_path / "alice.state.db"
    state.write_bytes(b"this is not a database, it is " * 100)
    code, _, err = await parley("connections", "-c", str(alice))
    line = _line(err)
    assert code == 1 and "StateFileError" in line and str(state) in line


async def test_an_invalid_identity_id_to_bind_is_one_line(tmp_path: Path) -> None:
    store = str(tmp_path / "p.db")
    code, _, err = await parley(
        "proxy", "bind", "c1", "--operator", "no spaces", "--customer", "b", "--store", store
    )
    assert code == 1 and "--operator 'no spaces' is not an identity id" in _line(err)

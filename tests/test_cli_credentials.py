"""``parley identity new`` / ``add-device`` never lose a key: the credentials are written
(0600, atomically) before the relay hears of them, and removed when it refuses."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from tests.test_cli import parley

from parley.processes import RelayProcess

pytestmark = pytest.mark.e2e


def _one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


async def test_a_bad_out_fails_before_registering(
    relay_process: RelayProcess, tmp_path: Path
) -> None:
    url = relay_process.url
    code, _, err = await parley(
        "identity", "new", "--relay", url, "--out", "/nonexistent/alice.json", "--id", "alice"
    )
    line = _one_error_line(err)
    assert code == 1 and "/nonexistent/alice.json" in line and "No such file" in line
    # Nothing was registered: the id is still free.
    alice = tmp_path / "alice.json"
    code, out, err = await parley(
        "identity", "new", "--relay", url, "--out", str(alice), "--id", "alice"
    )
    assert code == 0, err
    assert out.strip().splitlines()[-1] == "alice"
    assert stat.S_IMODE(alice.stat().st_mode) == 0o600
    assert [name for name in os.listdir(tmp_path) if name.startswith(".")] == []

    before = alice.read_bytes()
    code, _, err = await parley("identity", "new", "--relay", url, "--out", str(alice))
    assert code == 1 and "exists" in _one_error_line(err)
    assert alice.read_bytes() == before


async def test_a_refused_registration_leaves_no_file(
    relay_process: RelayProcess, tmp_path: Path
) -> None:
    url = relay_process.url
    code, _, err = await parley(
        "identity", "new", "--relay", url, "--out", str(tmp_path / "a.json"), "--id", "taken"
    )
    assert code == 0, err
    thief = tmp_path / "thief.json"
    code, _, err = await parley(
        "identity", "new", "--relay", url, "--out", str(thief), "--id", "taken"
    )
    assert code == 1 and "IdentityExists" in _one_error_line(err)
    assert not thief.exists()


async def test_an_unreachable_relay_leaves_no_file(tmp_path: Path) -> None:
    out = tmp_path / "a.json"
    code, _, err = await parley("identity", "new", "--relay", "ws://127.0.0.1:1", "--out", str(out))
    assert code == 1 and "cannot connect" in _one_error_line(err)
    assert not out.exists()
    assert os.listdir(tmp_path) == []


async def test_add_device_writes_first_and_a_bad_out_adds_nothing(
    relay_process: RelayProcess, tmp_path: Path
) -> None:
    alice = tmp_path / "alice.json"
    code, _, err = await parley(
        "identity", "new", "--relay", relay_process.url, "--out", str(alice)
    )
    assert code == 0, err
    code, _, err = await parley(
        "identity", "add-device", "-c", str(alice), "--out", "/nonexistent/phone.json"
    )
    assert code == 1 and "/nonexistent/phone.json" in _one_error_line(err)
    code, out, err = await parley("identity", "devices", "-c", str(alice), "--json")
    assert code == 0, err
    assert len(json.loads(out)["devices"]) == 1  # nothing was added

    phone = tmp_path / "phone.json"
    code, out, err = await parley("identity", "add-device", "-c", str(alice), "--out", str(phone))
    assert code == 0, err
    assert json.loads(phone.read_text())["device"] == out.strip()
    assert stat.S_IMODE(phone.stat().st_mode) == 0o600


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
async def test_an_unwritable_folder_fails_before_registering(
    relay_process: RelayProcess, tmp_path: Path
) -> None:
    folder = tmp_path / "ro"
    folder.mkdir(mode=0o500)
    code, _, err = await parley(
        "identity", "new", "--relay", relay_process.url, "--out", str(folder / "a.json")
    )
    assert code == 1 and "Permission denied" in _one_error_line(err)


async def test_a_relay_lost_after_the_request_keeps_the_key(tmp_path: Path) -> None:
    """The relay took the register request and the connection broke before its answer:
    it may hold the key now, so the file stays and the line says so."""
    from websockets.asyncio.server import ServerConnection, serve

    from parley.protocol.frames import Challenge, encode

    async def relay(ws: ServerConnection) -> None:
        await ws.send(encode(Challenge(nonce=b"n" * 32, max_body=65536)))
        await ws.recv()  # the register request
        await ws.close()

    async with serve(relay, "127.0.0.1", 0) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        out = tmp_path / "a.json"
        code, _, err = await parley(
            "identity", "new", "--relay", f"ws://127.0.0.1:{port}", "--out", str(out)
        )
    line = _one_error_line(err)
    assert code == 1 and f"kept in {out}" in line
    assert json.loads(out.read_text())["relay_url"] == f"ws://127.0.0.1:{port}"

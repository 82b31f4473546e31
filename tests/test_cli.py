"""The ``parley`` command, run as a user runs it: real processes, a real relay."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import stat
import sys
import urllib.request
from pathlib import Path

import pytest

from parley.processes import RelayProcess

pytestmark = pytest.mark.e2e


async def parley(*args: str, timeout: float = 60) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "parley",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def _get(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.status, response.read().decode()


async def test_relay_serves_health_and_metrics_and_stops_on_sigterm(tmp_path: Path) -> None:
    relay = RelayProcess(tmp_path / "data")
    await relay.start()
    status, body = await asyncio.to_thread(_get, relay.http_url + "/health")
    assert status == 200 and json.loads(body)["status"] == "ok"
    status, metrics = await asyncio.to_thread(_get, relay.http_url + "/metrics")
    assert status == 200 and "parley_relay_messages_stored_total" in metrics
    os.kill(relay.pid, signal.SIGTERM)
    assert await relay.stop() == 0
    assert (tmp_path / "data" / "relay.db").exists()


async def test_identity_permit_and_connections(relay_process: RelayProcess, tmp_path: Path) -> None:
    alice, bob = tmp_path / "alice.json", tmp_path / "bob.json"
    code, out, err = await parley(
        "identity", "new", "--relay", relay_process.url, "--out", str(alice), "--name", "Alice"
    )
    assert code == 0, err
    alice_id = out.strip().splitlines()[-1]
    assert json.loads(alice.read_text())["identity"] == alice_id
    assert stat.S_IMODE(alice.stat().st_mode) == 0o600

    code, out, err = await parley(
        "identity", "new", "--relay", relay_process.url, "--out", str(bob)
    )
    assert code == 0, err

    # The same id with another key is refused.
    code, _, err = await parley(
        "identity",
        "new",
        "--relay",
        relay_process.url,
        "--out",
        str(tmp_path / "thief.json"),
        "--id",
        alice_id,
    )
    assert code == 1 and "IdentityExists" in err

    code, out, err = await parley("permit", "--credentials", str(bob), alice_id)
    assert code == 0, err
    code, out, _ = await parley("connections", "--credentials", str(bob))
    assert alice_id in out
    code, _, err = await parley("revoke", "--credentials", str(bob), alice_id)
    assert code == 0, err
    code, out, _ = await parley("connections", "--credentials", str(bob))
    assert alice_id not in out

    code, _, err = await parley("permit", "--credentials", str(bob), "no-such-identity")
    assert code == 1 and "UnknownIdentity" in err

    phone = tmp_path / "alice-phone.json"
    code, out, err = await parley(
        "identity", "add-device", "--credentials", str(alice), "--out", str(phone)
    )
    assert code == 0, err
    phone_creds = json.loads(phone.read_text())
    assert phone_creds["identity"] == alice_id
    assert phone_creds["device"] == out.strip().splitlines()[-1]
    assert stat.S_IMODE(phone.stat().st_mode) == 0o600


async def test_missing_credentials_is_a_clear_error(tmp_path: Path) -> None:
    code, _, err = await parley("connections", "--credentials", str(tmp_path / "none.json"))
    assert code == 1 and "CredentialsError" in err


async def test_demo_makes_a_real_call_and_accounts_for_every_message() -> None:
    code, out, err = await parley("demo", timeout=120)
    assert code == 0, out + err
    assert "all 5 forwarded messages accounted for" in out
    for typ in ("chat.voice.start", "chat.voice.accept", "chat.voice.stop", "chat.voice.busy"):
        assert typ in out
    assert re.search(r"received start .* peer_info: \d+-byte SDP offer", out), out
    assert re.search(r"received accept .* peer_info: \d+-byte SDP answer", out), out
    # Each side names the frequency it measured in what it heard: the other side's tone.
    heard = dict(re.findall(r"(operator|customer) heard ([\d.]+) Hz", out))
    assert abs(float(heard["operator"]) - 1000) <= 5, out
    assert abs(float(heard["customer"]) - 440) <= 5, out
    assert "the operator's softphone: call ended, busy" in out


async def test_a_port_in_use_and_an_unusable_store_are_one_line_errors(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        code, _, err = await parley("relay", "--data-dir", str(tmp_path / "d"), "--port", port)
    assert code == 1 and "address already in use" in err and "Traceback" not in err
    store = str(tmp_path / "missing-dir" / "calls.db")
    code, _, err = await parley("calls", "--store", store)
    assert code == 1 and "Traceback" not in err
    code, _, err = await parley(
        "proxy", "bind", "c1", "--operator", "a1", "--customer", "b1", "--store", store
    )
    assert code == 1 and "unable to open database file" in err and "Traceback" not in err


async def test_a_relay_by_invitation_registers_each_token_once(tmp_path: Path) -> None:
    relay = RelayProcess(tmp_path / "data", extra_args=["--registration", "token"])
    await relay.start()
    try:
        out = tmp_path / "alice.json"
        code, _, err = await parley("identity", "new", "--relay", relay.url, "--out", str(out))
        assert code == 1 and "invitation token" in err
        assert len(err.strip().splitlines()) == 1, err
        assert not out.exists()  # nobody holds a key the relay never took
        code, tokens, err = await parley(
            "relay", "invite", "--data-dir", str(tmp_path / "data"), "--count", "2"
        )
        assert code == 0, err
        first, second = tokens.split()
        code, _, err = await parley(
            "identity", "new", "--relay", relay.url, "--out", str(out), "--token", first
        )
        assert code == 0, err
        again = tmp_path / "bob.json"
        code, _, err = await parley(
            "identity", "new", "--relay", relay.url, "--out", str(again), "--token", first
        )
        assert code == 1 and "unknown, used or expired" in err
        code, _, err = await parley(
            "identity", "new", "--relay", relay.url, "--out", str(again), "--token", second
        )
        assert code == 0, err
    finally:
        await relay.stop()


async def test_a_closed_relay_registers_nobody(tmp_path: Path) -> None:
    closed = RelayProcess(tmp_path / "closed", extra_args=["--registration", "closed"])
    await closed.start()
    try:
        out = tmp_path / "alice.json"
        code, _, err = await parley("identity", "new", "--relay", closed.url, "--out", str(out))
        assert code == 1 and "registers no new identities" in err
    finally:
        await closed.stop()


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("::1", True),
        ("localhost", True),
        ("0.0.0.0", False),  # every interface: an open relay there warns
        ("::", False),
        ("10.0.0.5", False),
        ("relay.example.org", False),
    ],
)
def test_which_listening_addresses_count_as_loopback(host: str, loopback: bool) -> None:
    from parley.cli import _is_loopback

    assert _is_loopback(host) is loopback

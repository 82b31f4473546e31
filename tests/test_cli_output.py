"""``parley`` for scripts: piped output is plain lines that never wrap, ``--json`` prints
one JSON document; ``--version``, ``identity show`` / ``devices``; ``-q`` / ``-v`` after
the subcommand; commands log warnings only, ``-vv`` adds websockets' frames."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from tests.test_cli import parley as run

import parley
from parley.ids import DeviceId, IdentityId
from parley.processes import RelayProcess
from parley.protocol.call import EndReason
from parley.proxy import open_proxy_store
from parley.proxy.records import Leg, LegRecord

pytestmark = pytest.mark.e2e

LONG = "a" * 60  # longer ids than 80 columns hold in a table row


async def _identity(relay: RelayProcess, path: Path, identity_id: str | None = None) -> str:
    args = ["identity", "new", "--relay", relay.url, "--out", str(path)]
    code, out, err = await run(*args, *(["--id", identity_id] if identity_id else []))
    assert code == 0, err
    return out.strip()


async def test_version() -> None:
    code, out, _ = await run("--version")
    assert code == 0 and out == f"parley {parley.__version__}\n"
    assert re.fullmatch(r"\d+\.\d+\.\d+.*", parley.__version__)


async def test_connections_piped_json_and_flags_after_the_subcommand(
    relay_process: RelayProcess, tmp_path: Path
) -> None:
    bob = tmp_path / "bob.json"
    await _identity(relay_process, tmp_path / "long.json", LONG)
    await _identity(relay_process, bob)
    code, _, err = await run("permit", "-c", str(bob), LONG)
    assert code == 0, err

    code, out, err = await run("connections", "-c", str(bob))
    assert code == 0 and out == f"{LONG}\n", out  # one line, unwrapped, no box
    assert err == ""  # quiet by default: no info logs

    code, out, err = await run("connections", "-c", str(bob), "--json", "-q")
    assert code == 0, err
    assert json.loads(out)["permitted"] == [LONG]

    code, out, err = await run("connections", "-c", str(bob), "-v")
    assert code == 0 and "DEBUG" in err and "authenticated as" in err
    assert "DEBUG websockets" not in err
    code, out, err = await run("-v", "connections", "-c", str(bob), "-v")
    assert code == 0 and "DEBUG websockets" in err


async def test_identity_show_and_devices(relay_process: RelayProcess, tmp_path: Path) -> None:
    alice, phone = tmp_path / "alice.json", tmp_path / "phone.json"
    alice_id = await _identity(relay_process, alice, "alice")
    code, phone_id, err = await run("identity", "add-device", "-c", str(alice), "--out", str(phone))
    assert code == 0, err
    phone_id = phone_id.strip()
    first = json.loads(alice.read_text())["device"]
    code, _, err = await run("identity", "revoke-device", "-c", str(alice), phone_id)
    assert code == 0, err

    code, out, err = await run("identity", "show", "-c", str(alice), "--json")
    assert code == 0, err
    shown = json.loads(out)
    assert shown["identity"] == alice_id and shown["device"] == first
    assert shown["relay"] == [relay_process.url]
    assert [(d["device"], d["state"], d["this"]) for d in shown["devices"]] == [
        (first, "active", True),
        (phone_id, "revoked", False),
    ]

    code, out, err = await run("identity", "show", "-c", str(alice))
    assert code == 0, err
    lines = out.splitlines()
    assert "identity\talice" in lines and f"relay\t{relay_process.url}" in lines
    assert f"device\t{phone_id}\trevoked\t" in lines

    code, out, err = await run("identity", "devices", "-c", str(alice))
    assert code == 0, err
    assert out.splitlines() == [f"{first}\tactive\tthis device", f"{phone_id}\trevoked\t"]


async def test_calls_piped_and_json(tmp_path: Path) -> None:
    store = tmp_path / "app.proxy.db"
    db = open_proxy_store(store)
    try:
        await db.record(
            LegRecord(
                call_id="c" * 40,
                cid=LONG,
                leg=Leg.INBOUND,
                caller=IdentityId("customer-" + LONG),
                callee=IdentityId("app"),
                peer_device=DeviceId("d-1"),
                started=1_700_000_000.0,
                ringing=1_700_000_001.0,
                answered=1_700_000_002.0,
                ended=1_700_000_012.5,
                duration=10.5,
                reason=EndReason.HANGUP,
            )
        )
    finally:
        await db.close()

    code, out, err = await run("calls", "--store", str(store))
    assert code == 0, err
    [line] = out.splitlines()
    fields = line.split("\t")
    assert fields[:4] == [LONG, "c" * 40, "inbound", "customer-" + LONG]
    assert fields[5:] == ["10.500 s", "hangup"]

    code, out, err = await run("calls", "--store", str(store), "--json")
    assert code == 0, err
    [record] = json.loads(out)["records"]
    assert record["party"] == "customer-" + LONG and record["duration"] == 10.5
    assert record["reason"] == "hangup" and record["leg"] == "inbound"


async def test_proxy_bind_refuses_unknown_identities(
    relay_process: RelayProcess, tmp_path: Path
) -> None:
    app, operator = tmp_path / "app.json", tmp_path / "operator.json"
    await _identity(relay_process, app, "app")
    await _identity(relay_process, operator, "operator")
    code, _, err = await run(
        "proxy", "bind", "c1", "--operator", "operator", "--customer", "ghost", "-c", str(app)
    )
    assert code == 1
    assert err.strip() == "error: UnknownIdentity: no identity 'ghost' (--customer) on the relay"
    code, _, err = await run(
        "proxy", "bind-pool", "c2", "--customer", "operator", "--operator", "nobody",
        "-c", str(app),
    )  # fmt: skip
    assert code == 1 and "'nobody' (--operator)" in err and len(err.strip().splitlines()) == 1
    code, out, _ = await run("calls", "-c", str(app))
    assert code == 1 or out == ""  # nothing was bound (the store may not even exist)

    code, _, err = await run(
        "proxy", "bind", "c1", "--operator", "operator", "--customer", "app", "-c", str(app)
    )
    assert code == 0, err


async def test_error_lines_are_not_wrapped(tmp_path: Path) -> None:
    url = "ws://127.0.0.1:1/" + "x" * 120
    code, _, err = await run("identity", "new", "--relay", url, "--out", str(tmp_path / "a.json"))
    assert code == 1
    assert len(err.strip().splitlines()) == 1 and url in err

"""``parley relay --tls-cert --tls-key --metrics`` as a real process, and the commands
that connect to it over wss:// with the CA file they keep in the credentials."""

from __future__ import annotations

import asyncio
import json
import re
import ssl
import sys
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from tests.test_cli import parley
from tests.tls_certs import TlsFiles, make_tls_files

from parley.processes import ChildProcess

pytestmark = pytest.mark.e2e

READY = re.compile(r"^parley relay listening on (wss://\S+) node (\S+)$")
METRICS = re.compile(r"metrics on (http://\S+)")


@pytest.fixture
def tls(tmp_path: Path) -> TlsFiles:
    return make_tls_files(tmp_path / "tls")


@pytest.fixture
async def relay(tmp_path: Path, tls: TlsFiles) -> AsyncIterator[ChildProcess]:
    process = ChildProcess(
        [
            *(sys.executable, "-m", "parley", "relay", "--data-dir", str(tmp_path / "data")),
            *("--port", "0", "--tls-cert", str(tls.cert), "--tls-key", str(tls.key)),
            *("--metrics", "127.0.0.1:0"),
        ],
        READY,
        name="relay",
    )
    async with process:
        yield process


def url_of(relay: ChildProcess) -> str:
    return next(m[1] for line in relay.lines if (m := READY.search(line)))


def get(url: str, ca: Path | None = None) -> int:
    context = ssl.create_default_context(cafile=ca) if ca else None
    try:
        with urllib.request.urlopen(url, timeout=10, context=context) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


async def test_relay_serves_wss_and_commands_use_the_ca_file(
    relay: ChildProcess, tls: TlsFiles, tmp_path: Path
) -> None:
    url = url_of(relay)
    https = "https" + url.removeprefix("wss")
    assert await asyncio.to_thread(get, f"{https}/health", tls.ca) == 200
    assert await asyncio.to_thread(get, f"{https}/metrics", tls.ca) == 404
    metrics = next(m[1] for line in relay.lines if (m := METRICS.search(line)))
    assert await asyncio.to_thread(get, metrics) == 200

    creds = tmp_path / "alice.json"
    code, out, err = await parley(
        "identity", "new", "--relay", url, "--out", str(creds), "--ca-file", str(tls.ca)
    )
    assert code == 0, err
    assert json.loads(creds.read_text())["ca_file"] == str(tls.ca)
    # A later command finds the CA in the credentials.
    code, out, err = await parley("identity", "devices", "-c", str(creds), "--json")
    assert code == 0, err
    assert len(json.loads(out)["devices"]) == 1


async def test_without_the_ca_file_identity_new_fails_in_one_line(
    relay: ChildProcess, tmp_path: Path
) -> None:
    url = url_of(relay)
    creds = tmp_path / "bob.json"
    code, _out, err = await parley("identity", "new", "--relay", url, "--out", str(creds))
    assert code == 1
    assert err.startswith(f"error: CertificateVerifyFailed: certificate verify failed for {url}")
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert not creds.exists()  # never reached the relay: the key goes again


async def test_a_bad_key_file_is_one_line_and_exit_1(tmp_path: Path, tls: TlsFiles) -> None:
    junk = tmp_path / "key.pem"
    junk.write_text("not a key\n")
    code, out, err = await parley(
        *("relay", "--data-dir", str(tmp_path / "data"), "--port", "0"),
        *("--tls-cert", str(tls.cert), "--tls-key", str(junk)),
    )
    assert code == 1 and out == ""
    assert err.splitlines() == [f"error: InvalidTlsConfig: TLS key {junk} is not a PEM private key"]


async def test_a_bad_metrics_address_is_one_line(tmp_path: Path) -> None:
    code, _out, err = await parley(
        "relay", "--data-dir", str(tmp_path / "data"), "--port", "0", "--metrics", "9100"
    )
    assert code == 1
    assert err.splitlines() == [
        "error: InvalidMetricsAddress: '9100' is not HOST:PORT (e.g. 127.0.0.1:9100, [::1]:9100)"
    ]


async def test_relay_process_starts_a_tls_relay_and_reads_its_wss_url(
    tmp_path: Path, tls: TlsFiles
) -> None:
    from parley.processes import RelayProcess

    args = ["--tls-cert", str(tls.cert), "--tls-key", str(tls.key)]
    async with RelayProcess(tmp_path / "data", extra_args=args) as relay:
        assert relay.url.startswith("wss://127.0.0.1:")

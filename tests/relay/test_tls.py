"""TLS on a real socket: the relay serves wss:// and https:// with a certificate made
here, the SDK verifies it (CA file in the credentials or as an option, else the system
store, which does not know this CA), and /metrics moves to a listener of its own."""

from __future__ import annotations

import asyncio
import logging
import ssl
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from tests.tls_certs import TlsFiles, make_tls_files

from parley.client import Client
from parley.client.connection import websocket_connector
from parley.client.registration import register_identity
from parley.credentials import Credentials
from parley.errors import CertificateVerifyFailed, InvalidMetricsAddress, InvalidTlsConfig
from parley.protocol.messages import VoiceStart
from parley.relay import RelayServer
from parley.relay.server import parse_listen_address

from .helpers import WAIT


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return make_tls_files(tmp_path_factory.mktemp("tls"))


@pytest.fixture
async def server(tmp_path: Path, tls: TlsFiles) -> AsyncIterator[RelayServer]:
    async with RelayServer(
        tmp_path / "data", tls_cert=tls.cert, tls_key=tls.key, metrics="127.0.0.1:0"
    ) as relay:
        yield relay


def http_get(url: str, ca: Path | None = None) -> tuple[int, str]:
    """(status, body) of a GET, verifying against ``ca``; run it in a thread."""
    context = ssl.create_default_context(cafile=ca) if ca else None
    try:
        with urllib.request.urlopen(url, timeout=WAIT, context=context) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


async def exchange(alice: Client, bob: Client) -> list[str]:
    """alice starts a call to bob; the call ids bob's handler saw."""
    received: list[str] = []
    arrived = asyncio.Event()

    def on_start(issuer: str, payload: VoiceStart) -> None:
        received.append(payload["call_id"])
        arrived.set()

    bob.voice().on_start(on_start)
    await bob.connections.permit(alice.id)
    await alice.voice().start(bob.id, "cid", "k1", "offer", {})
    async with asyncio.timeout(WAIT):
        await arrived.wait()
    return received


async def test_clients_over_wss_with_the_ca_in_credentials_or_as_an_option(
    server: RelayServer, tls: TlsFiles, tmp_path: Path
) -> None:
    assert server.url == f"wss://127.0.0.1:{server.port}"
    # Registration goes over TLS too, and keeps the CA file in the credentials.
    alice = await register_identity(server.url, name="alice", ca_file=str(tls.ca))
    alice_path = tmp_path / "alice.json"
    alice.save(alice_path)
    assert Credentials.load(alice_path).ca_file == str(tls.ca)
    bob = await register_identity(server.url, name="bob", ca_file=str(tls.ca))
    bob_without_ca = Credentials(bob.identity, bob.device, bob.secret_key, bob.relay_url)
    async with (
        Client.from_credentials(alice_path) as alice_client,
        Client(bob_without_ca, ca_file=tls.ca) as bob_client,
    ):
        assert await exchange(alice_client, bob_client) == ["k1"]


async def test_a_relative_ca_file_in_credentials_is_beside_them(
    server: RelayServer, tls: TlsFiles, tmp_path: Path
) -> None:
    folder = tmp_path / "device"
    folder.mkdir()
    (folder / "relay-ca.pem").write_bytes(tls.ca.read_bytes())
    creds = await register_identity(server.url, ca_file=str(tls.ca))
    Credentials(
        creds.identity, creds.device, creds.secret_key, creds.relay_url, ca_file="relay-ca.pem"
    ).save(folder / "me.json")
    loaded = Credentials.load(folder / "me.json")
    assert loaded.ca_file == str(folder / "relay-ca.pem")
    async with Client(loaded):
        pass


async def test_without_the_ca_the_certificate_does_not_verify(
    server: RelayServer, tls: TlsFiles, tmp_path: Path
) -> None:
    creds = await register_identity(server.url, ca_file=str(tls.ca))
    plain = Credentials(creds.identity, creds.device, creds.secret_key, creds.relay_url)
    # The system store does not know the test's CA.
    with pytest.raises(
        CertificateVerifyFailed, match=rf"certificate verify failed for {server.url}"
    ):
        await Client(plain).connect()
    with pytest.raises(CertificateVerifyFailed):
        await register_identity(server.url)
    # A CA that signed someone else's certificate does not verify this one either.
    other = make_tls_files(tmp_path / "other-ca")
    with pytest.raises(CertificateVerifyFailed):
        await Client(plain, ca_file=other.ca).connect()


async def test_reconnecting_to_a_certificate_that_does_not_verify_warns_each_time(
    tls: TlsFiles, tmp_path: Path
) -> None:
    warned = asyncio.Event()

    class Watch(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if (
                record.levelno == logging.WARNING
                and "certificate verify failed" in record.getMessage()
            ):
                warned.set()

    watch = Watch()
    logging.getLogger("parley.client.connection").addHandler(watch)
    try:
        async with RelayServer(tmp_path / "a", tls_cert=tls.cert, tls_key=tls.key) as first:
            creds = await register_identity(first.url, ca_file=str(tls.ca))
            client = Client(creds)
            await client.connect()
            port = first.port
        # The relay comes back on the same port with a certificate of another CA.
        other = make_tls_files(tmp_path / "other")
        async with RelayServer(tmp_path / "b", port=port, tls_cert=other.cert, tls_key=other.key):
            async with asyncio.timeout(WAIT):
                await warned.wait()
            await client.close()
    finally:
        logging.getLogger("parley.client.connection").removeHandler(watch)


async def test_every_node_of_a_failover_list_must_verify(
    server: RelayServer, tls: TlsFiles, tmp_path: Path
) -> None:
    async with RelayServer(tmp_path / "plain") as plain:
        # A plain node first, then the TLS one: both reachable, mixed schemes are fine.
        connect = websocket_connector(f"{plain.url},{server.url}", ca_file=tls.ca)
        await (await connect()).close()
        port = plain.port
    # The plain node is gone: the TLS node answers, with the CA.
    connect = websocket_connector(f"ws://127.0.0.1:{port},{server.url}", ca_file=tls.ca)
    await (await connect()).close()
    # Without the CA the certificate failure is what is raised, not "unreachable".
    connect = websocket_connector(f"{server.url},ws://127.0.0.1:{port}")
    with pytest.raises(CertificateVerifyFailed):
        await connect()


async def test_health_over_https_and_metrics_on_their_own_listener(
    server: RelayServer, tls: TlsFiles
) -> None:
    assert server.http_url.startswith("https://")
    status, body = await asyncio.to_thread(http_get, f"{server.http_url}/health", tls.ca)
    assert status == 200 and '"status": "ok"' in body
    assert server.metrics_url.startswith("http://127.0.0.1:")
    assert not server.metrics_url.startswith(server.http_url)
    status, body = await asyncio.to_thread(http_get, server.metrics_url)
    assert status == 200 and "parley_relay" in body
    # The main port does not say them any more; the metrics port says nothing else.
    assert (await asyncio.to_thread(http_get, f"{server.http_url}/metrics", tls.ca))[0] == 404
    health_on_metrics = server.metrics_url.removesuffix("/metrics") + "/health"
    assert (await asyncio.to_thread(http_get, health_on_metrics))[0] == 404


async def test_https_without_the_ca_is_refused(server: RelayServer) -> None:
    with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
        await asyncio.to_thread(http_get, f"{server.http_url}/health")


async def test_metrics_stay_on_the_main_port_without_a_listener(tmp_path: Path) -> None:
    async with RelayServer(tmp_path / "data") as server:
        assert server.metrics_url == f"{server.http_url}/metrics"
        status, body = await asyncio.to_thread(http_get, server.metrics_url)
        assert status == 200 and "parley_relay" in body


@pytest.mark.parametrize(
    ("which", "content", "says"),
    [
        ("key", b"not a key\n", "TLS key {key} is not a PEM private key"),
        ("cert", b"not a certificate\n", "TLS certificate {cert} is not a PEM certificate"),
        ("key", None, "cannot read TLS key {key}: No such file or directory"),
        ("cert", None, "cannot read TLS certificate {cert}: No such file or directory"),
    ],
)
def test_bad_certificate_or_key_files_are_named(
    tmp_path: Path, tls: TlsFiles, which: str, content: bytes | None, says: str
) -> None:
    files = {"cert": tmp_path / "cert.pem", "key": tmp_path / "key.pem"}
    files["cert"].write_bytes(tls.cert.read_bytes())
    files["key"].write_bytes(tls.key.read_bytes())
    if content is None:
        files[which].unlink()
    else:
        files[which].write_bytes(content)
    with pytest.raises(InvalidTlsConfig) as caught:
        RelayServer(tmp_path / "data", tls_cert=files["cert"], tls_key=files["key"])
    assert str(caught.value) == says.format(**files)


def test_a_key_of_another_certificate_or_half_a_pair_is_refused(
    tmp_path: Path, tls: TlsFiles
) -> None:
    other = make_tls_files(tmp_path / "other")
    with pytest.raises(InvalidTlsConfig, match="is not the key of the certificate"):
        RelayServer(tmp_path / "data", tls_cert=tls.cert, tls_key=other.key)
    with pytest.raises(InvalidTlsConfig, match="needs both"):
        RelayServer(tmp_path / "data", tls_cert=tls.cert)


def test_a_bad_ca_file_is_named(tmp_path: Path) -> None:
    junk = tmp_path / "ca.pem"
    junk.write_text("junk\n")
    connect = websocket_connector("wss://127.0.0.1:1", ca_file=junk)
    with pytest.raises(InvalidTlsConfig, match=f"CA file {junk} holds no PEM certificate"):
        asyncio.run(connect())  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("value", "address"),
    [
        ("127.0.0.1:9100", ("127.0.0.1", 9100)),
        ("[::1]:0", ("::1", 0)),
        ("localhost:1", ("localhost", 1)),
    ],
)
def test_listen_addresses(value: str, address: tuple[str, int]) -> None:
    assert parse_listen_address(value) == address


@pytest.mark.parametrize("value", ["127.0.0.1", ":9100", "host:port", "h:70000", "h:1/x", "u@h:1"])
def test_bad_listen_addresses(value: str) -> None:
    with pytest.raises(InvalidMetricsAddress, match="is not HOST:PORT"):
        parse_listen_address(value)


async def test_the_blocking_client_takes_the_ca_file_too(
    server: RelayServer, tls: TlsFiles, tmp_path: Path
) -> None:
    from parley.sync import Client as BlockingClient

    creds = await register_identity(server.url, ca_file=str(tls.ca))
    without_ca = Credentials(creds.identity, creds.device, creds.secret_key, creds.relay_url)

    def connect_and_list() -> list[str]:
        with BlockingClient(without_ca, ca_file=tls.ca) as client:
            return client.connections.list()

    assert await asyncio.to_thread(connect_and_list) == []

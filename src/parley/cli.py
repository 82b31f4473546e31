"""The ``parley`` command line (typer + rich)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from parley.errors import ParleyError
from parley.relay.config import RelayConfig

if TYPE_CHECKING:
    from parley.ice import IceConfig

app = typer.Typer(
    name="parley",
    help="Negotiate voice calls between identities over an authenticated relay.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
identity_app = typer.Typer(help="Create identities and manage their devices.", no_args_is_help=True)
app.add_typer(identity_app, name="identity")
relay_app = typer.Typer(
    help="Run a relay node: parley relay [--store URL] [--port P], until SIGINT or "
    "SIGTERM; parley relay migrate --store URL sets up a PostgreSQL store first."
)
app.add_typer(relay_app, name="relay")
proxy_app = typer.Typer(
    help="Run the calling proxy: parley proxy --credentials FILE [--store FILE|URL], until "
    "SIGINT or SIGTERM. Bind calls to it with bind / bind-pool, also while it runs (it "
    "takes new bindings up within half a second on SQLite, at once on PostgreSQL); "
    "parley calls prints its records."
)
app.add_typer(proxy_app, name="proxy")
phone_app = typer.Typer(
    help="A softphone with real audio (needs the media extra: pip install 'parley[media]'): "
    "call an identity, answer calls, or serve the browser softphone page.",
    no_args_is_help=True,
)
app.add_typer(phone_app, name="phone")

_DEFAULTS = RelayConfig()
console = Console()
err_console = Console(stderr=True)

T = TypeVar("T")

CredentialsOption = Annotated[
    Path, typer.Option("--credentials", "-c", help="This device's credentials file.")
]

StoreOption = Annotated[
    str | None,
    typer.Option(
        "--store",
        envvar="PARLEY_PROXY_STORE",
        help="The proxy's store of bindings and call records: a SQLite file, or "
        "postgresql://USER@HOST:PORT/DB (default: beside the credentials file, "
        "<stem>.proxy.db, e.g. app.proxy.db).",
    ),
]
ProxyCredentialsOption = Annotated[
    Path | None,
    typer.Option(
        "--credentials", "-c", help="The proxy's credentials file (locates the default store)."
    ),
]


def _run(work: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine; a ParleyError, or the system refusing a file or a port, becomes
    a one-line message and exit code 1."""
    try:
        return asyncio.run(work())  # type: ignore[arg-type]
    except (ParleyError, OSError, sqlite3.Error) as exc:
        err_console.print(f"[red]error:[/red] {type(exc).__name__}: {exc}")
        raise typer.Exit(1) from None


@app.callback()
def main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log at debug level.")] = False,
) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


StoreLocationOption = Annotated[
    str | None,
    typer.Option(
        "--store",
        envvar="PARLEY_STORE",
        help="postgresql://USER@HOST:PORT/DB (shared by relay nodes) or sqlite:PATH; "
        "default: SQLite in --data-dir.",
    ),
]


@relay_app.callback(invoke_without_command=True)
def relay(
    ctx: typer.Context,
    data_dir: Annotated[
        Path, typer.Option(help="Where the relay keeps its SQLite database.")
    ] = Path("parley-data"),
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on; 0 picks a free one.")] = 8765,
    store: StoreLocationOption = None,
    bus: Annotated[
        str | None,
        typer.Option(
            "--bus",
            envvar="PARLEY_BUS",
            help="redis://HOST:PORT/N: the bus between the nodes of one PostgreSQL store; "
            "default: none (this node is the only one).",
        ),
    ] = None,
    rate: Annotated[
        float, typer.Option(help="Messages per second one connection may send, sustained.")
    ] = _DEFAULTS.rate_per_second,
    burst: Annotated[int, typer.Option(help="Messages one connection may send at once.")] = (
        _DEFAULTS.burst
    ),
    max_body: Annotated[int, typer.Option(help="Largest message body in bytes.")] = (
        _DEFAULTS.max_body
    ),
) -> None:
    """Run a relay node until SIGINT or SIGTERM (parley relay migrate: set up its store)."""
    if ctx.invoked_subcommand is not None:
        return
    from parley.relay.server import RelayServer, run_relay

    def ready(server: RelayServer) -> None:
        # One plain line with the URL: scripts and tests wait for it.
        print(f"parley relay listening on {server.url} node {server.node_id}", flush=True)

    config = RelayConfig(rate_per_second=rate, burst=burst, max_body=max_body)
    _run(lambda: run_relay(data_dir, host, port, config, ready, store=store, bus=bus))


@relay_app.command("migrate")
def relay_migrate(
    store: StoreLocationOption = None,
    data_dir: Annotated[
        Path, typer.Option(help="Where the SQLite database is, without --store.")
    ] = Path("parley-data"),
) -> None:
    """Create or upgrade the schema of the relay's store (PostgreSQL; SQLite upgrades
    itself when the relay starts)."""
    from parley.relay.store.location import backend, migrate, redacted

    before, after = _run(lambda: migrate(store, data_dir))
    where = redacted(store) if store else str(data_dir)
    if backend(store) == "sqlite":
        print(f"SQLite store in {where} is up to date")
    elif before == after:
        print(f"PostgreSQL store {where} is at schema version {after}; nothing to do")
    else:
        print(f"PostgreSQL store {where}: schema version {before} -> {after}")


@identity_app.command("new")
def identity_new(
    relay_url: Annotated[
        str,
        typer.Option(
            "--relay",
            help="The relay's ws:// URL; several, comma-separated, for a relay of several "
            "nodes without a load balancer (the client fails over between them).",
        ),
    ],
    out: Annotated[Path, typer.Option("--out", help="Credentials file to write (0600).")],
    name: Annotated[str | None, typer.Option(help="A display name for the identity.")] = None,
    identity_id: Annotated[
        str | None, typer.Option("--id", help="Choose the identity id instead of a random one.")
    ] = None,
) -> None:
    """Register a new identity and its first device; prints the identity id last."""
    from parley.client.registration import register_identity

    if out.exists():
        err_console.print(f"[red]error:[/red] {out} exists; refusing to overwrite a key")
        raise typer.Exit(1)
    creds = _run(lambda: register_identity(relay_url, name=name, identity_id=identity_id))
    creds.save(out)
    err_console.print(f"registered identity, device {creds.device}, credentials in {out}")
    print(creds.identity)


@identity_app.command("add-device")
def identity_add_device(
    credentials: CredentialsOption,
    out: Annotated[Path, typer.Option("--out", help="Credentials file for the new device.")],
) -> None:
    """Add a second device (its own key) to the identity of CREDENTIALS."""
    from parley.client.registration import add_device
    from parley.credentials import Credentials

    if out.exists():
        err_console.print(f"[red]error:[/red] {out} exists; refusing to overwrite a key")
        raise typer.Exit(1)
    creds = _run(lambda: add_device(Credentials.load(credentials)))
    creds.save(out)
    err_console.print(f"added device to {creds.identity}, credentials in {out}")
    print(creds.device)


@identity_app.command("revoke-device")
def identity_revoke_device(
    credentials: CredentialsOption,
    device: Annotated[str, typer.Argument(help="The device id to revoke.")],
) -> None:
    """Revoke one device key of this identity (signed by the device of CREDENTIALS)."""
    from parley.client import Client

    async def work() -> None:
        async with Client.from_credentials(credentials) as client:
            await client.revoke_device(device)

    _run(work)
    console.print(f"revoked device {device}")


@app.command()
def permit(
    credentials: CredentialsOption,
    other: Annotated[str, typer.Argument(help="Identity allowed to send to you.")],
) -> None:
    """Accept messages from OTHER."""
    from parley.client import Client

    async def work() -> None:
        async with Client.from_credentials(credentials) as client:
            await client.connections.permit(other)

    _run(work)
    console.print(f"permitted {other}")


@app.command()
def revoke(
    credentials: CredentialsOption,
    other: Annotated[str, typer.Argument(help="Identity no longer allowed to send to you.")],
) -> None:
    """Stop accepting messages from OTHER."""
    from parley.client import Client

    async def work() -> None:
        async with Client.from_credentials(credentials) as client:
            await client.connections.revoke(other)

    _run(work)
    console.print(f"revoked {other}")


@app.command()
def connections(credentials: CredentialsOption) -> None:
    """List the identities you accept messages from."""
    from parley.client import Client

    async def work() -> list[str]:
        async with Client.from_credentials(credentials) as client:
            return await client.connections.list()

    permitted = _run(work)
    table = Table("permitted identity")
    for identity in permitted:
        table.add_row(identity)
    console.print(table)


@app.command()
def demo(
    keep: Annotated[
        Path | None, typer.Option(help="Keep the demo's files in this directory.")
    ] = None,
) -> None:
    """Relay, proxy, operator and customer: two calls through the proxy, with a transcript."""
    from parley.demo import run_demo

    if logging.getLogger().level > logging.DEBUG:
        # The transcript is the demo's output; connection chatter only with --verbose.
        logging.getLogger("parley").setLevel(logging.WARNING)
    ok = _run(lambda: run_demo(console, keep))
    raise typer.Exit(0 if ok else 1)


def _store_path(store: str | None, credentials: Path | None) -> str | Path:
    """Where the proxy's store is: ``--store`` as given (a file or a URL; the proxy's
    location module tells which), else the file beside the credentials."""
    if store is not None:
        return store
    if credentials is None:
        raise typer.BadParameter("give --store, or --credentials to use the store beside it")
    from parley.proxy import default_store_path

    return default_store_path(credentials)


def _identity(value: str, option: str) -> str:
    from parley.ids import is_valid_id

    if not is_valid_id(value):
        raise typer.BadParameter(f"{value!r} is not an identity id", param_hint=option)
    return value


@proxy_app.callback(invoke_without_command=True)
def proxy(
    ctx: typer.Context,
    credentials: ProxyCredentialsOption = None,
    store: StoreOption = None,
    ring_lifetime: Annotated[
        float, typer.Option(help="Seconds a call rings when its start asks for no lifetime.")
    ] = 60.0,
    grace: Annotated[
        float, typer.Option(help="Seconds a party may be disconnected before its call ends.")
    ] = 30.0,
) -> None:
    """Run the calling proxy until SIGINT or SIGTERM: parley proxy --credentials FILE."""
    if ctx.invoked_subcommand is not None:
        return
    if credentials is None:
        raise typer.BadParameter("the proxy runs as an identity: give --credentials")
    from parley.protocol.proxy import ProxyConfig
    from parley.proxy.serve import serve

    config = ProxyConfig(ring_lifetime=ring_lifetime, grace=grace)
    where = _store_path(store, credentials)
    _run(lambda: serve(credentials, where, config, lambda line: print(line, flush=True)))


@proxy_app.command("bind")
def proxy_bind(
    cid: Annotated[str, typer.Argument(help="The conversation id the operator calls with.")],
    operator: Annotated[str, typer.Option(help="The identity whose starts are forwarded.")],
    customer: Annotated[str, typer.Option(help="The identity the proxy calls.")],
    operator_name: Annotated[
        str | None, typer.Option(help="Sent to the customer as operator_name (default: the id).")
    ] = None,
    store: StoreOption = None,
    credentials: ProxyCredentialsOption = None,
) -> None:
    """Bind CID: the operator's start goes on to the customer (writes the store only)."""
    from parley.ids import IdentityId
    from parley.protocol.proxy import Binding
    from parley.proxy import open_proxy_store

    binding = Binding(
        cid=cid,
        operator=IdentityId(_identity(operator, "--operator")),
        operator_name=operator if operator_name is None else operator_name,
        customer=IdentityId(_identity(customer, "--customer")),
    )

    async def work() -> None:
        db = open_proxy_store(_store_path(store, credentials))
        try:
            await db.bind(binding)
        finally:
            await db.close()

    _run(work)
    console.print(f"bound {cid}: operator {operator} -> customer {customer}")


@proxy_app.command("bind-pool")
def proxy_bind_pool(
    cid: Annotated[str, typer.Argument(help="The conversation id the customer calls with.")],
    customer: Annotated[str, typer.Option(help="The identity whose starts are hunted.")],
    operator: Annotated[
        list[str], typer.Option(help="An operator to ring; repeat for each, in ringing order.")
    ],
    store: StoreOption = None,
    credentials: ProxyCredentialsOption = None,
) -> None:
    """Bind CID to a hunt group: the customer's start rings every available operator."""
    from parley.ids import IdentityId
    from parley.protocol.proxy import Pool
    from parley.proxy import open_proxy_store

    pool = Pool(
        cid=cid,
        customer=IdentityId(_identity(customer, "--customer")),
        operators=tuple(IdentityId(_identity(op, "--operator")) for op in operator),
    )

    async def work() -> None:
        db = open_proxy_store(_store_path(store, credentials))
        try:
            await db.bind_pool(pool)
        finally:
            await db.close()

    _run(work)
    console.print(f"bound {cid}: customer {customer} -> hunt group {', '.join(operator)}")


@app.command()
def calls(store: StoreOption = None, credentials: ProxyCredentialsOption = None) -> None:
    """Print the proxy's call records: one row per leg."""
    from parley.errors import InvalidProxyStoreLocation
    from parley.proxy import open_proxy_store
    from parley.proxy.location import sqlite_path
    from parley.proxy.records import LegRecord
    from parley.proxy.report import records_table

    where = _store_path(store, credentials)
    try:
        path = sqlite_path(where)
    except InvalidProxyStoreLocation as exc:
        err_console.print(f"[red]error:[/red] {type(exc).__name__}: {exc}")
        raise typer.Exit(1) from None
    if path is not None and not path.exists():  # reading must not create an empty file
        err_console.print(f"[red]error:[/red] no proxy store at {path}")
        raise typer.Exit(1)

    async def work() -> list[LegRecord]:
        db = open_proxy_store(where)
        try:
            return await db.records()
        finally:
            await db.close()

    console.print(records_table(_run(work)))


# -- parley phone --------------------------------------------------------------------

PlayOption = Annotated[
    str,
    typer.Option(
        "--play", help="What to send: tone:HZ (e.g. tone:440), silence, mic, or a WAV file."
    ),
]
RecordOption = Annotated[
    Path | None,
    typer.Option("--record", help="Record what is heard to this WAV file (or: speaker)."),
]
IceHostOption = Annotated[
    list[str] | None,
    typer.Option(
        "--ice-host",
        help="Offer host candidates on this address only (repeatable; 127.0.0.1 keeps "
        "media on loopback). Default: PARLEY_ICE_HOSTS, else every interface.",
    ),
]


def _ice(hosts: list[str] | None) -> IceConfig:
    from parley.ice import IceConfig

    return IceConfig.from_env(hosts=tuple(hosts or ()))


@phone_app.command("call")
def phone_call(
    credentials: CredentialsOption,
    peer: Annotated[str, typer.Argument(help="The identity id to call (or a proxy's app id).")],
    play: PlayOption = "tone:440",
    record: RecordOption = None,
    seconds: Annotated[
        float | None,
        typer.Option("--for", help="Hang up after this many seconds (default: Ctrl-C)."),
    ] = None,
    cid: Annotated[
        str | None, typer.Option(help="Conversation id (a proxy finds the call by it).")
    ] = None,
    ice_host: IceHostOption = None,
) -> None:
    """Call PEER, show the call live, hang up after --for seconds or on Ctrl-C, print the
    record. Exit 0 when the call connected and audio was received."""

    async def work() -> bool:
        from parley.media.console import run_call

        return await run_call(
            console, credentials, peer, play=play, record=record, seconds=seconds,
            ice=_ice(ice_host), cid=cid,
        )  # fmt: skip

    if not _run(work):
        raise typer.Exit(1)


@phone_app.command("answer")
def phone_answer(
    credentials: CredentialsOption,
    play: PlayOption = "tone:1000",
    record: RecordOption = None,
    calls: Annotated[
        int | None,
        typer.Option("--calls", min=1, help="Exit once this many calls ended (default: Ctrl-C)."),
    ] = None,
    ice_host: IceHostOption = None,
) -> None:
    """Answer every call (auto-answer), play --play, record what is heard (the second
    call to FILE-2.wav, and so on). Exit 0 when every call connected with audio."""

    async def work() -> bool:
        from parley.media.console import run_answer

        return await run_answer(
            console, credentials, play=play, record=record, calls=calls, ice=_ice(ice_host)
        )

    if not _run(work):
        raise typer.Exit(1)


@phone_app.command("web")
def phone_web(
    credentials: CredentialsOption,
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1; 0 picks a free one.")] = 0,
    ice_host: IceHostOption = None,
) -> None:
    """Serve the browser softphone on 127.0.0.1 until Ctrl-C; prints the page's URL (with
    its secret token) on a line of its own."""

    async def work() -> None:
        from parley.web.server import serve

        # Until SIGINT or SIGTERM; either hangs up a live call before the process ends.
        serving = asyncio.ensure_future(
            serve(credentials, port=port, ice=_ice(ice_host), on_ready=_print_url)
        )
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, serving.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await serving

    _run(work)


def _print_url(url: str) -> None:
    print(url, flush=True)

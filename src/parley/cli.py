"""The ``parley`` command line (typer + rich).

On a terminal, tables are drawn with rich; piped (stdout not a terminal), every command
prints plain lines that never wrap: a table is one tab-separated line per row, no
header. Commands that list or show something take ``--json`` and then print one JSON
document. Errors are one line on stderr, ``error: Kind: what``, exit code 1 (a usage
error, ``error: COMMAND: what``, exit code 2).

Logging goes to stderr: commands log warnings only, the servers (``relay``, ``proxy``,
``phone answer``, ``phone web``) also what they do (info); ``-q`` errors only, ``-v``
debug, ``-vv`` also the websockets library's frames. ``-q`` and ``-v`` go before or
after the subcommand.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import ipaddress
import json
import logging
import signal
import sqlite3
import sys
from collections.abc import Awaitable, Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ParamSpec, TypeVar

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text
from typer._click.exceptions import ClickException, NoArgsIsHelpError, UsageError

from parley.errors import ParleyError
from parley.loops import LoopChoice, loop_factory
from parley.relay.config import RegistrationPolicy, RelayConfig

if TYPE_CHECKING:
    from parley.client.connection import Connector
    from parley.credentials import Credentials
    from parley.ice import IceConfig
    from parley.protocol.keychain import KeyChain
    from parley.transport import Transport


class _App(typer.Typer):
    """The ``parley`` command: a usage error (an unknown option, a missing argument, a bad
    value) is one plain line on stderr, ``error: COMMAND: what``, exit code 2."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        try:
            result = super().__call__(*args, **{**kwargs, "standalone_mode": False})
        except NoArgsIsHelpError as exc:  # typer has printed the help already
            raise SystemExit(exc.exit_code) from None
        except ClickException as exc:
            where = exc.ctx.command_path if isinstance(exc, UsageError) and exc.ctx else "parley"
            _error(f"{where}: {exc.format_message().rstrip('.')}; see {where} --help")
            raise SystemExit(exc.exit_code) from None
        except typer.Abort:
            _error("aborted")
            raise SystemExit(1) from None
        # Not standalone, typer returns the code of a typer.Exit (a command returns None).
        raise SystemExit(result if isinstance(result, int) else 0)


app = _App(
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
    "SIGINT or SIGTERM (its calls go on when it is started again; --drain or SIGUSR1: "
    "let them end first). Bind calls to it with bind / bind-pool, also while it runs (it "
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


def _is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or name the relay listens on) is this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


_PIPED = not sys.stdout.isatty()
# Piped output is for scripts: no wrapping at 80 columns, no box drawing.
console = Console(soft_wrap=True) if _PIPED else Console()
err_console = Console(stderr=True, soft_wrap=True)

log = logging.getLogger(__name__)

T = TypeVar("T")
P = ParamSpec("P")

CredentialsOption = Annotated[
    Path, typer.Option("--credentials", "-c", help="This device's credentials file.")
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON document.")]

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
QuietOption = Annotated[bool, typer.Option("--quiet", "-q", help="Log errors only.")]
LoopOption = Annotated[
    LoopChoice,
    typer.Option(
        "--loop",
        envvar="PARLEY_LOOP",
        help="The event loop: auto (uvloop where it is installed), uvloop, asyncio.",
    ),
]
VerboseOption = Annotated[
    int,
    typer.Option(
        "--verbose", "-v", count=True, help="Log at debug level; -vv also websockets' frames."
    ),
]


def _error(message: str, code: int = 1) -> typer.Exit:
    """Print ``error: MESSAGE`` on one line of stderr; returns the Exit to raise."""
    line = Text("error:", style="red")
    line.append(" " + " ".join(message.split()))  # one line, whatever the message holds
    err_console.print(line)
    return typer.Exit(code)


def _run(work: Callable[[], Awaitable[T]], loop: LoopChoice = LoopChoice.ASYNCIO) -> T:
    """Run a coroutine (on the event loop ``loop`` names); a ParleyError, or the system
    refusing a file or a port, becomes a one-line message and exit code 1."""
    try:
        with asyncio.Runner(loop_factory=loop_factory(loop)) as runner:
            return runner.run(work())  # type: ignore[arg-type]
    except (ParleyError, OSError, sqlite3.Error) as exc:
        raise _error(f"{type(exc).__name__}: {exc}") from None


# -- logging -------------------------------------------------------------------------

_verbosity = {"quiet": False, "verbose": 0}


def _configure_logging(*, server: bool) -> None:
    """Root level: WARNING for commands, INFO for servers; -q ERROR, -v DEBUG. The
    websockets library logs every frame at DEBUG: only with -vv."""
    quiet, verbose = bool(_verbosity["quiet"]), int(_verbosity["verbose"])
    if verbose:
        level = logging.DEBUG
    elif quiet:
        level = logging.ERROR
    else:
        level = logging.INFO if server else logging.WARNING
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger().setLevel(level)
    logging.getLogger("websockets").setLevel(
        logging.DEBUG if verbose >= 2 else max(level, logging.INFO)
    )


def _command(*, server: bool = False) -> Callable[[Callable[P, T]], Callable[P, T]]:
    """Give a command ``-q/--quiet`` and ``-v/--verbose`` of its own (so they work after
    the subcommand too) and set up logging for it: ``server`` commands log at info."""

    def decorate(func: Callable[P, T]) -> Callable[P, T]:
        signature = inspect.signature(func, eval_str=True)
        extra = [
            inspect.Parameter(
                "quiet", inspect.Parameter.KEYWORD_ONLY, default=False, annotation=QuietOption
            ),
            inspect.Parameter(
                "verbose", inspect.Parameter.KEYWORD_ONLY, default=0, annotation=VerboseOption
            ),
        ]

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if kwargs.pop("quiet", False):
                _verbosity["quiet"] = True
            _verbosity["verbose"] = int(_verbosity["verbose"]) + int(kwargs.pop("verbose", 0))
            _configure_logging(server=server)
            return func(*args, **kwargs)

        wrapper.__signature__ = signature.replace(  # type: ignore[attr-defined]
            parameters=[*signature.parameters.values(), *extra]
        )
        wrapper.__annotations__ = {
            **{name: p.annotation for name, p in signature.parameters.items()},
            "quiet": QuietOption,
            "verbose": VerboseOption,
        }
        return wrapper

    return decorate


# -- output --------------------------------------------------------------------------


def _print_json(document: object) -> None:
    print(json.dumps(document, indent=2), flush=True)


def _print_table(table: Table, rows: Iterable[Sequence[str]]) -> None:
    """``table`` on a terminal; piped, one tab-separated line per row, no header."""
    if _PIPED:
        for row in rows:
            print("\t".join(row))
        sys.stdout.flush()
    else:
        console.print(table)


def _version() -> str:
    from parley import __version__

    return __version__


def _show_version(value: bool) -> None:
    if value:
        print(f"parley {_version()}")
        raise typer.Exit()


@app.callback()
def main(
    quiet: QuietOption = False,
    verbose: VerboseOption = 0,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_show_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    _verbosity["quiet"], _verbosity["verbose"] = quiet, verbose
    _configure_logging(server=False)


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
@_command(server=True)
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
    tls_cert: Annotated[
        Path | None,
        typer.Option(
            "--tls-cert",
            envvar="PARLEY_TLS_CERT",
            help="Serve wss:// (and https://) with this PEM certificate (its chain after "
            "it); needs --tls-key.",
        ),
    ] = None,
    tls_key: Annotated[
        Path | None,
        typer.Option(
            "--tls-key", envvar="PARLEY_TLS_KEY", help="The certificate's PEM private key."
        ),
    ] = None,
    metrics: Annotated[
        str | None,
        typer.Option(
            "--metrics",
            envvar="PARLEY_METRICS",
            metavar="HOST:PORT",
            help="Serve /metrics (plain HTTP) on a listener of its own, not on --port; "
            "default: on --port.",
        ),
    ] = None,
    rate: Annotated[
        float,
        typer.Option(
            help="Requests (messages, key claims, lookups, ...) per second one device may "
            "make, sustained, over all its connections to this node."
        ),
    ] = _DEFAULTS.device_rate,
    burst: Annotated[int, typer.Option(help="Requests one device may make at once.")] = (
        _DEFAULTS.device_burst
    ),
    identity_rate: Annotated[
        float, typer.Option(help="Requests per second one identity may make, all devices.")
    ] = _DEFAULTS.identity_rate,
    identity_burst: Annotated[
        int, typer.Option(help="Requests one identity may make at once, all devices.")
    ] = _DEFAULTS.identity_burst,
    connections_per_device: Annotated[
        int,
        typer.Option(
            help="Connections one device may keep open; a new one past this closes the oldest."
        ),
    ] = _DEFAULTS.connections_per_device,
    preauth_per_source: Annotated[
        int,
        typer.Option(help="Connections from one address that may wait unauthenticated at once."),
    ] = _DEFAULTS.preauth_per_source,
    registration_rate: Annotated[
        float, typer.Option(help="Registrations per second from one address, sustained.")
    ] = _DEFAULTS.registration_rate,
    registration_burst: Annotated[
        int, typer.Option(help="Registrations from one address at once.")
    ] = _DEFAULTS.registration_burst,
    max_name: Annotated[
        int, typer.Option(help="Longest identity display name, in characters.")
    ] = _DEFAULTS.max_name,
    auth_timeout: Annotated[
        float,
        typer.Option(min=0.1, help="Seconds a connection may take to authenticate."),
    ] = _DEFAULTS.auth_timeout,
    write_timeout: Annotated[
        float,
        typer.Option(
            min=0.1,
            help="Seconds a client may leave the relay's writes unread before it is closed "
            "(what it was sent stays in its inbox).",
        ),
    ] = _DEFAULTS.write_timeout,
    ping_interval: Annotated[
        float,
        typer.Option(
            help="Seconds between keepalive pings to every connection; one that has not "
            "answered by the next is closed (1011). 0: no pings.",
            min=0.0,
        ),
    ] = _DEFAULTS.ping_interval or 0.0,
    registration: Annotated[
        RegistrationPolicy,
        typer.Option(
            envvar="PARLEY_REGISTRATION",
            help="Who may register new identities: anyone (open), holders of an "
            "invitation token from `parley relay invite` (token), or nobody (closed).",
        ),
    ] = _DEFAULTS.registration,
    max_body: Annotated[int, typer.Option(help="Largest message body in bytes.")] = (
        _DEFAULTS.max_body
    ),
    loop: LoopOption = LoopChoice.AUTO,
) -> None:
    """Run a relay node until SIGINT or SIGTERM (parley relay migrate: set up its store)."""
    if ctx.invoked_subcommand is not None:
        return
    if not 0 <= port <= 65535:
        raise _error(f"--port {port} is not a port: give 0-65535 (0 picks a free one)")
    from parley.relay.server import RelayServer, run_relay

    def ready(server: RelayServer) -> None:
        # One plain line with the URL: scripts and tests wait for it.
        print(f"parley relay listening on {server.url} node {server.node_id}", flush=True)

    config = RelayConfig(
        device_rate=rate,
        device_burst=burst,
        identity_rate=identity_rate,
        identity_burst=identity_burst,
        connections_per_device=connections_per_device,
        preauth_per_source=preauth_per_source,
        registration_rate=registration_rate,
        registration_burst=registration_burst,
        max_name=max_name,
        max_body=max_body,
        auth_timeout=auth_timeout,
        write_timeout=write_timeout,
        ping_interval=ping_interval or None,
        registration=registration,
    )
    if registration is RegistrationPolicy.OPEN and not _is_loopback(host):
        err_console.print(
            Text(
                f"warning: registration is open on {host}: anyone who reaches this relay "
                "can register identities (--registration token or closed to stop that)"
            )
        )
    _run(
        lambda: run_relay(
            data_dir,
            host,
            port,
            config,
            ready,
            store=store,
            bus=bus,
            tls_cert=tls_cert,
            tls_key=tls_key,
            metrics=metrics,
        ),
        loop,
    )


@relay_app.command("invite")
@_command()
def relay_invite(
    store: StoreLocationOption = None,
    data_dir: Annotated[
        Path, typer.Option(help="Where the SQLite database is, without --store.")
    ] = Path("parley-data"),
    count: Annotated[int, typer.Option(min=1, max=1000, help="How many tokens.")] = 1,
    valid_for: Annotated[float, typer.Option(min=1.0, help="Seconds each token stays usable.")] = 7
    * 24
    * 3600.0,
) -> None:
    """Print new invitation tokens, one per line, each good for one registration on a
    relay run with --registration token (`parley identity new --token TOKEN`).

    Works while the relay runs: the tokens go straight into its store."""
    from parley.relay.invites import issue_in

    for token in _run(lambda: issue_in(store, data_dir, count, valid_for)):
        print(token)


@relay_app.command("migrate")
@_command()
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
@_command()
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
    ca_file: Annotated[
        Path | None,
        typer.Option(
            "--ca-file",
            envvar="PARLEY_CA_FILE",
            help="The CA (PEM) that signs a wss:// relay's certificate, if the system does "
            "not trust it; kept in the credentials for every command that connects.",
        ),
    ] = None,
    name: Annotated[str | None, typer.Option(help="A display name for the identity.")] = None,
    identity_id: Annotated[
        str | None, typer.Option("--id", help="Choose the identity id instead of a random one.")
    ] = None,
    token: Annotated[
        str | None,
        typer.Option(
            envvar="PARLEY_INVITE",
            help="An invitation token (`parley relay invite`), for a relay that registers "
            "invited identities only.",
        ),
    ] = None,
) -> None:
    """Register a new identity and its first device; prints the identity id last.

    The key is made here and written to --out before the relay hears of it; if the
    relay refuses, the file is removed again."""
    from parley.client.connection import relay_urls
    from parley.client.registration import new_identity, register

    def make() -> Credentials:
        relay_urls(relay_url)
        ca = None if ca_file is None else str(ca_file.absolute())
        creds = new_identity(relay_url, name=name, identity_id=identity_id, ca_file=ca)
        creds.create(out)
        return creds

    creds = _local(make)
    _register_saved(
        out,
        relay_url,
        lambda connector: register(creds, connector, token=token),
        ca_file=creds.ca_file,
    )
    err_console.print(Text(f"registered identity, device {creds.device}, credentials in {out}"))
    print(creds.identity)


@identity_app.command("add-device")
@_command()
def identity_add_device(
    credentials: CredentialsOption,
    out: Annotated[Path, typer.Option("--out", help="Credentials file for the new device.")],
) -> None:
    """Add a second device (its own key) to the identity of CREDENTIALS.

    The new key is written to --out before it is added; if that fails, the file is
    removed again."""
    from parley.client.registration import new_device, register_device
    from parley.credentials import Credentials

    def make() -> tuple[Credentials, Credentials]:
        signer = Credentials.load(credentials)
        creds = new_device(signer)
        creds.create(out)
        return signer, creds

    signer, creds = _local(make)
    _register_saved(
        out,
        signer.relay_url,
        lambda connector: register_device(signer, creds, connector),
        ca_file=signer.ca_file,
    )
    err_console.print(Text(f"added device to {creds.identity}, credentials in {out}"))
    print(creds.device)


def _local(work: Callable[[], T]) -> T:
    """Run local preparation (no relay yet); a ParleyError is one line, exit 1."""
    try:
        return work()
    except ParleyError as exc:
        raise _error(f"{type(exc).__name__}: {exc}") from None


def _register_saved(
    path: Path,
    relay_url: str,
    work: Callable[[Connector], Awaitable[None]],
    ca_file: str | None = None,
) -> None:
    """Register a key already saved in ``path`` (``work`` gets the connector to use).

    When the relay refused it, or was never reached, nothing was registered and the file
    goes; when the outcome is unknown (the connection lost mid-way, no answer in time,
    Ctrl-C) the file stays, since the relay may hold the key now: a key is never lost."""
    from parley.client.connection import websocket_connector
    from parley.errors import CredentialsError, KeyChainError, RelayError

    connect = websocket_connector(relay_url, ca_file=ca_file)
    reached = False

    async def connector() -> Transport:
        nonlocal reached
        transport = await connect()
        reached = True
        return transport

    try:
        asyncio.run(work(connector))  # type: ignore[arg-type]
    except (ParleyError, OSError) as exc:
        refused = isinstance(exc, RelayError | KeyChainError | CredentialsError)
        if refused or not reached:
            path.unlink(missing_ok=True)
            raise _error(f"{type(exc).__name__}: {exc}") from None
        raise _error(
            f"{type(exc).__name__}: {exc}; the relay may have registered the key, so it "
            f"is kept in {path}"
        ) from None


async def _fetch_chains(
    credentials: Credentials, identities: Sequence[str]
) -> dict[str, KeyChain | None]:
    """The key chains of ``identities`` from the relay of ``credentials`` (None: the
    relay knows no such identity), over a connection that only reads keys."""
    from parley.client.connection import Connection, credentials_connector
    from parley.client.directory import fetch_chain
    from parley.errors import UnknownIdentity

    connection = Connection(
        credentials,
        credentials_connector(credentials),
        on_deliver=lambda deliver: None,  # left unconfirmed: the device's own client gets them
        resume_after=lambda: 0,
        ack_timeout=10.0,
    )
    await connection.open()
    chains: dict[str, KeyChain | None] = {}
    try:
        for identity in identities:
            try:
                chains[identity] = await fetch_chain(connection, identity)
            except UnknownIdentity:
                chains[identity] = None
    finally:
        await connection.close()
    return chains


def _devices(creds: Credentials, chain: KeyChain) -> list[dict[str, object]]:
    """Every device of ``chain`` in the order it was added, with its state."""
    devices: dict[str, dict[str, object]] = {}
    for entry in chain.entries:
        device = entry.decoded().device
        devices.setdefault(device, {"device": device, "added": entry.decoded().created_at})
    return [
        {
            **row,
            "state": "active" if row["device"] in chain.active else "revoked",
            "this": row["device"] == creds.device,
        }
        for row in devices.values()
    ]


def _device_rows(devices: list[dict[str, object]]) -> tuple[Table, list[list[str]]]:
    rows = [
        [str(d["device"]), str(d["state"]), "this device" if d["this"] else ""] for d in devices
    ]
    table = Table("device", "state", "")
    for row in rows:
        table.add_row(*row)
    return table, rows


@identity_app.command("show")
@_command()
def identity_show(credentials: CredentialsOption, as_json: JsonOption = False) -> None:
    """Show the identity of CREDENTIALS: its id, this device, every device with its
    state (active, revoked), the relay URL(s)."""
    from parley.client.connection import relay_urls
    from parley.credentials import Credentials

    creds = _local(lambda: Credentials.load(credentials))
    chain = _run(lambda: _fetch_chains(creds, [creds.identity]))[creds.identity]
    if chain is None:
        raise _error(f"UnknownIdentity: the relay knows no identity {creds.identity!r}")
    devices = _devices(creds, chain)
    relays = relay_urls(creds.relay_url)
    if as_json:
        _print_json(
            {
                "identity": creds.identity,
                "name": creds.name,
                "device": creds.device,
                "devices": devices,
                "relay": relays,
            }
        )
        return
    lines = [
        ("identity", creds.identity),
        ("name", creds.name or "-"),
        ("this device", creds.device),
        ("relay", ",".join(relays)),
    ]
    for key, value in lines:
        print(f"{key}\t{value}" if _PIPED else f"{key + ':':13}{value}")
    table, rows = _device_rows(devices)
    _print_table(table, [["device", *row] for row in rows] if _PIPED else rows)


@identity_app.command("devices")
@_command()
def identity_devices(credentials: CredentialsOption, as_json: JsonOption = False) -> None:
    """List the devices of the identity of CREDENTIALS with their state."""
    from parley.credentials import Credentials

    creds = _local(lambda: Credentials.load(credentials))
    chain = _run(lambda: _fetch_chains(creds, [creds.identity]))[creds.identity]
    if chain is None:
        raise _error(f"UnknownIdentity: the relay knows no identity {creds.identity!r}")
    devices = _devices(creds, chain)
    if as_json:
        _print_json({"identity": creds.identity, "devices": devices})
        return
    table, rows = _device_rows(devices)
    _print_table(table, rows)


@identity_app.command("revoke-device")
@_command()
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
@_command()
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
@_command()
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
@_command()
def connections(credentials: CredentialsOption, as_json: JsonOption = False) -> None:
    """List the identities you accept messages from (piped: one per line)."""
    from parley.client import Client

    async def work() -> tuple[str, list[str]]:
        async with Client.from_credentials(credentials) as client:
            return client.id, await client.connections.list()

    identity, permitted = _run(work)
    if as_json:
        _print_json({"identity": identity, "permitted": permitted})
        return
    table = Table("permitted identity")
    for other in permitted:
        table.add_row(other)
    _print_table(table, [[other] for other in permitted])


@app.command()
@_command()
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


async def _known(credentials: Path | None, identities: dict[str, list[str]]) -> None:
    """With the proxy's credentials, ask its relay whether every identity exists:
    :class:`UnknownIdentity` naming the first that does not (and its option). Without
    credentials there is no relay to ask."""
    if credentials is None:
        log.info("no --credentials: the identities are not checked against the relay")
        return
    from parley.credentials import Credentials
    from parley.errors import UnknownIdentity

    wanted = [identity for ids in identities.values() for identity in ids]
    chains = await _fetch_chains(Credentials.load(credentials), list(dict.fromkeys(wanted)))
    for option, ids in identities.items():
        for identity in ids:
            if chains[identity] is None:
                raise UnknownIdentity(f"no identity {identity!r} ({option}) on the relay")


def _identity(value: str, option: str) -> str:
    from parley.ids import is_valid_id

    if not is_valid_id(value):
        raise _error(f"{option} {value!r} is not an identity id ([A-Za-z0-9._-], 1-64)")
    return value


@proxy_app.callback(invoke_without_command=True)
@_command(server=True)
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
    drain: Annotated[
        bool,
        typer.Option(
            help="On SIGTERM take no new calls (starts get busy) and exit once the live "
            "ones have ended, as SIGUSR1 always does; without it SIGTERM stops at once, "
            "ending no call (the next start resumes them)."
        ),
    ] = False,
    lease: Annotated[
        float | None,
        typer.Option(
            help="Be the one active proxy of the store, with a lease of this many seconds: "
            "while another proxy holds it, wait on standby and take its calls over once "
            "it stops or dies (within about this long).",
            min=1.0,
        ),
    ] = None,
    loop: LoopOption = LoopChoice.AUTO,
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
    _run(
        lambda: serve(
            credentials,
            where,
            config,
            lambda line: print(line, flush=True),
            drain=drain,
            lease_seconds=lease,
        ),
        loop,
    )


@proxy_app.command("bind")
@_command()
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
    """Bind CID: the operator's start goes on to the customer (writes the store; with
    --credentials, first checks on the relay that both identities exist)."""
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
        await _known(credentials, {"--operator": [binding.operator], "--customer": [customer]})
        db = open_proxy_store(_store_path(store, credentials))
        try:
            await db.bind(binding)
        finally:
            await db.close()

    _run(work)
    console.print(Text(f"bound {cid}: operator {operator} -> customer {customer}"))


@proxy_app.command("bind-pool")
@_command()
def proxy_bind_pool(
    cid: Annotated[str, typer.Argument(help="The conversation id the customer calls with.")],
    customer: Annotated[str, typer.Option(help="The identity whose starts are hunted.")],
    operator: Annotated[
        list[str], typer.Option(help="An operator to ring; repeat for each, in ringing order.")
    ],
    store: StoreOption = None,
    credentials: ProxyCredentialsOption = None,
) -> None:
    """Bind CID to a hunt group: the customer's start rings every available operator
    (with --credentials, first checks on the relay that every identity exists)."""
    from parley.ids import IdentityId
    from parley.protocol.proxy import Pool
    from parley.proxy import open_proxy_store

    pool = Pool(
        cid=cid,
        customer=IdentityId(_identity(customer, "--customer")),
        operators=tuple(IdentityId(_identity(op, "--operator")) for op in operator),
    )

    async def work() -> None:
        await _known(credentials, {"--customer": [pool.customer], "--operator": operator})
        db = open_proxy_store(_store_path(store, credentials))
        try:
            await db.bind_pool(pool)
        finally:
            await db.close()

    _run(work)
    console.print(Text(f"bound {cid}: customer {customer} -> hunt group {', '.join(operator)}"))


@app.command()
@_command()
def calls(
    store: StoreOption = None,
    credentials: ProxyCredentialsOption = None,
    as_json: JsonOption = False,
) -> None:
    """Print the proxy's call records: one row per leg (piped: one tab-separated line
    per leg: cid, call_id, leg, party, started, connected, reason)."""
    from parley.errors import InvalidProxyStoreLocation
    from parley.proxy import open_proxy_store
    from parley.proxy.location import sqlite_path
    from parley.proxy.records import LegRecord
    from parley.proxy.report import record_json, records_rows, records_table

    where = _store_path(store, credentials)
    try:
        path = sqlite_path(where)
    except InvalidProxyStoreLocation as exc:
        raise _error(f"{type(exc).__name__}: {exc}") from None
    if path is not None and not path.exists():  # reading must not create an empty file
        raise _error(f"no proxy store at {path}")

    async def work() -> list[LegRecord]:
        db = open_proxy_store(where)
        try:
            return await db.records()
        finally:
            await db.close()

    records = _run(work)
    if as_json:
        _print_json({"records": [record_json(r) for r in records]})
        return
    _print_table(records_table(records), records_rows(records))


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
@_command()
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
@_command(server=True)
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
@_command(server=True)
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

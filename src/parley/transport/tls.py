"""TLS contexts from the stdlib ``ssl`` module: the relay's (certificate and key) and
the client's (verifying the relay against the system store or a CA file).

Every file problem is an :class:`InvalidTlsConfig` naming the file, so a command can
say it in one line; OpenSSL's own messages ("PEM lib") do not say which file it was.
"""

from __future__ import annotations

import os
import ssl
from pathlib import Path

from parley.errors import InvalidTlsConfig

PathLike = str | os.PathLike[str]


def server_context(cert: PathLike, key: PathLike) -> ssl.SSLContext:
    """A context that serves ``cert`` (PEM, the chain after it) with ``key`` (PEM)."""
    for path, what in ((cert, "certificate"), (key, "key")):
        _check_readable(path, what)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        # A password callback that refuses: an encrypted key would otherwise make
        # OpenSSL prompt on the terminal.
        context.load_cert_chain(cert, key, password=_no_password)
    except _EncryptedKey:
        raise InvalidTlsConfig(f"TLS key {key} is encrypted; give an unencrypted key") from None
    except ssl.SSLError as exc:
        raise _diagnose(Path(cert), Path(key), exc) from None
    return context


def client_context(ca_file: PathLike | None = None) -> ssl.SSLContext:
    """A context that verifies the server's certificate and host name: against
    ``ca_file`` (PEM) if given, else the system's trusted CAs."""
    if ca_file is None:
        return ssl.create_default_context()
    _check_readable(ca_file, "CA file")
    try:
        return ssl.create_default_context(cafile=os.fspath(ca_file))
    except ssl.SSLError as exc:
        raise InvalidTlsConfig(
            f"CA file {ca_file} holds no PEM certificate ({_reason(exc)})"
        ) from None


class _EncryptedKey(Exception):
    pass


def _no_password() -> bytes:
    raise _EncryptedKey


def _check_readable(path: PathLike, what: str) -> None:
    try:
        with Path(path).open("rb"):
            pass
    except OSError as exc:
        raise InvalidTlsConfig(f"cannot read TLS {what} {path}: {exc.strerror}") from None


def _diagnose(cert: Path, key: Path, exc: ssl.SSLError) -> InvalidTlsConfig:
    if exc.reason == "KEY_VALUES_MISMATCH":
        return InvalidTlsConfig(f"TLS key {key} is not the key of the certificate {cert}")
    try:
        # Loading the certificate alone tells which of the two files is wrong.
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cert)
    except ssl.SSLError:
        return InvalidTlsConfig(f"TLS certificate {cert} is not a PEM certificate")
    # OpenSSL says only "PEM lib" here: nothing to add.
    return InvalidTlsConfig(f"TLS key {key} is not a PEM private key")


def _reason(exc: ssl.SSLError) -> str:
    return str(exc.reason or exc).lower().replace("_", " ")

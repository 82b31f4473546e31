"""Credentials of one device: a JSON file readable by its owner only (mode 0600)."""

from __future__ import annotations

import contextlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import msgspec

from parley.crypto.keys import SigningKey
from parley.errors import CredentialsError
from parley.ids import DeviceId, IdentityId, is_valid_id
from parley.protocol.decoding import KIB, Decoder


class _CredentialsFile(msgspec.Struct, frozen=True):
    identity: str
    device: str
    secret_key: str
    relay_url: str
    name: str | None = None
    version: int = 1
    # The CA that signs the relay's certificate (PEM), when wss:// is not signed by one
    # the system trusts; a relative path is relative to the credentials file.
    ca_file: str | None = None


# A key, two ids, a URL and a name: a few hundred bytes in practice.
_decoder: Decoder[_CredentialsFile] = Decoder(
    _CredentialsFile,
    format="json",
    error=CredentialsError,
    what="JSON",
    max_bytes=64 * KIB,
)


@dataclass(frozen=True)
class Credentials:
    """One device's credentials: its identity and device ids, its secret Ed25519 key, the relay
    URL(s) and optionally a CA file. Saved as a JSON file with mode 0600 (:meth:`save`), read
    with :meth:`load`."""

    identity: IdentityId
    device: DeviceId
    secret_key: SigningKey
    relay_url: str
    name: str | None = None
    ca_file: str | None = None

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Credentials:
        """Read the credentials file at ``path``; a file that cannot be read or is not credentials
        raises ``CredentialsError`` naming it."""
        try:
            with Path(path).open("rb") as file:
                # One byte over the bound is enough to refuse it (not all of /dev/zero).
                raw = file.read(_decoder.max_bytes + 1)
        except OSError as exc:
            raise CredentialsError(f"cannot read credentials {path}: {exc.strerror}") from None
        try:
            data = _decoder.decode(raw)
        except CredentialsError as exc:
            raise CredentialsError(f"{path} is not a Parley credentials file ({exc})") from None
        if not (is_valid_id(data.identity) and is_valid_id(data.device)):
            raise CredentialsError(f"{path}: identity or device id is invalid")
        try:
            secret_key = SigningKey.from_b64(data.secret_key)
        except CredentialsError as exc:
            raise CredentialsError(f"{path}: {exc}") from None
        return cls(
            identity=IdentityId(data.identity),
            device=DeviceId(data.device),
            secret_key=secret_key,
            relay_url=data.relay_url,
            name=data.name,
            ca_file=None if data.ca_file is None else str(_beside(Path(path), data.ca_file)),
        )

    def _body(self) -> bytes:
        return (
            msgspec.json.format(
                msgspec.json.encode(
                    _CredentialsFile(
                        identity=self.identity,
                        device=self.device,
                        secret_key=self.secret_key.to_b64(),
                        relay_url=self.relay_url,
                        name=self.name,
                        ca_file=self.ca_file,
                    )
                )
            )
            + b"\n"
        )

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write atomically, created with mode 0600 so the key is never world-readable;
        an existing file is replaced."""
        _write_atomically(Path(path), self._body(), replace=True)

    def create(self, path: str | os.PathLike[str]) -> None:
        """Write a new credentials file atomically (temp file with mode 0600, fsync,
        then linked into place), refusing to replace an existing file.

        :class:`CredentialsError` (one line, naming the file) if ``path`` exists, its
        folder is missing or not writable: nothing is left behind then.
        """
        target = Path(path)
        if target.exists() or target.is_symlink():
            raise CredentialsError(f"{target} exists; refusing to overwrite a key")
        try:
            _write_atomically(target, self._body(), replace=False)
        except FileExistsError:
            raise CredentialsError(f"{target} exists; refusing to overwrite a key") from None
        except OSError as exc:
            reason = exc.strerror or str(exc)
            raise CredentialsError(f"cannot write credentials {target}: {reason}") from None

    @staticmethod
    def default_state_path(credentials_path: str | os.PathLike[str]) -> Path:
        """Where a client keeps its offset, seen message ids and cached keys."""
        path = Path(credentials_path)
        return path.with_name(path.stem + ".state.db")


def _beside(credentials: Path, path: str) -> Path:
    """``path`` as written in the credentials file at ``credentials``: absolute, so the
    file saved again (or the client in another folder) still names the same one."""
    return credentials.absolute().parent / path


def _write_atomically(target: Path, body: bytes, *, replace: bool) -> None:
    """``body`` into ``target`` whole or not at all: a temp file in the same folder
    (mode 0600 from the start), fsynced, then renamed (``replace``) or hard-linked
    (fails if ``target`` exists) into place, and the folder fsynced."""
    folder = target.parent
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{target.name}.", suffix=".tmp")
    try:
        try:
            os.fchmod(fd, 0o600)
            os.write(fd, body)
            os.fsync(fd)
        finally:
            os.close(fd)
        if replace:
            os.replace(tmp, target)
        else:
            os.link(tmp, target)
            os.unlink(tmp)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_folder(folder)


def _fsync_folder(folder: Path) -> None:
    with contextlib.suppress(OSError):  # not every system can open a folder
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

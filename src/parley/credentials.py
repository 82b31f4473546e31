"""Credentials of one device: a JSON file readable by its owner only (mode 0600)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import msgspec

from parley.crypto.keys import SigningKey
from parley.errors import CredentialsError
from parley.ids import DeviceId, IdentityId, is_valid_id


class _CredentialsFile(msgspec.Struct, frozen=True):
    identity: str
    device: str
    secret_key: str
    relay_url: str
    name: str | None = None
    version: int = 1


@dataclass(frozen=True)
class Credentials:
    identity: IdentityId
    device: DeviceId
    secret_key: SigningKey
    relay_url: str
    name: str | None = None

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Credentials:
        try:
            raw = Path(path).read_bytes()
        except OSError as exc:
            raise CredentialsError(f"cannot read credentials {path}: {exc.strerror}") from None
        try:
            data = msgspec.json.decode(raw, type=_CredentialsFile)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise CredentialsError(f"{path} is not a Parley credentials file: {exc}") from None
        if not (is_valid_id(data.identity) and is_valid_id(data.device)):
            raise CredentialsError(f"{path}: identity or device id is invalid")
        return cls(
            identity=IdentityId(data.identity),
            device=DeviceId(data.device),
            secret_key=SigningKey.from_b64(data.secret_key),
            relay_url=data.relay_url,
            name=data.name,
        )

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write atomically, created with mode 0600 so the key is never world-readable."""
        target = Path(path)
        body = msgspec.json.format(
            msgspec.json.encode(
                _CredentialsFile(
                    identity=self.identity,
                    device=self.device,
                    secret_key=self.secret_key.to_b64(),
                    relay_url=self.relay_url,
                    name=self.name,
                )
            )
        )
        tmp = target.with_name(f".{target.name}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.fchmod(fd, 0o600)
            os.write(fd, body + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, target)

    @staticmethod
    def default_state_path(credentials_path: str | os.PathLike[str]) -> Path:
        """Where a client keeps its offset, seen message ids and cached keys."""
        path = Path(credentials_path)
        return path.with_name(path.stem + ".state.db")

"""Credentials files: written atomically with mode 0600; ``create`` never replaces one."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from fuzz.harness import in_unknown_field_json

from parley.client.registration import new_device, new_identity
from parley.credentials import Credentials
from parley.errors import CredentialsError


def _same(a: Credentials, b: Credentials) -> bool:
    return (a.identity, a.device, a.secret_key.to_b64(), a.relay_url, a.name) == (
        b.identity,
        b.device,
        b.secret_key.to_b64(),
        b.relay_url,
        b.name,
    )


def test_create_writes_0600_and_refuses_an_existing_file(tmp_path: Path) -> None:
    creds = new_identity("ws://127.0.0.1:1", name="Alice", identity_id="alice")
    path = tmp_path / "alice.json"
    creds.create(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert _same(Credentials.load(path), creds)
    other = new_device(creds)
    with pytest.raises(CredentialsError, match="exists"):
        other.create(path)
    assert _same(Credentials.load(path), creds)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["alice.json"]  # no temp file left


def test_create_in_a_missing_folder_is_one_error_naming_the_file(tmp_path: Path) -> None:
    creds = new_identity("ws://127.0.0.1:1")
    target = tmp_path / "missing" / "a.json"
    with pytest.raises(CredentialsError, match=r"cannot write credentials .*a\.json"):
        creds.create(target)


def test_save_replaces(tmp_path: Path) -> None:
    creds = new_identity("ws://127.0.0.1:1")
    path = tmp_path / "a.json"
    path.write_text("old")
    creds.save(path)
    assert _same(Credentials.load(path), creds)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


@pytest.mark.parametrize(
    "content",
    [
        in_unknown_field_json(b'"identity":"alice"'),
        b'{"identity":"a","device":"d","relay_url":"r","secret_key":"\\u00e9"}',
        b" " * (64 * 1024 + 1),
    ],
    ids=["deep", "non-ascii-key", "too-large"],
)
def test_a_damaged_file_is_one_error_naming_it(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "a.json"
    path.write_bytes(content)
    with pytest.raises(CredentialsError, match=r"a\.json"):
        Credentials.load(path)

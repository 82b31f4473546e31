"""Shared fixtures. ``relay_process`` is a real relay process on a real socket (with its
own SQLite), for the end-to-end suite and the examples; unit tests use in-memory ones."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from parley.client import Client
from parley.client.registration import register_identity
from parley.credentials import Credentials
from parley.processes import RelayProcess

Register = Callable[[str], Awaitable[tuple[Credentials, Path]]]


@pytest.fixture
async def relay_process(tmp_path: Path) -> AsyncIterator[RelayProcess]:
    async with RelayProcess(tmp_path / "relay") as process:
        yield process


@pytest.fixture
def register(relay_process: RelayProcess, tmp_path: Path) -> Register:
    """Register an identity on the relay; returns its credentials and their file."""

    async def make(name: str) -> tuple[Credentials, Path]:
        creds = await register_identity(relay_process.url, name=name)
        path = tmp_path / f"{name}.json"
        creds.save(path)
        return creds, path

    return make


def client_for(path: Path, **kwargs: object) -> Client:
    return Client.from_credentials(path, **kwargs)  # type: ignore[arg-type]

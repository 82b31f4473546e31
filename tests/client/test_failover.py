"""Several relay URLs: the connector goes to the node that answers, and stays there."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from parley.client.connection import relay_urls, websocket_connector
from parley.errors import InvalidRelayUrl, TransportClosed
from parley.relay.server import RelayServer


def closed_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_relay_urls_are_one_or_several() -> None:
    assert relay_urls("ws://a:1") == ["ws://a:1"]
    assert relay_urls(" ws://a:1 , ws://b:2,") == ["ws://a:1", "ws://b:2"]
    with pytest.raises(InvalidRelayUrl):
        relay_urls(" , ")


async def test_an_unreachable_node_is_passed_over(tmp_path: Path) -> None:
    dead = f"ws://127.0.0.1:{closed_port()}"
    async with RelayServer(tmp_path) as server:
        connect = websocket_connector(f"{dead},{server.url}")
        first = await connect()
        assert first.remote == f"127.0.0.1:{server.port}"
        await first.close()
        second = await connect()  # straight to the node that answered last
        assert second.remote == f"127.0.0.1:{server.port}"
        await second.close()


async def test_no_node_answering_is_the_last_failure() -> None:
    urls = ",".join(f"ws://127.0.0.1:{closed_port()}" for _ in range(2))
    with pytest.raises(TransportClosed, match="cannot connect"):
        await websocket_connector(urls)()

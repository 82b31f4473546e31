"""Relay URLs are checked in one place, ``relay_urls``: ws:// or wss://, a host, no path."""

from __future__ import annotations

import pytest

from parley.client.connection import relay_urls
from parley.errors import InvalidRelayUrl


@pytest.mark.parametrize(
    "url", ["ws://a:1", "wss://relay.example.org", "ws://[::1]:8765", "ws://a:1/"]
)
def test_good_urls(url: str) -> None:
    assert relay_urls(url) == [url]


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("127.0.0.1:8765", "no scheme: write ws://127.0.0.1:8765"),
        ("ws://h:1/x", "has a path (/x)"),
        ("ws://h:1?a=b", "has a path (?a=b)"),
        ("http://h:1", "not ws:// or wss://"),
        ("ws://h:99999", "invalid port"),
        ("ws://:1", "names no host"),
        ("ws://a:1,b:2", "'b:2' has no scheme"),
    ],
)
def test_bad_urls_say_what_to_fix(url: str, says: str) -> None:
    with pytest.raises(InvalidRelayUrl) as raised:
        relay_urls(url)
    assert says in str(raised.value)

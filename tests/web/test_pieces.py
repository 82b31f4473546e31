"""The page server's parts on their own: the guard's rules and the page messages."""

from __future__ import annotations

import pytest
from fuzz.harness import deep_json

from parley.web import messages
from parley.web.guard import Guard, is_loopback
from parley.web.messages import MalformedPageMessage

TOKEN = "s3cret-Token_value"


def test_the_guard_knows_this_server_by_its_loopback_names_only() -> None:
    guard = Guard("127.0.0.1", 8123, TOKEN)
    for host in ("127.0.0.1:8123", "localhost:8123", "LOCALHOST:8123"):
        assert guard.host_allowed(host), host
    assert not guard.host_allowed(None)
    for host in ("", "127.0.0.1", "localhost", "127.0.0.1:8124", "evil.example:8123",
                 "127.0.0.1:8123.evil.example", "[::1]:8123", "0.0.0.0:8123"):  # fmt: skip
        assert not guard.host_allowed(host), host
    assert Guard("::1", 8123, TOKEN).host_allowed("[::1]:8123")


def test_a_websocket_must_come_from_the_page_of_the_host_it_named() -> None:
    guard = Guard("127.0.0.1", 8123, TOKEN)
    assert guard.origin_allowed("http://127.0.0.1:8123", "127.0.0.1:8123")
    assert guard.origin_allowed("http://localhost:8123", "localhost:8123")
    for origin in (None, "null", "http://localhost:8123", "https://127.0.0.1:8123",
                   "http://127.0.0.1:9", "http://127.0.0.1:8123/x"):  # fmt: skip
        assert not guard.origin_allowed(origin, "127.0.0.1:8123"), origin


def test_the_token_must_be_there_once_and_exactly() -> None:
    guard = Guard("127.0.0.1", 8123, TOKEN)
    assert guard.token_allowed(f"/?token={TOKEN}")
    assert guard.token_allowed(f"/ws?x=1&token={TOKEN}")
    for path in ("/", "/?token=", f"/?token={TOKEN}x", f"/?token={TOKEN[:-1]}",
                 f"/?token={TOKEN}&token={TOKEN}", f"/?Token={TOKEN}", "/?token=%C3%A9",
                 f"/{TOKEN}"):  # fmt: skip
        assert not guard.token_allowed(path), path


def test_the_page_is_served_on_loopback_addresses_only() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("127.0.0.2")
    for host in ("0.0.0.0", "192.0.2.2", "::", "localhost", "example.org"):
        assert not is_loopback(host), host


def test_page_messages_decode_by_their_tag_and_nothing_else_does() -> None:
    assert messages.decode('{"t": "place", "peer": "bob", "sdp": "v=0"}') == messages.Place(
        peer="bob", sdp="v=0"
    )
    assert messages.decode('{"t": "media_failed", "call_id": "k"}') == messages.MediaFailed(
        call_id="k"
    )
    for text in ("", "null", "{}", '{"t": "hello", "identity": "x", "ice": {}}',
                 '{"t": "accept", "call_id": "k"}', '{"t": "decline", "call_id": "k", "x": 1}',
                 '{"t": "place", "peer": "b", "sdp": "' + "x" * 20000 + '"}'):  # fmt: skip
        with pytest.raises(MalformedPageMessage):
            messages.decode(text)
    with pytest.raises(MalformedPageMessage, match="not binary"):
        messages.decode(b'{"t": "hangup", "call_id": "k"}')
    assert messages.tag_of('{"t": "place"}') == "place"
    assert messages.tag_of("[1]") is None
    assert messages.tag_of("no") is None


@pytest.mark.parametrize(
    "text",
    [
        deep_json(),
        '{"t": "hangup", "x": ' + deep_json().decode() + "}",
        '"\\ud800"',  # a lone surrogate: JSON allows the escape
        '"\ud800"',  # and text no UTF-8 encoder takes
    ],
)
def test_what_the_page_cannot_have_meant_is_malformed_and_has_no_tag(text: str) -> None:
    with pytest.raises(MalformedPageMessage):
        messages.decode(text)
    assert messages.tag_of(text) is None


def test_messages_to_the_page_are_tagged_json() -> None:
    ended = messages.Ended(
        call_id="k",
        peer="bob",
        reason="failed",
        detail="the peer's answer is unusable",
        duration=0.0,
    )
    assert messages.encode(ended) == (
        '{"t":"ended","call_id":"k","peer":"bob","reason":"failed",'
        '"detail":"the peer\'s answer is unusable","duration":0.0}'
    )

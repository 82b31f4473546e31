"""ICE settings: from the environment and flags, checked, and the candidate filter a
browser's SDP goes through."""

from __future__ import annotations

import json

import pytest

from parley.errors import InvalidIceConfig
from parley.ice import IceConfig, IceServer, restrict_candidates


def test_nothing_set_means_no_servers_and_every_host() -> None:
    config = IceConfig.from_env({})
    assert config == IceConfig()
    assert config.allows_host("192.0.2.2")
    assert config.to_json() == {"iceServers": [], "iceTransportPolicy": "all"}


def test_the_environment_names_hosts_servers_and_relay_only() -> None:
    servers = [
        {"urls": "stun:127.0.0.1:3478"},
        {"urls": ["turn:127.0.0.1:3478"], "username": "u", "credential": "p"},
    ]
    config = IceConfig.from_env(
        {
            "PARLEY_ICE_HOSTS": "127.0.0.1, ::1",
            "PARLEY_ICE_SERVERS": json.dumps(servers),
            "PARLEY_ICE_RELAY_ONLY": "1",
        }
    )
    assert config.hosts == ("127.0.0.1", "::1")
    assert config.servers == (
        IceServer(urls=("stun:127.0.0.1:3478",)),
        IceServer(urls=("turn:127.0.0.1:3478",), username="u", credential="p"),
    )
    assert config.to_json()["iceTransportPolicy"] == "relay"
    assert config.to_json()["iceServers"][1] == {
        "urls": ["turn:127.0.0.1:3478"],
        "username": "u",
        "credential": "p",
    }


def test_hosts_given_as_flags_win_over_the_environment() -> None:
    config = IceConfig.from_env({"PARLEY_ICE_HOSTS": "10.0.0.1"}, hosts=("127.0.0.1",))
    assert config.hosts == ("127.0.0.1",)


@pytest.mark.parametrize(
    "environ",
    [
        {"PARLEY_ICE_HOSTS": "localhost"},
        {"PARLEY_ICE_SERVERS": "stun:x"},
        {"PARLEY_ICE_SERVERS": '{"urls": "stun:x"}'},
        {"PARLEY_ICE_SERVERS": '[{"urls": "http://x"}]'},
        {"PARLEY_ICE_SERVERS": '[{"urls": []}]'},
        {"PARLEY_ICE_SERVERS": '[{"urls": "turn:x", "username": 5}]'},
        {"PARLEY_ICE_SERVERS": '["stun:x"]'},
        {"PARLEY_ICE_RELAY_ONLY": "1"},  # relay-only without a TURN server
    ],
)
def test_an_unusable_setting_is_a_typed_error(environ: dict[str, str]) -> None:
    with pytest.raises(InvalidIceConfig):
        IceConfig.from_env(environ)


SDP = "\r\n".join(
    [
        "v=0",
        "m=audio 43354 UDP/TLS/RTP/SAVPF 111",
        "a=candidate:1 1 udp 2122194687 127.0.0.1 43354 typ host generation 0",
        "a=candidate:2 1 udp 2122063615 192.0.2.2 56618 typ host generation 0",
        "a=candidate:3 1 tcp 1518214911 127.0.0.1 9 typ host tcptype active",
        "a=candidate:4 1 udp 1685855999 203.0.113.9 50000 typ srflx raddr 192.0.2.2 rport 1",
        "a=fingerprint:sha-256 AB",
        "",
    ]
)


def test_restricting_candidates_drops_only_host_candidates_elsewhere() -> None:
    kept = restrict_candidates(SDP, IceConfig(hosts=("127.0.0.1",)))
    assert "192.0.2.2 56618" not in kept
    assert "127.0.0.1 43354" in kept and "127.0.0.1 9 typ host" in kept
    assert "typ srflx" in kept  # not a host candidate: the restriction is about hosts
    assert kept.endswith("\r\n") and "\r\n\r\n" not in kept


def test_no_restriction_keeps_the_sdp_as_it_is() -> None:
    assert restrict_candidates(SDP, IceConfig()) == SDP

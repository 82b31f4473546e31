"""ICE settings of a softphone: STUN/TURN servers, and which host addresses to offer.

Plain data, usable without the media extra (the browser softphone's server reads it too):

- ``servers``: STUN/TURN servers in the shape of WebRTC's ``RTCIceServer``
  (``{"urls": [...], "username": ..., "credential": ...}``); none by default, so a call
  never reaches out to a public STUN server unasked.
- ``hosts``: when set, the only addresses offered as host candidates. Loopback counts
  (``127.0.0.1``), which WebRTC stacks skip otherwise, so two softphones on one machine
  can talk over the loopback interface only.
- ``relay_only``: offer relayed (TURN) candidates only, so the peer never learns this
  side's addresses; needs a TURN server.

From the environment: ``PARLEY_ICE_HOSTS`` (comma-separated addresses),
``PARLEY_ICE_SERVERS`` (a JSON list of servers) and ``PARLEY_ICE_RELAY_ONLY`` (``1``).
"""

from __future__ import annotations

import ipaddress
import json
import os
from collections.abc import Mapping
from typing import Any

import msgspec

from parley.errors import InvalidIceConfig

HOSTS_VARIABLE = "PARLEY_ICE_HOSTS"
SERVERS_VARIABLE = "PARLEY_ICE_SERVERS"
RELAY_ONLY_VARIABLE = "PARLEY_ICE_RELAY_ONLY"

_SCHEMES = ("stun:", "stuns:", "turn:", "turns:")


class IceServer(msgspec.Struct, frozen=True, kw_only=True):
    """A STUN or TURN server, as a WebRTC ``RTCIceServer``: its URLs and, for TURN, a username and
    credential."""

    urls: tuple[str, ...]
    username: str | None = None
    credential: str | None = None

    def to_json(self) -> dict[str, Any]:
        """As a WebRTC ``RTCIceServer`` dictionary (for a browser page)."""
        entry: dict[str, Any] = {"urls": list(self.urls)}
        if self.username is not None:
            entry["username"] = self.username
        if self.credential is not None:
            entry["credential"] = self.credential
        return entry


class IceConfig(msgspec.Struct, frozen=True, kw_only=True):
    """ICE settings: the STUN/TURN ``servers`` (none by default), the ``hosts`` whose addresses may
    be offered as host candidates (all when empty), and ``relay_only`` (relayed candidates only,
    so the peer never learns this side's addresses). :meth:`from_env` reads ``PARLEY_ICE_*``."""

    servers: tuple[IceServer, ...] = ()
    hosts: tuple[str, ...] = ()
    relay_only: bool = False

    def __post_init__(self) -> None:
        for host in self.hosts:
            try:
                ipaddress.ip_address(host)
            except ValueError:
                raise InvalidIceConfig(f"ICE host {host!r} is not an IP address") from None
        for server in self.servers:
            if not server.urls:
                raise InvalidIceConfig("an ICE server needs at least one URL")
            for url in server.urls:
                if not url.startswith(_SCHEMES):
                    raise InvalidIceConfig(
                        f"ICE server URL {url!r} must start with stun:, stuns:, turn: or turns:"
                    )
        if self.relay_only and not any(
            url.startswith(("turn:", "turns:")) for s in self.servers for url in s.urls
        ):
            raise InvalidIceConfig("relay-only ICE needs a TURN server")

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, *, hosts: tuple[str, ...] = ()
    ) -> IceConfig:
        """The settings of the environment; ``hosts`` given here (``--ice-host``) win."""
        env = os.environ if environ is None else environ
        if not hosts:
            hosts = parse_hosts(env.get(HOSTS_VARIABLE, ""))
        servers = parse_servers(env.get(SERVERS_VARIABLE, ""))
        relay_only = env.get(RELAY_ONLY_VARIABLE, "").strip().lower() in ("1", "true", "yes")
        return cls(servers=servers, hosts=hosts, relay_only=relay_only)

    def to_json(self) -> dict[str, Any]:
        """As a WebRTC ``RTCConfiguration`` dictionary (for a browser page)."""
        return {
            "iceServers": [server.to_json() for server in self.servers],
            "iceTransportPolicy": "relay" if self.relay_only else "all",
        }

    def allows_host(self, address: str) -> bool:
        """Whether a host candidate on ``address`` may be offered."""
        return not self.hosts or address in self.hosts


def parse_hosts(text: str) -> tuple[str, ...]:
    """``"127.0.0.1, ::1"`` as addresses; an empty text is no restriction."""
    return tuple(part.strip() for part in text.split(",") if part.strip())


def parse_servers(text: str) -> tuple[IceServer, ...]:
    """A JSON list of ``RTCIceServer`` dictionaries (``urls`` a string or a list)."""
    if not text.strip():
        return ()
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise InvalidIceConfig(f"{SERVERS_VARIABLE} is not JSON: {exc}") from None
    if not isinstance(value, list):
        raise InvalidIceConfig(f"{SERVERS_VARIABLE} must be a JSON list of servers")
    servers = []
    for entry in value:
        if not isinstance(entry, dict):
            raise InvalidIceConfig("each ICE server is an object with urls")
        urls = entry.get("urls")
        if isinstance(urls, str):
            urls = [urls]
        if not isinstance(urls, list) or not all(isinstance(u, str) for u in urls):
            raise InvalidIceConfig("an ICE server's urls must be a string or a list of them")
        username, credential = entry.get("username"), entry.get("credential")
        if not isinstance(username, str | None) or not isinstance(credential, str | None):
            raise InvalidIceConfig("an ICE server's username and credential must be text")
        servers.append(IceServer(urls=tuple(urls), username=username, credential=credential))
    return tuple(servers)


def restrict_candidates(sdp: str, config: IceConfig) -> str:
    """``sdp`` without the host candidates that ``config.hosts`` leaves out.

    For SDP made by a stack that cannot be told which addresses to gather on (a
    browser): the peer then never tries them."""
    if not config.hosts:
        return sdp
    newline = "\r\n" if "\r\n" in sdp else "\n"
    kept = []
    for line in sdp.split(newline):
        if line.startswith("a=candidate:"):
            fields = line.split()
            # a=candidate:<foundation> <component> <transport> <priority> <address> <port>
            #   typ <type> ...  (RFC 8839 §5.1)
            if len(fields) >= 8 and fields[7] == "host" and not config.allows_host(fields[4]):
                continue
        kept.append(line)
    return newline.join(kept)

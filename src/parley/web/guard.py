"""Who may use the phone page's server: the checks on every HTTP request and WebSocket.

The server listens on the loopback interface, but that alone keeps out only other
machines. Three checks keep out the rest:

- **Host**: every request must name this server as ``127.0.0.1:PORT`` or
  ``localhost:PORT``. A page on ``http://evil.example:PORT`` whose name was made to
  resolve to 127.0.0.1 (DNS rebinding) would be same-origin with itself, not with us;
  its requests carry ``Host: evil.example:PORT`` and are refused.
- **Origin** (WebSockets): a browser sends the origin of the page that opened the
  socket, and WebSockets are not subject to the same-origin policy; so a socket whose
  ``Origin`` is not this server's own (``http://`` + the Host it named) is refused, and
  so is one without an ``Origin``, which no browser page opens.
- **Token**: the page ``/`` and the WebSocket ``/ws`` need ``?token=`` with the secret
  printed in the phone's URL (compared in constant time). Another local process or a
  page that was not opened with that URL does not know it.

Plain functions of the request's parts, so each rule is a unit test.
"""

from __future__ import annotations

import ipaddress
import secrets
from urllib.parse import parse_qs, urlsplit


class Guard:
    """The checks for one server: its loopback ``host``, ``port`` and secret ``token``."""

    def __init__(self, host: str, port: int, token: str) -> None:
        self.token = token
        authority = f"[{host}]" if ":" in host else host
        self.hosts = frozenset({f"{authority}:{port}", f"localhost:{port}"})

    def host_allowed(self, host_header: str | None) -> bool:
        """Whether a request's ``Host`` names this server (DNS rebinding)."""
        return host_header is not None and host_header.strip().lower() in self.hosts

    def origin_allowed(self, origin: str | None, host_header: str) -> bool:
        """Whether a WebSocket's ``Origin`` is the page's own origin on this server."""
        return origin is not None and origin.strip().lower() == f"http://{host_header.lower()}"

    def token_allowed(self, path: str) -> bool:
        """Whether ``path``'s query carries the secret token (exactly one, the right one)."""
        values = parse_qs(urlsplit(path).query).get("token", [])
        # As bytes: compare_digest refuses non-ASCII text, which a query may well hold.
        return len(values) == 1 and secrets.compare_digest(values[0].encode(), self.token.encode())


def is_loopback(host: str) -> bool:
    """The page's server only listens on loopback addresses: never on a network."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False

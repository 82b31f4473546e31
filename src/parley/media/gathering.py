"""ICE candidate gathering as :class:`~parley.ice.IceConfig` asks: only the allowed host
addresses, loopback included, and no STUN server unless one is configured.

aioice, which aiortc gathers with, offers no setting for the host addresses: it lists
every interface but loopback (``aioice.ice.get_host_addresses``). Rather than patch that
in every test or program, this module replaces the function once, with one that answers
from :data:`_ALLOWED` while a gathering of ours runs (a context variable, so it holds
for that gathering's tasks only) and defers to aioice everywhere else.
"""

from __future__ import annotations

import contextlib
import contextvars
import ipaddress
from collections.abc import Callable, Iterator

import aioice.ice
from aiortc import RTCConfiguration, RTCIceServer
from aiortc.rtcconfiguration import RTCIceTransportPolicy

from parley.ice import IceConfig

_ALLOWED: contextvars.ContextVar[tuple[str, ...] | None] = contextvars.ContextVar(
    "parley_ice_hosts", default=None
)
_aioice_host_addresses: Callable[[bool, bool], list[str]] = aioice.ice.get_host_addresses


def _host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
    allowed = _ALLOWED.get()
    if allowed is None:
        return _aioice_host_addresses(use_ipv4, use_ipv6)
    versions = {4} if use_ipv4 else set()
    if use_ipv6:
        versions.add(6)
    return [host for host in allowed if ipaddress.ip_address(host).version in versions]


aioice.ice.get_host_addresses = _host_addresses


@contextlib.contextmanager
def gathering(config: IceConfig) -> Iterator[None]:
    """Gather (``setLocalDescription``) inside this to offer only ``config.hosts``."""
    token = _ALLOWED.set(config.hosts or None)
    try:
        yield
    finally:
        _ALLOWED.reset(token)


def rtc_configuration(config: IceConfig) -> RTCConfiguration:
    """aiortc's configuration; an empty server list (aiortc's default is a public STUN
    server, which a call must not reach out to unasked)."""
    return RTCConfiguration(
        iceServers=[
            RTCIceServer(urls=list(s.urls), username=s.username, credential=s.credential)
            for s in config.servers
        ],
        iceTransportPolicy=(
            RTCIceTransportPolicy.RELAY if config.relay_only else RTCIceTransportPolicy.ALL
        ),
    )

"""Gathering: the host addresses IceConfig allows, loopback included, and no server
unless one is configured (aiortc would otherwise ask a public STUN server)."""

from __future__ import annotations

import aioice.ice
from aiortc import RTCPeerConnection

from parley.ice import IceConfig
from parley.media.gathering import gathering, rtc_configuration
from parley.media.sources import SilenceTrack


def candidates(sdp: str) -> list[list[str]]:
    return [line.split() for line in sdp.splitlines() if line.startswith("a=candidate:")]


async def offer(config: IceConfig) -> str:
    pc = RTCPeerConnection(rtc_configuration(config))
    pc.addTrack(SilenceTrack())
    try:
        with gathering(config):
            await pc.setLocalDescription(await pc.createOffer())
        return str(pc.localDescription.sdp)
    finally:
        await pc.close()


async def test_only_the_allowed_hosts_are_gathered_loopback_included() -> None:
    sdp = await offer(IceConfig(hosts=("127.0.0.1",)))
    found = candidates(sdp)
    assert found and {fields[4] for fields in found} == {"127.0.0.1"}
    assert {fields[7] for fields in found} == {"host"}  # no STUN server asked
    assert "a=end-of-candidates" in sdp  # the whole SDP, never trickled


def test_outside_a_gathering_aioice_is_left_as_it_was() -> None:
    addresses = aioice.ice.get_host_addresses(use_ipv4=True, use_ipv6=False)
    assert "127.0.0.1" not in addresses  # aioice's own rule, for other users of it


def test_no_configured_server_means_none() -> None:
    assert rtc_configuration(IceConfig()).iceServers == []

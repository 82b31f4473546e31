"""Real calls over a real relay process: two softphones (aiortc) talk, and the tests
measure what each side heard."""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import shutil
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiortc import RTCPeerConnection, RTCSessionDescription
from tests.conftest import Register
from tests.media.helpers import LOOPBACK, TOLERANCE, assert_torn_down, heard_frequency

from parley.client import Client
from parley.client.phone_call import IncomingCall
from parley.errors import InvalidSessionDescription
from parley.media import MediaCall, Softphone
from parley.media.analysis import envelope_correlation, read_wav
from parley.media.gathering import gathering, rtc_configuration
from parley.media.sources import ToneTrack, decode_file
from parley.protocol import session_description
from parley.protocol.call import EndReason
from parley.protocol.session_description import SdpType

pytestmark = pytest.mark.e2e

A_TONE, B_TONE = 440.0, 1000.0
TALK = 1.5  # seconds of audio each test lets flow before it measures


@dataclass
class Pair:
    a: Softphone
    b: Softphone
    tmp: Path

    @property
    def a_id(self) -> str:
        return self.a.client.id

    @property
    def b_id(self) -> str:
        return self.b.client.id


@pytest.fixture
async def pair(register: Register, tmp_path: Path) -> AsyncIterator[Pair]:
    (_, a_path), (_, b_path) = await asyncio.gather(register("alice"), register("bob"))
    a, b = Client.from_credentials(a_path), Client.from_credentials(b_path)
    phones = Pair(
        Softphone(a, source=f"tone:{A_TONE:g}", ice=LOOPBACK),
        Softphone(b, source=f"tone:{B_TONE:g}", ice=LOOPBACK),
        tmp_path,
    )
    async with a, b:
        await asyncio.gather(a.connections.permit(b.id), b.connections.permit(a.id))
        yield phones
        await asyncio.gather(phones.a.close(), phones.b.close())


async def next_incoming(phone: Softphone) -> IncomingCall:
    async with asyncio.timeout(10):
        async for incoming in phone.incoming():
            return incoming
    raise AssertionError("the client closed before a call rang")


async def answer_next(phone: Softphone, **kwargs: object) -> MediaCall:
    return await phone.answer(await next_incoming(phone), **kwargs)  # type: ignore[arg-type]


async def test_direct_call_each_side_hears_the_others_tone(pair: Pair) -> None:
    a_heard, b_heard = pair.tmp / "a.wav", pair.tmp / "b.wav"
    caller = await pair.a.call(pair.b_id, record=a_heard)
    callee = await answer_next(pair.b, record=b_heard)
    await asyncio.gather(caller.wait_audio(10), callee.wait_audio(10))
    await asyncio.sleep(TALK)
    stats = await caller.stats()
    assert stats.connection == "connected"
    assert stats.packets_received > 0
    assert stats.level_dbfs > -30  # a 0.3 full-scale tone is about -13.5 dBFS
    await caller.hangup()
    records = await asyncio.gather(caller.wait_ended(), callee.wait_ended())
    assert [r.reason for r in records] == [EndReason.HANGUP, EndReason.HANGUP]
    await assert_torn_down(caller, callee)
    assert heard_frequency(a_heard) == pytest.approx(B_TONE, abs=TOLERANCE)
    assert heard_frequency(b_heard) == pytest.approx(A_TONE, abs=TOLERANCE)


async def test_speech_arrives_with_its_envelope(pair: Pair) -> None:
    espeak = shutil.which("espeak-ng")
    if espeak is None:
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng)")
    speech = pair.tmp / "speech.wav"
    await asyncio.to_thread(
        subprocess.run,
        [espeak, "-w", str(speech), "Parley calls carry real voices, end to end encrypted."],
        check=True,
        capture_output=True,
    )
    source, rate = read_wav(speech)
    heard = pair.tmp / "heard.wav"
    caller = await pair.a.call(pair.b_id, source=str(speech))
    callee = await answer_next(pair.b, record=heard)
    await callee.wait_audio(10)
    await asyncio.sleep(len(source) / rate + 0.5)
    await caller.hangup()
    await callee.wait_ended()
    recording, recorded_rate = read_wav(heard)
    assert recorded_rate == 48_000
    # espeak speaks at 22.05 kHz: compare envelopes, which do not depend on the rate.
    resampled = decode_file(speech).astype(float) / 32768.0
    assert envelope_correlation(resampled, recording, recorded_rate) > 0.7


async def test_glare_both_sides_hear_each_other(pair: Pair) -> None:
    a_heard, b_heard = pair.tmp / "a.wav", pair.tmp / "b.wav"
    a_call, b_call = await asyncio.gather(
        pair.a.call(pair.b_id, record=a_heard), pair.b.call(pair.a_id, record=b_heard)
    )
    await asyncio.gather(a_call.wait_audio(10), b_call.wait_audio(10))
    assert a_call.call_id == b_call.call_id  # one call: the lower call_id's
    await asyncio.sleep(TALK)
    await a_call.hangup()
    await asyncio.gather(a_call.wait_ended(), b_call.wait_ended())
    await assert_torn_down(a_call, b_call)
    assert heard_frequency(a_heard) == pytest.approx(B_TONE, abs=TOLERANCE)
    assert heard_frequency(b_heard) == pytest.approx(A_TONE, abs=TOLERANCE)


async def test_hang_up_while_ringing_leaves_nothing_running(pair: Pair) -> None:
    caller = await pair.a.call(pair.b_id)
    incoming = await next_incoming(pair.b)
    await caller.hangup()
    record = await caller.wait_ended()
    assert record.reason is EndReason.HANGUP
    assert (await incoming.wait_ended()).reason is EndReason.HANGUP
    await assert_torn_down(caller)


async def test_hang_up_during_ice_leaves_nothing_running(pair: Pair) -> None:
    caller = await pair.a.call(pair.b_id)
    callee = await answer_next(pair.b)
    # The accept is sent before the callee's media can have connected: hang up now.
    await callee.hangup()
    assert (await caller.wait_ended()).reason is EndReason.HANGUP
    await callee.wait_ended()
    await assert_torn_down(caller, callee)


async def test_hang_up_while_connected_leaves_nothing_running(pair: Pair) -> None:
    caller = await pair.a.call(pair.b_id)
    callee = await answer_next(pair.b)
    await asyncio.gather(caller.wait_audio(10), callee.wait_audio(10))
    await callee.hangup()
    assert (await caller.wait_ended()).reason is EndReason.HANGUP
    await assert_torn_down(caller, callee)


async def test_busy_ends_the_callers_media(pair: Pair) -> None:
    caller = await pair.a.call(pair.b_id)
    async with asyncio.timeout(10):
        async for incoming in pair.b.incoming():
            await incoming.busy()
            break
    assert (await caller.wait_ended()).reason is EndReason.BUSY
    await assert_torn_down(caller)


async def test_ring_timeout_ends_the_callers_media(pair: Pair) -> None:
    caller = await pair.a.call(pair.b_id, lifetime=1)
    assert (await caller.wait_ended()).reason is EndReason.TIMEOUT
    await assert_torn_down(caller)


# -- session descriptions that must not be used ------------------------------------------


async def real_sdp(kind: str) -> str:
    """A real offer (or an answer to one) from aiortc, gathered on loopback."""
    offerer = RTCPeerConnection(rtc_configuration(LOOPBACK))
    offerer.addTrack(ToneTrack(A_TONE))
    with gathering(LOOPBACK):
        await offerer.setLocalDescription(await offerer.createOffer())
    if kind == "offer":
        await offerer.close()
        return str(offerer.localDescription.sdp)
    answerer = RTCPeerConnection(rtc_configuration(LOOPBACK))
    answerer.addTrack(ToneTrack(B_TONE))
    await answerer.setRemoteDescription(offerer.localDescription)
    with gathering(LOOPBACK):
        await answerer.setLocalDescription(await answerer.createAnswer())
    await asyncio.gather(offerer.close(), answerer.close())
    return str(answerer.localDescription.sdp)


def bad_peer_infos(kind: str, sdp: str) -> dict[str, str]:
    other = "answer" if kind == "offer" else "offer"
    return {
        "not JSON": sdp,
        "wrong v": json.dumps({"v": 2, "type": kind, "sdp": sdp}),
        "wrong type": json.dumps({"v": 1, "type": other, "sdp": sdp}),
        "no sdp": json.dumps({"v": 1, "type": kind}),
        "no audio": json.dumps({"v": 1, "type": kind, "sdp": sdp.replace("m=audio", "m=video")}),
        "over 16 KiB": json.dumps({"v": 1, "type": kind, "sdp": sdp + "a=x-pad:" + "p" * 16_500}),
    }


BAD = list(bad_peer_infos("offer", "v=0\r\n"))


@pytest.mark.parametrize("bad", BAD)
async def test_an_unusable_offer_fails_the_call_on_both_sides(pair: Pair, bad: str) -> None:
    peer_info = bad_peer_infos("offer", await real_sdp("offer"))[bad]
    call = await pair.a.calls.place(pair.b_id, peer_info)
    incoming = await next_incoming(pair.b)
    with pytest.raises(InvalidSessionDescription):
        await pair.b.answer(incoming)
    assert (await incoming.wait_ended()).reason is EndReason.FAILED
    assert (await call.wait_ended()).reason is EndReason.FAILED
    await assert_torn_down()


@pytest.mark.parametrize("bad", BAD)
async def test_an_unusable_answer_fails_the_call_on_both_sides(pair: Pair, bad: str) -> None:
    caller = await pair.a.call(pair.b_id)
    incoming = await next_incoming(pair.b)
    await incoming.accept(bad_peer_infos("answer", await real_sdp("answer"))[bad])
    assert (await caller.wait_ended()).reason is EndReason.FAILED
    assert caller.failure is not None and "answer is unusable" in caller.failure
    assert (await incoming.wait_ended()).reason is EndReason.FAILED
    await assert_torn_down(caller)


async def test_media_whose_fingerprint_is_not_the_signed_one_is_refused(pair: Pair) -> None:
    """The DTLS certificate must be the one the signed SDP names: here the callee's stack
    answers with another fingerprint than its certificate's (what a party in the middle
    swapping certificates would have to send), and the caller refuses the media."""
    caller = await pair.a.call(pair.b_id)
    incoming = await next_incoming(pair.b)
    offer = session_description.parse(incoming.peer_info, SdpType.OFFER)
    stack = RTCPeerConnection(rtc_configuration(LOOPBACK))
    stack.addTrack(ToneTrack(B_TONE))
    await stack.setRemoteDescription(RTCSessionDescription(sdp=offer.sdp, type="offer"))
    with gathering(LOOPBACK):
        await stack.setLocalDescription(await stack.createAnswer())
    real = stack.localDescription.sdp
    forged_fingerprint = ":".join(f"{b:02X}" for b in secrets.token_bytes(32))
    forged = re.sub(
        r"a=fingerprint:sha-256 \S+", f"a=fingerprint:sha-256 {forged_fingerprint}", real
    )
    assert forged != real
    await incoming.accept(session_description.answer(forged))
    try:
        assert (await caller.wait_ended()).reason is EndReason.FAILED
        assert caller.failure is not None and "DTLS" in caller.failure
        assert caller.frames_received == 0
        assert (await incoming.wait_ended()).reason is EndReason.FAILED
    finally:
        await stack.close()
    await assert_torn_down(caller)


async def test_media_that_stops_fails_the_call(register: Register, tmp_path: Path) -> None:
    (_, a_path), (_, b_path) = await asyncio.gather(register("alice"), register("bob"))
    async with Client.from_credentials(a_path) as a, Client.from_credentials(b_path) as b:
        await asyncio.gather(a.connections.permit(b.id), b.connections.permit(a.id))
        watchful = Softphone(a, source="tone:440", ice=LOOPBACK, media_timeout=1.0)
        callee_phone = Softphone(b, source="tone:1000", ice=LOOPBACK)
        caller = await watchful.call(b.id)
        callee = await answer_next(callee_phone)
        await caller.wait_audio(10)
        await callee._close_connection()  # its media stops; nothing is said on the call
        assert (await caller.wait_ended()).reason is EndReason.FAILED
        assert caller.failure is not None and "no audio" in caller.failure
        assert (await callee.wait_ended()).reason is EndReason.FAILED
        await assert_torn_down(caller, callee)

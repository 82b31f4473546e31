"""A softphone: calls of :meth:`Client.calls` with real audio (aiortc, DTLS-SRTP).

::

    phone = Softphone(client, source="tone:440")
    call = await phone.call(peer_id, record="heard.wav")    # offer in the start
    await call.wait_audio()                                  # the peer's audio arrives
    print(await call.stats())                                # state, packets, level, RTT
    await call.hangup()

    async for incoming in phone.incoming():
        call = await phone.answer(incoming)                  # answer from the offer

Each :class:`MediaCall` owns one ``RTCPeerConnection``, follows its call's events and
keeps the two together: the call ending (hang-up, busy, timeout, the peer gone) closes
the media (tracks stopped, connection closed, no task left), and the media failing (an
unusable session description, ICE or DTLS failing, no audio for ``media_timeout``
seconds) ends the call ``failed``, which sends the peer a stop.

SDP goes whole, never trickled (aiortc gathers every candidate before
``setLocalDescription`` returns), in the ``peer_info`` JSON of
:mod:`parley.protocol.session_description`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import av
import msgspec
import numpy as np
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from parley.client.phone_call import Call, IncomingCall
from parley.errors import InvalidSessionDescription, MediaError, ParleyError, StateError
from parley.ice import IceConfig
from parley.media.gathering import gathering, rtc_configuration
from parley.media.sinks import AudioSink, open_sink
from parley.media.sources import RATE, open_source
from parley.protocol import session_description
from parley.protocol.call import CallRecord
from parley.protocol.call_io import Connected, Ended
from parley.protocol.call_phone import PhoneConfig
from parley.protocol.session_description import SdpType

if TYPE_CHECKING:
    from parley.client.calls import Calls
    from parley.client.client import Client

log = logging.getLogger(__name__)

MEDIA_TIMEOUT: Final = 10.0  # seconds without audio (or to connect) before a call fails
LEVEL_WINDOW: Final = 10  # frames (200 ms) the level meter averages


class MediaStats(msgspec.Struct, frozen=True, kw_only=True):
    """What shows a call is alive. ``connection`` is the peer connection's state (new,
    connecting, connected, failed, closed); ``level_dbfs`` the loudness of the last
    200 ms heard; ``round_trip`` seconds, from RTCP, once known."""

    connection: str
    packets_received: int
    packets_lost: int
    frames_received: int
    level_dbfs: float
    round_trip: float | None


class MediaCall:
    """One call with its media. ``call`` is the call API's object (state, record);
    ``failure`` says why the media ended the call, if it did."""

    def __init__(self, phone: Softphone, source: str, sink: AudioSink) -> None:
        self._phone = phone
        self._source_spec = source
        self._sink = sink
        self.call: Call | None = None
        self.failure: str | None = None
        self.frames_received = 0
        self._levels: list[float] = []
        self._pc: RTCPeerConnection | None = None
        self._source: MediaStreamTrack | None = None
        self._awaiting_answer = False
        self._heard = asyncio.Event()
        self._last_frame = 0.0
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = asyncio.Event()
        self._ending = False

    def __repr__(self) -> str:
        return f"<MediaCall {self.call!r} frames={self.frames_received}>"

    @property
    def call_id(self) -> str:
        """The call's id on the wire (empty before the call exists)."""
        return "" if self.call is None else self.call.call_id

    @property
    def closed(self) -> bool:
        """The media is torn down: tracks stopped, peer connection closed."""
        return self._closed.is_set()

    @property
    def connection_state(self) -> str:
        """The peer connection's state (new, connecting, connected, failed, closed)."""
        return "closed" if self._pc is None else self._pc.connectionState

    @property
    def level_dbfs(self) -> float:
        """The loudness of the last 200 ms heard, in dBFS (-inf before any audio)."""
        if not self._levels:
            return -math.inf
        power = sum(self._levels) / len(self._levels)
        return 10 * math.log10(power) if power > 0 else -math.inf

    async def wait_audio(self, timeout: float | None = None) -> None:
        """Until the first frame of the peer's audio arrived. Raises :class:`MediaError`
        if the call ended first, ``TimeoutError`` after ``timeout`` seconds."""
        heard = asyncio.ensure_future(self._heard.wait())
        closed = asyncio.ensure_future(self._closed.wait())
        try:
            async with asyncio.timeout(timeout):
                await asyncio.wait((heard, closed), return_when=asyncio.FIRST_COMPLETED)
        finally:
            heard.cancel()
            closed.cancel()
        if not self._heard.is_set():
            raise MediaError(f"call {self.call_id} ended before any audio arrived")

    async def wait_ended(self) -> CallRecord:
        """The call's record, once the call ended and its media is torn down."""
        if self.call is None:
            raise StateError("the call was never placed")
        record = await self.call.wait_ended()
        await self._closed.wait()
        return record

    async def hangup(self) -> None:
        """Hang up (decline, if it still rings); the media closes with the call."""
        if self.call is not None:
            await self.call.hangup()
        await self._closed.wait()

    async def stats(self) -> MediaStats:
        """What shows the call is alive: connection state, packets received and lost, frames, level,
        round trip."""
        packets = lost = 0
        round_trip: float | None = None
        if self._pc is not None and not self.closed:
            for stat in (await self._pc.getStats()).values():
                if stat.type == "inbound-rtp":
                    packets += int(stat.packetsReceived or 0)
                    lost += max(0, int(stat.packetsLost or 0))
                elif stat.type == "remote-inbound-rtp" and stat.roundTripTime is not None:
                    round_trip = float(stat.roundTripTime)
        return MediaStats(
            connection=self.connection_state,
            packets_received=packets,
            packets_lost=lost,
            frames_received=self.frames_received,
            level_dbfs=self.level_dbfs,
            round_trip=round_trip,
        )

    # -- setting up ------------------------------------------------------------------

    def _new_connection(self) -> RTCPeerConnection:
        pc = RTCPeerConnection(rtc_configuration(self._phone.ice))
        self._source = open_source(self._source_spec)
        pc.addTrack(self._source)
        pc.on("track", self._on_track)
        pc.on("connectionstatechange", self._on_connection_state)
        self._pc = pc
        return pc

    async def _local_description(self, pc: RTCPeerConnection, kind: SdpType) -> str:
        description = await (pc.createOffer() if kind is SdpType.OFFER else pc.createAnswer())
        with gathering(self._phone.ice):
            await pc.setLocalDescription(description)
        sdp = pc.localDescription.sdp
        return (
            session_description.offer(sdp)
            if kind is SdpType.OFFER
            else session_description.answer(sdp)
        )

    async def _offer(self) -> str:
        self._awaiting_answer = True
        return await self._local_description(self._new_connection(), SdpType.OFFER)

    async def _answer_to(self, peer_info: str) -> str:
        """Our answer to the offer in ``peer_info`` (raises InvalidSessionDescription)."""
        offer = session_description.parse(peer_info, SdpType.OFFER)
        self._awaiting_answer = False
        if self._pc is not None:  # the offer we made before losing glare: no use now
            await self._close_connection()
        pc = self._new_connection()
        await pc.setRemoteDescription(RTCSessionDescription(sdp=offer.sdp, type="offer"))
        return await self._local_description(pc, SdpType.ANSWER)

    def _follow(self, call: Call) -> None:
        self.call = call
        self._spawn(self._follow_events(call), "parley-media-call")

    def _spawn(self, work: Any, name: str) -> None:
        task = asyncio.ensure_future(work)
        task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _follow_events(self, call: Call) -> None:
        try:
            async for event in call.events():
                if isinstance(event, Connected):
                    await self._connected(event)
                elif isinstance(event, Ended):
                    log.info("call %s ended (%s): closing its media", call.call_id, event.reason)
        finally:
            await self._teardown()

    async def _connected(self, event: Connected) -> None:
        if self._awaiting_answer:
            self._awaiting_answer = False
            try:
                answer = session_description.parse(event.peer_info, SdpType.ANSWER)
                assert self._pc is not None
                await self._pc.setRemoteDescription(
                    RTCSessionDescription(sdp=answer.sdp, type="answer")
                )
            except (InvalidSessionDescription, ValueError) as exc:
                await self._fail(f"the peer's answer is unusable: {exc}")
                return
        self._spawn(self._watchdog(), "parley-media-watchdog")

    # -- running ---------------------------------------------------------------------

    def _on_track(self, track: MediaStreamTrack) -> None:
        if track.kind == "audio":
            self._spawn(self._receive(track), "parley-media-receive")

    def _on_connection_state(self) -> None:
        if self._pc is not None and self._pc.connectionState == "failed":
            self._spawn(self._fail("the media connection failed (ICE or DTLS)"), "parley-fail")

    async def _receive(self, track: MediaStreamTrack) -> None:
        resampler = av.AudioResampler(format="s16", layout="mono", rate=RATE)
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            assert isinstance(frame, av.AudioFrame)
            for mono in resampler.resample(frame):
                pcm = mono.to_ndarray().reshape(-1).astype(np.int16)
                self._sink.write(pcm)
                scaled = pcm.astype(np.float64) / 32768.0
                self._levels.append(float(np.mean(scaled * scaled)) if len(scaled) else 0.0)
                del self._levels[:-LEVEL_WINDOW]
            self.frames_received += 1
            self._last_frame = time.monotonic()
            self._heard.set()

    async def _watchdog(self) -> None:
        """Fail the call when the media does not come up, or stops, for media_timeout."""
        timeout = self._phone.media_timeout
        try:
            # Not wait_for: on Python 3.11 it can swallow the cancel of a teardown.
            async with asyncio.timeout(timeout):
                await self._heard.wait()
        except TimeoutError:
            await self._fail(f"no audio arrived within {timeout:g} s of the answer")
            return
        while not self.closed:
            silent_for = time.monotonic() - self._last_frame
            if silent_for >= timeout:
                await self._fail(f"no audio for {silent_for:.1f} s")
                return
            await asyncio.sleep(min(1.0, timeout - silent_for))

    async def _fail(self, why: str) -> None:
        if self._ending or self.call is None or self.call.record is not None:
            return
        self._ending = True
        self.failure = why
        log.warning("call %s with %s failed: %s", self.call.call_id, self.call.peer, why)
        with contextlib.suppress(ParleyError):
            await self.call.fail()

    # -- ending ----------------------------------------------------------------------

    async def _close_connection(self) -> None:
        pc, source = self._pc, self._source
        self._pc = self._source = None
        if source is not None:
            source.stop()
        if pc is not None:
            await pc.close()

    async def _teardown(self) -> None:
        if self.closed:
            return
        current = asyncio.current_task()
        for task in list(self._tasks):
            if task is not current:
                task.cancel()
        await asyncio.gather(*(t for t in self._tasks if t is not current), return_exceptions=True)
        await self._close_connection()
        try:
            await self._sink.close()
        except (OSError, MediaError) as exc:
            log.warning("call %s: closing its recording failed: %s", self.call_id, exc)
        self._phone._ended(self)
        self._closed.set()


class Softphone:
    """Places and answers calls with audio. ``source``: what this phone plays (``tone:HZ``,
    ``silence``, ``mic`` or a sound file); ``ice``: servers and host addresses (default:
    from the environment, ``PARLEY_ICE_HOSTS`` and friends, see :mod:`parley.ice`);
    ``config`` goes to :meth:`Client.calls` (ring lifetime, grace, auto-busy)."""

    def __init__(
        self,
        client: Client,
        *,
        source: str = "silence",
        ice: IceConfig | None = None,
        media_timeout: float = MEDIA_TIMEOUT,
        config: PhoneConfig | None = None,
    ) -> None:
        self.client = client
        self.source = source
        self.ice = IceConfig.from_env() if ice is None else ice
        self.media_timeout = media_timeout
        self.calls: Calls = client.calls(config)
        self._live: set[MediaCall] = set()

    @property
    def live(self) -> list[MediaCall]:
        """Calls whose media is not torn down yet."""
        return list(self._live)

    async def call(
        self,
        peer: str,
        *,
        source: str | None = None,
        record: str | Path | None = None,
        data: Mapping[str, Any] | None = None,
        lifetime: float | None = None,
        cid: str | None = None,
    ) -> MediaCall:
        """Call ``peer`` with an offer; returns once the start is sent. The media
        connects when the peer answers (``wait_audio``). ``record``: a WAV path, or
        ``speaker``; nothing is kept without it."""
        media = MediaCall(self, source or self.source, open_sink(record))
        self._live.add(media)
        try:
            peer_info = await media._offer()
            call = await self.calls.place(
                peer, peer_info, data, lifetime=lifetime, cid=cid, on_glare=media._answer_to
            )
        except BaseException:
            await media._teardown()
            raise
        media._follow(call)
        return media

    async def answer(
        self,
        incoming: IncomingCall,
        *,
        source: str | None = None,
        record: str | Path | None = None,
        data: Mapping[str, Any] | None = None,
    ) -> MediaCall:
        """Answer a ringing call with an answer to its offer. An offer that is unusable
        ends the call ``failed`` (the caller is told) and raises
        :class:`InvalidSessionDescription`; a call that stopped ringing meanwhile raises
        :class:`~parley.errors.IllegalTransition`."""
        media = MediaCall(self, source or self.source, open_sink(record))
        self._live.add(media)
        try:
            try:
                peer_info = await media._answer_to(incoming.peer_info)
            except InvalidSessionDescription as exc:
                log.warning(
                    "call %s from %s: unusable offer: %s", incoming.call_id, incoming.peer, exc
                )
                media.failure = f"the caller's offer is unusable: {exc}"
                with contextlib.suppress(ParleyError):
                    await incoming.fail()
                raise
            call = await incoming.accept(peer_info, data)
        except BaseException:
            await media._teardown()
            raise
        media._follow(call)
        return media

    async def incoming(self) -> AsyncIterator[IncomingCall]:
        """Calls ringing here (see :meth:`Calls.incoming`)."""
        async for incoming in self.calls.incoming():
            yield incoming

    async def close(self) -> None:
        """Hang up every call and tear its media down."""
        for media in self.live:
            with contextlib.suppress(ParleyError):
                await media.hangup()
        for media in self.live:
            await media._teardown()

    def _ended(self, media: MediaCall) -> None:
        self._live.discard(media)

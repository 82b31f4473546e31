"""What a softphone sends: a generated tone, silence, a WAV file, or the microphone.

``open_source(spec)`` turns the command line's SOURCE into a track: ``tone:HZ``,
``silence``, ``mic`` (the machine's default capture device) or a path to a WAV file.

Tone, silence and file are paced here (aiortc pulls ``recv()`` as fast as it is
answered; a live source must hand out 20 ms every 20 ms) from samples computed or
decoded up front: a frame is a slice, so nothing heavy runs on the event loop while a
call is up. A file is decoded with PyAV, so any rate or channel layout works; it plays
once, then the track sends silence (the call stays up until someone hangs up).
"""

from __future__ import annotations

import abc
import asyncio
import fractions
import time
from pathlib import Path
from typing import Final

import av
import numpy as np
import numpy.typing as npt
from aiortc.contrib.media import MediaPlayer
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from parley.errors import MediaError, MediaUnavailable

RATE: Final = 48_000  # Opus' clock; every source and sink here works at this rate, mono
FRAME_SECONDS: Final = 0.020
FRAME_SAMPLES: Final = int(RATE * FRAME_SECONDS)
TONE_AMPLITUDE: Final = 0.3  # of full scale: loud enough to measure, far from clipping
MAX_FILE_SECONDS: Final = 600  # a longer file is a mistake, not a greeting

Samples = npt.NDArray[np.int16]


class PacedTrack(MediaStreamTrack):
    """An audio track that hands out ``FRAME_SAMPLES`` of its signal every 20 ms."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self._start: float | None = None
        self._pts = 0

    @abc.abstractmethod
    def samples(self, offset: int, count: int) -> Samples:
        """``count`` samples from sample ``offset`` on (mono, int16)."""

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self._start is None:
            self._start = time.monotonic()
        else:
            wait = self._start + self._pts / RATE - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
        pcm = self.samples(self._pts, FRAME_SAMPLES)
        frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = RATE
        frame.pts = self._pts
        frame.time_base = fractions.Fraction(1, RATE)
        self._pts += FRAME_SAMPLES
        return frame


class ToneTrack(PacedTrack):
    """A sine at ``frequency`` Hz."""

    def __init__(self, frequency: float, amplitude: float = TONE_AMPLITUDE) -> None:
        super().__init__()
        if not 20 <= frequency <= RATE / 2:
            raise MediaError(f"a tone must be between 20 and {RATE // 2} Hz, not {frequency}")
        self.frequency = frequency
        self._amplitude = amplitude * 32767

    def samples(self, offset: int, count: int) -> Samples:
        t = np.arange(offset, offset + count, dtype=np.float64) / RATE
        return (np.sin(2 * np.pi * self.frequency * t) * self._amplitude).astype(np.int16)


class SilenceTrack(PacedTrack):
    def samples(self, offset: int, count: int) -> Samples:
        return np.zeros(count, dtype=np.int16)


class FileTrack(PacedTrack):
    """A sound file (WAV or anything PyAV decodes), once, then silence."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path
        self._pcm = decode_file(path)

    def samples(self, offset: int, count: int) -> Samples:
        chunk = self._pcm[offset : offset + count]
        if len(chunk) < count:
            chunk = np.concatenate([chunk, np.zeros(count - len(chunk), dtype=np.int16)])
        return chunk


def decode_file(path: Path) -> Samples:
    """The whole file as mono int16 at :data:`RATE`."""
    if not path.is_file():
        raise MediaError(f"no sound file at {path}")
    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise MediaError(f"{path} has no audio stream")
            resampler = av.AudioResampler(format="s16", layout="mono", rate=RATE)
            chunks: list[Samples] = []
            total = 0
            for frame in container.decode(audio=0):
                for out in resampler.resample(frame):
                    chunk = out.to_ndarray().reshape(-1).astype(np.int16)
                    chunks.append(chunk)
                    total += len(chunk)
                if total > MAX_FILE_SECONDS * RATE:
                    raise MediaError(f"{path} is longer than {MAX_FILE_SECONDS} s")
            for out in resampler.resample(None):
                chunks.append(out.to_ndarray().reshape(-1).astype(np.int16))
    except av.FFmpegError as exc:
        raise MediaError(f"cannot read {path} as sound: {exc}") from None
    return np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int16)


def open_microphone() -> MediaStreamTrack:
    """The default capture device (PulseAudio, else ALSA)."""
    errors = []
    for fmt in ("pulse", "alsa"):
        try:
            player = MediaPlayer("default", format=fmt, options={"channels": "1"})
        except (av.FFmpegError, OSError, ValueError) as exc:
            errors.append(f"{fmt}: {exc}")
            continue
        if player.audio is not None:
            return player.audio
    raise MediaUnavailable("this machine has no usable microphone (" + "; ".join(errors) + ")")


def open_source(spec: str) -> MediaStreamTrack:
    """A track for SOURCE: ``tone:HZ``, ``silence``, ``mic`` or a sound file's path."""
    if spec.startswith("tone:"):
        try:
            frequency = float(spec.removeprefix("tone:"))
        except ValueError:
            raise MediaError(f"{spec!r}: a tone is tone:HZ, e.g. tone:440") from None
        return ToneTrack(frequency)
    if spec == "silence":
        return SilenceTrack()
    if spec in ("mic", "microphone"):
        return open_microphone()
    return FileTrack(Path(spec))

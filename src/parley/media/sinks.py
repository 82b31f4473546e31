"""What a softphone does with what it hears: record it to a WAV file, discard it, or play
it on the speaker. Every sink takes mono int16 samples at :data:`~.sources.RATE`.

Writing a WAV file is a small blocking write per 20 ms frame (3.8 kB); the recorder
batches them and writes from a worker thread, so the event loop never waits on the disk.
"""

from __future__ import annotations

import asyncio
import wave
from pathlib import Path
from typing import Protocol

import av
import numpy as np

from parley.errors import MediaError, MediaUnavailable
from parley.media.sources import RATE, Samples

FLUSH_SAMPLES = RATE // 2  # write to disk about twice a second


class AudioSink(Protocol):
    def write(self, samples: Samples) -> None: ...

    async def close(self) -> None: ...


class Discard:
    """Hears and forgets (the received audio is still counted and metered)."""

    def write(self, samples: Samples) -> None:
        pass

    async def close(self) -> None:
        pass


class WavRecorder:
    """Records to ``path``: a 48 kHz mono 16-bit WAV file, complete once closed."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        try:
            # Opened here, not by wave.open: a wave writer that failed to open its file
            # raises again from its __del__.
            self._raw = self.path.open("wb")
        except OSError as exc:
            raise MediaError(f"cannot record to {self.path}: {exc}") from None
        self._file = wave.open(self._raw, "wb")  # noqa: SIM115
        self._file.setnchannels(1)
        self._file.setsampwidth(2)
        self._file.setframerate(RATE)
        self._pending: list[Samples] = []
        self._pending_samples = 0
        self._writing: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    def write(self, samples: Samples) -> None:
        self._pending.append(samples)
        self._pending_samples += len(samples)
        if self._pending_samples >= FLUSH_SAMPLES and (
            self._writing is None or self._writing.done()
        ):
            self._writing = asyncio.ensure_future(self._flush())

    async def _flush(self) -> None:
        async with self._lock:
            chunk, self._pending, self._pending_samples = self._pending, [], 0
            if chunk:
                data = np.concatenate(chunk).astype("<i2").tobytes()
                await asyncio.to_thread(self._file.writeframes, data)

    async def close(self) -> None:
        await self._flush()
        await asyncio.to_thread(self._close_files)

    def _close_files(self) -> None:
        self._file.close()  # writes the header's final sizes
        self._raw.close()


class Speaker:
    """The machine's default playback device (PulseAudio, else ALSA)."""

    def __init__(self) -> None:
        errors = []
        for fmt in ("pulse", "alsa"):
            try:
                container = av.open("default", mode="w", format=fmt)
            except (av.FFmpegError, OSError, ValueError) as exc:
                errors.append(f"{fmt}: {exc}")
                continue
            try:
                self._stream = container.add_stream("pcm_s16le", rate=RATE, layout="mono")
                container.start_encoding()  # opens the device now, not at the first frame
            except (av.FFmpegError, OSError, ValueError) as exc:
                errors.append(f"{fmt}: {exc}")
                container.close()
                continue
            self._container = container
            return
        raise MediaUnavailable("this machine has no usable speaker (" + "; ".join(errors) + ")")

    def write(self, samples: Samples) -> None:
        frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = RATE
        for packet in self._stream.encode(frame):
            self._container.mux(packet)

    async def close(self) -> None:
        self._container.close()


def open_sink(spec: str | Path | None) -> AudioSink:
    """A sink for ``--record``: None discards, ``speaker`` plays, else a WAV path."""
    if spec is None:
        return Discard()
    if str(spec) == "speaker":
        return Speaker()
    return WavRecorder(spec)

"""Sources: paced 20 ms frames of a tone, silence or a decoded file."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import pytest

from parley.errors import MediaError, MediaUnavailable
from parley.media.analysis import dominant_frequency
from parley.media.sources import (
    FRAME_SAMPLES,
    RATE,
    FileTrack,
    SilenceTrack,
    ToneTrack,
    decode_file,
    open_source,
)


async def frames(track: ToneTrack | SilenceTrack | FileTrack, count: int) -> np.ndarray:
    pcm = []
    for expected_pts in range(0, count * FRAME_SAMPLES, FRAME_SAMPLES):
        frame = await track.recv()
        assert (frame.sample_rate, frame.samples, frame.pts) == (RATE, FRAME_SAMPLES, expected_pts)
        pcm.append(frame.to_ndarray().reshape(-1))
    return np.concatenate(pcm)


async def test_a_tone_is_its_frequency_without_a_seam_between_frames() -> None:
    pcm = await frames(ToneTrack(440), 25)  # half a second
    assert dominant_frequency(pcm, RATE) == pytest.approx(440, abs=1)
    assert np.max(np.abs(np.diff(pcm.astype(np.int32)))) < 32767 * 0.3 * 0.06


async def test_silence_is_zeros() -> None:
    assert not np.any(await frames(SilenceTrack(), 3))


def write_wav(path: Path, samples: np.ndarray, rate: int, channels: int = 1) -> None:
    with wave.open(str(path), "wb") as f:
        f.setnchannels(channels)
        f.setsampwidth(2)
        f.setframerate(rate)
        f.writeframes(samples.astype("<i2").tobytes())


async def test_a_file_at_another_rate_and_in_stereo_plays_then_goes_silent(tmp_path: Path) -> None:
    t = np.arange(int(22_050 * 0.2)) / 22_050
    tone = (np.sin(2 * np.pi * 700 * t) * 12_000).astype(np.int16)
    path = tmp_path / "stereo.wav"
    write_wav(path, np.repeat(tone, 2), 22_050, channels=2)
    pcm = await frames(FileTrack(path), 15)  # 0.3 s: 0.2 s of file, then silence
    assert dominant_frequency(pcm[: int(RATE * 0.18)], RATE) == pytest.approx(700, abs=3)
    assert not np.any(pcm[int(RATE * 0.22) :])


def test_source_specs() -> None:
    tone = open_source("tone:1000")
    assert isinstance(tone, ToneTrack) and tone.frequency == 1000
    assert isinstance(open_source("silence"), SilenceTrack)


@pytest.mark.parametrize("spec", ["tone:loud", "tone:5", "tone:30000", "tone:nan"])
def test_a_tone_that_cannot_be_played_is_a_typed_error(spec: str) -> None:
    with pytest.raises(MediaError):
        open_source(spec)


def test_a_missing_or_unreadable_file_is_a_typed_error(tmp_path: Path) -> None:
    with pytest.raises(MediaError, match="no sound file"):
        decode_file(tmp_path / "missing.wav")
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"RIFF not really")
    with pytest.raises(MediaError):
        decode_file(junk)


def test_the_microphone_is_a_track_or_a_typed_error_naming_the_machine() -> None:
    try:
        track = open_source("mic")
    except MediaUnavailable as exc:
        assert "no usable microphone" in str(exc)
    else:
        assert track.kind == "audio"
        track.stop()

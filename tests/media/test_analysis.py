"""The measurements the tests and the demo rely on must themselves be right."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import pytest

from parley.errors import MediaError
from parley.media.analysis import (
    dominant_frequency,
    envelope_correlation,
    read_wav,
    rms_dbfs,
)

RATE = 48_000


def tone(hz: float, seconds: float, amplitude: float = 0.3) -> np.ndarray:
    return amplitude * np.sin(2 * np.pi * hz * np.arange(int(RATE * seconds)) / RATE)


@pytest.mark.parametrize("hz", [440.0, 1000.0, 1234.5])
def test_dominant_frequency_between_bins(hz: float) -> None:
    assert dominant_frequency(tone(hz, 0.5), RATE) == pytest.approx(hz, abs=0.5)


def test_dominant_frequency_of_silence_is_zero() -> None:
    assert dominant_frequency(np.zeros(RATE), RATE) == 0.0


def test_the_louder_tone_dominates() -> None:
    mix = tone(440, 0.5, 0.1) + tone(1000, 0.5, 0.3)
    assert dominant_frequency(mix, RATE) == pytest.approx(1000, abs=0.5)


def test_level() -> None:
    assert rms_dbfs(tone(440, 0.1, 1.0)) == pytest.approx(-3.01, abs=0.05)
    assert rms_dbfs(np.zeros(10)) == float("-inf")


def bursts(pattern: list[int], seconds: float = 0.1) -> np.ndarray:
    return np.concatenate([tone(300, seconds) * on for on in pattern])


def test_envelope_correlation_finds_a_delayed_copy_and_refuses_another_signal() -> None:
    source = bursts([1, 0, 1, 1, 0, 0, 1, 0, 1, 0, 0, 1])
    delayed = np.concatenate([np.zeros(int(RATE * 0.13)), source * 0.5])
    assert envelope_correlation(source, delayed, RATE) > 0.9
    other = bursts([0, 1, 0, 0, 1, 1, 0, 1, 0, 1, 1, 0])
    assert envelope_correlation(source, other, RATE) < 0.5


def test_read_wav_mixes_channels_and_scales(tmp_path: Path) -> None:
    path = tmp_path / "s.wav"
    with wave.open(str(path), "wb") as f:
        f.setnchannels(2)
        f.setsampwidth(2)
        f.setframerate(8000)
        f.writeframes(np.array([16384, 0, 16384, 0], dtype="<i2").tobytes())
    samples, rate = read_wav(path)
    assert rate == 8000
    assert samples.tolist() == [0.25, 0.25]


def test_read_wav_of_junk_is_a_typed_error(tmp_path: Path) -> None:
    path = tmp_path / "junk.wav"
    path.write_bytes(b"junk")
    with pytest.raises(MediaError):
        read_wav(path)

"""Measuring audio: what tone a recording holds, how loud it is, whether it follows a source.

Used by the demo (each side says which frequency it heard) and the tests (audio arrived,
and it is the other side's).
"""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import numpy.typing as npt

from parley.errors import MediaError

Signal = npt.NDArray[np.float64]


def read_wav(path: Path | str) -> tuple[Signal, int]:
    """A 16-bit WAV file's samples (mono: channels averaged), scaled to [-1, 1], and rate."""
    try:
        with wave.open(str(path), "rb") as f:
            if f.getsampwidth() != 2:
                raise MediaError(f"{path}: only 16-bit WAV files are read here")
            raw = f.readframes(f.getnframes())
            channels, rate = f.getnchannels(), f.getframerate()
    except (OSError, EOFError, wave.Error) as exc:
        raise MediaError(f"cannot read {path}: {exc}") from None
    pcm = np.frombuffer(raw, dtype="<i2").astype(np.float64) / 32768.0
    if channels > 1:
        pcm = pcm.reshape(-1, channels).mean(axis=1)
    return pcm, rate


def dominant_frequency(
    samples: npt.NDArray[np.floating] | npt.NDArray[np.integer], rate: int
) -> float:
    """The frequency (Hz) of the strongest component, refined between FFT bins; 0 for
    silence or no samples."""
    x = np.asarray(samples, dtype=np.float64)
    if len(x) < 16 or not np.any(x):
        return 0.0
    x = (x - x.mean()) * np.hanning(len(x))
    spectrum = np.abs(np.fft.rfft(x))
    spectrum[0] = 0.0
    peak = int(np.argmax(spectrum))
    if 0 < peak < len(spectrum) - 1:
        # Quadratic interpolation of the log magnitude around the peak.
        a, b, c = np.log(spectrum[peak - 1 : peak + 2] + 1e-12)
        denominator = a - 2 * b + c
        shift = 0.5 * (a - c) / denominator if denominator else 0.0
    else:
        shift = 0.0
    return float((peak + shift) * rate / len(x))


def rms_dbfs(
    samples: npt.NDArray[np.floating] | npt.NDArray[np.integer], full_scale: float = 1.0
) -> float:
    """Level in dB relative to full scale; -inf for silence."""
    x = np.asarray(samples, dtype=np.float64) / full_scale
    if len(x) == 0:
        return float("-inf")
    power = float(np.mean(x * x))
    return 10 * np.log10(power) if power > 0 else float("-inf")


def envelope(samples: Signal, rate: int, window: float = 0.02) -> Signal:
    """The loudness over time: RMS per ``window`` seconds."""
    step = max(1, int(rate * window))
    usable = len(samples) // step * step
    blocks = samples[:usable].reshape(-1, step)
    levels: Signal = np.sqrt(np.mean(blocks * blocks, axis=1))
    return levels


def envelope_correlation(source: Signal, recording: Signal, rate: int) -> float:
    """The best normalised correlation of the two envelopes over any delay of the
    recording behind the source: near 1 when the recording follows the source."""
    a, b = envelope(source, rate), envelope(recording, rate)
    if len(a) == 0 or len(b) == 0:
        return 0.0
    a = (a - a.mean()) / (a.std() or 1.0)
    b = (b - b.mean()) / (b.std() or 1.0)
    best = 0.0
    for lag in range(max(1, len(b) - len(a) // 2)):
        segment = b[lag : lag + len(a)]
        n = min(len(segment), len(a))
        if n < len(a) // 2:
            break
        value = float(np.dot(a[:n], segment[:n]) / n)
        best = max(best, value)
    return best

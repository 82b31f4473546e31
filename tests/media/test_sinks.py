"""Sinks: a WAV recording complete once closed, and devices that say when they are absent."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from parley.errors import MediaError, MediaUnavailable
from parley.media.analysis import read_wav
from parley.media.sinks import FLUSH_SAMPLES, Discard, Speaker, WavRecorder, open_sink
from parley.media.sources import RATE


async def test_a_recording_holds_every_sample_written(tmp_path: Path) -> None:
    recorder = WavRecorder(tmp_path / "r.wav")
    written = np.arange(-FLUSH_SAMPLES, FLUSH_SAMPLES, 7, dtype=np.int16)
    for chunk in np.array_split(written, 37):  # more than one flush, uneven pieces
        recorder.write(chunk)
    await recorder.close()
    samples, rate = read_wav(tmp_path / "r.wav")
    assert rate == RATE
    assert np.array_equal(np.round(samples * 32768).astype(np.int16), written)


def test_a_recording_where_it_cannot_be_written_is_a_typed_error(tmp_path: Path) -> None:
    with pytest.raises(MediaError, match="cannot record"):
        WavRecorder(tmp_path / "missing-dir" / "r.wav")


def test_sink_specs(tmp_path: Path) -> None:
    assert isinstance(open_sink(None), Discard)
    assert isinstance(open_sink(tmp_path / "x.wav"), WavRecorder)


def test_the_speaker_is_a_sink_or_a_typed_error() -> None:
    try:
        speaker = Speaker()
    except MediaUnavailable as exc:
        assert "no usable speaker" in str(exc)
    else:
        speaker.write(np.zeros(960, dtype=np.int16))

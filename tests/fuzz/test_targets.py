"""Every fuzz target (``fuzz/``) under Hypothesis in the normal suite: any input, random
or a valid encoding with a few edits, gives a value or the parser's typed error.

Derandomized and without an example database, so a run is the same on every machine;
``./run fuzz`` explores far more, coverage-guided.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path

import pytest
from fuzz.harness import Target
from fuzz.targets import ALL
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

EDITS = ("replace", "insert", "delete", "truncate", "repeat")


@functools.cache
def _seeds(name: str) -> Sequence[bytes]:
    return next(t for t in ALL if t.name == name).seeds()


def _edited(seed: bytes, edits: list[tuple[str, int, bytes]]) -> bytes:
    data = bytearray(seed)
    for edit, where, chunk in edits:
        at = min(where, len(data))
        if edit == "replace":
            data[at : at + len(chunk)] = chunk
        elif edit == "insert":
            data[at:at] = chunk
        elif edit == "delete":
            del data[at : at + len(chunk)]
        elif edit == "truncate":
            del data[at:]
        else:  # a slice repeated: nests and lengthens what is there
            data[at:at] = bytes(data[at : at + len(chunk)]) * len(chunk)
    return bytes(data)


def inputs(target: Target) -> st.SearchStrategy[bytes]:
    seeds = _seeds(target.name)
    longest = max(len(seed) for seed in seeds)
    edit = st.tuples(
        st.sampled_from(EDITS), st.integers(0, longest), st.binary(min_size=1, max_size=8)
    )
    edited = st.builds(_edited, st.sampled_from(seeds), st.lists(edit, min_size=1, max_size=4))
    return st.one_of(st.binary(max_size=256), edited, st.sampled_from(seeds))


@pytest.mark.parametrize("target", ALL, ids=lambda t: t.name)
@settings(
    max_examples=300,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(data=st.data())
def test_any_input_is_a_value_or_the_typed_error(target: Target, data: st.DataObject) -> None:
    target.check(data.draw(inputs(target), label="input"))


@pytest.mark.parametrize(
    ("target", "example"),
    [(t, e) for t in ALL for e in t.examples],
    ids=[f"{t.name}-{i}" for t in ALL for i in range(len(t.examples))],
)
def test_known_bad_inputs_are_the_typed_error(target: Target, example: bytes) -> None:
    with pytest.raises(target.errors):
        target.parse(example)


@pytest.mark.parametrize("target", ALL, ids=lambda t: t.name)
def test_every_seed_parses(target: Target) -> None:
    # Fresh ones: a sealed body, once opened, is a replay.
    for seed in target.seeds():
        target.parse(seed)


def test_every_target_file_is_in_the_suite() -> None:
    # ./run fuzz runs every fuzz/*.py but the shared ones; this suite runs ALL.
    shared = {"__init__", "harness", "samples", "targets"}
    files = {p.stem for p in (Path(__file__).parents[2] / "fuzz").glob("*.py")} - shared
    assert files == {t.name for t in ALL}

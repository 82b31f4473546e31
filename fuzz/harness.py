"""What every fuzz target shares: the property, and the atheris driver that checks it.

The property (:meth:`Target.check`): the parser returns a value or raises its typed
error, nothing else. ``tests/fuzz`` checks it with Hypothesis in the normal suite; the
driver here runs it under atheris (libFuzzer), coverage-guided, for as long as asked::

    python fuzz/<target>.py [libFuzzer args, e.g. -max_total_time=60]

Seeds (valid encodings) are written to ``fuzz/corpus/<target>/``, which libFuzzer then
grows. An input that breaks the property is a *finding*: saved under
``fuzz/findings/<target>/`` (one per exception type and place) and reported as one
``finding:`` line; the run goes on, so one bug does not hide the next. Both folders are
gitignored. libFuzzer's closing ``Done N runs in S second(s)`` says how many inputs ran.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import sys
import traceback
import types
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

FUZZ = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Target:
    """A parser under test: ``parse`` feeds it one input; ``errors`` are its typed ones."""

    name: str
    parse: Callable[[bytes], object]
    errors: tuple[type[BaseException], ...]
    # Valid encodings, for the fuzzers to start from and mutate.
    seeds: Callable[[], Sequence[bytes]]
    # Known bad inputs (deep nesting and the like), checked as explicit examples.
    examples: Sequence[bytes] = field(default_factory=tuple)

    def check(self, data: bytes) -> None:
        """Raise whatever the parser raises that is not one of its typed errors."""
        with contextlib.suppress(*self.errors):
            self.parse(data)


def deep_msgpack(depth: int = 5_000) -> bytes:
    """A msgpack array nested ``depth`` deep: past any recursion limit."""
    return b"\x91" * depth + b"\x00"


def deep_json(depth: int = 5_000) -> bytes:
    return b"[" * depth + b"]" * depth


def in_unknown_field_msgpack(known: bytes, depth: int = 5_000) -> bytes:
    """A msgpack map of ``known`` (one encoded key-value pair) and an unknown field ``x``
    that holds the nesting: a typed decode recurses into it while skipping it."""
    return b"\x82\xa1x" + deep_msgpack(depth) + known


def in_unknown_field_json(known: bytes, depth: int = 5_000) -> bytes:
    return b'{"x":' + deep_json(depth) + b"," + known + b"}"


class _Findings:
    def __init__(self, target: Target) -> None:
        self.folder = FUZZ / "findings" / target.name
        self.seen: set[tuple[str, str]] = set()

    def record(self, data: bytes, exc: BaseException) -> None:
        last = traceback.extract_tb(exc.__traceback__)[-1]
        where = f"{Path(last.filename).name}:{last.lineno}"
        key = (type(exc).__name__, where)
        if key in self.seen:
            return
        self.seen.add(key)
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"{type(exc).__name__}-{hashlib.sha1(data).hexdigest()[:12]}"
        path.write_bytes(data)
        message = str(exc).splitlines()[0][:200] if str(exc) else ""
        print(f"finding: {type(exc).__name__} at {where}: {message} ({path})", flush=True)


def main(target: Target) -> None:
    """Run ``target`` under atheris with the command line's libFuzzer arguments."""
    import atheris  # type: ignore[import-untyped]  # no stubs; only the fuzzers need it

    corpus = FUZZ / "corpus" / target.name
    corpus.mkdir(parents=True, exist_ok=True)
    for number, seed in enumerate(target.seeds()):
        (corpus / f"seed-{number}").write_bytes(seed)
    for number, example in enumerate(target.examples):
        (corpus / f"example-{number}").write_bytes(example)
    args = list(sys.argv)
    if not any(not arg.startswith("-") for arg in args[1:]):
        args.append(str(corpus))
    if not any(arg.startswith("-max_len=") for arg in args):
        # Room for the largest seed and the deep-nesting examples.
        longest = max(len(s) for s in [*target.seeds(), *target.examples])
        args.append(f"-max_len={max(4096, longest)}")
    findings = _Findings(target)

    def one_input(data: bytes) -> None:
        try:
            target.check(data)
        except Exception as exc:  # the property broke: record it and go on
            findings.record(data, exc)

    # Parley's code only: instrumenting everything loaded (atheris.instrument_all) takes
    # half a minute per target, and the libraries' own branches are not what we test.
    for function in gc.get_objects():
        if isinstance(function, types.FunctionType) and str(function.__module__).startswith(
            ("parley.", "fuzz.")
        ):
            atheris.instrument_func(function)
    atheris.Setup(args, one_input)
    atheris.Fuzz()

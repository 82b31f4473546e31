"""Mutation testing with cosmic-ray: the kill rate of each critical module's tests.

For every target in :mod:`mutate.targets` (or those named), cosmic-ray makes one
mutant per mutation site (an operator flipped, a constant changed, a condition
negated, ...) and the module's unit tests run against it; a mutant that no test fails
on *survived*. Printed per module: mutants killed / run, the mutation score (killed
out of those run that are not listed as equivalent in :mod:`mutate.equivalents`), and
each unexplained survivor as ``file:line operator`` with its diff, so it can be killed
by a new test or listed as equivalent with the reason.

A mutant is made by rewriting the module on disk, so every mutant runs in a copy of
the project (the working tree is never touched), with that copy's ``src`` first on the
import path; ``--jobs`` copies run mutants side by side.

    ./run mutate [--sample N] [--seed S] [--jobs N] [--survivors] [--report] [TARGET ...]
    (= python -m mutate.run ..., from the project's root)

``--sample N`` runs N mutants per module, chosen at random (seeded): a short run;
without it every mutant runs. Each module's results are kept (``.mutate/``, or ``--kept``);
``--survivors`` runs again only the mutants that survived there (and any not yet run),
keeping the kills, as long as the module is unchanged since: after adding tests it
gives the figure a full run would, in a fraction of the time.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import os
import queue
import random
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import attrs
from cosmic_ray.mutating import mutate_and_test
from cosmic_ray.work_db import WorkDB, use_db
from cosmic_ray.work_item import TestOutcome, WorkerOutcome, WorkItem, WorkResult

from mutate.equivalents import EQUIVALENTS, Equivalent
from mutate.targets import TARGETS, Target

ROOT = Path(__file__).resolve().parents[1]
# A mutant often makes a test wait for what never comes; the unit tests take well under
# a second each, so 3 s still tells a hang from a slow machine.
TEST_WAIT = 3
COPIED = ("src", "tests", "fuzz", "examples", "benchmarks", "pyproject.toml")
GOAL = 0.9


@dataclass(frozen=True)
class Survivor:
    where: str
    operator: str
    diff: str

    @property
    def change(self) -> tuple[str, str]:
        """The mutated source, as (the lines removed, the lines added), each stripped."""
        removed, added = [], []
        for line in self.diff.splitlines():
            if line.startswith(("+++", "---")):
                continue
            if line.startswith("-"):
                removed.append(line[1:].strip())
            elif line.startswith("+"):
                added.append(line[1:].strip())
        return " ".join(removed), " ".join(added)


@dataclass(frozen=True)
class Outcome:
    target: Target
    killed: int
    survivors: list[Survivor]  # not explained
    equivalent: list[tuple[Survivor, Equivalent]]  # survived, and listed as equivalent
    incompetent: int  # mutants that broke the module outright (e.g. a syntax error)
    in_annotations: int  # not run: inside type annotations, which never run

    @property
    def run(self) -> int:
        return self.killed + len(self.survivors) + len(self.equivalent)

    @property
    def score(self) -> float:
        """Killed out of the mutants run that can be killed at all."""
        counted = self.killed + len(self.survivors)
        return self.killed / counted if counted else 1.0


def copy_project(into: Path) -> Path:
    into.mkdir(parents=True)
    for name in COPIED:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, into / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, into / name)
    return into


def test_command(target: Target, project: Path) -> str:
    """The target's tests, run inside ``project`` with its ``src`` imported."""
    pytest = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider"]
    pytest += ["-p", "no:randomly", *target.tests]
    path = f"{project / 'src'}{os.pathsep}{project}"
    inner = f"cd {shlex.quote(str(project))} && PYTHONPATH={shlex.quote(path)}"
    inner += f" PARLEY_TEST_WAIT={TEST_WAIT} exec "
    return shlex.join(["sh", "-c", inner + shlex.join(pytest)])


def config_text(target: Target) -> str:
    return (
        "[cosmic-ray]\n"
        f'module-path = "{target.module}"\n'
        "timeout = 60\n"
        "excluded-modules = []\n"
        'test-command = "true"\n'  # the tests run in this module's own workers
        "\n[cosmic-ray.distributor]\n"
        'name = "local"\n'
    )


def annotation_spans(source: str) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """Where the module's type annotations are: ``from __future__ import annotations``
    keeps them unevaluated, so a mutant inside one (``X | None`` -> ``X - None``) changes
    nothing that runs. Such mutants are equivalent and are not run."""
    spans = []
    for node in ast.walk(ast.parse(source)):
        annotations: list[ast.expr | None] = []
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            annotations.append(node.returns)
            arguments = node.args
            every = [*arguments.posonlyargs, *arguments.args, *arguments.kwonlyargs]
            every += [a for a in (arguments.vararg, arguments.kwarg) if a is not None]
            annotations += [a.annotation for a in every]
        elif isinstance(node, ast.AnnAssign):
            annotations.append(node.annotation)
        for annotation in annotations:
            if annotation is not None and annotation.end_lineno is not None:
                end = (annotation.end_lineno, annotation.end_col_offset or 0)
                spans.append(((annotation.lineno, annotation.col_offset), end))
    return spans


def annotated(items: Iterable[WorkItem], module: Path) -> list[str]:
    """The job ids of the mutants among ``items`` that sit inside type annotations."""
    spans = annotation_spans(module.read_text())
    return [
        item.job_id
        for item in items
        if any(start <= tuple(item.mutations[0].start_pos) < end for start, end in spans)
    ]


def skip_annotations(session: Path, module: Path) -> None:
    with use_db(str(session), WorkDB.Mode.open) as db:
        inside = annotated(db.pending_work_items, module)
        if inside:
            db.set_multiple_results(inside, WorkResult(worker_outcome=WorkerOutcome.SKIPPED))


def in_annotations(session: Path, module: Path) -> int:
    with use_db(str(session), WorkDB.Mode.open) as db:
        return len(annotated(db.work_items, module))


def _where(item: WorkItem) -> tuple[int, int, str, int]:
    spec = item.mutations[0]
    return (*spec.start_pos, spec.operator_name, spec.occurrence)


def sample(session: Path, keep: int, seed: int) -> None:
    """Mark all but ``keep`` randomly chosen mutants skipped."""
    with use_db(str(session), WorkDB.Mode.open) as db:
        # In source order (job ids are random): the same seed picks the same mutants.
        items = sorted(db.pending_work_items, key=_where)
        chosen = {item.job_id for item in random.Random(seed).sample(items, min(keep, len(items)))}
        skipped = [item.job_id for item in items if item.job_id not in chosen]
        if skipped:
            db.set_multiple_results(skipped, WorkResult(worker_outcome=WorkerOutcome.SKIPPED))


def survived(result: WorkResult) -> bool:
    return (
        result.worker_outcome is WorkerOutcome.NORMAL
        and result.test_outcome is TestOutcome.SURVIVED
    )


def to_run(session: Path, *, survivors: bool) -> list[WorkItem]:
    with use_db(str(session), WorkDB.Mode.open) as db:
        items = list(db.pending_work_items)
        if survivors:
            items += [item for item, result in db.completed_work_items if survived(result)]
    return items


def listed(target: Target, survivor: Survivor) -> Equivalent | None:
    removed, added = survivor.change
    for entry in EQUIVALENTS:
        if entry.target == target.name and (entry.line, entry.mutated) == (removed, added):
            return entry
    return None


def outcome(target: Target, session: Path, annotations: int) -> Outcome:
    killed = incompetent = 0
    survivors: list[Survivor] = []
    equivalent: list[tuple[Survivor, Equivalent]] = []
    with use_db(str(session), WorkDB.Mode.open) as db:
        for item, result in sorted(
            db.completed_work_items, key=lambda pair: tuple(pair[0].mutations[0].start_pos)
        ):
            if result.worker_outcome is not WorkerOutcome.NORMAL:
                continue  # skipped (sampled out, in an annotation) or no mutation possible
            if result.test_outcome is TestOutcome.KILLED:
                killed += 1
            elif result.test_outcome is TestOutcome.INCOMPETENT:
                incompetent += 1
            else:
                spec = item.mutations[0]
                where = f"{target.module}:{spec.start_pos[0]}"
                survivor = Survivor(where, spec.operator_name, result.diff or "")
                entry = listed(target, survivor)
                if entry is None:
                    survivors.append(survivor)
                else:
                    equivalent.append((survivor, entry))
    return Outcome(target, killed, survivors, equivalent, incompetent, annotations)


class Workers:
    """``jobs`` copies of the project, each running one mutant at a time."""

    def __init__(self, into: Path, jobs: int) -> None:
        self.copies: queue.Queue[Path] = queue.Queue()
        for index in range(jobs):
            self.copies.put(copy_project(into / f"copy{index}"))
        self.jobs = jobs
        self.lock = threading.Lock()

    def baseline(self, target: Target) -> float:
        """Seconds the target's tests take on the unmutated module (which they must pass)."""
        project = self.copies.get()
        try:
            started = time.monotonic()
            env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
            command = shlex.split(test_command(target, project))
            done = subprocess.run(command, check=False, env=env, capture_output=True, text=True)
            if done.returncode != 0:
                sys.exit(f"{target.name}: the tests fail on the unmutated module:\n{done.stdout}")
            return time.monotonic() - started
        finally:
            self.copies.put(project)

    def run(self, target: Target, session: Path, items: list[WorkItem], timeout: float) -> None:
        done = 0

        def one(item: WorkItem) -> None:
            nonlocal done
            project = self.copies.get()
            try:
                mutations = [
                    attrs.evolve(spec, module_path=project / spec.module_path)
                    for spec in item.mutations
                ]
                result = mutate_and_test(mutations, test_command(target, project), timeout)
            finally:
                self.copies.put(project)
            with self.lock, use_db(str(session), WorkDB.Mode.open) as db:
                db.set_result(item.job_id, result)
                done += 1
                if done % 25 == 0 or done == len(items):
                    print(f"    {target.name}: {done} of {len(items)}", file=sys.stderr, flush=True)

        with ThreadPoolExecutor(self.jobs) as pool:
            for future in [pool.submit(one, item) for item in items]:
                future.result()


def fingerprint(target: Target) -> str:
    return hashlib.sha256((ROOT / target.module).read_bytes()).hexdigest()


def session_for(target: Target, args: argparse.Namespace) -> tuple[Path, bool]:
    """The target's kept session, and whether it is new; kept only while the module
    is the one it was made from."""
    kept: Path = args.kept
    kept.mkdir(parents=True, exist_ok=True)
    session = kept / f"{target.name}.sqlite"
    made_from = kept / f"{target.name}.sha256"
    if args.survivors and session.exists() and made_from.exists():
        if made_from.read_text() == fingerprint(target):
            return session, False
        print(f"    {target.name}: changed since its kept run; all of it runs", file=sys.stderr)
    session.unlink(missing_ok=True)
    config = kept / f"{target.name}.toml"
    config.write_text(config_text(target))
    cosmic_ray = str(Path(sys.executable).with_name("cosmic-ray"))
    subprocess.run([cosmic_ray, "init", str(config), str(session)], cwd=ROOT, check=True)
    made_from.write_text(fingerprint(target))
    return session, True


def mutate(target: Target, workers: Workers, args: argparse.Namespace) -> Outcome:
    session, new = session_for(target, args)
    if new:
        skip_annotations(session, ROOT / target.module)
        if args.sample is not None:
            sample(session, args.sample, args.seed)
    items = to_run(session, survivors=args.survivors)
    seconds = workers.baseline(target)
    timeout = args.timeout if args.timeout is not None else 10 + 4 * seconds
    print(
        f"==> {target.name}: {len(items)} mutants, tests {seconds:.1f} s each",
        file=sys.stderr,
        flush=True,
    )
    workers.run(target, session, items, timeout)
    return outcome(target, session, in_annotations(session, ROOT / target.module))


def kept_outcomes(chosen: list[Target], kept: Path) -> list[Outcome]:
    """The kept results of the modules that have some (a report of an earlier run)."""
    outcomes = []
    for target in chosen:
        session = kept / f"{target.name}.sqlite"
        made_from = kept / f"{target.name}.sha256"
        if not session.exists():
            print(f"    {target.name}: no kept run", file=sys.stderr)
            continue
        if not made_from.exists() or made_from.read_text() != fingerprint(target):
            print(f"    {target.name}: changed since its kept run", file=sys.stderr)
        outcomes.append(outcome(target, session, in_annotations(session, ROOT / target.module)))
    return outcomes


def diff_lines(diff: str) -> Iterator[str]:
    for line in diff.splitlines():
        if line.startswith(("+", "-")) and not line.startswith(("+++", "---")):
            yield line


def report(outcomes: list[Outcome], *, show_diffs: bool) -> None:
    for result in outcomes:
        verdict = "met" if result.score >= GOAL else "NOT met"
        print(
            f"{result.target.name:<14} {result.target.module:<40} killed {result.killed:>4}"
            f" of {result.run:>4}, {len(result.equivalent)} equivalent"
            f" = {result.score:6.1%} (goal {GOAL:.0%}: {verdict})"
            + (f"; {result.incompetent} incompetent" if result.incompetent else "")
            + f"; {result.in_annotations} in annotations not run"
        )
    for result in outcomes:
        for survivor in result.survivors:
            print(f"survived: {survivor.where} {survivor.operator}")
            if show_diffs:
                for line in diff_lines(survivor.diff):
                    print(f"    {line}")
    for result in outcomes:
        for survivor, entry in result.equivalent:
            print(f"equivalent: {survivor.where} {survivor.operator}: {entry.why}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    names = [t.name for t in TARGETS]
    parser.add_argument("targets", nargs="*", metavar="TARGET", help=", ".join(names))
    parser.add_argument("--sample", type=int, help="mutants per module (default: all)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="mutants at once")
    parser.add_argument(
        "--timeout", type=float, help="seconds per mutant (default: 10 + 4 x the tests' time)"
    )
    parser.add_argument(
        "--survivors", action="store_true", help="run again only the kept run's survivors"
    )
    parser.add_argument(
        "--kept", type=Path, default=ROOT / ".mutate", help="where results are kept (.mutate/)"
    )
    parser.add_argument(
        "--report", action="store_true", help="print the kept results only, running nothing"
    )
    parser.add_argument("--no-diffs", action="store_true", help="survivors without diffs")
    args = parser.parse_args()
    unknown = sorted(set(args.targets) - set(names))
    if unknown:
        parser.error(f"no target {', '.join(unknown)} (targets: {', '.join(names)})")
    if args.jobs < 1:
        parser.error("--jobs must be at least 1")
    chosen = [t for t in TARGETS if not args.targets or t.name in args.targets]
    if args.report:
        report(kept_outcomes(chosen, args.kept), show_diffs=not args.no_diffs)
        return
    with tempfile.TemporaryDirectory(prefix="parley-mutate-") as tmp:
        workers = Workers(Path(tmp), args.jobs)
        outcomes = [mutate(target, workers, args) for target in chosen]
    report(outcomes, show_diffs=not args.no_diffs)


if __name__ == "__main__":
    main()

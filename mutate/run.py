"""Mutation testing with cosmic-ray: the kill rate of each critical module's tests.

For every target in :mod:`mutate.targets` (or those named), cosmic-ray makes one
mutant per mutation site (an operator flipped, a constant changed, a condition
negated, ...) and runs the module's unit tests against it; a mutant that no test fails
on *survived*. Printed per module: mutants killed / run, the kill rate, and each
survivor as ``file:line operator`` with its diff, so it can be killed by a new test or
listed as equivalent.

cosmic-ray rewrites the module on disk while a mutant runs, so everything runs in a
copy of the project (the working tree is never touched), with that copy's ``src``
first on the import path.

    ./run mutate [--sample N] [--seed S] [--timeout SECONDS] [TARGET ...]
    (= python -m mutate.run ..., from the project's root)

``--sample N`` runs N mutants per module, chosen at random (seeded), the rest marked
skipped: a short run for CI; without it every mutant runs (the full run takes long).
"""

from __future__ import annotations

import argparse
import ast
import os
import random
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cosmic_ray.work_db import WorkDB, use_db
from cosmic_ray.work_item import TestOutcome, WorkerOutcome, WorkResult

from mutate.targets import TARGETS, Target

ROOT = Path(__file__).resolve().parents[1]
COPIED = ("src", "tests", "fuzz", "examples", "benchmarks", "pyproject.toml")
GOAL = 0.9


@dataclass(frozen=True)
class Survivor:
    where: str
    operator: str
    diff: str


@dataclass(frozen=True)
class Outcome:
    target: Target
    killed: int
    survivors: list[Survivor]
    incompetent: int  # mutants that broke the module outright (e.g. a syntax error)
    equivalent: int  # not run: inside type annotations, which never run

    @property
    def run(self) -> int:
        return self.killed + len(self.survivors)

    @property
    def rate(self) -> float:
        return self.killed / self.run if self.run else 1.0


def copy_project(into: Path) -> Path:
    project = into / "project"
    project.mkdir()
    for name in COPIED:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, project / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, project / name)
    return project


def config_text(target: Target, timeout: float) -> str:
    tests = " ".join(target.tests)
    command = f"{sys.executable} -m pytest -x -q -p no:cacheprovider -p no:randomly {tests}"
    return (
        "[cosmic-ray]\n"
        f'module-path = "{target.module}"\n'
        f"timeout = {timeout}\n"
        "excluded-modules = []\n"
        f'test-command = "{command}"\n'
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


def skip_equivalent(session: Path, module: Path) -> int:
    """Mark the mutants inside type annotations skipped; how many there were."""
    spans = annotation_spans(module.read_text())
    with use_db(str(session), WorkDB.Mode.open) as db:
        inside = [
            item.job_id
            for item in db.pending_work_items
            if any(start <= tuple(item.mutations[0].start_pos) < end for start, end in spans)
        ]
        if inside:
            db.set_multiple_results(inside, WorkResult(worker_outcome=WorkerOutcome.SKIPPED))
    return len(inside)


def sample(session: Path, keep: int, seed: int) -> None:
    """Mark all but ``keep`` randomly chosen mutants skipped."""
    with use_db(str(session), WorkDB.Mode.open) as db:
        items = list(db.pending_work_items)
        chosen = {item.job_id for item in random.Random(seed).sample(items, min(keep, len(items)))}
        skipped = [item.job_id for item in items if item.job_id not in chosen]
        if skipped:
            db.set_multiple_results(skipped, WorkResult(worker_outcome=WorkerOutcome.SKIPPED))


def outcome(target: Target, session: Path, equivalent: int) -> Outcome:
    killed = incompetent = 0
    survivors: list[Survivor] = []
    with use_db(str(session), WorkDB.Mode.open) as db:
        items = {item.job_id: item for item in db.work_items}
        for job_id, result in db.results:
            if result.worker_outcome is not WorkerOutcome.NORMAL:
                continue  # skipped (sampled out) or the worker failed
            if result.test_outcome is TestOutcome.KILLED:
                killed += 1
            elif result.test_outcome is TestOutcome.INCOMPETENT:
                incompetent += 1
            else:
                spec = items[job_id].mutations[0]
                where = f"{spec.module_path}:{spec.start_pos[0]}"
                survivors.append(Survivor(where, spec.operator_name, result.diff or ""))
    return Outcome(target, killed, survivors, incompetent, equivalent)


def mutate(target: Target, project: Path, work: Path, args: argparse.Namespace) -> Outcome:
    config = work / f"{target.name}.toml"
    session = work / f"{target.name}.sqlite"
    config.write_text(config_text(target, args.timeout))
    env = {**os.environ, "PYTHONPATH": f"{project / 'src'}{os.pathsep}{project}"}
    cosmic_ray = [str(Path(sys.executable).with_name("cosmic-ray"))]

    def run(*command: str) -> None:
        subprocess.run([*cosmic_ray, *command], cwd=project, env=env, check=True)

    run("init", str(config), str(session))
    equivalent = skip_equivalent(session, project / target.module)
    if args.sample is not None:
        sample(session, args.sample, args.seed)
    run("baseline", str(config))  # the tests pass on the unmutated module
    run("exec", str(config), str(session))
    return outcome(target, session, equivalent)


def report(outcomes: list[Outcome], *, show_diffs: bool) -> None:
    for result in outcomes:
        verdict = "met" if result.rate >= GOAL else "NOT met"
        print(
            f"{result.target.name:<14} {result.target.module:<40} killed {result.killed:>4}"
            f" of {result.run:>4} = {result.rate:6.1%} (goal {GOAL:.0%}: {verdict})"
            + (f"; {result.incompetent} incompetent" if result.incompetent else "")
            + f"; {result.equivalent} in annotations not run"
        )
    for result in outcomes:
        for survivor in result.survivors:
            print(f"survived: {survivor.where} {survivor.operator}")
            if show_diffs:
                for line in survivor.diff.splitlines():
                    if line.startswith(("+", "-")) and not line.startswith(("+++", "---")):
                        print(f"    {line}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    names = [t.name for t in TARGETS]
    parser.add_argument("targets", nargs="*", metavar="TARGET", help=", ".join(names))
    parser.add_argument("--sample", type=int, help="mutants per module (default: all)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per mutant")
    parser.add_argument("--no-diffs", action="store_true", help="survivors without diffs")
    args = parser.parse_args()
    unknown = sorted(set(args.targets) - set(names))
    if unknown:
        parser.error(f"no target {', '.join(unknown)} (targets: {', '.join(names)})")
    chosen = [t for t in TARGETS if not args.targets or t.name in args.targets]
    with tempfile.TemporaryDirectory(prefix="parley-mutate-") as tmp:
        project = copy_project(Path(tmp))
        outcomes = []
        for target in chosen:
            print(f"==> {target.name}: {target.module}", file=sys.stderr, flush=True)
            outcomes.append(mutate(target, project, Path(tmp), args))
    report(outcomes, show_diffs=not args.no_diffs)


if __name__ == "__main__":
    main()

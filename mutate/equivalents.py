"""Surviving mutants that no test can kill, each with the reason.

A mutant is matched by its change, not its line number, so the list stays true while
the module around it changes: ``line`` is the source line it rewrites and ``mutated``
what it becomes, both stripped of indentation. Only a change that makes no difference
any caller could observe belongs here; anything else gets a test.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Equivalent:
    target: str
    line: str
    mutated: str
    why: str


EQUIVALENTS: tuple[Equivalent, ...] = ()

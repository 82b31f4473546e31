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


# Reasons shared by several entries.
KEYWORDS = "the keyword-only marker `*` made `/`: every caller names these arguments anyway"
SMALL_INT = "`is` on small ints: CPython keeps one object per value from -5 to 256"
IDENTITY_EQ = "`==` on objects without __eq__ is identity, the same as `is`"

EQUIVALENTS: tuple[Equivalent, ...] = (
    # -- client/inbox.py
    Equivalent("inbox", "*,", "/,", KEYWORDS),
    Equivalent(
        "inbox",
        "if task is None or task is asyncio.current_task():",
        "if task is None or task == asyncio.current_task():",
        IDENTITY_EQ + " (asyncio.Task)",
    ),
    Equivalent(
        "inbox",
        "if self._queue.empty() or len(self._batch) >= BATCH:",
        "if self._queue.empty() or len(self._batch) == BATCH:",
        "the batch grows by one and is flushed on reaching BATCH: it never exceeds it",
    ),
    Equivalent(
        "inbox",
        "if self._queue.empty() or len(self._batch) >= BATCH:",
        "if self._queue.empty() or len(self._batch) is BATCH:",
        "the batch never exceeds BATCH, and " + SMALL_INT,
    ),
    Equivalent(
        "inbox",
        "if self._recorded % PRUNE_EVERY == 0:",
        "if self._recorded % PRUNE_EVERY <= 0:",
        "a remainder by a positive number is never negative",
    ),
    # -- crypto/sealed.py
    Equivalent(
        "sealed",
        "if len(key) != KEY_SIZE or len(nonce) != NONCE_SIZE:",
        "if len(key) is not KEY_SIZE or len(nonce) != NONCE_SIZE:",
        SMALL_INT,
    ),
    Equivalent(
        "sealed",
        "if len(key) != KEY_SIZE or len(nonce) != NONCE_SIZE:",
        "if len(key) != KEY_SIZE or len(nonce) is not NONCE_SIZE:",
        SMALL_INT,
    ),
)

"""Exponential backoff with jitter, for reconnecting and for retrying key fetches."""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass
class Backoff:
    """Delays that double from ``initial`` up to ``cap``; :meth:`reset` after a success.

    "Equal jitter": each delay is drawn from ``[d/2, d]`` so clients that lost the relay
    at the same moment do not all come back at the same moment, yet none retries at once.
    """

    initial: float = 0.1
    cap: float = 5.0
    _current: float = field(init=False, default=0.0)

    def __post_init__(self) -> None:
        self._current = self.initial

    def next_delay(self) -> float:
        delay = self._current
        self._current = min(self._current * 2, self.cap)
        return random.uniform(delay / 2, delay)

    def reset(self) -> None:
        self._current = self.initial

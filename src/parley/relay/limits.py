"""Token buckets (``rate`` tokens a second, at most ``burst`` saved up) and what the
relay builds from them."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable


class TokenBucket:
    def __init__(self, rate: float, burst: int, now: float) -> None:
        self._rate = rate
        self._burst = float(burst)
        self._tokens = float(burst)
        self._updated = now

    def take(self, now: float) -> bool:
        """Spend one token if there is one; ``now`` comes from the relay's clock."""
        if self.wait(now) > 0.0:
            return False
        self.spend()
        return True

    def spend(self) -> None:
        """Take the token that :meth:`wait` just found there (at the same ``now``)."""
        self._tokens -= 1.0

    def wait(self, now: float) -> float:
        """Seconds until a token is there (0: one is there now)."""
        self._refill(now)
        if self._tokens >= 1.0:
            return 0.0
        return (1.0 - self._tokens) / self._rate if self._rate > 0 else math.inf

    def full(self, now: float) -> bool:
        """Whether the bucket is as a fresh one would be (so it can be dropped)."""
        self._refill(now)
        return self._tokens >= self._burst

    def _refill(self, now: float) -> None:
        # A clock that steps backwards (wall time adjusted) must not mint tokens.
        elapsed = max(0.0, now - self._updated)
        self._updated = max(self._updated, now)
        self._tokens = min(self._burst, self._tokens + elapsed * self._rate)


class Buckets:
    """A token bucket per key (a device, an identity, a network address), made on first
    use; :meth:`prune` drops the full ones, which a fresh bucket would equal, so only the
    keys that spent something lately take memory."""

    def __init__(self, rate: float, burst: int) -> None:
        self._rate = rate
        self._burst = burst
        self._buckets: dict[str, TokenBucket] = {}

    def __len__(self) -> int:
        return len(self._buckets)

    def get(self, key: str, now: float) -> TokenBucket:
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = TokenBucket(self._rate, self._burst, now)
        return bucket

    def prune(self, now: float) -> None:
        for key in [k for k, bucket in self._buckets.items() if bucket.full(now)]:
            del self._buckets[key]


class Quota:
    """The buckets a request is charged to together: its device's and its identity's.
    A request is let through only when every one has a token, and then takes one of each."""

    def __init__(self, *buckets: TokenBucket) -> None:
        self._buckets = buckets

    def charge(self, now: float) -> float | None:
        """None if charged; else the seconds until it could be (nothing is taken)."""
        wait = 0.0
        for bucket in self._buckets:
            wait = max(wait, bucket.wait(now))
        if wait > 0.0:
            return wait
        for bucket in self._buckets:
            bucket.spend()
        return None


class LogLimiter:
    """Log lines about bad input, at most ``rate`` a second (``burst`` at once).

    Anyone who can reach the relay can send garbage; one warning line each would let them
    fill the log. Lines over the budget are counted, and the next line that is written
    says how many were held back.
    """

    def __init__(
        self, logger: logging.Logger, rate: float, burst: int, clock: Callable[[], float]
    ) -> None:
        self._logger = logger
        self._clock = clock
        self._bucket = TokenBucket(rate, burst, clock())
        self._held_back = 0

    def warning(self, message: str, *args: object) -> None:
        if not self._bucket.take(self._clock()):
            self._held_back += 1
            return
        if self._held_back:
            message += " (%d similar lines held back)"
            args = (*args, self._held_back)
            self._held_back = 0
        self._logger.warning(message, *args)

"""Backoff: doubling delays with jitter, capped, reset after a success."""

from __future__ import annotations

from parley.client.backoff import Backoff


def test_delays_double_up_to_the_cap_with_jitter() -> None:
    backoff = Backoff(initial=0.1, cap=5.0)
    ceilings = [0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0]
    for ceiling in ceilings:
        delay = backoff.next_delay()
        assert ceiling / 2 <= delay <= ceiling
    backoff.reset()
    assert backoff.next_delay() <= 0.1

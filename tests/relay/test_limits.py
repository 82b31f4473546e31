from __future__ import annotations

from parley.relay.limits import TokenBucket


def test_burst_then_rate() -> None:
    bucket = TokenBucket(rate=2, burst=3, now=100.0)
    assert [bucket.take(100.0) for _ in range(4)] == [True, True, True, False]
    assert bucket.take(100.5)  # half a second at 2/s: one token
    assert not bucket.take(100.5)
    assert [bucket.take(200.0) for _ in range(4)] == [True, True, True, False]  # capped


def test_a_clock_stepping_back_mints_nothing() -> None:
    bucket = TokenBucket(rate=1, burst=1, now=100.0)
    assert bucket.take(100.0)
    assert not bucket.take(50.0)
    assert not bucket.take(100.5)
    assert bucket.take(101.0)

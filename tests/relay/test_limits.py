from __future__ import annotations

import logging
import math

import pytest

from parley.relay.limits import Buckets, LogLimiter, Quota, TokenBucket


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


def test_wait_says_when_the_next_token_comes() -> None:
    bucket = TokenBucket(rate=4, burst=1, now=0.0)
    assert bucket.wait(0.0) == 0.0
    assert bucket.take(0.0)
    assert bucket.wait(0.0) == pytest.approx(0.25)
    assert bucket.wait(0.125) == pytest.approx(0.125)
    assert bucket.wait(0.25) == 0.0
    assert TokenBucket(rate=0, burst=1, now=0.0).take(0.0)
    assert TokenBucket(rate=0, burst=0, now=0.0).wait(9.0) == math.inf


def test_a_quota_takes_from_every_bucket_or_from_none() -> None:
    device, identity = TokenBucket(10, 5, 0.0), TokenBucket(1, 1, 0.0)
    quota = Quota(device, identity)
    assert quota.charge(0.0) is None
    assert quota.charge(0.0) == pytest.approx(1.0)  # the identity's bucket is empty
    # The refused request took nothing from the device's bucket: 4 of 5 left.
    assert [device.take(0.0) for _ in range(5)] == [True] * 4 + [False]


def test_only_buckets_that_spent_something_are_kept() -> None:
    buckets = Buckets(rate=1, burst=2)
    buckets.get("a", 0.0).take(0.0)
    buckets.get("b", 0.0)
    buckets.prune(0.0)
    assert len(buckets) == 1  # "b" is full: a fresh one is the same
    buckets.prune(1.0)  # "a" refilled
    assert len(buckets) == 0


def test_bad_input_lines_are_limited_and_say_how_many_were_held_back(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [0.0]
    log = LogLimiter(logging.getLogger("test.limits"), rate=1, burst=2, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="test.limits"):
        for i in range(10):
            log.warning("bad frame %d", i)
        now[0] = 1.0
        log.warning("bad frame %d", 10)
    assert [r.getMessage() for r in caplog.records] == [
        "bad frame 0",
        "bad frame 1",
        "bad frame 10 (8 similar lines held back)",
    ]

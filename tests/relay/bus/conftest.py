from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.redis_server import RedisServer, RedisTarget, redis_for_test, unique_prefix


@pytest.fixture
def redis_target(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[RedisTarget]:
    """The shared Redis (or a private one) and a prefix of this test's own."""
    with redis_for_test(tmp_path / "redis", request.node.name) as target:
        yield target


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test's own, for stopping and starting."""
    with RedisServer(tmp_path / "private-redis") as server:
        yield server


@pytest.fixture
def private_target(private_redis: RedisServer, request: pytest.FixtureRequest) -> RedisTarget:
    return RedisTarget(private_redis.url, unique_prefix(request.node.name))

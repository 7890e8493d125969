"""Fixtures giving tests a real Redis server.

``REDIS_URL`` set (and non-empty): tests use that server as is. It is assumed to be a
dedicated db of a shared server, so nothing ever flushes it; each test writes under its
own ``prefix`` and only those keys are deleted afterwards. ``REDIS_URL`` unset: a
throwaway ``redis-server`` is started for the session (see ``redis_server.py``).
No Redis available means errors, never skips.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from activity_tracker import ActivityTracker
from redis_server import start_redis_server, stop_redis_server


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of a live Redis: ``$REDIS_URL``, or a server started for this session."""
    url = os.environ.get("REDIS_URL")
    if url:
        client = redis.Redis.from_url(url, socket_connect_timeout=5, socket_timeout=5)
        try:
            client.ping()
        except redis.RedisError as exc:
            raise RuntimeError(f"REDIS_URL={url} does not answer PING: {exc}") from exc
        finally:
            client.close()
        yield url
        return
    process, url = start_redis_server(tmp_path_factory.mktemp("redis"))
    try:
        yield url
    finally:
        stop_redis_server(process)


@pytest.fixture
def prefix(redis_url: str) -> Iterator[str]:
    """A key prefix unique to this test; keys ``{prefix}:*`` are deleted after it."""
    value = f"t{uuid.uuid4().hex[:12]}"
    yield value
    client = redis.Redis.from_url(redis_url)
    try:
        batch: list[bytes] = []
        for key in client.scan_iter(match=f"{value}:*", count=1000):
            batch.append(key)
            if len(batch) >= 500:
                client.delete(*batch)
                batch.clear()
        if batch:
            client.delete(*batch)
    finally:
        client.close()


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    """A ``redis.Redis`` client on ``redis_url`` (bytes responses), closed after the test."""
    client = redis.Redis.from_url(redis_url)
    try:
        yield client
    finally:
        client.close()


BACKENDS = ["redis"]


@pytest.fixture(params=BACKENDS)
def make_tracker(
    request: pytest.FixtureRequest, redis_url: str, prefix: str
) -> Iterator[Callable[..., ActivityTracker]]:
    """Build ``ActivityTracker``s on the backend under test (each test runs once per backend).

    Every tracker made starts empty: on Redis each gets its own key prefix under this test's
    ``prefix``. All are closed after the test."""
    made: list[ActivityTracker] = []

    def make(**options: Any) -> ActivityTracker:
        if request.param == "redis":
            options = {"url": redis_url, "prefix": f"{prefix}:{len(made)}", **options}
        tracker = ActivityTracker(backend=request.param, **options)
        made.append(tracker)
        return tracker

    yield make
    for tracker in made:
        tracker.close()

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
from redis_server import server_version, start_redis_server, stop_redis_server
from silent_server import SilentServer


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


BACKENDS = ["redis", "memory"]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "redis_only: a test using make_tracker that only makes sense on Redis"
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Run each test using ``make_tracker`` once per backend; a test that also looks at Redis
    itself (``redis_client``) or is marked ``redis_only`` runs on Redis only."""
    if "make_tracker" not in metafunc.fixturenames:
        return
    redis_only = "redis_client" in metafunc.fixturenames or any(
        metafunc.definition.iter_markers("redis_only")
    )
    metafunc.parametrize("make_tracker", ["redis"] if redis_only else BACKENDS, indirect=True)


@pytest.fixture
def make_tracker(request: pytest.FixtureRequest) -> Iterator[Callable[..., ActivityTracker]]:
    """Build ``ActivityTracker``s on the backend under test (each test runs once per backend).

    Every tracker made starts empty: on Redis each gets its own key prefix under this test's
    ``prefix``; the memory backend takes no url or prefix (and starts no server). All are
    closed after the test."""
    made: list[ActivityTracker] = []
    backend: str = request.param
    if backend == "redis":
        redis_url: str = request.getfixturevalue("redis_url")
        prefix: str = request.getfixturevalue("prefix")

    def make(**options: Any) -> ActivityTracker:
        if backend == "redis":
            options = {"url": redis_url, "prefix": f"{prefix}:{len(made)}", **options}
        tracker = ActivityTracker(backend=backend, **options)
        made.append(tracker)
        return tracker

    yield make
    for tracker in made:
        tracker.close()


@pytest.fixture(scope="module")
def sleepy_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of a throwaway server that accepts ``DEBUG SLEEP``, for the module's tests."""
    extra = ["--enable-debug-command", "yes"] if server_version() >= (7,) else []
    process, url = start_redis_server(tmp_path_factory.mktemp("sleepy"), extra_args=extra)
    try:
        yield url
    finally:
        stop_redis_server(process)


@pytest.fixture
def silent_server() -> Iterator[SilentServer]:
    """A TCP server that accepts connections and never answers (see ``silent_server.py``)."""
    server = SilentServer()
    try:
        yield server
    finally:
        server.close()

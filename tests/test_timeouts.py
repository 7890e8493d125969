"""Nothing waits for ever: every client the library makes gives up on a Redis that accepts
connections and never answers (a silent TCP server), or that stops answering (``DEBUG
SLEEP``), with a ``BackendConnectionError`` carrying redis-py's exception.

No timing is asserted: a call that hangs fails through the watchdog of ``finishing()``, and
redis-py's retries are seen by counting the connections the silent server accepted (one per
call: none retried) and the commands a sleeping server ran.
"""

from __future__ import annotations

import asyncio
import datetime
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator

import pytest
import redis

from activity_tracker import ActivityTracker, AsyncActivityTracker, BackendConnectionError
from activity_tracker.embedded import embedded_client, release
from activity_tracker.timeouts import DEFAULT_SOCKET_CONNECT_TIMEOUT, DEFAULT_SOCKET_TIMEOUT
from redis_server import close_connections_named, wait_until_asleep
from silent_server import WATCHDOG_SECONDS, finishing

DAY = datetime.date(2024, 1, 10)
NEXT_DAY = DAY + datetime.timedelta(days=1)
CLI = [sys.executable, "-c", "from activity_tracker.cli import main; main()"]
FAST = 0.3  # seconds: the read timeout of the tests that need not wait the default


def _raises_connection_error(call) -> BackendConnectionError:
    with pytest.raises(BackendConnectionError) as caught:
        finishing(call)
    assert isinstance(caught.value.__cause__, redis.RedisError | redis.RedisClusterException)
    return caught.value


def test_a_silent_redis_gives_the_documented_error_with_the_default_timeouts(silent_server):
    tracker = ActivityTracker(url=silent_server.url)
    error = _raises_connection_error(lambda: tracker.track(id=1, date=DAY))
    assert isinstance(error.__cause__, redis.TimeoutError)
    assert silent_server.connections == 1  # no retry: the wait is one read timeout
    kwargs = tracker.backend.client.connection_pool.connection_kwargs
    assert kwargs["socket_timeout"] == DEFAULT_SOCKET_TIMEOUT
    assert kwargs["socket_connect_timeout"] == DEFAULT_SOCKET_CONNECT_TIMEOUT


@pytest.mark.parametrize(
    "call",
    [
        pytest.param(lambda t: t.track(id=1, date=DAY), id="track"),
        pytest.param(lambda t: t.track(id=2, old_id=1, date=DAY), id="track-id-change"),
        pytest.param(lambda t: t.track_many([{"id": 1, "date": DAY}] * 3), id="track_many"),
        pytest.param(lambda t: t.collapse(date=NEXT_DAY), id="collapse"),
        pytest.param(lambda t: t.lookup_daily(start=DAY, end=NEXT_DAY), id="lookup"),
    ],
)
@pytest.mark.parametrize("made_from", ["url", "host"])
def test_every_call_gives_up_on_a_silent_redis_without_retrying(silent_server, call, made_from):
    # redis-py 8 retries a timed-out command 10 times on a client made from host/port, so
    # that wait is eleven times the timeout, and more, unless the library turns it off.
    where = (
        {"url": silent_server.url}
        if made_from == "url"
        else {"host": "127.0.0.1", "port": silent_server.port}
    )
    tracker = ActivityTracker(periods=["daily", "monthly"], socket_timeout=FAST, **where)
    for attempt in (1, 2):
        error = _raises_connection_error(lambda: call(tracker))
        assert isinstance(error.__cause__, redis.TimeoutError)
        assert silent_server.connections == attempt


@pytest.fixture
def unconnectable_port() -> Iterator[int]:
    """A port whose listener never accepts and whose accept queue is full: the kernel drops
    further connection requests, so connecting waits until the client gives up."""
    listener = socket.create_server(("127.0.0.1", 0), backlog=0)
    port = listener.getsockname()[1]
    queued = []
    refused_in_a_row = 0
    try:
        while refused_in_a_row < 2:  # twice: one slow connect is not a full queue
            probe = socket.socket()
            probe.settimeout(0.5)
            try:
                probe.connect(("127.0.0.1", port))
            except OSError:
                probe.close()
                refused_in_a_row += 1
                continue
            refused_in_a_row = 0
            queued.append(probe)
        yield port
    finally:
        for probe in queued:
            probe.close()
        listener.close()


def test_a_redis_that_cannot_be_connected_to_gives_up_after_the_connect_timeout(
    unconnectable_port,
):
    url = f"redis://127.0.0.1:{unconnectable_port}/0"
    tracker = ActivityTracker(url=url, socket_connect_timeout=FAST, socket_timeout=FAST)
    error = _raises_connection_error(lambda: tracker.track(id=1, date=DAY))
    assert isinstance(error.__cause__, redis.TimeoutError)
    assert "connecting" in str(error)


def test_the_asyncio_tracker_gives_up_on_a_silent_redis(silent_server):
    async def scenario() -> None:
        tracker = AsyncActivityTracker(url=silent_server.url, socket_timeout=FAST)
        for call in (
            lambda: tracker.track(id=1, date=DAY),
            lambda: tracker.track_many([{"id": 1, "date": DAY}]),
            lambda: tracker.collapse(date=NEXT_DAY),
            lambda: tracker.lookup_daily(start=DAY, end=NEXT_DAY),
        ):
            with pytest.raises(BackendConnectionError) as caught:
                await call()
            assert isinstance(caught.value.__cause__, redis.TimeoutError)
        assert silent_server.connections == 4
        kwargs = await _async_kwargs(AsyncActivityTracker(url=silent_server.url))
        assert kwargs["socket_timeout"] == DEFAULT_SOCKET_TIMEOUT

    finishing(lambda: asyncio.run(scenario()))


async def _async_kwargs(tracker: AsyncActivityTracker) -> dict:
    kwargs = dict(tracker.backend.client.connection_pool.connection_kwargs)
    await tracker.close()
    return kwargs


def test_a_cluster_client_gives_up_on_a_silent_node_as_it_is_made(silent_server):
    url = f"redis+cluster://127.0.0.1:{silent_server.port}"
    error = _raises_connection_error(lambda: ActivityTracker(url=url, socket_timeout=FAST))
    assert "Timeout" in str(error)

    async def scenario() -> None:
        tracker = AsyncActivityTracker(url=url, socket_timeout=FAST)
        with pytest.raises(BackendConnectionError):
            await tracker.track(id=1, date=DAY)

    finishing(lambda: asyncio.run(scenario()))


def test_timeouts_can_be_set_or_turned_off_only_when_asked_for(silent_server):
    tracker = ActivityTracker(url=silent_server.url, socket_timeout=None, socket_connect_timeout=9)
    kwargs = tracker.backend.client.connection_pool.connection_kwargs
    assert (kwargs["socket_timeout"], kwargs["socket_connect_timeout"]) == (None, 9.0)
    for bad in (0, -1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="socket_timeout"):
            ActivityTracker(url=silent_server.url, socket_timeout=bad)
    with pytest.raises(TypeError, match="socket_connect_timeout"):
        ActivityTracker(url=silent_server.url, socket_connect_timeout="2")
    with pytest.raises(ValueError, match="socket_connect_timeout"):
        ActivityTracker(client=redis.Redis(), socket_connect_timeout=1)


def test_the_embedded_client_has_the_default_timeouts(tmp_path):
    client = embedded_client(tmp_path / "store.db")
    try:
        kwargs = client.connection_pool.connection_kwargs  # a unix socket: one timeout
        assert kwargs["socket_timeout"] == DEFAULT_SOCKET_TIMEOUT
    finally:
        client.close()
        release(tmp_path / "store.db")


def test_the_command_line_gives_up_on_a_silent_redis_with_one_line(silent_server):
    result = subprocess.run(
        [*CLI, "--url", silent_server.url, "report"],
        capture_output=True,
        text=True,
        timeout=WATCHDOG_SECONDS,
    )
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1
    assert "Timeout reading" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_redis_that_stops_answering_gives_up_without_sending_twice(sleepy_redis):
    admin = redis.Redis.from_url(sleepy_redis, socket_timeout=60)  # outlasts the sleep
    tracker = ActivityTracker(url=sleepy_redis, prefix="sleepy", socket_timeout=FAST)
    tracker.track(id=0, date=DAY)  # connected, scripts loaded
    admin.config_resetstat()
    asleep = threading.Thread(target=lambda: admin.execute_command("DEBUG", "SLEEP", 5))
    asleep.start()
    wait_until_asleep(sleepy_redis, asleep)
    try:
        _raises_connection_error(lambda: tracker.track(id=1, date=DAY))
        _raises_connection_error(lambda: tracker.lookup_daily(start=DAY, end=NEXT_DAY))
    finally:
        asleep.join()
    tracker.track(id=2, date=DAY)  # and the tracker works again
    # Once awake, Redis may still run what the tracker sent before giving up (unless it sees
    # the closed connection first): at most once, never again. It has read every connection
    # ready when it woke by the time it answers a call sent after it woke.
    ran = admin.info("commandstats")["cmdstat_evalsha"]["calls"] - 1
    assert ran <= 1
    tracker.collapse(date=NEXT_DAY)
    assert tracker.lookup_daily(start=DAY, end=NEXT_DAY) == [(DAY, {None: 2 + ran})]
    admin.delete(*admin.keys("sleepy:*"))
    admin.close()


def test_a_connection_the_server_dropped_is_replaced_without_failing_a_call(redis_url, prefix):
    """The one retry: a pooled connection closed by Redis (a restart, an idle timeout, a
    proxy) costs no call, sync or asyncio."""
    # Only the tracker's own connections are closed (by their name): on a shared server,
    # everyone else's stay open.
    url = f"{redis_url}?client_name={prefix}"
    admin = redis.Redis.from_url(redis_url, decode_responses=True)
    tracker = ActivityTracker(url=url, prefix=prefix)
    tracker.track(id=1, date=DAY)
    assert close_connections_named(admin, prefix)
    tracker.track(id=2, date=DAY)

    async def scenario() -> None:
        async with AsyncActivityTracker(url=url, prefix=prefix) as async_tracker:
            await async_tracker.track(id=3, date=DAY)
            assert close_connections_named(admin, prefix)
            await async_tracker.track(id=4, date=DAY)

    asyncio.run(scenario())
    tracker.collapse(date=NEXT_DAY)
    assert tracker.lookup_daily(start=DAY, end=NEXT_DAY) == [(DAY, {None: 4})]
    admin.close()

"""The per-event path's connections, on real Redis servers: ``track()`` keeps a few of the
client's pooled connections between calls, and that never shows to a user: calls after a
restart, a dropped or timed-out connection, a fork, or from many threads give the counts
of the exact-set model, and a capped pool lends at most a sixteenth of its connections,
given back on close."""

from __future__ import annotations

import asyncio
import datetime
import multiprocessing
import threading
from collections.abc import Iterator

import pytest
import redis
import redis.asyncio

from activity_tracker import (
    ActivityTracker,
    AggregateBucketError,
    AsyncActivityTracker,
    BackendConnectionError,
    WrongKeyTypeError,
)
from activity_tracker.keys import KeySchema, encode_bucket
from activity_tracker.periods import Period
from redis_server import (
    start_redis_server,
    stop_redis_server,
    wait_until_asleep,
)

DAY = datetime.date(2024, 1, 10)
NEXT_DAY = DAY + datetime.timedelta(days=1)
FORK = multiprocessing.get_context("fork")


def counts(tracker: ActivityTracker) -> dict[str | None, int]:
    tracker.collapse(date=NEXT_DAY)
    [(_, found)] = tracker.lookup_daily(start=DAY, end=NEXT_DAY)
    return found


class UserConnection(redis.Connection):
    """A user's own connection class; counts the connections it opens (the server's own
    count would take in other clients of a shared server)."""

    opened = 0

    def _connect(self):  # type: ignore[no-untyped-def]
        type(self).opened += 1
        return super()._connect()


def test_successive_calls_share_one_connection(redis_url, prefix):
    client = redis.Redis.from_url(redis_url, connection_class=UserConnection)
    tracker = ActivityTracker(periods=["daily", "monthly"], client=client, prefix=prefix)
    before = UserConnection.opened
    for n in range(50):
        tracker.track(id=n % 7, bucket="web", date=DAY)
        tracker.track(id=f"u{n % 5}", bucket="app", old_id=n % 7, old_bucket="web", date=DAY)
    assert UserConnection.opened - before == 1
    assert counts(tracker) == {"web": 0, "app": 5}
    client.close()


@pytest.mark.parametrize("protocol", [2, 3])
@pytest.mark.parametrize("decode_responses", [False, True])
def test_replies_and_errors_in_resp2_and_resp3(redis_url, prefix, protocol, decode_responses):
    client = redis.Redis.from_url(redis_url, protocol=protocol, decode_responses=decode_responses)
    tracker = ActivityTracker(client=client, prefix=prefix)
    for n in range(3):
        tracker.track(id=n, bucket="a", date=DAY)
        tracker.track(id=n, bucket="b", date=DAY)
    tracker.collapse(date=NEXT_DAY, aggregate_buckets={"both": ["a", "b"]})
    with pytest.raises(AggregateBucketError, match="both"):  # track.lua's array reply
        tracker.track(id=9, bucket="both", date=DAY)
    day = Period("daily", DAY + datetime.timedelta(days=1))
    client.set(KeySchema(prefix).hll(day, encode_bucket("a")), "someone else's")
    with pytest.raises(WrongKeyTypeError):  # an error reply
        tracker.track(id=1, bucket="a", date=day.start)
    tracker.track(id=3, bucket="a", date=DAY)  # the connection still serves
    assert counts(tracker) == {"a": 4, "b": 3, "both": 3}
    client.close()


def test_a_redis_restarted_costs_no_call_sync_and_asyncio(tmp_path):
    process, url = start_redis_server(tmp_path)
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    tracker = ActivityTracker(url=url)

    async def track_async(id: int) -> None:
        async with AsyncActivityTracker(url=url) as async_tracker:
            await async_tracker.track(id=id, date=DAY)
            await async_tracker.track(id=id + 1, date=DAY)
            stop_redis_server(restarted[-1])
            restarted.append(start_redis_server(tmp_path, port=port)[0])
            await async_tracker.track(id=id + 2, date=DAY)

    restarted = [process]
    try:
        tracker.track(id=1, date=DAY)
        stop_redis_server(process)
        restarted.append(start_redis_server(tmp_path, port=port)[0])
        tracker.track(id=2, date=DAY)  # no data kept: the new server knows neither script
        tracker.track(id=3, date=DAY)
        assert counts(tracker) == {None: 2}
        asyncio.run(track_async(10))
        assert counts(tracker) == {None: 1}  # what the async tracker sent after the restart
    finally:
        tracker.close()
        stop_redis_server(restarted[-1])


def _asleep(url: str) -> threading.Thread:
    """A thread running a second of ``DEBUG SLEEP``, once the server sleeps."""

    def sleep() -> None:
        admin = redis.Redis.from_url(url, socket_timeout=60)
        admin.execute_command("DEBUG", "SLEEP", 1)
        admin.close()

    thread = threading.Thread(target=sleep)
    thread.start()
    wait_until_asleep(url, thread)
    return thread


def test_a_connection_that_timed_out_is_not_used_again(sleepy_redis, prefix):
    """Its late reply must not be read as the answer to a later call."""
    tracker = ActivityTracker(url=sleepy_redis, prefix=prefix, socket_timeout=0.3)
    for n in range(3):
        tracker.track(id=n, bucket="a", date=DAY)
    tracker.collapse(date=NEXT_DAY, aggregate_buckets={"all": ["a"]})
    asleep = _asleep(sleepy_redis)
    with pytest.raises(BackendConnectionError):
        tracker.track(id=5, bucket="a", date=DAY)  # answered 0 once Redis wakes
    asleep.join()
    with pytest.raises(AggregateBucketError):
        tracker.track(id=6, bucket="all", date=DAY)
    tracker.close()


def test_an_asyncio_connection_that_timed_out_is_not_used_again(sleepy_redis, prefix):
    async def scenario() -> None:
        async with AsyncActivityTracker(
            url=sleepy_redis, prefix=prefix, socket_timeout=0.3
        ) as tracker:
            for n in range(3):
                await tracker.track(id=n, bucket="a", date=DAY)
            await tracker.collapse(date=NEXT_DAY, aggregate_buckets={"all": ["a"]})
            asleep = _asleep(sleepy_redis)
            with pytest.raises(BackendConnectionError):
                await tracker.track(id=5, bucket="a", date=DAY)
            asleep.join()
            with pytest.raises(AggregateBucketError):
                await tracker.track(id=6, bucket="all", date=DAY)

    asyncio.run(scenario())


def test_threads_tracking_at_once(redis_url, prefix):
    client = redis.Redis.from_url(redis_url, connection_class=UserConnection)
    tracker = ActivityTracker(periods=["daily", "monthly"], client=client, prefix=prefix)
    tracker.track(id=0, bucket="warm", date=DAY)
    before = UserConnection.opened
    failures: list[BaseException] = []

    def work(thread: int) -> None:
        try:
            for n in range(200):
                tracker.track(id=f"u{thread}.{n % 10}", bucket=f"t{thread}", date=DAY)
        except BaseException as exc:  # pragma: no cover - reported below
            failures.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    assert UserConnection.opened - before <= 8
    assert counts(tracker) == {"warm": 1, **{f"t{t}": 10 for t in range(8)}}
    tracker.close()
    client.close()


def _track_in_child(tracker: ActivityTracker) -> None:
    for n in range(300):
        tracker.track(id=n % 10, bucket="child", date=DAY)


def test_a_forked_child_tracks_on_its_own_connections(redis_url, prefix):
    tracker = ActivityTracker(url=redis_url, prefix=prefix)
    tracker.track(id=0, bucket="parent", date=DAY)  # a connection kept: the child's copy
    child = FORK.Process(target=_track_in_child, args=(tracker,), daemon=True)
    child.start()
    for n in range(300):  # at the same time, on the parent's connection
        tracker.track(id=n % 20, bucket="parent", date=DAY)
    child.join(timeout=120)
    assert child.exitcode == 0
    tracker.track(id=20, bucket="parent", date=DAY)  # the child left it working
    assert counts(tracker) == {"parent": 21, "child": 10}
    tracker.close()


@pytest.fixture
def capped_pool(redis_url: str) -> Iterator[redis.BlockingConnectionPool]:
    pool = redis.BlockingConnectionPool.from_url(redis_url, max_connections=16, timeout=0.2)
    yield pool
    pool.disconnect()


def test_a_capped_pool_lends_a_sixteenth_and_gets_it_back_on_close(capped_pool, prefix):
    client = redis.Redis(connection_pool=capped_pool)
    tracker = ActivityTracker(client=client, prefix=prefix)
    tracker.track(id=1, date=DAY)
    taken = [capped_pool.get_connection() for _ in range(15)]
    with pytest.raises(redis.ConnectionError):  # the sixteenth is the tracker's
        capped_pool.get_connection()
    tracker.close()
    taken.append(capped_pool.get_connection())
    for connection in taken:
        capped_pool.release(connection)
    assert client.ping()  # the client passed in stays open


def test_a_small_pool_lends_nothing(redis_url, prefix):
    pool = redis.BlockingConnectionPool.from_url(redis_url, max_connections=2, timeout=0.2)
    tracker = ActivityTracker(client=redis.Redis(connection_pool=pool), prefix=prefix)
    tracker.track(id=1, date=DAY)
    taken = [pool.get_connection() for _ in range(2)]
    for connection in taken:
        pool.release(connection)
    tracker.track(id=2, date=DAY)
    assert counts(tracker) == {None: 2}
    pool.disconnect()


def test_asyncio_calls_share_connections_and_give_them_back(redis_url, prefix):
    async def scenario() -> dict[str | None, int]:
        pool = redis.asyncio.BlockingConnectionPool.from_url(
            redis_url, max_connections=16, timeout=0.2
        )
        client = redis.asyncio.Redis(connection_pool=pool)
        tracker = AsyncActivityTracker(client=client, prefix=prefix)
        await asyncio.gather(*(tracker.track(id=n % 10, date=DAY) for n in range(100)))
        await tracker.track(id=10, bucket="b", date=DAY)
        taken = [await pool.get_connection() for _ in range(15)]
        with pytest.raises(redis.ConnectionError):
            await pool.get_connection()
        await tracker.close()
        taken.append(await pool.get_connection())
        for connection in taken:
            await pool.release(connection)
        await tracker.collapse(date=NEXT_DAY)
        [(_, found)] = await tracker.lookup_daily(start=DAY, end=NEXT_DAY)
        await client.aclose()
        return found

    assert asyncio.run(scenario()) == {None: 10, "b": 1}

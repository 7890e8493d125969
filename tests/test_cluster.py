"""The Redis backend on a real three-node Redis Cluster, started for this module."""

from __future__ import annotations

import asyncio
import datetime
import time
from collections.abc import Iterator

import pytest
import redis

from activity_tracker import (
    ActivityTracker,
    AsyncActivityTracker,
    BackendConnectionError,
    WrongKeyTypeError,
)
from activity_tracker.periods import Period
from redis_server import SLOT_RANGES, running_cluster
from test_rolling import EVENTS, FRI, MON, NEXT_MON, SAT, SUN, TUE, WED, error_of, read_unions

DAY = datetime.date(2024, 1, 10)
NEXT_DAY = DAY + datetime.timedelta(days=1)


@pytest.fixture(scope="module")
def cluster_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with running_cluster(tmp_path_factory.mktemp("cluster")) as (url, _):
        yield url


def test_tracking_collapsing_and_lookups_work_across_slots(cluster_url, prefix):
    tracker = ActivityTracker(
        periods=["daily", "weekly", "monthly"], url=cluster_url, prefix=prefix
    )
    tracker.track(id="s1", bucket="anon", date=DAY)
    tracker.track(id="s2", bucket="anon", date=DAY)
    tracker.track(id=1, bucket="auth", old_id="s2", old_bucket="anon", date=DAY)
    tracker.track(id="s2", bucket="anon", date=DAY + datetime.timedelta(days=20))
    tracker.collapse(
        date=datetime.date(2024, 2, 1), max_periods=31, aggregate_buckets={"all": ["anon", "auth"]}
    )
    assert tracker.lookup_daily(start=DAY, end=NEXT_DAY) == [
        (DAY, {"all": 2, "anon": 1, "auth": 1})
    ]
    month = tracker.lookup_monthly(start=datetime.date(2024, 1, 1), end=datetime.date(2024, 2, 1))
    # s2 was moved out in January, then tracked again later in January: it counts again.
    assert month == [(datetime.date(2024, 1, 1), {"all": 3, "anon": 2, "auth": 1})]
    keys = [
        key
        for node in tracker.backend.client.get_nodes()
        for key in tracker.backend.client.get_redis_connection(node).keys(f"{prefix}:*")
    ]
    slots_by_period: dict[bytes, set[int]] = {}
    for key in keys:
        tag = key.split(b"{")[1].split(b"}")[0]
        slots_by_period.setdefault(tag, set()).add(redis.cluster.key_slot(key))
    assert all(len(slots) == 1 for slots in slots_by_period.values())
    assert len({slot for slots in slots_by_period.values() for slot in slots}) > 1
    tracker.close()


def test_the_async_tracker_works_on_a_cluster(cluster_url, prefix):
    async def scenario():
        async with AsyncActivityTracker(
            periods=["daily", "monthly"], url=cluster_url, prefix=prefix
        ) as tracker:
            await tracker.track(id=5, date=DAY)
            await tracker.track(id=6, bucket="x", old_id=5, date=DAY)
            await tracker.collapse(date=NEXT_DAY, aggregate_buckets={"all": [None, "x"]})
            return await tracker.lookup_daily(start=DAY, end=NEXT_DAY)

    assert asyncio.run(scenario()) == [(DAY, {None: 0, "all": 1, "x": 1})]


def test_check_reports_every_primary_of_a_cluster(cluster_url):
    from click.testing import CliRunner

    from activity_tracker.cli import cli

    result = CliRunner().invoke(cli, ["--url", cluster_url, "check"])
    assert "Traceback" not in result.output
    headers = [line for line in result.stdout.splitlines() if not line.startswith(" ")]
    assert len(headers) == len(SLOT_RANGES)
    assert all(", node 127.0.0.1:" in header for header in headers)
    assert result.exit_code == 1  # the test nodes keep nothing on disk
    assert "no persistence" in result.stdout


def test_an_unreachable_cluster_raises_the_documented_error():
    with pytest.raises(BackendConnectionError, match="Cluster"):
        ActivityTracker(url="redis+cluster://127.0.0.1:1")


def _keys(client: redis.cluster.RedisCluster, pattern: str) -> list[bytes]:
    return [
        key
        for node in client.get_nodes()
        for key in client.get_redis_connection(node).keys(pattern)
    ]


def test_windows_counts_and_retention_across_slots_equal_a_single_redis(
    cluster_url, redis_url, prefix
):
    on_cluster = ActivityTracker(url=cluster_url, prefix=prefix, rolling=(7,))
    single = ActivityTracker(url=redis_url, prefix=prefix, rolling=(7,))
    found = read_unions(on_cluster)
    assert found == read_unions(single)
    assert found[0][-1] == (
        SUN,
        {
            "all": error_of(5, 7),
            "anon": error_of(1, 3),
            "app": error_of(2, 2),
            "web": error_of(3, 3),
        },
    )
    # The copies made to count unions across slots are gone.
    assert _keys(on_cluster.backend.client, f"{prefix}:{{u*") == []
    on_cluster.close()
    single.close()


def test_a_foreign_string_among_the_sketches_fails_the_union_and_nothing_is_copied(
    cluster_url, prefix
):
    tracker = ActivityTracker(url=cluster_url, prefix=prefix)
    tracker.track(id="a", bucket="web", date=MON)
    tracker.track(id="b", bucket="web", date=TUE)
    client = tracker.backend.client
    client.set(tracker.backend.schema.hll(Period("daily", TUE), "b:web"), b"not a sketch")
    with pytest.raises(WrongKeyTypeError, match=r"\{d2024-01-09\}:hll:b:web holds a string"):
        tracker.count(MON, WED)
    assert _keys(client, f"{prefix}:{{u*") == []
    reg = tracker.backend.schema.reg(Period("daily", MON))
    client.delete(reg)
    client.rpush(reg, "someone else's")
    with pytest.raises(WrongKeyTypeError, match=r"reading .*\{d2024-01-08\}:reg"):
        tracker.count(MON, TUE)
    tracker.close()


def test_the_async_tracker_counts_unions_on_a_cluster(cluster_url, prefix):
    async def scenario():
        async with AsyncActivityTracker(url=cluster_url, prefix=prefix, rolling=(2,)) as tracker:
            for event in EVENTS:
                await tracker.track(**event)
            await tracker.collapse(date=NEXT_MON, max_periods=7)
            return (
                await tracker.lookup_rolling(2, SAT, SUN),
                await tracker.count(MON, NEXT_MON),
                await tracker.retention("daily", FRI, NEXT_MON, "app"),
            )

    assert asyncio.run(scenario()) == (
        [(SAT, {"app": 1, "web": 1})],
        5,
        [(FRI, [1, 0, 0]), (SAT, [0, 0]), (SUN, [0])],
    )


def test_a_node_killed_mid_run_gives_connection_errors_never_others(tmp_path, prefix):
    # A short node timeout: the two nodes left mark the dead one failed within a second, and
    # the cluster goes down (its slots are no longer covered).
    with running_cluster(tmp_path, ["--cluster-node-timeout", "500"]) as (url, processes):
        tracker = ActivityTracker(url=url, prefix=prefix, socket_timeout=2)
        days = [DAY + datetime.timedelta(days=n) for n in range(12)]  # slots on every node
        for day in days:
            tracker.track(id="before", date=day)
        processes[1].kill()  # SIGKILL: no goodbye to the others
        processes[1].wait()
        outcomes = []
        for day in days:
            try:
                tracker.track(id="after", date=day)
                outcomes.append("tracked")
            except BackendConnectionError as error:  # anything else fails the test
                assert isinstance(error.__cause__, redis.RedisError | redis.RedisClusterException)
                outcomes.append("refused")
        assert "refused" in outcomes  # the days whose slots were on the dead node

        survivor = redis.Redis.from_url(url.replace("redis+cluster://", "redis://"))
        deadline = time.monotonic() + 60
        while survivor.cluster("info")["cluster_state"] != "fail":
            assert time.monotonic() < deadline, "the cluster never noticed the dead node"
            time.sleep(0.1)
        survivor.close()
        for call in (
            lambda: tracker.track(id="down", date=DAY),
            lambda: tracker.track_many([{"id": "down", "date": DAY}]),
            lambda: tracker.collapse(date=NEXT_DAY),
            lambda: tracker.lookup_daily(start=DAY, end=NEXT_DAY),
        ):
            with pytest.raises(BackendConnectionError) as caught:
                call()
            assert isinstance(
                caught.value.__cause__,
                redis.exceptions.ClusterDownError | redis.ConnectionError | redis.TimeoutError,
            )
        tracker.close()

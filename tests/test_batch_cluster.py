"""The batch path on a real three-node Redis Cluster: one script call per period, each on
the node holding that period's slot."""

from __future__ import annotations

import asyncio
import datetime

from activity_tracker import ActivityTracker, AsyncActivityTracker
from test_cluster import cluster_url  # noqa: F401 - the module-scoped cluster fixture

DAY = datetime.date(2024, 1, 10)
NEXT_DAY = DAY + datetime.timedelta(days=1)
EVENTS = [
    ("s1", "anon", None, None, DAY),
    ("s2", "anon", None, None, DAY),
    {"id": 1, "bucket": "auth", "old_id": "s2", "old_bucket": "anon", "date": DAY},
    ("s2", "anon", None, None, DAY + datetime.timedelta(days=20)),
]


def test_track_many_on_a_cluster_counts_like_track(cluster_url, prefix):  # noqa: F811
    one = ActivityTracker(periods=["daily", "monthly"], url=cluster_url, prefix=f"{prefix}:1")
    many = ActivityTracker(periods=["daily", "monthly"], url=cluster_url, prefix=f"{prefix}:2")
    for event in EVENTS:
        one.track(**event) if isinstance(event, dict) else one.track(*event)
    assert many.track_many(EVENTS) == len(EVENTS)
    results = []
    for tracker in (one, many):
        tracker.collapse(date=datetime.date(2024, 2, 1), max_periods=31)
        results.append(
            (
                tracker.lookup_daily(start=DAY, end=NEXT_DAY),
                tracker.lookup_monthly(
                    start=datetime.date(2024, 1, 1), end=datetime.date(2024, 2, 1)
                ),
            )
        )
        tracker.close()
    assert results[0] == results[1]
    assert results[1][1] == [(datetime.date(2024, 1, 1), {"anon": 2, "auth": 1})]


def test_async_track_many_on_a_cluster(cluster_url, prefix):  # noqa: F811
    async def scenario():
        async with AsyncActivityTracker(url=cluster_url, prefix=prefix) as tracker:
            await tracker.track_many(EVENTS)
            await tracker.collapse(date=NEXT_DAY)
            return await tracker.lookup_daily(start=DAY, end=NEXT_DAY)

    assert asyncio.run(scenario()) == [(DAY, {"anon": 1, "auth": 1})]

"""fakeredis for applications' tests: ``ActivityTracker(client=fakeredis.FakeRedis())``.

fakeredis runs the scripts with lupa and keeps a HyperLogLog as a set of its elements, so it
counts exactly: the counts below are the exact-set model's, to the unit. Nothing here says
anything about Redis (the rest of the suite does, on a real server); the last tests check
that a set where a sketch belongs is taken for one with a fakeredis client only.
"""

from __future__ import annotations

import asyncio
import datetime

import fakeredis
import pytest

from activity_tracker import (
    ActivityTracker,
    AggregateBucketError,
    AsyncActivityTracker,
    BufferedTracker,
    Estimate,
    WrongKeyTypeError,
)
from activity_tracker.keys import KeySchema, encode_bucket
from activity_tracker.periods import Period
from test_rolling import read_unions

DAY = datetime.date(2024, 1, 10)
NEXT_DAY = DAY + datetime.timedelta(days=1)
WEEK, MONTH = datetime.date(2024, 1, 8), datetime.date(2024, 1, 1)
RSE = 1.04 / 16384**0.5  # the standard error of Redis's sketches, which Estimate reports
AGGREGATES = {"everyone": ["anon", "auth", "web", "app"], "signed_in": ["auth", "web", "app"]}


def record_a_day(tracker: ActivityTracker) -> None:
    """2,000 sessions; 600 log in one by one, 100 in a batch; web users, one of whom changes id."""
    tracker.track_many({"id": f"s{i}", "bucket": "anon", "date": DAY} for i in range(2000))
    for i in range(600):
        tracker.track(id=f"u{i}", bucket="auth", old_id=f"s{i}", old_bucket="anon", date=DAY)
    tracker.track_many({"id": f"u{i}", "bucket": "web", "date": DAY} for i in range(300, 700))
    logins = [(f"u{i}", "app", f"s{i}", "anon", DAY) for i in range(1000, 1100)]
    tracker.track_many(logins)
    tracker.track(id="v1", bucket="app", old_id="u650", old_bucket="web", date=DAY)


# The exact sets: anon s600..s999 and s1100..s1999; auth u0..u599; web u300..u699 but u650;
# app u1000..u1099 and v1.
EXACT = {"anon": 1300, "auth": 600, "web": 399, "app": 101, "everyone": 2100, "signed_in": 800}
# What the sketches hold (ids moved out included): every s, every u, and v1.
HELD = {"anon": 2000, "auth": 600, "web": 400, "app": 101, "everyone": 2801, "signed_in": 801}


def test_an_application_tracks_collapses_and_looks_up_with_exact_counts():
    tracker = ActivityTracker(
        client=fakeredis.FakeRedis(), periods=["daily", "weekly", "monthly"], timezone="UTC"
    )
    record_a_day(tracker)
    # "everyone" has two sources with change records (anon, web): its correction is the
    # client's, stored with store.lua; "signed_in" has one (web): stored by collapse.lua.
    tracker.collapse(date=NEXT_DAY, aggregate_buckets=AGGREGATES)
    tracker.collapse(
        date=datetime.date(2024, 1, 15),
        periods=["weekly"],
        aggregate_buckets={"everyone": AGGREGATES["everyone"]},
    )
    tracker.collapse(date=datetime.date(2024, 2, 1), periods=["monthly"])

    assert tracker.lookup_daily(DAY, NEXT_DAY) == [(DAY, EXACT)]
    assert tracker.lookup_weekly(WEEK, WEEK + datetime.timedelta(days=7)) == [
        (WEEK, {k: v for k, v in EXACT.items() if k != "signed_in"})
    ]
    assert tracker.lookup_monthly(MONTH, datetime.date(2024, 2, 1)) == [
        (MONTH, {k: EXACT[k] for k in ("anon", "auth", "web", "app")})
    ]
    [(_, estimates)] = tracker.lookup_daily(DAY, NEXT_DAY, with_error=True)
    assert estimates == {k: Estimate(EXACT[k], pytest.approx(RSE * HELD[k])) for k in EXACT}


def test_late_events_and_a_second_collapse_change_the_counts_exactly():
    tracker = ActivityTracker(client=fakeredis.FakeRedis(), timezone="UTC")
    record_a_day(tracker)
    tracker.collapse(date=NEXT_DAY, aggregate_buckets=AGGREGATES)
    # u650 comes back to web; a session logs in as a web user already counted.
    tracker.track(id="u650", bucket="web", date=DAY)
    tracker.track(id="u300", bucket="web", old_id="s1500", old_bucket="anon", date=DAY)
    tracker.collapse(date=NEXT_DAY, aggregate_buckets=AGGREGATES)
    changed = {"anon": 1299, "web": 400, "everyone": 2100, "signed_in": 801}
    assert tracker.lookup_daily(DAY, NEXT_DAY) == [(DAY, {**EXACT, **changed})]


def test_tracking_into_an_aggregate_is_refused_as_on_redis():
    client = fakeredis.FakeRedis()
    tracker = ActivityTracker(client=client, timezone="UTC")
    record_a_day(tracker)
    tracker.collapse(date=NEXT_DAY, aggregate_buckets=AGGREGATES)
    keys = set(client.keys())
    with pytest.raises(AggregateBucketError, match="everyone"):
        tracker.track(id="u1", bucket="everyone", date=DAY)
    assert set(client.keys()) == keys


def test_windows_counts_and_retention_on_fakeredis_equal_the_memory_backend():
    with ActivityTracker(client=fakeredis.FakeRedis(), rolling=(7,)) as fake:
        found = read_unions(fake)
    with ActivityTracker(backend="memory", rolling=(7,)) as memory:
        assert found == read_unions(memory)


def test_a_buffered_tracker_sends_to_fakeredis_from_its_thread():
    tracker = ActivityTracker(client=fakeredis.FakeRedis(decode_responses=True), timezone="UTC")
    with BufferedTracker(tracker, interval=0.01) as buffered:
        for i in range(500):
            buffered.track(id=i % 250, bucket="api", date=DAY)
    tracker.collapse(date=NEXT_DAY)
    assert tracker.lookup_daily(DAY, NEXT_DAY) == [(DAY, {"api": 250})]


def test_the_asyncio_tracker_works_on_fakeredis_async_client():
    async def main() -> list[tuple[datetime.date, dict[str | None, int]]]:
        client = fakeredis.FakeAsyncRedis()
        async with AsyncActivityTracker(client=client, timezone="UTC") as tracker:
            await tracker.track_many(
                {"id": f"s{i}", "bucket": "anon", "date": DAY} for i in range(50)
            )
            for i in range(20):
                await tracker.track(
                    id=f"u{i}", bucket="auth", old_id=f"s{i}", old_bucket="anon", date=DAY
                )
            await tracker.collapse(date=NEXT_DAY, aggregate_buckets={"all": ["anon", "auth"]})
            rows = await tracker.lookup_daily(DAY, NEXT_DAY)
        await client.aclose()
        return rows

    assert asyncio.run(main()) == [(DAY, {"all": 50, "anon": 30, "auth": 20})]


SKETCH = KeySchema("activity").hll(Period("daily", DAY), encode_bucket("theirs"))


@pytest.mark.parametrize(
    "foreign", [lambda c: c.set(SKETCH, "not a sketch"), lambda c: c.rpush(SKETCH, "x")]
)
def test_fakeredis_still_refuses_a_foreign_key_that_is_not_a_set(foreign):
    client = fakeredis.FakeRedis()
    foreign(client)
    tracker = ActivityTracker(client=client, timezone="UTC")
    with pytest.raises(WrongKeyTypeError, match="theirs"):
        tracker.track(id=1, bucket="theirs", date=DAY)
    assert client.keys() == [SKETCH.encode()]


def test_real_redis_refuses_a_set_where_a_sketch_belongs(redis_url, redis_client, prefix):
    # The fakeredis allowance is chosen by the client's class, never by the server's data.
    key = KeySchema(prefix).hll(Period("daily", DAY), encode_bucket("theirs"))
    redis_client.sadd(key, "someone's member")
    with ActivityTracker(url=redis_url, prefix=prefix, timezone="UTC") as tracker:
        with pytest.raises(WrongKeyTypeError, match="theirs"):
            tracker.track(id=1, bucket="theirs", date=DAY)
        with pytest.raises(WrongKeyTypeError, match="theirs"):
            tracker.track_many([{"id": 1, "bucket": "theirs", "date": DAY}])
    assert redis_client.keys(f"{prefix}:*") == [key.encode()]
    assert redis_client.smembers(key) == {b"someone's member"}

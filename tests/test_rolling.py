"""Rolling windows, count(), retention() and measure() (DESIGN §7), on every backend: a window
or a count() range is one period of the exact-set model."""

from __future__ import annotations

import asyncio
import datetime
import time

import pytest
import redis

from activity_tracker import (
    ActivityTracker,
    AggregateBucketError,
    AsyncActivityTracker,
    CollapseError,
    Estimate,
    RawDataExpiredError,
    WrongKeyTypeError,
)
from activity_tracker.backends import redis_plan
from activity_tracker.corrections import RELATIVE_STANDARD_ERROR
from activity_tracker.keys import KeySchema
from activity_tracker.periods import DAILY, WEEKLY, Period

D = datetime.date
MON = D(2024, 1, 8)
DAYS = [MON + datetime.timedelta(days=n) for n in range(7)]
TUE, WED, THU, FRI, SAT, SUN = DAYS[1:]
NEXT_MON = MON + datetime.timedelta(days=7)
ALL = {"all": ["anon", "web", "app"]}
WEEK = {"all": 5, "anon": 1, "app": 2, "web": 3}


# A week with logins, and a quiet Sunday. As one period: anon {s2} (s1 and s3 logged in),
# web {u1, u2, u3}, app {u1, u4}: 5 ids in all (7 in the sketches, sessions included).
EVENTS = [
    {"id": "s1", "bucket": "anon", "date": MON},
    {"id": "s2", "bucket": "anon", "date": MON},
    {"id": "u1", "bucket": "web", "date": MON},
    {"id": "u2", "bucket": "web", "old_id": "s1", "old_bucket": "anon", "date": TUE},
    {"id": "u1", "bucket": "app", "date": TUE},
    {"id": "s2", "bucket": "anon", "date": WED},
    {"id": "u3", "bucket": "web", "date": WED},
    {"id": "u2", "bucket": "web", "date": THU},
    {"id": "s3", "bucket": "anon", "date": THU},
    {"id": "u1", "bucket": "web", "old_id": "s3", "old_bucket": "anon", "date": THU},
    {"id": "u4", "bucket": "app", "date": FRI},
    {"id": "u1", "bucket": "web", "date": SAT},
]


def play(tracker: ActivityTracker) -> None:
    for event in EVENTS:
        tracker.track(**event)  # type: ignore[arg-type]


def read_unions(tracker: ActivityTracker) -> tuple[object, ...]:
    """The week played, collapsed with windows, then every kind of union read (to compare
    stores: the cluster, the embedded Redis)."""
    play(tracker)
    tracker.collapse(date=NEXT_MON, max_periods=7, aggregate_buckets=ALL)
    return (
        tracker.lookup_rolling(7, MON, NEXT_MON, with_error=True),
        tracker.lookup_rolling(3, MON, NEXT_MON, with_error=True),
        tracker.count(MON, NEXT_MON, with_error=True),
        tracker.count(TUE, SAT, ["anon", "app"]),
        tracker.retention("daily", MON, NEXT_MON, "web", with_error=True),
        tracker.measure(date=THU, aggregate_buckets=ALL, with_error=True),
    )


def error_of(count: int, held: int) -> Estimate:
    return Estimate(count, RELATIVE_STANDARD_ERROR * held)


def test_the_7_day_window_ending_on_a_sunday_is_that_weeks_count(make_tracker):
    tracker = make_tracker(periods=[DAILY, WEEKLY], rolling=(7,))
    play(tracker)
    tracker.collapse(date=NEXT_MON, max_periods=7, aggregate_buckets=ALL)
    [(_, week)] = tracker.lookup_weekly(MON, NEXT_MON, with_error=True)
    assert {bucket: found.count for bucket, found in week.items()} == WEEK
    assert tracker.lookup_rolling(7, SUN, NEXT_MON, with_error=True) == [(SUN, week)]
    # The window ending on Sunday is stored although nothing happened on Sunday.
    assert tracker.lookup_daily(SUN, NEXT_MON) == [(SUN, {})]


def test_stored_windows_equal_windows_computed_from_the_raw_sketches(make_tracker):
    stored = make_tracker(rolling=(3,))
    play(stored)
    stored.collapse(date=NEXT_MON, max_periods=7, aggregate_buckets=ALL)
    computed = ActivityTracker(backend=stored.backend)  # the same store, no stored windows
    rows = stored.lookup_rolling(3, MON, NEXT_MON, with_error=True)
    assert rows == computed.lookup_rolling(3, MON, NEXT_MON, with_error=True)
    assert [(day, {b: e.count for b, e in row.items()}) for day, row in rows] == [
        (MON, {"all": 3, "anon": 2, "app": 0, "web": 1}),
        (TUE, {"all": 3, "anon": 1, "app": 1, "web": 2}),
        (WED, {"all": 4, "anon": 1, "app": 1, "web": 3}),
        (THU, {"all": 4, "anon": 1, "app": 1, "web": 3}),
        (FRI, {"all": 5, "anon": 1, "app": 1, "web": 3}),
        (SAT, {"all": 3, "anon": 0, "app": 1, "web": 2}),
        (SUN, {"all": 2, "anon": 0, "app": 1, "web": 1}),
    ]
    # Friday's window (Wed-Fri): s3 was added and moved out on Thursday: its sketch holds it.
    assert rows[4][1]["anon"] == error_of(1, 2)
    assert computed.lookup_rolling(2, SAT, SUN, buckets=["web", "nobody"]) == [
        (SAT, {"web": 1, "nobody": 0})
    ]


def test_lookups_of_days_ignore_the_windows_stored_beside_their_counts(make_tracker):
    tracker = make_tracker(rolling=(2,))
    play(tracker)
    tracker.collapse(date=NEXT_MON, max_periods=7)
    assert tracker.lookup_daily(MON, TUE) == [(MON, {"anon": 2, "web": 1})]
    assert tracker.lookup_rolling(2, MON, TUE) == [(MON, {"anon": 2, "web": 1})]


def test_count_is_one_period_of_every_event_in_the_range(make_tracker):
    tracker = make_tracker()
    play(tracker)
    assert tracker.count(MON, NEXT_MON) == 5
    assert tracker.count(MON, NEXT_MON, ["anon"]) == 1
    assert tracker.count(MON, TUE) == 3
    assert tracker.count(MON, WED, ["anon"]) == 1  # s1 logged in on Tuesday
    assert tracker.count(TUE, NEXT_MON, ["anon", "app"]) == 3  # s2, u1, u4: s1, s3 logged in
    assert tracker.count(SUN, NEXT_MON) == 0  # a day without events
    assert tracker.count(MON, MON) == 0
    assert tracker.count(MON, NEXT_MON, ["web", "nobody"], with_error=True) == error_of(3, 3)
    assert tracker.count(MON, NEXT_MON, with_error=True) == error_of(5, 7)
    tracker.collapse(date=NEXT_MON, max_periods=7, aggregate_buckets={"site": ["web", "app"]})
    assert tracker.count(MON, NEXT_MON, ["site"]) == 4  # an aggregate counts its sources


def test_retention_is_the_triangle_of_ids_active_in_both_periods(make_tracker):
    tracker = make_tracker(periods=[WEEKLY])
    weeks = [MON + datetime.timedelta(days=7 * n) for n in range(3)]
    for week, users in zip(weeks, ("abcd", "abx", "acy"), strict=True):
        for user in users:
            tracker.track(id=user, bucket="app", date=week)
    # In week 2, a session logs in as d: d was active in week 2 too.
    tracker.track(id="s", bucket="app", date=weeks[1])
    tracker.track(id="d", bucket="app", old_id="s", old_bucket="app", date=weeks[1])
    end = weeks[2] + datetime.timedelta(days=7)
    assert tracker.retention("weekly", MON, end, "app") == [
        (weeks[0], [4, 3, 2]),
        (weeks[1], [4, 1]),
        (weeks[2], [3]),
    ]
    rows = tracker.retention("weekly", MON, end, "app", with_error=True)
    # Week 1 with week 2: the union holds a, b, c, d, x and the session s: its error.
    assert rows[0][1][1] == error_of(3, 6)
    assert tracker.retention("weekly", MON, end) == [
        (w, [0] * (3 - n)) for n, w in enumerate(weeks)
    ]
    assert tracker.retention("weekly", TUE, weeks[1] + datetime.timedelta(days=6), "app") == []


def test_measure_is_a_read_only_live_count_of_a_period(make_tracker):
    tracker = make_tracker(periods=[DAILY, WEEKLY])
    play(tracker)
    assert tracker.measure(date=THU) == {"anon": 0, "web": 2}
    assert tracker.measure("weekly", date=SUN, aggregate_buckets=ALL) == WEEK
    assert tracker.measure(date=THU, buckets=["anon"], with_error=True) == {"anon": error_of(0, 1)}
    assert tracker.lookup_daily(THU, FRI) == [(THU, {})]  # nothing was stored
    tracker.track(id="u5", bucket="all", date=SUN)  # "all" is no aggregate: nothing registered
    with pytest.raises(AggregateBucketError, match="'web' is a bucket used"):
        tracker.measure(date=THU, aggregate_buckets={"web": ["anon"]})
    tracker.collapse(date=NEXT_MON, max_periods=7, aggregate_buckets={"site": ["web", "app"]})
    assert tracker.measure(date=TUE, buckets=["site"]) == {"site": 2}  # a stored aggregate
    stored = tracker.measure(date=TUE) | {"site": 2}
    assert tracker.lookup_daily(TUE, WED) == [(TUE, stored)]


def test_a_day_whose_raw_data_expired_is_named_and_a_day_never_collapsed_reads_empty(
    make_tracker,
):
    tracker = make_tracker(retention=1)
    tracker.track(id="a", date=MON)
    tracker.track(id="b", date=TUE)
    tracker.collapse(date=WED, max_periods=1)  # Tuesday only: Monday is never collapsed
    time.sleep(2.2)  # the raw data of both days expires (a second after its first write)
    for call in (
        lambda: tracker.count(MON, WED),
        lambda: tracker.lookup_rolling(2, TUE, WED),
        lambda: tracker.retention("daily", MON, WED),
        lambda: tracker.measure(date=TUE),
    ):
        with pytest.raises(RawDataExpiredError, match="daily period of 2024-01-09 has expired"):
            call()
    assert tracker.count(MON, TUE) == 0  # nothing says Monday had events
    assert tracker.lookup_daily(TUE, WED) == [(TUE, {None: 1})]  # counts stay


def test_a_window_with_an_expired_day_is_not_stored(redis_url, prefix):
    short = ActivityTracker(url=redis_url, prefix=prefix, retention=1)
    short.track(id="a", date=MON)
    short.collapse(date=TUE)
    time.sleep(2.2)
    tracker = ActivityTracker(url=redis_url, prefix=prefix, rolling=(1, 2))
    tracker.track(id="b", date=TUE)
    tracker.collapse(date=WED)
    assert tracker.lookup_rolling(1, TUE, WED) == [(TUE, {None: 1})]
    assert tracker.lookup_rolling(2, TUE, WED) == [(TUE, {})]
    short.close()
    tracker.close()


def test_windows_of_a_collapse_cover_buckets_tracked_on_any_of_their_days(make_tracker):
    tracker = make_tracker(rolling=(2,))
    tracker.track(id="a", bucket="web", date=MON)
    tracker.track(id="b", bucket="app", date=TUE)
    tracker.collapse(date=WED, max_periods=2, buckets=["app"])
    assert tracker.lookup_rolling(2, MON, WED) == [(MON, {"app": 0}), (TUE, {"app": 1})]
    tracker.collapse(date=WED, max_periods=2)
    assert tracker.lookup_rolling(2, TUE, WED) == [(TUE, {"app": 1, "web": 1})]


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"rolling": (7, 36)}, ValueError, "a window of 36 days is longer than the retention"),
        ({"rolling": (7,), "periods": ["weekly"]}, ValueError, "track the daily period"),
        ({"rolling": 7}, TypeError, "rolling must be a list"),
        ({"rolling": ["7"]}, TypeError, "a window length is a number of days"),
        ({"rolling": [0]}, ValueError, "from 1 to 36,525 days"),
        ({"rolling": (3,), "retention": 2 * 86_400}, ValueError, "3 days is longer"),
    ],
)
def test_bad_rolling_options(make_tracker, options, error, message):
    with pytest.raises(error, match=message):
        make_tracker(**options)


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda t: t.lookup_rolling(0, MON, TUE), ValueError, "days: a window length is from 1"),
        (lambda t: t.lookup_rolling("7", MON, TUE), TypeError, "days: a window length"),
        (lambda t: t.lookup_rolling(7, TUE, MON), ValueError, "must not be after end"),
        (lambda t: t.lookup_rolling(7, D(1, 1, 2), D(1, 1, 3)), ValueError, "before 1 AD"),
        (lambda t: t.lookup_rolling(7, MON, TUE, with_error=1), TypeError, "with_error"),
        (lambda t: t.count(TUE, MON), ValueError, "must not be after end"),
        (lambda t: t.count(None, MON), TypeError, "start must be a datetime.date"),
        (lambda t: t.count(MON, "tomorrow"), TypeError, "end must be a datetime.date"),
        (lambda t: t.count(MON, TUE, "web"), TypeError, "buckets must be a list"),
        (lambda t: t.retention("hourly", MON, TUE), ValueError, "unknown period 'hourly'"),
        (lambda t: t.retention("weekly", MON, TUE), ValueError, "does not track the weekly"),
        (lambda t: t.retention("daily", MON, TUE, bucket=3), TypeError, "bucket must be a str"),
        (lambda t: t.retention("daily", MON, D(2025, 6, 1)), ValueError, "at most 366"),
        (lambda t: t.lookup_rolling(9_000, MON, D(2034, 1, 1)), ValueError, "12,"),
        (lambda t: t.measure(date="today"), TypeError, "date must be a datetime.date"),
        (lambda t: t.measure(aggregate_buckets={"x": []}), ValueError, "at least one bucket"),
        (lambda t: t.measure(with_error=None), TypeError, "with_error"),
    ],
)
def test_bad_arguments_name_the_argument(make_tracker, call, error, message):
    with pytest.raises(error, match=message):
        call(make_tracker())


def test_count_and_windows_need_the_daily_period(make_tracker):
    tracker = make_tracker(periods=[WEEKLY])
    with pytest.raises(ValueError, match="does not track the daily period"):
        tracker.count(MON, TUE)
    with pytest.raises(ValueError, match="does not track the daily period"):
        tracker.lookup_rolling(7, MON, TUE)


@pytest.mark.parametrize("backend", ["redis", "memory"])
def test_the_asyncio_tracker_gives_the_same_answers(backend, redis_url, prefix):
    options = {"url": redis_url, "prefix": prefix} if backend == "redis" else {}

    async def scenario():
        async with AsyncActivityTracker(
            periods=[DAILY, WEEKLY], backend=backend, rolling=(7,), **options
        ) as tracker:
            for event in EVENTS:
                await tracker.track(**event)
            await tracker.collapse(date=NEXT_MON, max_periods=7, aggregate_buckets=ALL)
            return (
                await tracker.lookup_rolling(7, SUN, NEXT_MON),
                await tracker.lookup_rolling(3, SAT, SUN),
                await tracker.count(MON, NEXT_MON, ["anon"], with_error=True),
                await tracker.retention("daily", FRI, NEXT_MON, "web"),
                await tracker.measure(date=THU),
            )

    assert asyncio.run(scenario()) == (
        [(SUN, WEEK)],
        [(SAT, {"all": 3, "anon": 0, "app": 1, "web": 2})],
        error_of(1, 3),
        [(FRI, [0, 0, 0]), (SAT, [1, 0]), (SUN, [0])],
        {"anon": 0, "web": 2},
    )


@pytest.mark.redis_only
def test_a_window_measured_earlier_never_replaces_one_measured_later(make_tracker, prefix):
    """Two collapses of one day, interleaved by hand on a real Redis: B measures after A,
    reads and stores its windows first; A's windows, read later but measured earlier, are
    refused (the day's measurement time is the windows' time)."""
    tracker = make_tracker(rolling=(2,))
    backend = tracker.backend
    tracker.track(id="a", date=MON)
    tracker.track(id="b", date=TUE)
    job = tracker._collapse_job(None, WED, 1, None, None)
    first = redis_plan.collapse(backend.schema, job)
    second = redis_plan.collapse(backend.schema, job)
    a_reads = first.send(backend._send(next(first)))  # A measures Tuesday ...
    b_reads = second.send(backend._send(next(second)))  # ... then B measures it
    b_reads = second.send(backend._send(b_reads))  # B reads the window's registries ...
    b_store = second.send(backend._send(b_reads))  # ... then its sketches, and stores it
    with pytest.raises(StopIteration):
        second.send(backend._send(b_store))
    tracker.track(id="c", date=MON)  # after both measurements: in A's reads only
    a_reads = first.send(backend._send(a_reads))
    a_store = first.send(backend._send(a_reads))
    assert backend._send(a_store) == [0]  # refused
    counts = KeySchema(backend.schema.prefix).counts(Period(DAILY, TUE))
    stored = backend.client.hgetall(counts)
    assert stored[b"@rolling:2:default"] == b"2,2," + stored[b"@measured"]
    assert tracker.lookup_rolling(2, TUE, WED) == [(TUE, {None: 2})]


@pytest.mark.redis_only
def test_someone_elses_key_among_the_days_is_an_error_naming_it(make_tracker, redis_client):
    tracker = make_tracker(rolling=(2,))
    play(tracker)
    schema = tracker.backend.schema
    reg, sketch = schema.reg(Period(DAILY, MON)), schema.hll(Period(DAILY, WED), "b:web")
    redis_client.delete(reg)
    redis_client.rpush(reg, "someone else's")
    with pytest.raises(WrongKeyTypeError, match=r"WRONGTYPE.*reading .*\{d2024-01-08\}:reg"):
        tracker.count(MON, WED)
    redis_client.delete(sketch)
    redis_client.sadd(sketch, "x")
    with pytest.raises(WrongKeyTypeError, match=r"reading .*\{d2024-01-10\}:hll:b:web"):
        tracker.count(TUE, THU)
    # A collapse stores every day it can, and names the others: the foreign keys' days, and
    # the days whose windows read them.
    with pytest.raises(CollapseError) as caught:
        tracker.collapse(date=NEXT_MON, max_periods=7)
    assert [period.start for period, _ in caught.value.failures] == [MON, TUE, WED, THU]
    assert tracker.lookup_rolling(2, FRI, SAT) == [(FRI, {"anon": 0, "app": 1, "web": 2})]
    assert redis_client.lrange(reg, 0, -1) == [b"someone else's"]


@pytest.mark.redis_only
def test_a_client_decoding_responses_reads_binary_records(make_tracker, redis_url, prefix):
    play(make_tracker())
    decoding = redis.Redis.from_url(redis_url, decode_responses=True)
    tracker = ActivityTracker(client=decoding, prefix=f"{prefix}:0")
    assert tracker.count(MON, NEXT_MON, ["anon", "web"]) == 4
    decoding.close()

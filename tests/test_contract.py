"""The contract of DESIGN.md sections 1-3 and 6, run against every backend."""

from __future__ import annotations

import datetime
import uuid

import pytest

from activity_tracker import (
    ActivityTracker,
    AggregateBucketError,
    CollapseValueError,
    Estimate,
)
from activity_tracker.corrections import RELATIVE_STANDARD_ERROR

D = datetime.date
DAY = D(2024, 1, 10)  # a Wednesday
NEXT_DAY = DAY + datetime.timedelta(days=1)
ONE_DAY = {"start": DAY, "end": NEXT_DAY}


def counts_on(tracker: ActivityTracker, day: D = DAY, **kwargs: object) -> dict[object, int]:
    [(first_day, counts)] = tracker.lookup_daily(
        start=day, end=day + datetime.timedelta(days=1), **kwargs
    )
    assert first_day == day
    return counts


def test_seed_basic_usage(make_tracker):
    tracker = make_tracker()
    tracker.track(id=123, date=DAY)
    tracker.track(id=123, date=DAY)
    tracker.track(id=456, date=DAY)
    tracker.collapse(date=NEXT_DAY)
    assert tracker.lookup_daily(**ONE_DAY) == [(DAY, {None: 2})]


def test_ids_are_compared_as_text(make_tracker):
    tracker = make_tracker()
    user = uuid.UUID("12345678-1234-5678-1234-567812345678")
    for value in (123, "123", user, str(user), b"123"):
        tracker.track(id=value, date=DAY)
    tracker.collapse(date=NEXT_DAY)
    assert counts_on(tracker) == {None: 2}


def test_seed_buckets(make_tracker):
    tracker = make_tracker()
    tracker.track(id="random-session-1", bucket="anon", date=DAY)
    tracker.track(id="random-session-2", bucket="anon", date=DAY)
    tracker.track(id=456, bucket="auth", date=DAY)
    tracker.collapse(buckets=["anon", "auth"], date=NEXT_DAY)
    assert counts_on(tracker, buckets=["anon", "auth"]) == {"anon": 2, "auth": 1}


def test_seed_changing_ids(make_tracker):
    tracker = make_tracker()
    tracker.track(id="random-session-1", bucket="anon", date=DAY)
    tracker.track(id="random-session-2", bucket="anon", date=DAY)
    tracker.track(id=123, bucket="auth", old_id="random-session-2", old_bucket="anon", date=DAY)
    tracker.collapse(date=NEXT_DAY, aggregate_buckets={"everyone": ["anon", "auth"]})
    assert counts_on(tracker) == {"anon": 1, "auth": 1, "everyone": 2}


def test_seed_aggregate_buckets(make_tracker):
    tracker = make_tracker()
    tracker.track(id="user1@example.com", bucket="site1", date=DAY)
    tracker.track(id="jdoe@example.com", bucket="site1", date=DAY)
    tracker.track(id="jdoe@example.com", bucket="site2", date=DAY)
    tracker.track(id="user2@example.com", bucket="site2", date=DAY)
    tracker.collapse(
        buckets=["site1", "site2"], aggregate_buckets={"total": ["site1", "site2"]}, date=NEXT_DAY
    )
    assert counts_on(tracker) == {"site1": 2, "site2": 2, "total": 3}


def test_moving_an_id_that_was_never_tracked_changes_nothing(make_tracker):
    tracker = make_tracker()
    tracker.track(id="a", bucket="anon", date=DAY)
    tracker.track(id="u", bucket="auth", old_id="ghost", old_bucket="anon", date=DAY)
    tracker.track(old_id="ghost2", old_bucket="never-tracked", date=DAY)
    tracker.collapse(date=NEXT_DAY, aggregate_buckets={"all": ["anon", "auth"]})
    assert counts_on(tracker) == {"anon": 1, "auth": 1, "all": 2}


def test_a_moved_id_tracked_again_counts_again(make_tracker):
    tracker = make_tracker()
    tracker.track(id="s", bucket="anon", date=DAY)
    tracker.track(id="u", bucket="auth", old_id="s", old_bucket="anon", date=DAY)
    tracker.track(id="s", bucket="anon", date=DAY)
    tracker.collapse(date=NEXT_DAY, aggregate_buckets={"all": ["anon", "auth"]})
    assert counts_on(tracker) == {"anon": 1, "auth": 1, "all": 2}


def test_move_within_a_bucket_and_discard_only(make_tracker):
    tracker = make_tracker()
    tracker.track(id="a", date=DAY)
    tracker.track(id="b", date=DAY)
    tracker.track(id="a", old_id="a", date=DAY)  # discard then add: still there
    tracker.track(old_id="b", date=DAY)  # discard only
    tracker.collapse(date=NEXT_DAY)
    assert counts_on(tracker) == {None: 1}


def test_old_bucket_without_old_id_is_ignored(make_tracker):
    tracker = make_tracker()
    tracker.track(id="a", bucket="anon", date=DAY)
    tracker.track(id="b", bucket="auth", old_id=None, old_bucket="anon", date=DAY)
    tracker.collapse(date=NEXT_DAY)
    assert counts_on(tracker) == {"anon": 1, "auth": 1}


def test_counts_never_go_negative(make_tracker):
    tracker = make_tracker()
    for n in range(5):
        tracker.track(old_id=f"x{n}", old_bucket="b", date=DAY)
    tracker.track(id="y", bucket="c", date=DAY)
    tracker.collapse(buckets=["b", "c"], date=NEXT_DAY)
    assert counts_on(tracker) == {"b": 0, "c": 1}


def test_open_period_is_not_collapsed_and_max_periods_catches_up(make_tracker):
    tracker = make_tracker()
    days = [DAY + datetime.timedelta(days=n) for n in range(4)]
    for n, day in enumerate(days):
        for user in range(n + 1):
            tracker.track(id=user, date=day)
    tracker.collapse(date=days[3])  # days[3] is still open; only days[2] is collapsed
    rows = tracker.lookup_daily(start=days[0], end=days[3] + datetime.timedelta(days=1))
    assert [row[1].get(None, 0) for row in rows] == [0, 0, 3, 0]
    tracker.collapse(date=days[3], max_periods=3)
    rows = tracker.lookup_daily(start=days[0], end=days[3] + datetime.timedelta(days=1))
    assert [counts[None] for _, counts in rows] == [1, 2, 3, 0]


def test_collapse_is_idempotent_and_picks_up_late_events(make_tracker):
    tracker = make_tracker()
    tracker.track(id=1, date=DAY)
    tracker.collapse(date=NEXT_DAY)
    tracker.collapse(date=NEXT_DAY)
    assert counts_on(tracker) == {None: 1}
    tracker.track(id=2, date=DAY)
    tracker.track(id=3, bucket="late", date=DAY)
    tracker.collapse(date=NEXT_DAY)
    assert counts_on(tracker) == {None: 2, "late": 1}


def test_collapse_without_buckets_covers_every_tracked_bucket(make_tracker):
    tracker = make_tracker()
    tracker.track(id=1, date=DAY)
    tracker.track(id=2, bucket="a", date=DAY)
    tracker.track(id=3, bucket="b", date=DAY)
    tracker.collapse(date=NEXT_DAY)
    assert counts_on(tracker) == {None: 1, "a": 1, "b": 1}


def test_an_aggregate_can_feed_a_later_aggregate(make_tracker):
    tracker = make_tracker()
    for user, bucket in [(1, "a"), (2, "b"), (2, "c"), (3, "c")]:
        tracker.track(id=user, bucket=bucket, date=DAY)
    tracker.track(id=4, bucket="a", old_id=1, old_bucket="a", date=DAY)
    tracker.collapse(date=NEXT_DAY, aggregate_buckets={"ab": ["a", "b"], "abc": ["ab", "c"]})
    assert counts_on(tracker, buckets=["ab", "abc"]) == {"ab": 2, "abc": 3}
    tracker.collapse(date=NEXT_DAY, buckets=[], aggregate_buckets={"all": ["abc"]})
    assert counts_on(tracker, buckets=["all"]) == {"all": 3}


def test_aggregate_named_like_a_bucket_is_refused_before_writing(make_tracker):
    tracker = make_tracker()
    tracker.track(id=1, bucket="a", date=DAY)
    tracker.track(id=2, bucket="b", date=DAY)
    with pytest.raises(ValueError, match="aggregate"):
        tracker.collapse(date=NEXT_DAY, buckets=["a", "b"], aggregate_buckets={"a": ["b"]})
    with pytest.raises(ValueError, match="aggregate"):
        tracker.collapse(date=NEXT_DAY, aggregate_buckets={"b": ["a"]})
    assert tracker.lookup_daily(**ONE_DAY) == [(DAY, {})]


def test_lookup_returns_whole_periods_oldest_first(make_tracker):
    tracker = make_tracker(periods=[ActivityTracker.PERIOD_MONTHLY, ActivityTracker.PERIOD_WEEKLY])
    tracker.track(id=1, date=D(2024, 1, 31))
    tracker.track(id=2, date=D(2024, 2, 1))
    tracker.track(id=3, date=D(2024, 2, 29))
    tracker.collapse(date=D(2024, 3, 5), max_periods=6)
    months = tracker.lookup_monthly(start=D(2024, 1, 1), end=D(2024, 3, 1))
    assert months == [(D(2024, 1, 1), {None: 1}), (D(2024, 2, 1), {None: 2})]
    # A range cutting a month keeps only the month lying wholly inside it.
    assert tracker.lookup_monthly(start=D(2024, 1, 2), end=D(2024, 3, 1)) == [
        (D(2024, 2, 1), {None: 2})
    ]
    weeks = tracker.lookup_weekly(start=D(2024, 1, 29), end=D(2024, 3, 4))
    assert [(day, counts[None]) for day, counts in weeks] == [
        (D(2024, 1, 29), 2),
        (D(2024, 2, 5), 0),
        (D(2024, 2, 12), 0),
        (D(2024, 2, 19), 0),
        (D(2024, 2, 26), 1),
    ]


def test_period_aliases_take_their_arguments_by_position_too(make_tracker):
    tracker = make_tracker(periods=[ActivityTracker.PERIOD_DAILY])
    tracker.track_weekly("u1", "app", None, None, DAY)
    tracker.track_daily("u2", "app", None, None, DAY)
    tracker.collapse_weekly(None, None, D(2024, 1, 15))
    tracker.collapse_daily(["app"], {"all": ["app"]}, NEXT_DAY)
    assert tracker.lookup_weekly(D(2024, 1, 8), D(2024, 1, 15), ["app"]) == [
        (D(2024, 1, 8), {"app": 1})
    ]
    assert tracker.lookup_daily(DAY, NEXT_DAY) == [(DAY, {"app": 1, "all": 1})]
    with pytest.raises(TypeError, match="period"):
        tracker.lookup_daily(DAY, NEXT_DAY, period="weekly")


def test_lookup_ranges_and_missing_buckets(make_tracker):
    tracker = make_tracker()
    tracker.track(id=1, bucket="a", date=DAY)
    tracker.track(id=2, bucket="b", date=NEXT_DAY)
    tracker.collapse(date=NEXT_DAY + datetime.timedelta(days=1), max_periods=2)
    assert tracker.lookup_daily(start=DAY, end=DAY) == []
    rows = tracker.lookup_daily(
        start=DAY - datetime.timedelta(days=1), end=NEXT_DAY + datetime.timedelta(days=1)
    )
    assert rows == [
        (DAY - datetime.timedelta(days=1), {"a": 0, "b": 0}),
        (DAY, {"a": 1, "b": 0}),
        (NEXT_DAY, {"a": 0, "b": 1}),
    ]
    assert counts_on(tracker, buckets=["a", "nope", None]) == {"a": 1, "nope": 0, None: 0}
    with pytest.raises(ValueError, match="start"):
        tracker.lookup_daily(start=NEXT_DAY, end=DAY)


def test_yearly_period_and_per_call_periods(make_tracker):
    tracker = make_tracker()
    tracker.track(id=1, date=D(2023, 6, 1), periods=[ActivityTracker.PERIOD_YEARLY])
    tracker.track_yearly(id=2, date=D(2023, 12, 31))
    tracker.track(id=3, date=D(2023, 12, 31))  # daily only, the tracker's default
    tracker.collapse_yearly(date=D(2024, 1, 1))
    assert tracker.lookup_yearly(start=D(2023, 1, 1), end=D(2024, 1, 1)) == [
        (D(2023, 1, 1), {None: 2})
    ]


def test_aware_datetimes_count_on_the_tracker_day(make_tracker):
    tracker = make_tracker(timezone="America/New_York")
    late_evening_ny = datetime.datetime(2024, 1, 11, 3, 0, tzinfo=datetime.timezone.utc)
    tracker.track(id=1, date=late_evening_ny)  # 22:00 on 10 January in New York
    tracker.collapse(date=NEXT_DAY)
    assert counts_on(tracker) == {None: 1}


def test_bucket_names_with_awkward_characters_stay_apart(make_tracker):
    tracker = make_tracker()
    names = [None, "", "a:b", "a", "b", "{x}", "a b", "é", "日本", "default", "b:a"]
    for n, name in enumerate(names):
        for user in range(n + 1):
            tracker.track(id=user, bucket=name, date=DAY)
    tracker.collapse(date=NEXT_DAY)
    assert counts_on(tracker) == {name: n + 1 for n, name in enumerate(names)}


@pytest.mark.parametrize(
    ("call", "error", "argument"),
    [
        (lambda t: t.track(), ValueError, "id"),
        (lambda t: t.track(id=1, periods=["hourly"]), ValueError, "period"),
        (lambda t: t.track(id=1, periods="daily"), TypeError, "periods"),
        (lambda t: t.track(id=1, date="2024-01-10"), TypeError, "date"),
        (lambda t: t.track(id=1, bucket=5), TypeError, "bucket"),
        (lambda t: t.track(id="\ud800"), ValueError, "^id: "),
        (lambda t: t.track(id="u", old_id="\udfff", old_bucket="a"), ValueError, "^old_id: "),
        (
            lambda t: t.track(id="\ud800", bucket="b", old_id="s", old_bucket="a"),
            ValueError,
            "^id: ",
        ),
        (lambda t: t.track(id=1, old_id=2, old_bucket=["x"]), TypeError, "old_bucket"),
        (lambda t: t.collapse(buckets="ab", date=NEXT_DAY), TypeError, "buckets"),
        (lambda t: t.collapse(max_periods=0), ValueError, "max_periods"),
        (lambda t: t.collapse(aggregate_buckets={"t": []}), ValueError, "aggregate_buckets"),
        (lambda t: t.collapse(aggregate_buckets=["t"]), TypeError, "aggregate_buckets"),
        (lambda t: t.collapse(date=1), TypeError, "date"),
        (lambda t: t.lookup(period="hourly"), ValueError, "period"),
        (lambda t: t.lookup_daily(start=NEXT_DAY, end=DAY), ValueError, "start"),
        (lambda t: t.lookup_daily(end="tomorrow"), TypeError, "end"),
    ],
)
def test_bad_arguments_raise_naming_them_and_write_nothing(make_tracker, call, error, argument):
    tracker = make_tracker()
    with pytest.raises(error, match=argument):
        call(tracker)
    tracker.collapse(date=NEXT_DAY)
    assert tracker.lookup_daily(**ONE_DAY) == [(DAY, {})]


def test_bad_constructor_arguments(make_tracker):
    with pytest.raises(ValueError, match="backend"):
        ActivityTracker(backend="cassandra")
    with pytest.raises(ValueError, match="backend"):
        ActivityTracker(backend="no.such.module.Backend")
    with pytest.raises(TypeError, match="backend"):
        ActivityTracker(backend=42)
    with pytest.raises(ValueError, match="period"):
        ActivityTracker(periods=["fortnightly"])
    with pytest.raises(ValueError, match="timezone"):
        ActivityTracker(timezone="Nowhere/Special")


def test_lookup_with_error_gives_the_error_of_the_sketch_each_count_came_from(make_tracker):
    tracker = make_tracker()
    for n in range(10):
        tracker.track(id=f"s{n}", bucket="anon", date=DAY)
    for n in range(6):  # six sessions log in: anon's sketch still holds all ten
        tracker.track(id=f"u{n}", bucket="auth", old_id=f"s{n}", old_bucket="anon", date=DAY)
    tracker.collapse(date=NEXT_DAY, aggregate_buckets={"all": ["anon", "auth"]})
    [(_, estimates)] = tracker.lookup_daily(
        **ONE_DAY, buckets=["anon", "all", "x"], with_error=True
    )
    assert estimates == {
        "anon": Estimate(4, 10 * RELATIVE_STANDARD_ERROR),
        "all": Estimate(10, 16 * RELATIVE_STANDARD_ERROR),
        "x": Estimate(0, 0.0),
    }
    assert tracker.lookup_daily(**ONE_DAY, with_error=False) == [
        (DAY, {"all": 10, "anon": 4, "auth": 6})
    ]
    with pytest.raises(TypeError, match="with_error"):
        tracker.lookup_daily(**ONE_DAY, with_error="yes")


def test_tracking_into_or_moving_out_of_an_aggregate_is_refused_and_writes_nothing(make_tracker):
    tracker = make_tracker(periods=["daily", "weekly"])
    tracker.track(id=1, bucket="web", date=DAY)
    tracker.track(id=2, bucket="app", date=DAY)
    tracker.collapse_daily(date=NEXT_DAY, aggregate_buckets={"users": ["web", "app"]})
    refused = [
        (lambda: tracker.track(id=3, bucket="users", date=DAY), r"^bucket: 'users'"),
        (
            lambda: tracker.track(id=3, bucket="web", old_id=1, old_bucket="users", date=DAY),
            r"^old_bucket: 'users'",
        ),
        (
            lambda: tracker.track_many(
                [(4, "web", None, None, DAY), (5, "users", None, None, DAY)]
            ),
            r"^bucket: 'users'",
        ),
    ]
    for call, message in refused:
        with pytest.raises(AggregateBucketError, match=message) as caught:
            call()
        assert isinstance(caught.value, ValueError)
        assert "daily period of 2024-01-10" in str(caught.value)
    # Nothing was written, in either period: not even the batch's first event.
    tracker.collapse(date=D(2024, 1, 15), max_periods=7)
    assert counts_on(tracker) == {"app": 1, "users": 2, "web": 1}
    [(_, week)] = tracker.lookup_weekly(start=D(2024, 1, 8), end=D(2024, 1, 15))
    assert week == {"app": 1, "web": 1}
    # On another day, "users" is a bucket like any other.
    tracker.track(id=6, bucket="users", date=NEXT_DAY)


def test_a_bad_aggregate_name_fails_only_its_own_periods(make_tracker):
    tracker = make_tracker()
    days = [DAY + datetime.timedelta(days=n) for n in range(4)]
    for n, day in enumerate(days):
        tracker.track(id=n, bucket="web", date=day)
        tracker.track(id=n, bucket="app", date=day)
    tracker.track(id="x", bucket="total", date=days[1])
    tracker.track(old_id="y", old_bucket="total", date=days[3])  # a bucket ids left counts too
    with pytest.raises(CollapseValueError) as caught:
        tracker.collapse(
            date=D(2024, 1, 14), max_periods=4, aggregate_buckets={"total": ["web", "app"]}
        )
    assert [period.start for period, _ in caught.value.failures] == [days[1], days[3]]
    assert all(isinstance(error, AggregateBucketError) for _, error in caught.value.failures)
    assert "'total' is a bucket used in the daily period of 2024-01-11" in str(caught.value)
    rows = tracker.lookup_daily(start=days[0], end=D(2024, 1, 14), buckets=["total", "web"])
    assert rows == [
        (days[0], {"total": 1, "web": 1}),
        (days[1], {"total": 0, "web": 0}),
        (days[2], {"total": 1, "web": 1}),
        (days[3], {"total": 0, "web": 0}),
    ]


def test_an_aggregate_may_be_redefined_but_not_through_itself(make_tracker):
    tracker = make_tracker()
    tracker.track(id=1, bucket="a", date=DAY)
    tracker.track(id=2, bucket="b", date=DAY)
    tracker.collapse(date=NEXT_DAY, aggregate_buckets={"x": ["a"], "y": ["x", "b"]})
    assert counts_on(tracker, buckets=["x", "y"]) == {"x": 1, "y": 2}
    tracker.collapse(date=NEXT_DAY, buckets=[], aggregate_buckets={"x": ["a", "b"]})
    assert counts_on(tracker, buckets=["x", "y"]) == {"x": 2, "y": 2}
    with pytest.raises(CollapseValueError, match="'x' would count itself"):
        tracker.collapse(date=NEXT_DAY, buckets=[], aggregate_buckets={"x": ["y"]})
    # A stored aggregate asked for as a bucket is measured again from its definition.
    tracker.track(id=3, bucket="b", date=DAY)
    tracker.collapse(date=NEXT_DAY, buckets=["y"])
    assert counts_on(tracker, buckets=["x", "y"]) == {"x": 2, "y": 3}

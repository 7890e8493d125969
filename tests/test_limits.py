"""DESIGN.md section 6, edges and limits, on every backend: any date from ``date.min`` to
``date.max`` gives a result or a ValueError naming the argument (never an OverflowError),
work is bounded whatever ``max_periods`` or the range, ids are str, int, uuid.UUID or UTF-8
bytes, and ids and bucket names have a size limit."""

from __future__ import annotations

import datetime
import uuid

import pytest

from activity_tracker import ActivityTracker, BufferedTracker
from activity_tracker.arguments import MAX_BUCKET_BYTES, MAX_ID_BYTES
from activity_tracker.periods import KINDS, MAX_PERIODS, Period, finished_before, within

D = datetime.date
FIRST, LAST = D.min, D.max
DAY = D(2024, 1, 10)
NEXT_DAY = DAY + datetime.timedelta(days=1)
UTC = datetime.timezone.utc


# -- the calendar (pure) ---------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_the_calendar_has_a_first_and_a_last_period(kind):
    first, last = Period.containing(kind, FIRST), Period.containing(kind, LAST)
    assert first.start == FIRST
    with pytest.raises(ValueError, match="first"):
        first.previous()
    with pytest.raises(ValueError, match="last"):
        last.next()
    with pytest.raises(ValueError, match="last"):
        last.end  # noqa: B018 - the property is what is tested
    assert finished_before(kind, FIRST, 5) == []
    assert finished_before(kind, Period.containing(kind, FIRST).end, 5) == [first]
    assert list(within(kind, last.start, LAST)) == []


def test_a_range_longer_than_the_limit_is_refused_naming_start_and_end():
    assert len(list(within("yearly", FIRST, LAST))) == 9998  # years 1 to 9998
    with pytest.raises(ValueError, match="start, end"):
        list(within("daily", FIRST, LAST))
    days = list(within("daily", DAY, DAY + datetime.timedelta(days=MAX_PERIODS)))
    assert len(days) == MAX_PERIODS


# -- the API, on every backend -----------------------------------------------------------------


def test_collapse_and_lookup_work_at_both_ends_of_the_calendar(make_tracker):
    tracker = make_tracker(periods=["daily", "weekly", "monthly", "yearly"])
    tracker.collapse(date=FIRST)  # nothing before the first day: nothing to do
    tracker.collapse(date=LAST, max_periods=3)
    tracker.track(id=1, date=FIRST)
    tracker.track(id=2, date=D(1, 1, 2))
    tracker.collapse(date=D(2, 1, 1), max_periods=MAX_PERIODS)  # stops at 0001-01-01
    years = tracker.lookup_yearly(start=FIRST, end=LAST)
    assert len(years) == 9998
    assert years[0] == (FIRST, {None: 2})
    assert tracker.lookup_daily(end=D(1, 1, 3)) == [(FIRST, {None: 1}), (D(1, 1, 2), {None: 1})]
    assert tracker.lookup_weekly(start=FIRST, end=D(1, 1, 8)) == [(FIRST, {None: 2})]
    assert tracker.lookup_monthly(start=D(9999, 12, 1), end=LAST) == []
    assert tracker.lookup_daily(start=D(9999, 12, 30), end=LAST) == [(D(9999, 12, 30), {})]
    with pytest.raises(ValueError, match="start, end"):
        tracker.lookup_daily(start=FIRST, end=LAST)


def test_rolling_windows_of_the_calendars_first_days_hold_the_days_there_are(make_tracker):
    tracker = make_tracker(rolling=(7,))
    tracker.track(id=1, date=FIRST)
    tracker.track(id=2, date=D(1, 1, 2))
    tracker.collapse(date=D(1, 1, 3), max_periods=2)  # stores the windows ending on both days
    assert tracker.lookup_rolling(7, FIRST, D(1, 1, 3)) == [
        (FIRST, {None: 1}),
        (D(1, 1, 2), {None: 2}),
    ]


@pytest.mark.parametrize("day", [FIRST, LAST, datetime.datetime.max.replace(tzinfo=UTC)])
def test_tracking_the_first_and_last_days_works_or_names_the_date(make_tracker, day):
    tracker = make_tracker(periods=["daily", "weekly", "monthly", "yearly"], timezone="UTC")
    try:
        tracker.track(id=1, date=day)
    except ValueError as exc:
        assert str(exc).startswith("date")


@pytest.mark.parametrize(
    ("call", "argument"),
    [
        (lambda t: t.track(id=1, date=datetime.datetime.max.replace(tzinfo=UTC)), "date"),
        (lambda t: t.collapse(date=datetime.datetime.max.replace(tzinfo=UTC)), "date"),
        (lambda t: t.lookup_daily(end=datetime.datetime.max.replace(tzinfo=UTC)), "end"),
        (lambda t: t.lookup_daily(start=datetime.datetime.min.replace(tzinfo=UTC)), "start"),
        (lambda t: t.collapse(max_periods=10**7), "max_periods"),
        (lambda t: t.collapse(max_periods=MAX_PERIODS + 1), "max_periods"),
        (lambda t: t.track(id="x" * (MAX_ID_BYTES + 1)), "id"),
        (lambda t: t.track(id="é" * (MAX_ID_BYTES // 2 + 1)), "id"),
        (lambda t: t.track(id=b"x" * (MAX_ID_BYTES + 1)), "id"),
        (lambda t: t.track(id=10**MAX_ID_BYTES), "id"),
        (lambda t: t.track(id=10**5000), "id"),
        (lambda t: t.track(id=1, old_id="x" * (MAX_ID_BYTES + 1), old_bucket="a"), "old_id"),
        (lambda t: t.track(id=1, bucket="b" * (MAX_BUCKET_BYTES + 1)), "bucket"),
        (lambda t: t.track(old_id=1, old_bucket="ü" * MAX_BUCKET_BYTES), "old_bucket"),
        (lambda t: t.collapse(buckets=["b" * (MAX_BUCKET_BYTES + 1)]), "buckets"),
        (
            lambda t: t.collapse(aggregate_buckets={"b" * (MAX_BUCKET_BYTES + 1): ["a"]}),
            "aggregate_buckets",
        ),
        (lambda t: t.track_many([{"id": "x" * (MAX_ID_BYTES + 1), "date": DAY}]), "events"),
        (lambda t: t.track_many([("x" * (MAX_ID_BYTES + 1), None, None, None, DAY)]), "events"),
    ],
)
def test_out_of_range_values_are_a_value_error_naming_them(make_tracker, call, argument):
    tracker = make_tracker(timezone="Asia/Tokyo")  # datetime.max in UTC is 10000-01-01 there
    with pytest.raises(ValueError, match=f"^{argument}"):
        call(tracker)
    tracker.collapse(date=NEXT_DAY)
    assert tracker.lookup_daily(start=DAY, end=NEXT_DAY) == [(DAY, {})]


@pytest.mark.parametrize("bad", [1.5, True, object(), [1], (1,), {"a": 1}, {1}, None.__class__])
def test_ids_of_other_types_are_a_type_error_naming_them(make_tracker, bad):
    tracker = make_tracker()
    for call, argument in (
        (lambda: tracker.track(id=bad, date=DAY), "id"),
        (lambda: tracker.track(id=1, old_id=bad, old_bucket="a", date=DAY), "old_id"),
        (lambda: tracker.track_many([{"id": 1, "date": DAY}, {"id": bad, "date": DAY}]), "events"),
        (lambda: tracker.track_many([(bad, None, None, None, DAY)]), r"events\[0\]: id"),
        (lambda: BufferedTracker(tracker).track(id=bad, date=DAY), "id"),
    ):
        with pytest.raises(TypeError, match=f"^{argument}"):
            call()
    tracker.collapse(date=NEXT_DAY)
    assert tracker.lookup_daily(start=DAY, end=NEXT_DAY) == [(DAY, {None: 1})]  # events[0]


def test_ids_and_bucket_names_at_the_limit_are_accepted(make_tracker):
    tracker = make_tracker()
    user = uuid.UUID("12345678-1234-5678-1234-567812345678")
    longest, bucket = "x" * MAX_ID_BYTES, "ü" * (MAX_BUCKET_BYTES // 2)
    for value in (longest, longest.encode(), "é" * (MAX_ID_BYTES // 2), 10 ** (MAX_ID_BYTES - 1)):
        tracker.track(id=value, bucket=bucket, date=DAY)
    tracker.track_many([(longest, bucket, None, None, DAY), (user, bucket, None, None, DAY)])
    tracker.collapse(date=NEXT_DAY)
    assert tracker.lookup_daily(start=DAY, end=NEXT_DAY) == [(DAY, {bucket: 4})]


def test_an_int_subclass_is_the_int_it_stands_for(make_tracker):
    import enum

    class Code(enum.IntEnum):
        SEVEN = 7

    tracker = make_tracker()
    tracker.track(id=Code.SEVEN, date=DAY)
    tracker.track(id="7", date=DAY)
    tracker.collapse(date=NEXT_DAY)
    assert tracker.lookup_daily(start=DAY, end=NEXT_DAY) == [(DAY, {None: 1})]


def test_the_api_refuses_what_it_documents_before_any_store_is_reached():
    tracker = ActivityTracker(url="redis://127.0.0.1:1/0")  # nothing listens there
    with pytest.raises(TypeError, match=r"^id"):
        tracker.track(id=1.5)
    with pytest.raises(ValueError, match=r"^max_periods"):
        tracker.collapse(max_periods=10**6)

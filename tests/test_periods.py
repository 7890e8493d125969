import datetime
from zoneinfo import ZoneInfo

import pytest

from activity_tracker import periods
from activity_tracker.periods import Period

D = datetime.date


@pytest.mark.parametrize(
    ("kind", "day", "start", "end"),
    [
        (periods.DAILY, D(2024, 2, 29), D(2024, 2, 29), D(2024, 3, 1)),
        (periods.WEEKLY, D(2024, 1, 10), D(2024, 1, 8), D(2024, 1, 15)),
        (periods.WEEKLY, D(2024, 1, 8), D(2024, 1, 8), D(2024, 1, 15)),
        (periods.WEEKLY, D(2024, 1, 14), D(2024, 1, 8), D(2024, 1, 15)),
        (periods.MONTHLY, D(2024, 12, 31), D(2024, 12, 1), D(2025, 1, 1)),
        (periods.MONTHLY, D(2024, 2, 1), D(2024, 2, 1), D(2024, 3, 1)),
        (periods.YEARLY, D(2024, 7, 4), D(2024, 1, 1), D(2025, 1, 1)),
    ],
)
def test_period_containing_a_day(kind, day, start, end):
    period = Period.containing(kind, day)
    assert (period.start, period.end) == (start, end)


def test_iso_week_53_spans_new_year():
    # 2020 has an ISO week 53: Monday 2020-12-28 to Sunday 2021-01-03.
    week = Period.containing(periods.WEEKLY, D(2021, 1, 1))
    assert week.start == D(2020, 12, 28)
    assert week.start.isocalendar()[:2] == (2020, 53)
    assert week.end == D(2021, 1, 4)
    assert Period.containing(periods.WEEKLY, D(2021, 1, 4)).start == D(2021, 1, 4)


def test_tags_differ_between_kinds_starting_the_same_day():
    day = D(2024, 1, 1)  # a Monday, first of a month and of a year
    tags = {Period.containing(kind, day).tag for kind in periods.KINDS}
    assert len(tags) == 4


def test_previous_and_next_are_inverse():
    for kind in periods.KINDS:
        period = Period.containing(kind, D(2024, 3, 31))
        assert period.next().previous() == period
        assert period.previous().next() == period


def test_finished_before_excludes_the_open_period_and_is_oldest_first():
    found = periods.finished_before(periods.MONTHLY, D(2024, 3, 15), 3)
    assert [p.start for p in found] == [D(2023, 12, 1), D(2024, 1, 1), D(2024, 2, 1)]


def test_within_keeps_only_whole_periods():
    found = list(periods.within(periods.MONTHLY, D(2024, 1, 15), D(2024, 4, 1)))
    assert [p.start for p in found] == [D(2024, 2, 1), D(2024, 3, 1)]
    assert list(periods.within(periods.DAILY, D(2024, 1, 1), D(2024, 1, 1))) == []
    weeks = list(periods.within(periods.WEEKLY, D(2024, 1, 1), D(2024, 1, 21)))
    assert [p.start for p in weeks] == [D(2024, 1, 1), D(2024, 1, 8)]


def test_aware_datetimes_are_converted_to_the_tracker_time_zone():
    berlin = ZoneInfo("Europe/Berlin")
    # 23:30 UTC on 30 March is already 31 March in Berlin (01:30 CET)...
    utc = datetime.datetime(2024, 3, 30, 23, 30, tzinfo=datetime.timezone.utc)
    assert periods.local_date(utc, berlin, "date") == D(2024, 3, 31)
    # ...and across the spring-forward change, 22:30 UTC on 31 March is 00:30 CEST 1 April.
    after_dst = datetime.datetime(2024, 3, 31, 22, 30, tzinfo=datetime.timezone.utc)
    assert periods.local_date(after_dst, berlin, "date") == D(2024, 4, 1)
    # The same instant in New York is still 31 March.
    assert periods.local_date(after_dst, ZoneInfo("America/New_York"), "date") == D(2024, 3, 31)


def test_naive_datetimes_are_taken_as_local_already():
    naive = datetime.datetime(2024, 3, 31, 23, 59)
    assert periods.local_date(naive, ZoneInfo("Asia/Tokyo"), "date") == D(2024, 3, 31)


def test_today_follows_the_time_zone():
    for name in ("Pacific/Kiritimati", "Pacific/Pago_Pago"):  # UTC+14 and UTC-11
        zone = ZoneInfo(name)
        assert periods.local_date(None, zone, "date") == datetime.datetime.now(zone).date()


def test_bad_values_name_the_argument():
    with pytest.raises(TypeError, match="date"):
        periods.local_date("2024-01-01", None, "date")
    with pytest.raises(ValueError, match="period"):
        periods.check_kind("hourly")
    with pytest.raises(ValueError, match="timezone"):
        periods.resolve_timezone("Mars/Olympus_Mons")
    with pytest.raises(TypeError, match="timezone"):
        periods.resolve_timezone(3)

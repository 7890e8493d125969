"""Calendar maths: which period a day falls in, and how periods follow each other.

A period is named by its kind (``"daily"``, ``"weekly"``, ``"monthly"``, ``"yearly"``) and the
date of its first day. Weekly periods are ISO weeks, starting on Monday, so ISO week 53 of 2020
is the period starting 2020-12-28 and it holds 2021-01-01. All dates are calendar dates in the
tracker's time zone; nothing here depends on clock time, so DST changes cannot shift a period.

Python's dates run from 0001-01-01 to 9999-12-31: the periods before the first and after the
last do not exist (asking for them is a ValueError, walking stops there), and the last
periods of each kind, which end after 9999-12-31, have no ``end``.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterator
from typing import NamedTuple
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

DAILY = "daily"
WEEKLY = "weekly"
MONTHLY = "monthly"
YEARLY = "yearly"
KINDS = (DAILY, WEEKLY, MONTHLY, YEARLY)

_TAG_LETTERS = {DAILY: "d", WEEKLY: "w", MONTHLY: "m", YEARLY: "y"}

#: The most periods of one kind a collapse (``max_periods``) or a lookup covers: bounded work
#: and memory whatever the arguments (10,000 days is over 27 years).
MAX_PERIODS = 10_000


class Period(NamedTuple):
    """One period: its kind and the date of its first day."""

    kind: str
    start: datetime.date

    @classmethod
    def containing(cls, kind: str, day: datetime.date) -> Period:
        """The period of ``kind`` that contains ``day``."""
        if kind == DAILY:
            return cls(kind, day)
        if kind == WEEKLY:
            return cls(kind, day - datetime.timedelta(days=day.weekday()))
        if kind == MONTHLY:
            return cls(kind, day.replace(day=1))
        if kind == YEARLY:
            return cls(kind, day.replace(month=1, day=1))
        raise ValueError(f"unknown period {kind!r}; expected one of {', '.join(KINDS)}")

    @property
    def end(self) -> datetime.date:
        """The first day after this period (a ValueError for the last periods, which end
        after 9999-12-31)."""
        return self.next().start

    @property
    def tag(self) -> str:
        """A short text naming this period, unique across kinds (``d2024-01-31``)."""
        return _TAG_LETTERS[self.kind] + self.start.isoformat()

    def next(self) -> Period:
        """The period right after this one (a ValueError after 9999-12-31)."""
        start = self.start
        try:
            if self.kind == DAILY:
                return Period(self.kind, start + datetime.timedelta(days=1))
            if self.kind == WEEKLY:
                return Period(self.kind, start + datetime.timedelta(days=7))
            if self.kind == MONTHLY:
                if start.month == 12:
                    return Period(self.kind, start.replace(year=start.year + 1, month=1))
                return Period(self.kind, start.replace(month=start.month + 1))
            return Period(self.kind, start.replace(year=start.year + 1))
        except (OverflowError, ValueError):
            raise ValueError(
                f"the {self.kind} period starting {start} is the last one: it ends after "
                f"{datetime.date.max}, the last date Python represents"
            ) from None

    def previous(self) -> Period:
        """The period right before this one (a ValueError before 0001-01-01)."""
        if self.start == datetime.date.min:
            raise ValueError(
                f"the {self.kind} period starting {self.start} is the first one Python represents"
            )
        return Period.containing(self.kind, self.start - datetime.timedelta(days=1))


def check_kind(kind: object, argument: str = "period") -> str:
    """Return ``kind`` if it names a period, else raise naming ``argument``."""
    if not isinstance(kind, str):
        raise TypeError(
            f"{argument} must be a PERIOD_* constant (a str), not {type(kind).__name__}"
        )
    if kind not in KINDS:
        raise ValueError(f"{argument}: unknown period {kind!r}; expected one of {', '.join(KINDS)}")
    return kind


def finished_before(kind: str, day: datetime.date, count: int) -> list[Period]:
    """The ``count`` periods that end on or before the start of the period holding ``day``
    (fewer near 0001-01-01).

    Oldest first. The period holding ``day`` is still open and is not included.
    """
    periods: list[Period] = []
    period = Period.containing(kind, day)
    for _ in range(count):
        if period.start == datetime.date.min:
            break
        period = period.previous()
        periods.append(period)
    periods.reverse()
    return periods


def within(
    kind: str, start: datetime.date, end: datetime.date, limit: int = MAX_PERIODS
) -> Iterator[Period]:
    """Every period lying wholly inside ``[start, end)``, oldest first; a ValueError naming
    ``start`` and ``end`` when there are more than ``limit``."""
    first = Period.containing(kind, start)
    period = _following(first) if first.start < start else first
    found = 0
    while period is not None:
        following = _following(period)
        if following is None or following.start > end:
            return  # the period ends after ``end`` (or after 9999-12-31)
        found += 1
        if found > limit:
            raise ValueError(
                f"start, end: [{start}, {end}) holds more than {limit:,} {kind} periods, the "
                "most one lookup reads; split the range"
            )
        yield period
        period = following


def _following(period: Period) -> Period | None:
    try:
        return period.next()
    except ValueError:
        return None


def days_before(day: datetime.date, days: int) -> datetime.date:
    """``day`` minus ``days`` days, or 0001-01-01 if that is earlier."""
    if (day - datetime.date.min).days <= days:
        return datetime.date.min
    return day - datetime.timedelta(days=days)


def resolve_timezone(timezone: object) -> datetime.tzinfo | None:
    """Turn the ``timezone=`` option into a tzinfo; ``None`` means the process's local time."""
    if timezone is None or isinstance(timezone, datetime.tzinfo):
        return timezone
    if isinstance(timezone, str):
        try:
            return ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"timezone: unknown time zone {timezone!r}") from exc
    raise TypeError(f"timezone must be an IANA name or a tzinfo, not {type(timezone).__name__}")


def local_date(value: object, timezone: datetime.tzinfo | None, argument: str) -> datetime.date:
    """The calendar day of ``value`` in ``timezone``; ``None`` means today.

    A naive ``datetime`` is taken to be in the tracker's time zone already; an aware one is
    converted to it first.
    """
    if value is None:
        return datetime.datetime.now(timezone).date()
    if isinstance(value, datetime.datetime):
        if value.tzinfo is not None and value.utcoffset() is not None:
            try:
                value = value.astimezone(timezone)
            except (OverflowError, ValueError):
                raise ValueError(
                    f"{argument}: {value} falls outside the dates Python represents "
                    f"({datetime.date.min} to {datetime.date.max}) in the tracker's time zone"
                ) from None
        return value.date()
    if isinstance(value, datetime.date):
        return value
    raise TypeError(
        f"{argument} must be a datetime.date or datetime.datetime, not {type(value).__name__}"
    )


def end_epoch(period: Period, timezone: datetime.tzinfo | None) -> float:
    """The epoch seconds of the first instant after ``period`` in ``timezone`` (local time
    when ``None``): where the period's raw keys start counting their retention."""
    try:
        end = period.end
    except (OverflowError, ValueError):  # the period holding date.max: it never ends
        return datetime.datetime.max.replace(tzinfo=datetime.timezone.utc).timestamp()
    return datetime.datetime.combine(end, datetime.time(), tzinfo=timezone).timestamp()

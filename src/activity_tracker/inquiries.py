"""The reads made of unions (see :mod:`.unions`): ``count()``, rolling windows (computed by
``lookup_rolling()``, stored by a daily collapse), ``retention()`` and ``measure()``. Pure:
each says which periods it needs, what to ask of them, and how to shape the answers.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import ClassVar

from .corrections import Estimate, intersection
from .errors import AggregateBucketError
from .keys import Bucket, bucket_order
from .periods import DAILY, Period
from .unions import (
    EMPTY,
    Inquiry,
    Registry,
    Row,
    RowAnswer,
    Union,
    UnionAnswer,
    aggregates_in,
    sure,
    tracked_in,
)

Definitions = Mapping[Bucket, tuple[Bucket, ...]]


def window(last_day: datetime.date, days: int) -> tuple[Period, ...]:
    """The daily periods of the window of ``days`` days ending with ``last_day``, in order.
    Days before ``date.min`` hold no events: a window ending in the calendar's first days
    is the days it has."""
    back = min(days - 1, (last_day - datetime.date.min).days)
    first = last_day - datetime.timedelta(days=back)
    return tuple(Period(DAILY, first + datetime.timedelta(days=n)) for n in range(back + 1))


def _spanned(windows: Sequence[tuple[Period, ...]]) -> tuple[Period, ...]:
    """Every period of ``windows``, in time order, once."""
    return tuple(sorted({period for periods in windows for period in periods}))


@dataclass(frozen=True)
class CountInquiry(Inquiry[Estimate]):
    """``count()``: one union of ``buckets`` (None: every bucket tracked on any of the days)
    over ``days``, one period of the exact-set model."""

    days: tuple[Period, ...]
    buckets: tuple[Bucket, ...] | None
    definitions: Definitions = field(default_factory=dict, init=False, repr=False)

    @property
    def periods(self) -> tuple[Period, ...]:
        return self.days

    def queries(self, registries: Mapping[Period, Registry]) -> tuple[list[Row], list[Union]]:
        buckets = self.buckets
        if buckets is None:
            buckets = tuple(tracked_in(registries, self.days))
        return [], [Union(self.days, buckets)]

    def answer(self, rows: Sequence[RowAnswer], unions: Sequence[UnionAnswer]) -> Estimate:
        return sure(unions[0])


@dataclass(frozen=True)
class RollingInquiry(Inquiry[list[dict[Bucket, Estimate]]]):
    """Windows of ``days`` days ending on each of ``last_days``, per bucket: ``buckets``, or
    (None) every bucket tracked, and every aggregate registered, on a day of the window."""

    last_days: tuple[datetime.date, ...]
    days: int
    buckets: tuple[Bucket, ...] | None
    definitions: Definitions = field(default_factory=dict, init=False, repr=False)

    @property
    def periods(self) -> tuple[Period, ...]:
        return _spanned([window(day, self.days) for day in self.last_days])

    def queries(self, registries: Mapping[Period, Registry]) -> tuple[list[Row], list[Union]]:
        rows = []
        for day in self.last_days:
            periods = window(day, self.days)
            buckets = self.buckets
            if buckets is None:
                found = {*tracked_in(registries, periods), *aggregates_in(registries, periods)}
                buckets = tuple(sorted(found, key=bucket_order))
            rows.append(Row(periods, buckets))
        return rows, []

    def answer(
        self, rows: Sequence[RowAnswer], unions: Sequence[UnionAnswer]
    ) -> list[dict[Bucket, Estimate]]:
        return [sure(row) for row in rows]


@dataclass(frozen=True)
class WindowsInquiry(Inquiry[dict[tuple[Period, int], RowAnswer]]):
    """The rolling windows a daily collapse stores: for each of ``last_days`` (daily periods
    just collapsed) and each length in ``lengths``, per bucket: ``buckets``, or (None) every
    bucket tracked on a day of the window and every aggregate of the collapse
    (``definitions``). Not strict: a window with a day whose raw data has expired is
    answered None (not stored), one whose reads failed with the error."""

    last_days: tuple[Period, ...]
    lengths: tuple[int, ...]
    buckets: tuple[Bucket, ...] | None
    definitions: Definitions
    strict: ClassVar[bool] = False

    @property
    def periods(self) -> tuple[Period, ...]:
        return _spanned([window(day.start, max(self.lengths)) for day in self.last_days])

    def _windows(self) -> list[tuple[Period, int]]:
        return [(day, length) for day in self.last_days for length in self.lengths]

    def queries(self, registries: Mapping[Period, Registry]) -> tuple[list[Row], list[Union]]:
        rows = []
        for day, length in self._windows():
            periods = window(day.start, length)
            buckets = self.buckets
            if buckets is None:
                found = {*tracked_in(registries, periods), *self.definitions}
                buckets = tuple(sorted(found, key=bucket_order))
            rows.append(Row(periods, buckets))
        return rows, []

    def answer(
        self, rows: Sequence[RowAnswer], unions: Sequence[UnionAnswer]
    ) -> dict[tuple[Period, int], RowAnswer]:
        return dict(zip(self._windows(), rows, strict=True))


@dataclass(frozen=True)
class RetentionInquiry(Inquiry[list[tuple[datetime.date, list[Estimate]]]]):
    """``retention()``: for each of ``periods`` (one kind, in order) and each later one,
    the ids of ``bucket`` active in both: ``|A| + |B| - |A ∪ B|``, where ``A ∪ B`` is the
    union of the two periods' own sets."""

    cohorts: tuple[Period, ...]
    bucket: Bucket
    definitions: Definitions = field(default_factory=dict, init=False, repr=False)

    @property
    def periods(self) -> tuple[Period, ...]:
        return self.cohorts

    def _pairs(self) -> list[tuple[int, int]]:
        count = len(self.cohorts)
        return [(first, later) for first in range(count) for later in range(first + 1, count)]

    def queries(self, registries: Mapping[Period, Registry]) -> tuple[list[Row], list[Union]]:
        buckets = (self.bucket,)
        unions = [Union((period,), buckets) for period in self.cohorts]
        unions += [
            Union((self.cohorts[first], self.cohorts[later]), buckets, separate=True)
            for first, later in self._pairs()
        ]
        return [], unions

    def answer(
        self, rows: Sequence[RowAnswer], unions: Sequence[UnionAnswer]
    ) -> list[tuple[datetime.date, list[Estimate]]]:
        count = len(self.cohorts)
        sizes = [sure(answer) for answer in unions[:count]]
        triangle = [[size] for size in sizes]
        for (first, later), union in zip(self._pairs(), unions[count:], strict=True):
            triangle[first].append(intersection(sizes[first], sizes[later], sure(union)))
        return [(period.start, row) for period, row in zip(self.cohorts, triangle, strict=True)]


@dataclass(frozen=True)
class MeasureInquiry(Inquiry[dict[Bucket, Estimate]]):
    """``measure()``: what a collapse of ``period`` would store now, without storing it: per
    bucket (``buckets``, or None: every bucket tracked in the period; a stored aggregate's
    name counts its sources) and per aggregate defined in ``definitions``, the count from the
    raw sketches and records."""

    period: Period
    buckets: tuple[Bucket, ...] | None
    definitions: Definitions = field(default_factory=dict)

    @property
    def periods(self) -> tuple[Period, ...]:
        return (self.period,)

    def queries(self, registries: Mapping[Period, Registry]) -> tuple[list[Row], list[Union]]:
        registry = registries.get(self.period, EMPTY)
        for name in self.definitions:
            if name in registry.raw:
                raise AggregateBucketError.named_like_a_bucket(name, self.period)
        listed = tracked_in(registries, self.periods) if self.buckets is None else self.buckets
        buckets = tuple(dict.fromkeys([*listed, *self.definitions]))
        return [Row(self.periods, buckets)], []

    def answer(
        self, rows: Sequence[RowAnswer], unions: Sequence[UnionAnswer]
    ) -> dict[Bucket, Estimate]:
        return sure(rows[0])

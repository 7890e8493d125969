"""The public facade: ``ActivityTracker`` and its asyncio twin ``AsyncActivityTracker``."""

from __future__ import annotations

import datetime
import importlib
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal, cast, overload

from . import arguments
from . import periods as _periods
from .arguments import DEFAULT_RETENTION
from .backends.base import AsyncBackend, Backend
from .batch import DEFAULT_MAX_EVENTS, ActivityChecker, AsyncBatch, Batch, Event
from .corrections import Estimate
from .inquiries import CountInquiry, MeasureInquiry, RetentionInquiry, RollingInquiry
from .keys import Bucket
from .periods import DAILY, MONTHLY, WEEKLY, YEARLY, resolve_timezone

Row = tuple[datetime.date, dict[Bucket, int]]
ErrorRow = tuple[datetime.date, dict[Bucket, Estimate]]

_BUILTIN_BACKENDS = {
    "redis": (
        "activity_tracker.backends.redis.RedisBackend",
        "activity_tracker.backends.redis.AsyncRedisBackend",
    ),
    "memory": (
        "activity_tracker.backends.memory.MemoryBackend",
        "activity_tracker.backends.memory.AsyncMemoryBackend",
    ),
}


def _load_backend(
    backend: object, retention: object, options: dict[str, Any], kind: type, asyncio: bool
) -> object:
    """The backend instance for ``backend=``: a built-in name (given ``retention``), a dotted
    class path (given ``retention`` if it is not the default), or an instance of ``kind``
    (which then takes no options)."""
    if retention is not DEFAULT_RETENTION:
        options = {**options, "retention": arguments.retention_seconds(retention)}
    if isinstance(backend, kind):
        if options:
            raise TypeError(f"options {sorted(options)} cannot be used with a backend instance")
        return backend
    if not isinstance(backend, str):
        raise TypeError(
            f"backend must be a name, a dotted class path or a {kind.__name__}, "
            f"not {type(backend).__name__}"
        )
    path = backend
    if "." not in backend:
        if backend not in _BUILTIN_BACKENDS:
            raise ValueError(
                f"backend: unknown backend {backend!r}; expected one of "
                f"{', '.join(_BUILTIN_BACKENDS)} or a dotted class path"
            )
        path = _BUILTIN_BACKENDS[backend][asyncio]
        options = {"retention": arguments.retention_seconds(retention), **options}
    module_name, _, class_name = path.rpartition(".")
    try:
        backend_class = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as exc:
        if path != backend:  # a built-in backend: its ImportError names the extra it needs
            raise
        raise ValueError(f"backend: cannot import {path!r}: {exc}") from exc
    instance = backend_class(**options)
    if not isinstance(instance, kind):
        raise TypeError(f"backend: {path} is not a {kind.__name__}")
    return instance


def _alias(method: str, *first: Any, **bound: Any) -> Callable[..., Any]:
    """``track_daily(...)`` and friends: ``method`` with its first arguments (``first``) or
    some keyword arguments (``bound``) fixed; the rest are passed on, by position or name.
    The result is the method's (a coroutine for the asyncio tracker)."""

    def alias(self: Any, *args: Any, **kwargs: Any) -> Any:
        return getattr(self, method)(*first, *args, **bound, **kwargs)

    fixed = [repr(value) for value in first] + [f"{k}={v!r}" for k, v in bound.items()]
    alias.__doc__ = f"``{method}({', '.join(fixed)}, ...)``."
    return alias


class _Tracker:
    """What both facades share: default periods, time zone, argument checking."""

    PERIOD_DAILY = DAILY
    PERIOD_WEEKLY = WEEKLY
    PERIOD_MONTHLY = MONTHLY
    PERIOD_YEARLY = YEARLY

    track_daily = _alias("track", periods=[DAILY])
    track_weekly = _alias("track", periods=[WEEKLY])
    track_monthly = _alias("track", periods=[MONTHLY])
    track_yearly = _alias("track", periods=[YEARLY])
    collapse_daily = _alias("collapse", periods=[DAILY])
    collapse_weekly = _alias("collapse", periods=[WEEKLY])
    collapse_monthly = _alias("collapse", periods=[MONTHLY])
    collapse_yearly = _alias("collapse", periods=[YEARLY])
    lookup_daily = _alias("lookup", DAILY)
    lookup_weekly = _alias("lookup", WEEKLY)
    lookup_monthly = _alias("lookup", MONTHLY)
    lookup_yearly = _alias("lookup", YEARLY)

    def __init__(
        self, periods_: object, timezone: object, rolling: object, retention: object
    ) -> None:
        self.periods = arguments.period_kinds(periods_, (DAILY,))
        self.timezone = resolve_timezone(timezone)
        self._checker = ActivityChecker(self.periods, self.timezone)
        self.rolling = arguments.rolling_lengths(
            rolling, self.periods, arguments.retention_seconds(retention)
        )

    def _check_rolling(self, backend: object) -> None:
        """Check the windows against the retention of a backend given as an instance."""
        retention = getattr(backend, "retention", None)
        if isinstance(retention, int):
            arguments.rolling_lengths(self.rolling, self.periods, retention)

    def _activity(
        self,
        periods_: object,
        id: object,
        bucket: object,
        old_id: object,
        old_bucket: object,
        date: object,
    ) -> arguments.Activity:
        return self._checker.activity(id, bucket, old_id, old_bucket, date, periods_)

    def _collapse_job(
        self,
        periods_: object,
        date: object,
        max_periods: object,
        buckets: object,
        aggregate_buckets: object,
    ) -> arguments.CollapseJob:
        kinds = arguments.period_kinds(periods_, self.periods)
        return arguments.collapse_job(
            kinds, self.timezone, date, max_periods, buckets, aggregate_buckets, self.rolling
        )

    def _lookup_job(
        self, period: object, start: object, end: object, buckets: object, with_error: object
    ) -> arguments.LookupJob:
        _check_flag(with_error)
        return arguments.lookup_job(period, self.timezone, start, end, buckets)

    def _needs(self, kind: str, method: str) -> None:
        if kind not in self.periods:
            raise ValueError(
                f"{method} reads the {kind} sketches, and this tracker does not track the "
                f"{kind} period (periods={list(self.periods)})"
            )

    def _rolling_job(
        self, days: object, start: object, end: object, buckets: object, with_error: object
    ) -> tuple[int, arguments.LookupJob, RollingInquiry | None]:
        """The window length, the days it ends on, and (for a length not stored) the
        inquiry computing it."""
        self._needs(DAILY, "lookup_rolling()")
        length = arguments.window_days(days, "days")
        job = self._lookup_job(DAILY, start, end, buckets, with_error)
        if length in self.rolling or not job.periods:
            return length, job, None
        last_days = tuple(period.start for period in job.periods)
        arguments.window_span(arguments.first_window_day(last_days[0], length), last_days[-1])
        return length, job, RollingInquiry(last_days, length, job.buckets)

    def _count_inquiry(
        self, start: object, end: object, buckets: object, with_error: object
    ) -> CountInquiry:
        self._needs(DAILY, "count()")
        _check_flag(with_error)
        first, last = arguments.day_range(self.timezone, start, end)
        days = tuple(_periods.within(DAILY, first, last))
        return CountInquiry(days, arguments.bucket_list(buckets, "buckets"))

    def _retention_inquiry(
        self, period: object, start: object, end: object, bucket: object, with_error: object
    ) -> RetentionInquiry:
        kind = _periods.check_kind(period)
        self._needs(kind, "retention()")
        _check_flag(with_error)
        first, last = arguments.day_range(self.timezone, start, end)
        cohorts = arguments.cohorts(kind, first, last)
        return RetentionInquiry(cohorts, arguments.bucket_name(bucket, "bucket"))

    def _measure_inquiry(
        self,
        period: object,
        date: object,
        buckets: object,
        aggregate_buckets: object,
        with_error: object,
    ) -> MeasureInquiry:
        _check_flag(with_error)
        measured = arguments.measure_period(period, self.timezone, date)
        definitions = arguments.aggregate_definitions(aggregate_buckets, None)
        return MeasureInquiry(measured, arguments.bucket_list(buckets, "buckets"), definitions)


def _check_flag(with_error: object) -> None:
    if not isinstance(with_error, bool):
        raise TypeError(f"with_error must be True or False, not {type(with_error).__name__}")


def _counts(found: Mapping[Bucket, Estimate], with_error: bool) -> dict[Bucket, Any]:
    return dict(found) if with_error else {bucket: e.count for bucket, e in found.items()}


def _triangle(
    rows: list[tuple[datetime.date, list[Estimate]]], with_error: bool
) -> list[tuple[datetime.date, list[Any]]]:
    if with_error:
        return [(start, list(row)) for start, row in rows]
    return [(start, [e.count for e in row]) for start, row in rows]


class ActivityTracker(_Tracker):
    """Counts distinct ids per period (daily/weekly/monthly/yearly active users) in bounded
    memory.

    ``periods``: the PERIOD_* constants tracked and collapsed by default (``[PERIOD_DAILY]``).
    ``backend``: ``"redis"`` (default), ``"memory"`` (the ``memory`` extra), a dotted class
    path, or a :class:`~activity_tracker.backends.base.Backend` instance. ``timezone``: an IANA
    name or a tzinfo deciding which day "today" and aware datetimes fall on (default: local time).
    ``retention``: how long a period's raw data (sketches, id-change records) lives after the
    later of the period's end and its first write, for collapses and later aggregates (a
    timedelta or seconds, default 35 days; every raw key expires, so ``None`` is refused).
    ``rolling``: lengths in days of the rolling windows (e.g. ``(7, 28)``) that each collapse
    of a day stores, ending on that day, for :meth:`lookup_rolling`; each at most
    ``retention``, with the daily period tracked (else a ``ValueError``).
    Other keyword options go to the backend; for Redis: ``url``, ``client``, ``host``,
    ``port``, ``db``, ``socket_connect_timeout`` and ``socket_timeout`` (default 2 s and 5 s,
    see :mod:`activity_tracker.timeouts`), ``prefix``.

    Counts are HyperLogLog estimates with a standard error of about 0.81% of what their
    sketch holds (small sets nearly always exact), corrected exactly for id changes; see the
    README ("Accuracy") for the documented imprecisions of aggregates.
    """

    def __init__(
        self,
        periods: Iterable[str] | None = None,
        backend: str | Backend = "redis",
        *,
        timezone: str | datetime.tzinfo | None = None,
        retention: datetime.timedelta | float = DEFAULT_RETENTION,
        rolling: Iterable[int] = (),
        **options: Any,
    ) -> None:
        super().__init__(periods, timezone, rolling, retention)
        self.backend = cast(
            Backend, _load_backend(backend, retention, options, Backend, asyncio=False)
        )
        self._check_rolling(self.backend)

    def close(self) -> None:
        """Release the backend's connections (a client passed in with ``client=`` stays open)."""
        self.backend.close()

    def __enter__(self) -> ActivityTracker:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def track(
        self,
        id: object = None,
        bucket: Bucket = None,
        old_id: object = None,
        old_bucket: Bucket = None,
        date: datetime.date | None = None,
        periods: Iterable[str] | None = None,
    ) -> None:
        """Record that ``id`` was active in ``bucket`` on ``date`` (default: today).

        With ``old_id`` (and ``old_bucket``), the id changed: ``old_id`` is first removed from
        ``old_bucket``, then ``id`` added to ``bucket``, in every period. Ids are compared as
        text (``123`` and ``"123"`` are one id). ``old_bucket`` without ``old_id`` is ignored.
        One round trip to Redis whatever the number of periods; safe to retry (tracking the
        same thing twice changes nothing). A bucket that is an aggregate in one of the
        periods (made by :meth:`collapse`) is refused with
        :class:`~activity_tracker.AggregateBucketError` and nothing is written.
        """
        self.backend.track(self._activity(periods, id, bucket, old_id, old_bucket, date))

    def track_many(self, events: Iterable[Event]) -> int:
        """Record many events with the counts that calling :meth:`track` on each, in order,
        would give, sending them together (multi-element ``PFADD``; a user seen many times
        costs one element); return how many events were recorded.

        Each event is a dict of :meth:`track`'s arguments (``{"id": 1, "bucket": "web"}``) or
        a tuple of them in order ``(id, bucket, old_id, old_bucket, date, periods)``. Events
        are sent every 10,000, so ``events`` may be a generator of any length. A bad event
        raises ``TypeError``/``ValueError`` naming ``events[i]``; the events before it are
        recorded, as with :meth:`track`.
        """
        with self.batch() as batch:
            return batch.track_many(events)

    def batch(self, max_events: int = DEFAULT_MAX_EVENTS) -> Batch:
        """A :class:`~activity_tracker.batch.Batch`: ``with tracker.batch() as b: b.track(...)``
        collects events and sends them ``max_events`` at a time and when the block ends, with
        the counts of calling :meth:`track` on each in order."""
        return Batch(self, max_events)

    def collapse(
        self,
        buckets: Iterable[Bucket] | None = None,
        aggregate_buckets: Mapping[str, Iterable[Bucket]] | None = None,
        date: datetime.date | None = None,
        max_periods: int = 1,
        periods: Iterable[str] | None = None,
    ) -> None:
        """Turn the finished periods before the one containing ``date`` (default: today) into
        stored counts, walking back ``max_periods`` periods of each kind.

        ``buckets=None`` collapses every bucket tracked in the period. ``aggregate_buckets``
        maps a new bucket name to the buckets whose union it counts. Running it again gives the
        same counts, and picks up late events while the raw data is kept (``retention``).

        A period that fails (an aggregate named like one of its buckets, a key holding someone
        else's data) is left as it was; every other period is stored, then one
        :class:`~activity_tracker.CollapseError` names each failed period and its cause (a
        :class:`~activity_tracker.CollapseValueError`, also a ``ValueError``, when all are
        aggregate names). Concurrent collapses never store counts measured earlier over
        counts measured later.
        """
        self.backend.collapse(
            self._collapse_job(periods, date, max_periods, buckets, aggregate_buckets)
        )

    @overload
    def lookup(
        self,
        period: str = ...,
        start: datetime.date | None = ...,
        end: datetime.date | None = ...,
        buckets: Iterable[Bucket] | None = ...,
        with_error: Literal[False] = ...,
    ) -> list[Row]: ...

    @overload
    def lookup(
        self,
        period: str = ...,
        start: datetime.date | None = ...,
        end: datetime.date | None = ...,
        buckets: Iterable[Bucket] | None = ...,
        *,
        with_error: Literal[True],
    ) -> list[ErrorRow]: ...

    def lookup(
        self,
        period: str = DAILY,
        start: datetime.date | None = None,
        end: datetime.date | None = None,
        buckets: Iterable[Bucket] | None = None,
        with_error: bool = False,
    ) -> list[Row] | list[ErrorRow]:
        """Counts of every ``period`` lying wholly inside ``[start, end)``, oldest first, as
        ``[(first_day, {bucket: count}), ...]``.

        ``end`` defaults to today and ``start`` to 365 days before ``end``. Missing counts read
        0; with ``buckets=None`` every row carries every bucket with a count in the range.
        Each count is an estimate: ``with_error=True`` gives each as an
        :class:`~activity_tracker.Estimate` ``(count, stderr)`` instead, ``stderr`` being the
        standard error of the sketch (or union) the count came from; a missing count reads
        ``Estimate(0, 0.0)``. Show ``count ± 2 * stderr`` to people.
        """
        job = self._lookup_job(period, start, end, buckets, with_error)
        return arguments.lookup_rows(job, self.backend.lookup(job), with_error)

    @overload
    def lookup_rolling(
        self,
        days: int,
        start: datetime.date | None = ...,
        end: datetime.date | None = ...,
        buckets: Iterable[Bucket] | None = ...,
        with_error: Literal[False] = ...,
    ) -> list[Row]: ...

    @overload
    def lookup_rolling(
        self,
        days: int,
        start: datetime.date | None = ...,
        end: datetime.date | None = ...,
        buckets: Iterable[Bucket] | None = ...,
        *,
        with_error: Literal[True],
    ) -> list[ErrorRow]: ...

    def lookup_rolling(
        self,
        days: int,
        start: datetime.date | None = None,
        end: datetime.date | None = None,
        buckets: Iterable[Bucket] | None = None,
        with_error: bool = False,
    ) -> list[Row] | list[ErrorRow]:
        """Rolling windows: one row per day in ``[start, end)``, ``[(last_day, {bucket:
        count})]``, each count the distinct ids active in the ``days`` days ending with
        ``last_day`` (a window is one period of the exact-set model).

        A length in the tracker's ``rolling=`` reads the windows each collapse of a day
        stored (0 where none was stored, as :meth:`lookup` reads 0); any other length is
        computed from the raw daily sketches, which must still be kept
        (:class:`~activity_tracker.RawDataExpiredError`, a ``ValueError``, names a day whose
        raw data has expired). Defaults, ``buckets=None`` (every bucket with a window in the
        range; computed: every bucket tracked, and aggregate registered, in a window) and
        ``with_error`` as for :meth:`lookup`.
        """
        length, job, inquiry = self._rolling_job(days, start, end, buckets, with_error)
        if inquiry is None:
            return arguments.lookup_rows(job, self.backend.lookup_rolling(length, job), with_error)
        computed = self.backend.unions(inquiry)
        return arguments.lookup_rows(job, computed, with_error)

    @overload
    def count(
        self,
        start: datetime.date,
        end: datetime.date,
        buckets: Iterable[Bucket] | None = ...,
        with_error: Literal[False] = ...,
    ) -> int: ...

    @overload
    def count(
        self,
        start: datetime.date,
        end: datetime.date,
        buckets: Iterable[Bucket] | None = ...,
        *,
        with_error: Literal[True],
    ) -> Estimate: ...

    def count(
        self,
        start: datetime.date,
        end: datetime.date,
        buckets: Iterable[Bucket] | None = None,
        with_error: bool = False,
    ) -> int | Estimate:
        """Distinct ids active on any day of ``[start, end)`` in any of ``buckets`` (None:
        every bucket tracked on those days; an aggregate counts its sources), as one period
        of the exact-set model, from the raw daily sketches. A day with no events adds
        nothing; a day whose raw data has expired is a
        :class:`~activity_tracker.RawDataExpiredError` (a ``ValueError``) naming it.
        ``with_error=True`` gives an :class:`~activity_tracker.Estimate` with the standard
        error of the union of the sketches.
        """
        found = self.backend.unions(self._count_inquiry(start, end, buckets, with_error))
        return found if with_error else found.count

    @overload
    def retention(
        self,
        period: str,
        start: datetime.date,
        end: datetime.date,
        bucket: Bucket = ...,
        with_error: Literal[False] = ...,
    ) -> list[tuple[datetime.date, list[int]]]: ...

    @overload
    def retention(
        self,
        period: str,
        start: datetime.date,
        end: datetime.date,
        bucket: Bucket = ...,
        *,
        with_error: Literal[True],
    ) -> list[tuple[datetime.date, list[Estimate]]]: ...

    def retention(
        self,
        period: str,
        start: datetime.date,
        end: datetime.date,
        bucket: Bucket = None,
        with_error: bool = False,
    ) -> list[tuple[datetime.date, list[int]]] | list[tuple[datetime.date, list[Estimate]]]:
        """The retention triangle of ``bucket`` (default: the default bucket; an aggregate
        counts its sources): for each ``period`` P_i lying wholly inside ``[start, end)``,
        ``(first_day, [c0, c1, ...])`` where ``c_j`` is the ids active in both P_i and
        P_{i+j}, for every P_{i+j} inside the range (``c0 = |P_i|``).

        Each ``c_j`` (j >= 1) is ``|A| + |B| - |A ∪ B|``, clamped to ``[0, min(|A|, |B|)]``,
        from the raw sketches of the periods (which must still be kept, else a
        :class:`~activity_tracker.RawDataExpiredError`), with the standard error of the union
        ``A ∪ B``: small retention rates have large relative errors (README, "Retention").
        """
        inquiry = self._retention_inquiry(period, start, end, bucket, with_error)
        return _triangle(self.backend.unions(inquiry), with_error)

    @overload
    def measure(
        self,
        period: str = ...,
        date: datetime.date | None = ...,
        buckets: Iterable[Bucket] | None = ...,
        aggregate_buckets: Mapping[str, Iterable[Bucket]] | None = ...,
        with_error: Literal[False] = ...,
    ) -> dict[Bucket, int]: ...

    @overload
    def measure(
        self,
        period: str = ...,
        date: datetime.date | None = ...,
        buckets: Iterable[Bucket] | None = ...,
        aggregate_buckets: Mapping[str, Iterable[Bucket]] | None = ...,
        *,
        with_error: Literal[True],
    ) -> dict[Bucket, Estimate]: ...

    def measure(
        self,
        period: str = DAILY,
        date: datetime.date | None = None,
        buckets: Iterable[Bucket] | None = None,
        aggregate_buckets: Mapping[str, Iterable[Bucket]] | None = None,
        with_error: bool = False,
    ) -> dict[Bucket, int] | dict[Bucket, Estimate]:
        """A live estimate: the counts a collapse of the ``period`` holding ``date`` (default
        today: the open period) would store now, read from its raw data without storing
        anything, as ``{bucket: count}``: for ``buckets`` (None: every bucket tracked in the
        period; an aggregate stored by a collapse counts its sources) and the aggregates of
        ``aggregate_buckets`` (computed, not stored; one named like a bucket tracked in the
        period is an :class:`~activity_tracker.AggregateBucketError`). A period whose raw
        data has expired is a :class:`~activity_tracker.RawDataExpiredError`.
        """
        inquiry = self._measure_inquiry(period, date, buckets, aggregate_buckets, with_error)
        found = self.backend.unions(inquiry)
        return _counts(found, with_error)


class AsyncActivityTracker(_Tracker):
    """The asyncio twin of :class:`ActivityTracker`: the same methods, to be awaited.

    ``backend``: ``"redis"`` (default; ``client=`` takes a ``redis.asyncio`` client), a dotted
    class path or an :class:`~activity_tracker.backends.base.AsyncBackend` instance.
    """

    def __init__(
        self,
        periods: Iterable[str] | None = None,
        backend: str | AsyncBackend = "redis",
        *,
        timezone: str | datetime.tzinfo | None = None,
        retention: datetime.timedelta | float = DEFAULT_RETENTION,
        rolling: Iterable[int] = (),
        **options: Any,
    ) -> None:
        super().__init__(periods, timezone, rolling, retention)
        self.backend = cast(
            AsyncBackend, _load_backend(backend, retention, options, AsyncBackend, asyncio=True)
        )
        self._check_rolling(self.backend)

    async def close(self) -> None:
        """Release the backend's connections (a client passed in with ``client=`` stays open)."""
        await self.backend.close()

    async def __aenter__(self) -> AsyncActivityTracker:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def track(
        self,
        id: object = None,
        bucket: Bucket = None,
        old_id: object = None,
        old_bucket: Bucket = None,
        date: datetime.date | None = None,
        periods: Iterable[str] | None = None,
    ) -> None:
        """See :meth:`ActivityTracker.track`."""
        await self.backend.track(self._activity(periods, id, bucket, old_id, old_bucket, date))

    async def track_many(self, events: Iterable[Event]) -> int:
        """See :meth:`ActivityTracker.track_many`."""
        async with self.batch() as batch:
            return await batch.track_many(events)

    def batch(self, max_events: int = DEFAULT_MAX_EVENTS) -> AsyncBatch:
        """See :meth:`ActivityTracker.batch`; use ``async with tracker.batch() as b:`` and
        ``await b.track(...)``."""
        return AsyncBatch(self, max_events)

    async def collapse(
        self,
        buckets: Iterable[Bucket] | None = None,
        aggregate_buckets: Mapping[str, Iterable[Bucket]] | None = None,
        date: datetime.date | None = None,
        max_periods: int = 1,
        periods: Iterable[str] | None = None,
    ) -> None:
        """See :meth:`ActivityTracker.collapse`."""
        await self.backend.collapse(
            self._collapse_job(periods, date, max_periods, buckets, aggregate_buckets)
        )

    @overload
    async def lookup(
        self,
        period: str = ...,
        start: datetime.date | None = ...,
        end: datetime.date | None = ...,
        buckets: Iterable[Bucket] | None = ...,
        with_error: Literal[False] = ...,
    ) -> list[Row]: ...

    @overload
    async def lookup(
        self,
        period: str = ...,
        start: datetime.date | None = ...,
        end: datetime.date | None = ...,
        buckets: Iterable[Bucket] | None = ...,
        *,
        with_error: Literal[True],
    ) -> list[ErrorRow]: ...

    async def lookup(
        self,
        period: str = DAILY,
        start: datetime.date | None = None,
        end: datetime.date | None = None,
        buckets: Iterable[Bucket] | None = None,
        with_error: bool = False,
    ) -> list[Row] | list[ErrorRow]:
        """See :meth:`ActivityTracker.lookup`."""
        job = self._lookup_job(period, start, end, buckets, with_error)
        return arguments.lookup_rows(job, await self.backend.lookup(job), with_error)

    @overload
    async def lookup_rolling(
        self,
        days: int,
        start: datetime.date | None = ...,
        end: datetime.date | None = ...,
        buckets: Iterable[Bucket] | None = ...,
        with_error: Literal[False] = ...,
    ) -> list[Row]: ...

    @overload
    async def lookup_rolling(
        self,
        days: int,
        start: datetime.date | None = ...,
        end: datetime.date | None = ...,
        buckets: Iterable[Bucket] | None = ...,
        *,
        with_error: Literal[True],
    ) -> list[ErrorRow]: ...

    async def lookup_rolling(
        self,
        days: int,
        start: datetime.date | None = None,
        end: datetime.date | None = None,
        buckets: Iterable[Bucket] | None = None,
        with_error: bool = False,
    ) -> list[Row] | list[ErrorRow]:
        """See :meth:`ActivityTracker.lookup_rolling`."""
        length, job, inquiry = self._rolling_job(days, start, end, buckets, with_error)
        if inquiry is None:
            stored = await self.backend.lookup_rolling(length, job)
            return arguments.lookup_rows(job, stored, with_error)
        computed = await self.backend.unions(inquiry)
        return arguments.lookup_rows(job, computed, with_error)

    @overload
    async def count(
        self,
        start: datetime.date,
        end: datetime.date,
        buckets: Iterable[Bucket] | None = ...,
        with_error: Literal[False] = ...,
    ) -> int: ...

    @overload
    async def count(
        self,
        start: datetime.date,
        end: datetime.date,
        buckets: Iterable[Bucket] | None = ...,
        *,
        with_error: Literal[True],
    ) -> Estimate: ...

    async def count(
        self,
        start: datetime.date,
        end: datetime.date,
        buckets: Iterable[Bucket] | None = None,
        with_error: bool = False,
    ) -> int | Estimate:
        """See :meth:`ActivityTracker.count`."""
        found = await self.backend.unions(self._count_inquiry(start, end, buckets, with_error))
        return found if with_error else found.count

    @overload
    async def retention(
        self,
        period: str,
        start: datetime.date,
        end: datetime.date,
        bucket: Bucket = ...,
        with_error: Literal[False] = ...,
    ) -> list[tuple[datetime.date, list[int]]]: ...

    @overload
    async def retention(
        self,
        period: str,
        start: datetime.date,
        end: datetime.date,
        bucket: Bucket = ...,
        *,
        with_error: Literal[True],
    ) -> list[tuple[datetime.date, list[Estimate]]]: ...

    async def retention(
        self,
        period: str,
        start: datetime.date,
        end: datetime.date,
        bucket: Bucket = None,
        with_error: bool = False,
    ) -> list[tuple[datetime.date, list[int]]] | list[tuple[datetime.date, list[Estimate]]]:
        """See :meth:`ActivityTracker.retention`."""
        inquiry = self._retention_inquiry(period, start, end, bucket, with_error)
        return _triangle(await self.backend.unions(inquiry), with_error)

    @overload
    async def measure(
        self,
        period: str = ...,
        date: datetime.date | None = ...,
        buckets: Iterable[Bucket] | None = ...,
        aggregate_buckets: Mapping[str, Iterable[Bucket]] | None = ...,
        with_error: Literal[False] = ...,
    ) -> dict[Bucket, int]: ...

    @overload
    async def measure(
        self,
        period: str = ...,
        date: datetime.date | None = ...,
        buckets: Iterable[Bucket] | None = ...,
        aggregate_buckets: Mapping[str, Iterable[Bucket]] | None = ...,
        *,
        with_error: Literal[True],
    ) -> dict[Bucket, Estimate]: ...

    async def measure(
        self,
        period: str = DAILY,
        date: datetime.date | None = None,
        buckets: Iterable[Bucket] | None = None,
        aggregate_buckets: Mapping[str, Iterable[Bucket]] | None = None,
        with_error: bool = False,
    ) -> dict[Bucket, int] | dict[Bucket, Estimate]:
        """See :meth:`ActivityTracker.measure`."""
        inquiry = self._measure_inquiry(period, date, buckets, aggregate_buckets, with_error)
        found = await self.backend.unions(inquiry)
        return _counts(found, with_error)

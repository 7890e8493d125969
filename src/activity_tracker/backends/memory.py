"""The in-process backend ``memory``: no server, for tests of applications and for notebooks.

It mirrors the Redis layout (see :mod:`activity_tracker.keys` and ``resources/*.lua``) with
the same pure functions, so that it gives the counts Redis gives, the documented aggregate
imprecisions included. Per period:

- a registry: per raw bucket whether ids were added to it and whether it has change records;
  per aggregate made by collapse, its sources;
- per bucket (and per aggregate) a ``datasketch`` HyperLogLog with Redis's precision (p=14,
  16,384 registers, 64-bit hashes) of every id added to it or moved out of it;
- the change records: id hash (:func:`~activity_tracker.keys.id_hash`) -> {bucket: OUT or
  BACK}, and per bucket the exact number of its OUT records;
- the deadline D at which all of that expires (lazily, by the clock), fixed by the period's
  first write as on Redis;
- the collapsed counts with their sketch estimates, and the rolling windows ending on each
  day, kept for good.

A count is :func:`~activity_tracker.corrections.corrected_count` of the sketch estimate
(rounded to an int) and the corrections, as on Redis. Everything lives in this process's
memory; a forked child works on its own copy.
"""

from __future__ import annotations

import datetime
import math
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

try:
    from datasketch import HyperLogLogPlusPlus
except ImportError as exc:  # the light install leaves it out (it brings numpy and scipy)
    raise ModuleNotFoundError(
        "the memory backend needs datasketch, which is not installed: "
        "pip install 'activity-tracker[memory]'",
        name="datasketch",
    ) from exc

from ..arguments import DEFAULT_RETENTION, Activity, CollapseJob, LookupJob, retention_seconds
from ..corrections import Estimate, corrected_count, estimate, sketch_size, union_subtracted
from ..errors import AggregateBucketError, RawDataExpiredError, StorageError, collapse_error
from ..inquiries import WindowsInquiry
from ..keys import BACK, MAX_INDEX, OUT, Bucket, bucket_order, deadline, id_hash
from ..periods import DAILY, Period
from ..unions import EMPTY, Inquiry, RawBucket, Records, Registry, T, UnionPlan, expired
from .base import AsyncBackend, Backend

#: Redis's HyperLogLog precision: 2**14 = 16,384 registers, a standard error of 1.04/128.
PRECISION = 14


def hash64(id: str) -> int:
    """The 64-bit hash of an id for the sketches: the same in every process (unlike the
    salted ``hash()``), from the same digest as the change records' id hash."""
    return int.from_bytes(id_hash(id), "little")


def new_hll() -> HyperLogLogPlusPlus:
    """An empty sketch: a ``datasketch.HyperLogLogPlusPlus`` (a ``datasketch.HyperLogLog``
    taking 64-bit hashes, as Redis's does) at p=14 over :func:`hash64`.

    Its estimate is linear counting (exact when no two ids share a register, the case of
    small sets) up to about 11,500 ids, then the bias-corrected HyperLogLog estimate, with a
    standard error of about 0.81%."""
    return HyperLogLogPlusPlus(p=PRECISION, hashfunc=hash64)


def sketch_estimate(hll: HyperLogLogPlusPlus) -> int:
    """The sketch's estimate as an int, as Redis's ``PFCOUNT`` gives it."""
    return round(float(hll.count()))


@dataclass(slots=True)
class _Raw:
    """A raw bucket's registry entry (Redis: ``index * 2 + tracked``)."""

    tracked: bool = False
    indexed: bool = False


@dataclass(slots=True)
class _PeriodData:
    """The raw data of one period, all expiring at ``deadline``."""

    deadline: float
    registry: dict[Bucket, _Raw | tuple[Bucket, ...]] = field(default_factory=dict)
    sketches: dict[Bucket, HyperLogLogPlusPlus] = field(default_factory=dict)
    records: dict[bytes, dict[Bucket, int]] = field(default_factory=dict)
    out: dict[Bucket, int] = field(default_factory=dict)
    indexed: int = 0

    def sketch(self, bucket: Bucket) -> HyperLogLogPlusPlus:
        found = self.sketches.get(bucket)
        if found is None:
            found = self.sketches[bucket] = new_hll()
        return found

    def raw(self, bucket: Bucket) -> _Raw:
        entry = self.registry.get(bucket)
        if not isinstance(entry, _Raw):
            entry = self.registry[bucket] = _Raw()
        return entry

    def index(self, bucket: Bucket, period: Period) -> None:
        """Give the bucket change records (Redis: an index, of which there are 65535)."""
        entry = self.raw(bucket)
        if not entry.indexed:
            if self.indexed >= MAX_INDEX:
                raise StorageError(
                    f"more than {MAX_INDEX} buckets with id changes in the {period.kind} "
                    f"period of {period.start}"
                )
            entry.indexed = True
            self.indexed += 1


@dataclass(slots=True)
class _Counts:
    """The collapsed counts of one period: bucket -> (count, sketch estimate); for a day,
    its rolling windows: length -> bucket -> (count, estimate). ``expires``: the deadline of
    the raw data the counts were collapsed from (none yet: infinity)."""

    values: dict[Bucket, tuple[int, int]] = field(default_factory=dict)
    windows: dict[int, dict[Bucket, tuple[int, int]]] = field(default_factory=dict)
    expires: float = math.inf


_NO_COUNTS = _Counts()


class MemoryBackend(Backend):
    """Sketches, change records and counts in this process, with the semantics of the Redis
    backend.

    Thread-safe: one lock serialises every call, so each call is atomic as a script call is on
    Redis. Option: ``retention`` (a timedelta or seconds, default 35 days), as on Redis: a
    period's raw data is dropped ``retention`` after the later of its end and its first write.
    """

    def __init__(
        self, retention: datetime.timedelta | float = DEFAULT_RETENTION, **options: Any
    ) -> None:
        if options:
            raise TypeError(
                f"the memory backend takes no option {', '.join(sorted(options))} (only retention)"
            )
        self.retention = retention_seconds(retention)
        self._lock = threading.Lock()
        self._periods: dict[Period, _PeriodData] = {}
        self._counts: dict[Period, _Counts] = {}

    def _live(self, period: Period, now: float) -> _PeriodData | None:
        """The period's raw data, unless it expired (then it is dropped)."""
        data = self._periods.get(period)
        if data is not None and data.deadline <= now:
            del self._periods[period]
            return None
        return data

    def track(self, activity: Activity) -> None:
        with self._lock:
            now = time.time()
            self._refuse(activity, now)
            self._record(activity, now)

    def track_many(self, activities: Iterable[Activity]) -> None:
        """Record the activities in order, atomically (one lock for all of them); a refused
        one (into an aggregate) raises before any of them is recorded."""
        pending = list(activities)  # outside the lock: a generator may do anything
        with self._lock:
            now = time.time()
            for activity in pending:
                self._refuse(activity, now)
            for activity in pending:
                self._record(activity, now)

    def _refuse(self, activity: Activity, now: float) -> None:
        """Raise, as track.lua's first pass does, if the activity cannot be recorded."""
        for period in activity.periods:
            data = self._live(period, now)
            if data is None:
                continue
            for argument, bucket, given in (
                ("bucket", activity.bucket, activity.id),
                ("old_bucket", activity.old_bucket, activity.old_id),
            ):
                if given is not None and isinstance(data.registry.get(bucket), tuple):
                    raise AggregateBucketError.tracked_into(argument, bucket, period)

    def _record(self, activity: Activity, now: float) -> None:
        """What ``track.lua`` does, period by period: the move out first, then the add."""
        new_id, old_id = activity.id, activity.old_id
        for period, end in zip(activity.periods, activity.ends, strict=True):
            data = self._live(period, now)
            if data is None:
                data = self._periods[period] = _PeriodData(deadline(end, now, self.retention))
            if old_id is not None:
                self._move_out(data, period, old_id, activity.old_bucket)
            if new_id is not None:
                self._add(data, period, new_id, activity.bucket)

    @staticmethod
    def _move_out(data: _PeriodData, period: Period, id: str, bucket: Bucket) -> None:
        data.sketch(bucket).update(id)  # so that every corrected id is inside the sketch
        data.index(bucket, period)
        records = data.records.setdefault(id_hash(id), {})
        if records.get(bucket) != OUT:
            records[bucket] = OUT
            data.out[bucket] = data.out.get(bucket, 0) + 1

    @staticmethod
    def _add(data: _PeriodData, period: Period, id: str, bucket: Bucket) -> None:
        data.sketch(bucket).update(id)
        data.raw(bucket).tracked = True
        records = data.records.get(id_hash(id)) if data.records else None
        if records:  # moved in the period: its record for the bucket is BACK
            data.index(bucket, period)
            if records.get(bucket) == OUT:
                data.out[bucket] -= 1
            records[bucket] = BACK

    def collapse(self, job: CollapseJob) -> None:
        with self._lock:
            now = time.time()
            failures: list[tuple[Period, Exception]] = []
            measured: list[Period] = []
            for period in job.periods:
                counts = self._counts.get(period)
                if counts is not None and counts.expires <= now:
                    continue  # its raw data is gone: the counts are final
                data = self._live(period, now)
                if data is not None:  # else nothing was written: every count reads 0
                    try:
                        values = self._measure(period, data, job)
                    except AggregateBucketError as exc:
                        failures.append((period, exc))
                        continue
                    counts = self._counts.setdefault(period, _Counts())
                    counts.values.update(values)
                    counts.expires = data.deadline
                measured.append(period)
            days = tuple(period for period in measured if period.kind == DAILY)
            if job.rolling and days:
                self._store_windows(job, days, now)
            if failures:
                raise collapse_error(failures) from failures[0][1]

    def _store_windows(self, job: CollapseJob, days: tuple[Period, ...], now: float) -> None:
        """Store the rolling windows ending on ``days`` (one lock with their collapse: no
        later measurement can be stored first); a window with a day whose raw data has
        expired is left as it was."""
        inquiry = WindowsInquiry(days, job.rolling, job.buckets, dict(job.aggregates))
        for (day, length), answer in self._answer(inquiry, now).items():
            if isinstance(answer, dict):
                windows = self._counts.setdefault(day, _Counts()).windows.setdefault(length, {})
                for bucket, found in answer.items():
                    windows[bucket] = (found.count, sketch_size(found))

    @staticmethod
    def _measure(
        period: Period, data: _PeriodData, job: CollapseJob
    ) -> dict[Bucket, tuple[int, int]]:
        """What ``collapse.lua`` (and the corrections computed from its reply) does for one
        period: nothing is changed if it raises."""
        registry = data.registry
        for name, _ in job.aggregates:
            if isinstance(registry.get(name), _Raw):
                raise AggregateBucketError.named_like_a_bucket(name, period)
        if job.buckets is None:
            measured = sorted(
                (b for b, e in registry.items() if isinstance(e, _Raw) and e.tracked),
                key=bucket_order,
            )
        else:
            measured = list(job.buckets)
        aggregates: list[tuple[Bucket, tuple[Bucket, ...]]] = []
        values: dict[Bucket, tuple[int, int]] = {}
        for bucket in measured:
            entry = registry.get(bucket)
            if isinstance(entry, tuple):  # a stored aggregate: rebuilt from its definition
                aggregates.append((bucket, entry))
            elif entry is None:
                values[bucket] = (0, 0)
            else:
                held = sketch_estimate(data.sketch(bucket))
                values[bucket] = (corrected_count(held, data.out.get(bucket, 0)), held)
        aggregates += job.aggregates

        definitions: dict[Bucket, tuple[Bucket, ...]] = {}
        expanded: list[tuple[Bucket, set[Bucket]]] = []
        for aggregate, sources in aggregates:
            definitions[aggregate] = tuple(sources)
            raw: set[Bucket] = set()
            if not _expand(aggregate, registry, definitions, set(), raw):
                raise AggregateBucketError.counting_itself(aggregate, period)
            expanded.append((aggregate, raw))

        registry.update(definitions)
        for aggregate, raw in expanded:
            union = new_hll()
            for source in raw:
                union.merge(data.sketch(source))
            data.sketches[aggregate] = union
            held = sketch_estimate(union)
            restricted = {}
            for hash, flags in data.records.items():
                kept = {bucket: flag for bucket, flag in flags.items() if bucket in raw}
                if kept:
                    restricted[hash] = kept
            values[aggregate] = (corrected_count(held, union_subtracted([restricted])), held)
        return values

    def lookup(self, job: LookupJob) -> list[Mapping[Bucket, Estimate]]:
        with self._lock:
            return [self._stored(job, counts.values) for counts in self._counts_of(job)]

    def lookup_rolling(self, days: int, job: LookupJob) -> list[Mapping[Bucket, Estimate]]:
        with self._lock:
            return [
                self._stored(job, counts.windows.get(days, {})) for counts in self._counts_of(job)
            ]

    def _counts_of(self, job: LookupJob) -> list[_Counts]:
        return [self._counts.get(period, _NO_COUNTS) for period in job.periods]

    @staticmethod
    def _stored(job: LookupJob, values: Mapping[Bucket, tuple[int, int]]) -> dict[Bucket, Estimate]:
        wanted = values if job.buckets is None else [b for b in job.buckets if b in values]
        return {b: estimate(*values[b]) for b in wanted}

    def unions(self, inquiry: Inquiry[T]) -> T:
        with self._lock:
            return self._answer(inquiry, time.time())

    def _answer(self, inquiry: Inquiry[T], now: float) -> T:
        """What :meth:`unions` does, under the lock (each period read as a Redis registry)."""
        registries = {period: self._registry(period, now) for period in inquiry.periods}
        plan = UnionPlan(inquiry, registries)
        records: dict[Period, Records | Exception] = {}
        for period, buckets in plan.records.items():
            by_bucket: dict[Bucket, dict[bytes, int]] = {bucket: {} for bucket in buckets}
            for hash, flags in self._periods[period].records.items():
                for bucket, flag in flags.items():
                    if bucket in by_bucket:
                        by_bucket[bucket][hash] = flag
            records[period] = by_bucket
        estimates: list[int | Exception] = []
        for sketches in plan.sketch_sets:
            union = new_hll()
            for period, bucket in sketches:
                union.merge(self._periods[period].sketches[bucket])
            estimates.append(sketch_estimate(union))
        return plan.finish(records, estimates)

    def _registry(self, period: Period, now: float) -> Registry:
        data = self._live(period, now)
        counts = self._counts.get(period, _NO_COUNTS)
        collapsed = None if math.isinf(counts.expires) else counts.expires
        if expired(collapsed, None if data is None else data.deadline):
            return Registry({}, {}, RawDataExpiredError(period))
        if data is None:
            return EMPTY
        raw: dict[Bucket, RawBucket] = {}
        aggregates: dict[Bucket, tuple[Bucket, ...]] = {}
        for bucket, entry in data.registry.items():
            if isinstance(entry, tuple):
                aggregates[bucket] = entry
            else:
                raw[bucket] = RawBucket(entry.tracked, entry.indexed, data.out.get(bucket, 0))
        return Registry(raw, aggregates)


def _expand(
    bucket: Bucket,
    registry: Mapping[Bucket, _Raw | tuple[Bucket, ...]],
    definitions: Mapping[Bucket, tuple[Bucket, ...]],
    seen: set[Bucket],
    raw: set[Bucket],
) -> bool:
    """Add the raw buckets (with data) an aggregate counts to ``raw``; False on a cycle."""
    entry = definitions.get(bucket, registry.get(bucket))
    if not isinstance(entry, tuple):
        if entry is not None:
            raw.add(bucket)
        return True
    if bucket in seen:
        return False
    seen.add(bucket)
    found = all(_expand(source, registry, definitions, seen, raw) for source in entry)
    seen.discard(bucket)
    return found


class AsyncMemoryBackend(AsyncBackend):
    """The ``memory`` backend for ``AsyncActivityTracker``: a :class:`MemoryBackend` called
    directly (its calls never wait on I/O, so they do not block the event loop for long)."""

    def __init__(self, **options: Any) -> None:
        self.sync = MemoryBackend(**options)

    async def track(self, activity: Activity) -> None:
        self.sync.track(activity)

    async def track_many(self, activities: Iterable[Activity]) -> None:
        self.sync.track_many(activities)

    async def collapse(self, job: CollapseJob) -> None:
        self.sync.collapse(job)

    async def lookup(self, job: LookupJob) -> list[Mapping[Bucket, Estimate]]:
        return self.sync.lookup(job)

    async def lookup_rolling(self, days: int, job: LookupJob) -> list[Mapping[Bucket, Estimate]]:
        return self.sync.lookup_rolling(days, job)

    async def unions(self, inquiry: Inquiry[T]) -> T:
        return self.sync.unions(inquiry)

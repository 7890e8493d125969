"""The in-process backend ``memory``: no server, for tests of applications and for notebooks.

It mirrors the Redis backend structure for structure (see :mod:`activity_tracker.keys` and
``resources/*.lua``), so that it gives the counts Redis gives, the documented aggregate
imprecision included. Per period:

- per bucket (and per aggregate) a :class:`_Sketch`: a ``datasketch`` HyperLogLog with Redis's
  precision (p=14, 16,384 registers, 64-bit hashes), the exact set ``out`` of ids moved out
  (in the HLL, not in the bucket) and the exact set ``back`` of ids tracked in the bucket after
  their first move in the period;
- ``moved``: every id moved out of any bucket in the period;
- ``registry``: the buckets tracked in the period (what ``collapse(buckets=None)`` measures);
- ``left``: the buckets ids were moved out of (no aggregate may take their names);
- ``counts``: the collapsed counts.

A count is :func:`~activity_tracker.corrections.corrected_count` of the HLL estimate (rounded
to an int) and the size of ``out``, as on Redis.

Everything lives in this process's memory and nothing expires: there is no ``retention``, raw
sketches are kept until the backend is garbage-collected (each costs 16 KiB plus its
side-sets). A forked child works on its own copy.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from datasketch import HyperLogLogPlusPlus

from ..arguments import Activity, CollapseJob, LookupJob
from ..corrections import corrected_count
from ..keys import Bucket, bucket_order
from ..periods import Period
from .base import AsyncBackend, Backend

#: Redis's HyperLogLog precision: 2**14 = 16,384 registers, a standard error of 1.04/128.
PRECISION = 14


def hash64(id: str) -> int:
    """The 64-bit hash of an id: the same in every process (unlike the salted ``hash()``)."""
    digest = hashlib.blake2b(id.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def new_hll() -> HyperLogLogPlusPlus:
    """An empty sketch: a ``datasketch.HyperLogLogPlusPlus`` (a ``datasketch.HyperLogLog``
    taking 64-bit hashes, as Redis's does) at p=14 over :func:`hash64`.

    Its estimate is linear counting (exact when no two ids share a register, the case of
    small sets) up to about 11,500 ids, then the bias-corrected HyperLogLog estimate, with a
    standard error of about 0.81%."""
    return HyperLogLogPlusPlus(p=PRECISION, hashfunc=hash64)


def estimate(hll: HyperLogLogPlusPlus) -> int:
    """The sketch's estimate as an int, as Redis's ``PFCOUNT`` gives it."""
    return round(float(hll.count()))


@dataclass(slots=True)
class _Sketch:
    """One bucket (or aggregate) of one period: what Redis keeps as its hll/out/back keys."""

    hll: HyperLogLogPlusPlus = field(default_factory=new_hll)
    out: set[str] = field(default_factory=set)
    back: set[str] = field(default_factory=set)

    def count(self) -> int:
        return corrected_count(estimate(self.hll), len(self.out))


@dataclass(slots=True)
class _PeriodData:
    """Everything kept for one period: its sketches, side-sets, bucket registry and counts."""

    moved: set[str] = field(default_factory=set)
    registry: set[Bucket] = field(default_factory=set)
    left: set[Bucket] = field(default_factory=set)
    sketches: dict[Bucket, _Sketch] = field(default_factory=dict)
    counts: dict[Bucket, int] = field(default_factory=dict)

    def sketch(self, bucket: Bucket) -> _Sketch:
        found = self.sketches.get(bucket)
        if found is None:
            found = self.sketches[bucket] = _Sketch()
        return found


class MemoryBackend(Backend):
    """Sketches, side-sets and counts in this process, with the semantics of the Redis backend.

    Thread-safe: one lock serialises every call, so each call is atomic as a script call is on
    Redis. No options; no retention (nothing ever expires); data does not outlive the object.
    """

    def __init__(self, **options: Any) -> None:
        if options:
            raise TypeError(
                f"the memory backend takes no options, got {', '.join(sorted(options))}"
            )
        self._lock = threading.Lock()
        self._periods: dict[Period, _PeriodData] = {}

    def _period(self, period: Period) -> _PeriodData:
        data = self._periods.get(period)
        if data is None:
            data = self._periods[period] = _PeriodData()
        return data

    def track(self, activity: Activity) -> None:
        with self._lock:
            self._record(activity)

    def track_many(self, activities: Iterable[Activity]) -> None:
        """Record the activities in order, atomically (one lock for all of them)."""
        pending = list(activities)  # outside the lock: a generator may do anything
        with self._lock:
            for activity in pending:
                self._record(activity)

    def _record(self, activity: Activity) -> None:
        """What ``track.lua`` does, period by period: the move out first, then the add."""
        new_id, old_id = activity.id, activity.old_id
        for period in activity.periods:
            data = self._period(period)
            if old_id is not None:
                old = data.sketch(activity.old_bucket)
                # Into the HLL too, so that "out" stays a subset of what the HLL counts.
                old.hll.update(old_id)
                data.moved.add(old_id)
                data.left.add(activity.old_bucket)
                old.out.add(old_id)
                old.back.discard(old_id)
            if new_id is not None:
                sketch = data.sketch(activity.bucket)
                sketch.hll.update(new_id)
                data.registry.add(activity.bucket)
                if new_id in data.moved:
                    sketch.out.discard(new_id)
                    sketch.back.add(new_id)

    def collapse(self, job: CollapseJob) -> None:
        with self._lock:
            # Periods with nothing tracked are skipped: every count reads 0 without a store.
            todo = [
                (period, data)
                for period, data in ((p, self._periods.get(p)) for p in job.periods)
                if data is not None and data.registry
            ]
            # Check every period before writing to any, as the Redis backend does.
            for period, data in todo:
                for name, _ in job.aggregates:
                    if name in data.registry or name in data.left:
                        raise ValueError(
                            f"aggregate_buckets: {name!r} is a bucket used in the "
                            f"{period.kind} period of {period.start}; an aggregate needs a "
                            "name of its own"
                        )
            for _, data in todo:
                self._collapse_period(data, job)

    @staticmethod
    def _collapse_period(data: _PeriodData, job: CollapseJob) -> None:
        """What ``collapse.lua`` and the counts it stores do for one period."""
        measured = sorted(data.registry, key=bucket_order) if job.buckets is None else job.buckets
        counts: dict[Bucket, int] = {}
        for bucket in measured:
            sketch = data.sketches.get(bucket)
            counts[bucket] = 0 if sketch is None else sketch.count()
        for name, sources in job.aggregates:
            # Built afresh from the sources' current sketches, so a re-collapse reflects them.
            union = _Sketch()
            parts = [data.sketches[s] for s in sources if s in data.sketches]
            for part in parts:
                union.hll.merge(part.hll)
                union.back.update(part.back)
            for part in parts:
                union.out.update(part.out)
            union.out.difference_update(union.back)
            data.sketches[name] = union
            counts[name] = union.count()
        data.counts.update(counts)

    def lookup(self, job: LookupJob) -> list[Mapping[Bucket, int]]:
        with self._lock:
            rows: list[Mapping[Bucket, int]] = []
            for period in job.periods:
                data = self._periods.get(period)
                counts = {} if data is None else data.counts
                if job.buckets is None:
                    rows.append(dict(counts))
                else:
                    rows.append({b: counts[b] for b in job.buckets if b in counts})
            return rows


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

    async def lookup(self, job: LookupJob) -> list[Mapping[Bucket, int]]:
        return self.sync.lookup(job)

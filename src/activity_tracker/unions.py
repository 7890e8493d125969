"""Unions of raw sketches over periods and buckets, with their corrections: what rolling
windows, ``count()``, retention and live measurements are made of. No I/O here.

Every backend answers an :class:`Inquiry` in the same three steps:

1. read the registry of each period the inquiry names, as a :class:`Registry` (its raw
   buckets with their exact corrections, its aggregates, whether its raw data is gone);
2. make a :class:`UnionPlan` of them: the inquiry's queries, each union as the raw sketches
   to merge (aggregates expanded to their raw sources) and the change records to correct it
   with. A period's records are needed only where the union's buckets have some there, and
   not even then when one bucket of one period has records: its exact counter is the whole
   correction;
3. fetch what the plan asks for (the estimate of each distinct union of sketches, the records
   of some periods) and :meth:`UnionPlan.finish`: each union's count is
   ``corrected_count(estimate, union_subtracted(records in time order))``, with the stderr of
   its estimate.

Only the fetching differs between stores (one multi-key ``PFCOUNT``, copies in one cluster
slot, or ``datasketch`` merges), so every store gives the same counts.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar, Generic, NamedTuple, TypeVar

from .corrections import Estimate, corrected_count, estimate, union_subtracted
from .errors import RawDataExpiredError
from .keys import Bucket, bucket_order
from .periods import Period

T = TypeVar("T")
#: One raw sketch: a bucket of a period.
SketchRef = tuple[Period, Bucket]
#: A period's change records by bucket: bucket -> {id hash: OUT or BACK}.
Records = Mapping[Bucket, Mapping[bytes, int]]
RowAnswer = dict[Bucket, Estimate] | Exception | None
UnionAnswer = Estimate | Exception | None


class RawBucket(NamedTuple):
    """A raw bucket of a period: were ids added to it, has it change records, and how many
    ids' last operation on it is a move out (its exact correction)."""

    tracked: bool
    indexed: bool
    out: int


@dataclass(frozen=True, slots=True)
class Registry:
    """What a period's registry says, as far as unions need it. ``problem``: why its raw
    data cannot be used (a :class:`~activity_tracker.RawDataExpiredError`, or the error
    reading it gave); None when it can."""

    raw: Mapping[Bucket, RawBucket]
    aggregates: Mapping[Bucket, tuple[Bucket, ...]]
    problem: Exception | None = None


EMPTY = Registry({}, {})


def expired(counts_expires: object, deadline: object) -> bool:
    """Whether a period's raw data is gone for good: its counts were collapsed from raw data
    expiring at ``counts_expires``, and the raw data there now (if any) expires at another
    ``deadline`` (None: there is none). No clock needed: a deadline is fixed by the first
    write of its generation of raw data and never changes."""
    return counts_expires is not None and counts_expires != deadline


@dataclass(frozen=True, slots=True)
class Row:
    """One union per bucket, each over all ``periods`` (a rolling window; a live count)."""

    periods: tuple[Period, ...]
    buckets: tuple[Bucket, ...]


@dataclass(frozen=True, slots=True)
class Union:
    """One union of all ``buckets`` over all ``periods`` (a ``count()`` range; a period of
    retention, or the union of two). ``separate``: the union of each period's own set
    rather than one period of all their events (see :func:`union_subtracted`)."""

    periods: tuple[Period, ...]
    buckets: tuple[Bucket, ...]
    separate: bool = False


class Inquiry(ABC, Generic[T]):
    """One read made of unions: the periods whose registries it needs, the queries it asks
    once it has them, and how it makes its result of their answers.

    ``strict``: a period whose raw data is gone, or a failed read, raises; otherwise each
    query needing it is answered None (raw data gone) or with the error. ``definitions``:
    aggregates defined by the caller, used in every period before the registries' own."""

    strict: ClassVar[bool] = True
    definitions: Mapping[Bucket, tuple[Bucket, ...]]

    @property
    @abstractmethod
    def periods(self) -> tuple[Period, ...]:
        """The periods whose registries the inquiry needs, in time order."""

    @abstractmethod
    def queries(self, registries: Mapping[Period, Registry]) -> tuple[list[Row], list[Union]]:
        """The rows and unions to answer, given every period's registry."""

    @abstractmethod
    def answer(self, rows: Sequence[RowAnswer], unions: Sequence[UnionAnswer]) -> T:
        """The inquiry's result from the answers to its queries, in order."""


def sure(answer: T | Exception | None) -> T:
    """A strict inquiry's answer (never an error nor None: the plan raised those)."""
    assert answer is not None and not isinstance(answer, Exception)
    return answer


def tracked_in(registries: Mapping[Period, Registry], periods: Iterable[Period]) -> list[Bucket]:
    """Every bucket ids were added to in any of ``periods``, default bucket first."""
    found = {
        bucket
        for period in periods
        for bucket, state in registries.get(period, EMPTY).raw.items()
        if state.tracked
    }
    return sorted(found, key=bucket_order)


def aggregates_in(registries: Mapping[Period, Registry], periods: Iterable[Period]) -> list[Bucket]:
    """Every aggregate registered (by a collapse) in any of ``periods``."""
    found = {name for period in periods for name in registries.get(period, EMPTY).aggregates}
    return sorted(found, key=bucket_order)


@dataclass(frozen=True, slots=True)
class _Unit:
    """One union to estimate: ``sketches``, the index of its set of raw sketches in
    :attr:`UnionPlan.sketch_sets` (-1: none); ``restrict``, per period in time order, its
    raw buckets with change records there."""

    sketches: int
    restrict: tuple[tuple[Period, tuple[Bucket, ...]], ...]
    separate: bool


class UnionPlan(Generic[T]):
    """The unions an inquiry needs, given its periods' registries: what to fetch
    (:attr:`sketch_sets`, :attr:`records`), and :meth:`finish` once fetched.

    Raises, for a strict inquiry, the problem of its first period that has one."""

    def __init__(self, inquiry: Inquiry[T], registries: Mapping[Period, Registry]) -> None:
        self.inquiry = inquiry
        self.registries = registries
        if inquiry.strict:
            for period in inquiry.periods:
                problem = registries.get(period, EMPTY).problem
                if problem is not None:
                    raise problem
        #: Each distinct set of raw sketches whose union's estimate is needed.
        self.sketch_sets: list[tuple[SketchRef, ...]] = []
        #: The periods whose change records are needed, and the buckets needed of them.
        self.records: dict[Period, set[Bucket]] = {}
        self._set_numbers: dict[tuple[SketchRef, ...], int] = {}
        rows, unions = inquiry.queries(registries)
        self._rows: list[list[tuple[Bucket, _Unit]] | Exception | None] = []
        for row in rows:
            units: list[tuple[Bucket, _Unit]] = []
            for bucket in row.buckets:
                unit = self._unit(row.periods, (bucket,), False)
                if not isinstance(unit, _Unit):
                    self._rows.append(unit)
                    break
                units.append((bucket, unit))
            else:
                self._rows.append(units)
        self._unions = [self._unit(u.periods, u.buckets, u.separate) for u in unions]

    def _unit(
        self, periods: tuple[Period, ...], buckets: tuple[Bucket, ...], separate: bool
    ) -> _Unit | Exception | None:
        sketches: list[SketchRef] = []
        restrict: list[tuple[Period, tuple[Bucket, ...]]] = []
        for period in periods:
            registry = self.registries.get(period, EMPTY)
            if registry.problem is not None:
                return (
                    None if isinstance(registry.problem, RawDataExpiredError) else registry.problem
                )
            raw: set[Bucket] = set()
            for bucket in buckets:
                raw |= self._raw_sources(bucket, registry, frozenset())
            ordered = sorted(raw, key=bucket_order)
            sketches += ((period, bucket) for bucket in ordered)
            indexed = tuple(b for b in ordered if registry.raw[b].indexed)
            if indexed:
                restrict.append((period, indexed))
        if len(restrict) > 1 or (restrict and len(restrict[0][1]) > 1):
            for period, indexed in restrict:
                self.records.setdefault(period, set()).update(indexed)
        number = -1
        if sketches:
            key = tuple(sketches)
            number = self._set_numbers.get(key, -1)
            if number < 0:
                number = self._set_numbers[key] = len(self.sketch_sets)
                self.sketch_sets.append(key)
        return _Unit(number, tuple(restrict), separate)

    def _raw_sources(
        self, name: Bucket, registry: Registry, seen: frozenset[Bucket]
    ) -> set[Bucket]:
        """The raw buckets of a period that ``name`` counts there: itself if it is a raw
        bucket, an aggregate's raw sources (by the caller's definition, else the period's),
        nothing if the period has no such bucket. A cycle adds nothing more."""
        sources = self.inquiry.definitions.get(name, registry.aggregates.get(name))
        if sources is None:
            return {name} if name in registry.raw else set()
        if name in seen:
            return set()
        found: set[Bucket] = set()
        for source in sources:
            found |= self._raw_sources(source, registry, seen | {name})
        return found

    def finish(
        self,
        records: Mapping[Period, Records | Exception],
        estimates: Sequence[int | Exception],
    ) -> T:
        """The inquiry's result, given the records of each period in :attr:`records` and the
        estimate of each of :attr:`sketch_sets` (each may instead be the error reading it
        gave: a strict inquiry raises it, else the queries needing it are answered with it)."""

        def value(unit: _Unit) -> Estimate | Exception:
            held = 0 if unit.sketches < 0 else estimates[unit.sketches]
            if not isinstance(held, Exception):
                subtracted = self._subtracted(unit, records)
                if not isinstance(subtracted, Exception):
                    return estimate(corrected_count(held, subtracted), held)
                held = subtracted
            if self.inquiry.strict:
                raise held
            return held

        rows: list[RowAnswer] = []
        for units in self._rows:
            if not isinstance(units, list):
                rows.append(units)
                continue
            row: dict[Bucket, Estimate] = {}
            for bucket, unit in units:
                found = value(unit)
                if isinstance(found, Exception):
                    rows.append(found)
                    break
                row[bucket] = found
            else:
                rows.append(row)
        unions: list[UnionAnswer] = [
            unit if not isinstance(unit, _Unit) else value(unit) for unit in self._unions
        ]
        return self.inquiry.answer(rows, unions)

    def _subtracted(
        self, unit: _Unit, records: Mapping[Period, Records | Exception]
    ) -> int | Exception:
        if not unit.restrict:
            return 0
        if len(unit.restrict) == 1 and len(unit.restrict[0][1]) == 1:
            period, (bucket,) = unit.restrict[0]
            return self.registries[period].raw[bucket].out
        periods: list[dict[bytes, dict[Bucket, int]]] = []
        for period, buckets in unit.restrict:
            by_bucket = records[period]
            if isinstance(by_bucket, Exception):
                return by_bucket
            restricted: dict[bytes, dict[Bucket, int]] = {}
            for bucket in buckets:
                for hash, flag in by_bucket.get(bucket, {}).items():
                    restricted.setdefault(hash, {})[bucket] = flag
            periods.append(restricted)
        return union_subtracted(periods, unit.separate)

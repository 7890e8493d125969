"""What to send to Redis for each call, and how to read the replies. No I/O here.

Each operation is a generator: it yields a list of requests that the driver sends in one round
trip (a pipeline when there are several) and receives the list of replies back. The sync and
asyncio drivers in :mod:`.redis` are thin loops around these generators, so both share this
one copy of the logic, and it can be tested with plain data.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Generator, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from importlib.resources import files
from typing import Any, TypeVar

from ..arguments import Activity, CollapseJob, LookupJob
from ..corrections import corrected_count
from ..keys import (
    SKETCHES_EXPIRE_FIELD,
    Bucket,
    KeySchema,
    bucket_order,
    decode_bucket,
    encode_bucket,
)
from ..periods import Period


def _resource(name: str) -> str:
    return files("activity_tracker.resources").joinpath(name).read_text(encoding="utf-8")


# Each script is its .lua file, after the shared guard against foreign keys for the scripts
# that use it (track.lua probes its few keys itself: defining the guard costs every call).
SCRIPTS = {
    "track": _resource("track.lua"),
    "track_many": _resource("guard.lua") + _resource("track_many.lua"),
    "collapse": _resource("guard.lua") + _resource("collapse.lua"),
}


@dataclass(frozen=True, slots=True)
class Command:
    """A plain Redis command, e.g. ``Command(("HGETALL", key))``."""

    args: tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class ScriptCall:
    """A call of one of :data:`SCRIPTS` by name."""

    script: str
    keys: tuple[str, ...]
    args: tuple[Any, ...]


Request = Command | ScriptCall
T = TypeVar("T")
Operation = Generator[list[Request], list[Any], T]


def text(value: Any) -> str:
    """A reply as str, whether the client decodes responses or not."""
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def track(schema: KeySchema, activity: Activity, split_periods: bool) -> Operation[None]:
    """Record one activity: one script call for all periods, or one per period when the
    periods may live on different cluster nodes (``split_periods``)."""
    if split_periods:
        yield [track_call(schema, activity, (period,)) for period in activity.periods]
    else:
        yield [track_call(schema, activity, activity.periods)]


def track_call(schema: KeySchema, activity: Activity, periods: Sequence[Period]) -> ScriptCall:
    """The ``track.lua`` call recording ``activity`` in ``periods``."""
    adds = activity.id is not None
    discards = activity.old_id is not None
    args = (
        "1" if adds else "0",
        "1" if discards else "0",
        activity.id or "",
        _code(activity.bucket),
        activity.old_id or "",
        _code(activity.old_bucket),
    )
    keys = _track_keys(schema, tuple(periods), activity.bucket, activity.old_bucket, adds, discards)
    return ScriptCall("track", keys, args)


# Naming keys costs more than the rest of a track() call: most calls repeat the keys of the
# previous one (same day, same buckets), so the last few thousand key lists are kept.
_code = lru_cache(maxsize=4096)(encode_bucket)


@lru_cache(maxsize=4096)
def _track_keys(
    schema: KeySchema,
    periods: tuple[Period, ...],
    bucket: Bucket,
    old_bucket: Bucket,
    adds: bool,
    discards: bool,
) -> tuple[str, ...]:
    new_code, old_code = _code(bucket), _code(old_bucket)
    keys: list[str] = []
    for period in periods:
        keys += (schema.moved(period), schema.counts(period))
        if discards:
            keys.extend(schema.bucket_keys(period, old_code))
            keys.append(schema.left(period))
        if adds:
            keys.append(schema.buckets(period))
            keys.extend(schema.bucket_keys(period, new_code))
    return tuple(keys)


def track_many(
    schema: KeySchema, activities: Iterable[Activity], split_periods: bool = False
) -> Operation[None]:
    """Record many activities, with the result of recording them one by one in order (see
    :class:`BatchGroups`): one ``track_many.lua`` call for all their periods, atomic, or one
    per period when periods may live on different cluster nodes (``split_periods``), all in
    one round trip."""
    groups = BatchGroups()
    for activity in activities:
        groups.add(activity)
    calls = groups.script_calls(schema, split_periods)
    if calls:
        yield calls


@dataclass(slots=True)
class _BucketGroup:
    """What a batch does to one bucket of one period (ids as sets: each costs one element).

    ``check``: ids added before any move of theirs in the batch; whether the server already
    has them in ``moved`` decides their correction, as in ``track.lua``. ``out`` and ``back``:
    ids moved in the batch whose last operation on this bucket was a move out (they end in
    the bucket's ``out`` set) or an add (they end in ``back``).
    """

    registered: bool = False
    left: bool = False
    check: set[str] = dataclasses.field(default_factory=set)
    out: set[str] = dataclasses.field(default_factory=set)
    back: set[str] = dataclasses.field(default_factory=set)


@dataclass(slots=True)
class _PeriodGroups:
    moved: set[str] = dataclasses.field(default_factory=set)
    buckets: dict[str, _BucketGroup] = dataclasses.field(default_factory=dict)


class BatchGroups:
    """Activities grouped per period and bucket so that the result equals recording them one
    at a time, in order, with ``track.lua``.

    Why grouping is exact: within a period, what an operation reads and writes besides the
    HyperLogLogs (which only grow, in any order) and the bucket registries (likewise) is the
    membership of its own id in ``moved``, ``out`` and ``back``. Operations on different ids
    therefore commute, and only the order of each id's own operations matters. An id's adds
    before its first move in the batch see the server's ``moved`` as it was before the batch
    (``check``); from its first move on it is in ``moved`` for sure, so its membership of each
    bucket's ``out``/``back`` is decided by its last operation there (``out``/``back``).
    The script applies ``check`` corrections first, then the moves, then ``out``/``back``.
    """

    def __init__(self) -> None:
        self.periods: dict[Period, _PeriodGroups] = {}
        # Where the plain adds of one (periods, bucket) go, so that the common event costs one
        # lookup: keyed by the identity of the periods tuple (the one the checker keeps for
        # each day), which the entry holds and compares, so an id reused is never mistaken.
        self._targets: dict[tuple[int, Bucket], _Targets] = {}

    def _period(self, period: Period) -> _PeriodGroups:
        groups = self.periods.get(period)
        if groups is None:
            groups = self.periods[period] = _PeriodGroups()
        return groups

    def _bucket(self, groups: _PeriodGroups, code: str) -> _BucketGroup:
        group = groups.buckets.get(code)
        if group is None:
            group = groups.buckets[code] = _BucketGroup()
        return group

    def add(self, activity: Activity) -> None:
        """Group one activity after those added before it."""
        periods, new_id, old_id = activity.periods, activity.id, activity.old_id
        if old_id is None and new_id is not None:
            key = (id(periods), activity.bucket)
            targets = self._targets.get(key)
            if targets is None or targets[0] is not periods:
                targets = self._targets[key] = self._targets_of(periods, activity.bucket)
            for moved, group in targets[1]:
                if new_id in moved:
                    group.back.add(new_id)
                    group.out.discard(new_id)
                else:
                    group.check.add(new_id)
            return
        old_code = _code(activity.old_bucket)
        code = _code(activity.bucket)
        for period in periods:
            groups = self._period(period)
            if old_id is not None:
                group = self._bucket(groups, old_code)
                groups.moved.add(old_id)
                group.left = True
                group.out.add(old_id)
                group.back.discard(old_id)
            if new_id is not None:
                group = self._bucket(groups, code)
                group.registered = True
                if new_id in groups.moved:
                    group.back.add(new_id)
                    group.out.discard(new_id)
                else:
                    group.check.add(new_id)

    def _targets_of(self, periods: tuple[Period, ...], bucket: Bucket) -> _Targets:
        code = _code(bucket)
        pairs = []
        for period in periods:
            groups = self._period(period)
            group = self._bucket(groups, code)
            group.registered = True
            pairs.append((groups.moved, group))
        return periods, tuple(pairs)

    def script_calls(self, schema: KeySchema, split_periods: bool = False) -> list[Request]:
        """The ``track_many.lua`` calls: one for every period, or one per period."""
        sections = [
            self._section(schema, period, groups) for period, groups in self.periods.items()
        ]
        if not split_periods:
            sections = (
                [
                    (
                        [key for keys, _ in sections for key in keys],
                        [arg for _, args in sections for arg in args],
                    )
                ]
                if sections
                else []
            )
        return [ScriptCall("track_many", tuple(keys), tuple(args)) for keys, args in sections]

    @staticmethod
    def _section(
        schema: KeySchema, period: Period, groups: _PeriodGroups
    ) -> tuple[list[str], list[str]]:
        keys = [
            schema.moved(period),
            schema.buckets(period),
            schema.left(period),
            schema.counts(period),
        ]
        args: list[str] = [str(len(groups.buckets)), *_id_list(groups.moved)]
        for code, group in groups.buckets.items():
            keys.extend(schema.bucket_keys(period, code))
            args += (code, "1" if group.registered else "0", "1" if group.left else "0")
            args += _id_list(group.check)
            args += _id_list(group.out)
            args += _id_list(group.back)
        return keys, args


_Targets = tuple[tuple[Period, ...], tuple[tuple[set[str], _BucketGroup], ...]]


def _id_list(ids: set[str]) -> list[str]:
    """A list of ids as ``track_many.lua`` reads it: ``-n`` and the ids joined by newlines
    (one argument is much cheaper to send than n), or ``n`` and the ids one by one when an id
    holds a newline."""
    if not ids:
        return ["0"]
    joined = "\n".join(ids)
    if joined.count("\n") == len(ids) - 1:
        return [str(-len(ids)), joined]
    return [str(len(ids)), *ids]


def collapse(
    schema: KeySchema, job: CollapseJob, retention: int | None, now: float
) -> Operation[None]:
    """Collapse the job's periods: read what each period holds, measure it with
    ``collapse.lua`` (one call per period), then store the corrected counts."""
    listing = yield [
        request
        for period in job.periods
        for request in (
            Command(("SMEMBERS", schema.buckets(period))),
            Command(("SMEMBERS", schema.left(period))),
            Command(("HGET", schema.counts(period), SKETCHES_EXPIRE_FIELD)),
        )
    ]
    plans: list[_PeriodPlan] = []
    for index, period in enumerate(job.periods):
        tracked = {text(code) for code in listing[3 * index]}
        left = {text(code) for code in listing[3 * index + 1]}
        expires = listing[3 * index + 2]
        if not tracked and not left:
            continue  # nothing was written: every count reads 0 without storing anything
        if expires is not None and float(text(expires)) <= now:
            continue  # its raw sketches are gone: the stored counts are final
        plans.append(_PeriodPlan.make(period, tracked, left, job))
    if not plans:
        return
    measurements = yield [plan.script_call(schema, retention) for plan in plans]
    expires_at = None if retention is None else str(now + retention)
    yield [
        request
        for plan, replies in zip(plans, measurements, strict=True)
        for request in plan.store_counts(schema, replies, expires_at)
    ]


@dataclass(frozen=True, slots=True)
class _PeriodPlan:
    period: Period
    measured: tuple[str, ...]
    aggregates: tuple[tuple[str, tuple[str, ...]], ...]
    expire_only: tuple[str, ...]

    @classmethod
    def make(
        cls, period: Period, tracked: set[str], left: set[str], job: CollapseJob
    ) -> _PeriodPlan:
        """The plan of one period: ``tracked`` and ``left`` are its bucket registries (the
        buckets ids were added to, and those ids were moved out of)."""
        if not tracked:
            # Ids were only moved out: there is nothing to count, only keys to expire.
            return cls(period=period, measured=(), aggregates=(), expire_only=tuple(sorted(left)))
        for name, _ in job.aggregates:
            if encode_bucket(name) in tracked | left:
                raise ValueError(
                    f"aggregate_buckets: {name!r} is a bucket used in the {period.kind} period "
                    f"of {period.start}; an aggregate needs a name of its own"
                )
        if job.buckets is None:
            measured = sorted(tracked, key=lambda code: bucket_order(decode_bucket(code)))
        else:
            measured = [encode_bucket(bucket) for bucket in job.buckets]
        return cls(
            period=period,
            measured=tuple(measured),
            aggregates=tuple(
                (encode_bucket(name), tuple(encode_bucket(s) for s in sources))
                for name, sources in job.aggregates
            ),
            expire_only=tuple(sorted((tracked | left).difference(measured))),
        )

    def script_call(self, schema: KeySchema, retention: int | None) -> ScriptCall:
        keys = [schema.moved(self.period), schema.buckets(self.period), schema.left(self.period)]
        for code in self.measured:
            keys.extend(schema.bucket_keys(self.period, code))
        for name, sources in self.aggregates:
            keys.extend(schema.bucket_keys(self.period, name))
            for source in sources:
                keys.extend(schema.bucket_keys(self.period, source))
        for code in self.expire_only:
            keys.extend(schema.bucket_keys(self.period, code))
        args = [
            "" if retention is None else str(retention),
            str(len(self.measured)),
            str(len(self.aggregates)),
        ]
        args.extend(str(len(sources)) for _, sources in self.aggregates)
        return ScriptCall("collapse", tuple(keys), tuple(args))

    def store_counts(
        self, schema: KeySchema, replies: Sequence[Any], expires_at: str | None
    ) -> list[Request]:
        codes = [*self.measured, *(name for name, _ in self.aggregates)]
        fields: list[str] = []
        for position, code in enumerate(codes):
            estimate, moved_out = int(replies[2 * position]), int(replies[2 * position + 1])
            fields += [code, str(corrected_count(estimate, moved_out))]
        key = schema.counts(self.period)
        if expires_at is not None:
            return [Command(("HSET", key, *fields, SKETCHES_EXPIRE_FIELD, expires_at))]
        requests: list[Request] = [Command(("HSET", key, *fields))] if fields else []
        return [*requests, Command(("HDEL", key, SKETCHES_EXPIRE_FIELD))]


def lookup(schema: KeySchema, job: LookupJob) -> Operation[list[Mapping[Bucket, int]]]:
    """Read the stored counts of every period in one round trip."""
    if not job.periods:
        return []
    if job.buckets is None:
        replies = yield [Command(("HGETALL", schema.counts(period))) for period in job.periods]
        return [_all_counts(reply) for reply in replies]
    codes = [encode_bucket(bucket) for bucket in job.buckets]
    replies = yield [Command(("HMGET", schema.counts(p), *codes)) for p in job.periods]
    return [
        {bucket: int(value) for bucket, value in zip(job.buckets, reply, strict=True) if value}
        for reply in replies
    ]


def _all_counts(reply: Mapping[Any, Any]) -> dict[Bucket, int]:
    counts: dict[Bucket, int] = {}
    for field, value in reply.items():
        code = text(field)
        if code != SKETCHES_EXPIRE_FIELD:
            counts[decode_bucket(code)] = int(value)
    return counts

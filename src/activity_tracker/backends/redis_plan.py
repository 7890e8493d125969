"""What to send to Redis for each call, and how to read the replies. No I/O here.

Each operation is a generator: it yields a list of requests that the driver sends in one round
trip (a pipeline when there are several) and receives the list of replies back. The sync and
asyncio drivers in :mod:`.redis` are thin loops around these generators, so both share this
one copy of the logic, and it can be tested with plain data.
"""

from __future__ import annotations

import dataclasses
import secrets
from collections.abc import Generator, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from importlib.resources import files
from typing import Any, TypeVar

from ..arguments import Activity, CollapseJob, LookupJob
from ..corrections import Estimate, corrected_count, estimate, sketch_size, union_subtracted
from ..errors import (
    ActivityTrackerError,
    AggregateBucketError,
    RawDataExpiredError,
    WrongKeyTypeError,
    collapse_error,
)
from ..inquiries import WindowsInquiry
from ..keys import (
    AGGREGATE_MARK,
    BACK,
    DEADLINE_FIELD,
    EXPIRES_FIELD,
    OUT,
    OUT_FIELD_PREFIX,
    SCRATCH_MILLISECONDS,
    Bucket,
    KeySchema,
    deadline,
    decode_bucket,
    decode_records,
    encode_bucket,
    id_hash,
    rolling_field,
    rolling_prefix,
)
from ..periods import DAILY, Period
from ..unions import Inquiry, RawBucket, Records, Registry, UnionPlan, expired


def _resource(name: str) -> str:
    return files("activity_tracker.resources").joinpath(name).read_text(encoding="utf-8")


def _scripts(fakeredis: bool) -> dict[str, str]:
    """Each script is its .lua file after the helpers they share (store.lua and rolling.lua
    need none), and these after FAKEREDIS: whether the client is a fakeredis one (see
    common.lua's probe). track.lua's common case, track_fast.lua, comes before the helpers
    (see there why)."""
    flag = f"local FAKEREDIS = {str(fakeredis).lower()}\n"
    common = _resource("common.lua")
    scripts = {
        name: flag + common + _resource(f"{name}.lua") for name in ("track_many", "collapse")
    }
    scripts["track"] = flag + _resource("track_fast.lua") + common + _resource("track.lua")
    scripts["store"] = _resource("store.lua")
    scripts["rolling"] = _resource("rolling.lua")
    return scripts


SCRIPTS = _scripts(fakeredis=False)
#: The scripts for a fakeredis client (applications' tests), which keeps a HyperLogLog as a set.
FAKEREDIS_SCRIPTS = _scripts(fakeredis=True)

#: How many times a collapse measures a period whose store a concurrent collapse that
#: measured later keeps refusing (then the later measurement stands).
MAX_MEASUREMENTS = 3


@dataclass(frozen=True, slots=True)
class Command:
    """A plain Redis command, e.g. ``Command(("HGETALL", key))``; ``raw`` and
    ``errors_as_replies`` as for :class:`ScriptCall`."""

    args: tuple[Any, ...]
    raw: bool = False
    errors_as_replies: bool = False


@dataclass(frozen=True, slots=True)
class ScriptCall:
    """A call of one of :data:`SCRIPTS` by name.

    ``raw``: its reply holds binary strings, to be received as bytes whatever the client
    decodes. ``errors_as_replies``: an error reply comes back as the driver's exception in
    the list of replies instead of being raised (the operation decides)."""

    script: str
    keys: tuple[str, ...]
    args: tuple[Any, ...]
    raw: bool = False
    errors_as_replies: bool = False


Request = Command | ScriptCall
T = TypeVar("T")
Operation = Generator[list[Request], list[Any], T]


def text(value: Any) -> str:
    """A reply as str, whether the client decodes responses or not."""
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


# ---- track ----------------------------------------------------------------------------------


def track(
    schema: KeySchema, activity: Activity, retention: int, now: float, split_periods: bool
) -> Operation[None]:
    """Record one activity: one script call for all periods, or one per period when the
    periods may live on different cluster nodes (``split_periods``)."""
    parts: list[tuple[tuple[Period, ...], tuple[float, ...]]]
    if split_periods:
        ends = zip(activity.periods, activity.ends, strict=True)
        parts = [((period,), (end,)) for period, end in ends]
    else:
        parts = [(activity.periods, activity.ends)]
    calls: list[Request] = []
    for periods, period_ends in parts:
        keys, fixed = track_fixed(schema, activity, periods, period_ends, retention, now)
        calls.append(ScriptCall("track", keys, fixed + track_tail(activity)))
    replies = yield calls
    for (periods, _), reply in zip(parts, replies, strict=True):
        check_track_reply(activity, periods, reply)


def track_fixed(
    schema: KeySchema,
    activity: Activity,
    periods: Sequence[Period],
    ends: Sequence[float],
    retention: int,
    now: float,
) -> tuple[tuple[str, ...], tuple[Any, ...]]:
    """The keys and the leading arguments (mode, bucket codes, proposed deadlines) of the
    ``track.lua`` call recording ``activity`` in ``periods`` (which end at ``ends``): what
    successive calls mostly repeat; :func:`track_tail` gives the rest."""
    adds, moves = activity.id is not None, activity.old_id is not None
    args: list[Any] = [
        "3" if adds and moves else "1" if adds else "2",
        _code(activity.bucket) if adds else "",
        _code(activity.old_bucket) if moves else "",
    ]
    args += [deadline(end, now, retention) for end in ends]
    keys = _track_keys(schema, tuple(periods), activity.bucket, activity.old_bucket, adds, moves)
    return keys, tuple(args)


#: How many arguments :func:`track_tail` gives.
TRACK_TAIL_LENGTH = 4


def track_tail(activity: Activity) -> tuple[str | bytes, ...]:
    """The last arguments of a ``track.lua`` call, which depend on the ids: the id, its hash,
    the old id, its hash (``""`` for an id not given)."""
    new_id, old_id = activity.id, activity.old_id
    return (
        new_id or "",
        b"" if new_id is None else id_hash(new_id),
        old_id or "",
        b"" if old_id is None else id_hash(old_id),
    )


def check_track_reply(activity: Activity, periods: Sequence[Period], reply: Any) -> None:
    """Raise what a ``track.lua`` reply other than 0 means: the bucket (1) or old bucket (2)
    is an aggregate in the period of that number, and nothing was written."""
    if reply == 0:
        return
    which, number = (int(value) for value in reply)
    period = periods[number - 1]
    if which == 1:
        raise AggregateBucketError.tracked_into("bucket", activity.bucket, period)
    raise AggregateBucketError.tracked_into("old_bucket", activity.old_bucket, period)


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
    moves: bool,
) -> tuple[str, ...]:
    keys: list[str] = []
    for period in periods:
        keys += (schema.reg(period), schema.chg(period))
        if adds:
            keys.append(schema.hll(period, _code(bucket)))
        if moves:
            keys.append(schema.hll(period, _code(old_bucket)))
    return tuple(keys)


# ---- track_many -----------------------------------------------------------------------------


def track_many(
    schema: KeySchema,
    activities: Iterable[Activity],
    retention: int,
    now: float,
    split_periods: bool = False,
) -> Operation[None]:
    """Record many activities, with the result of recording them one by one in order (see
    :class:`BatchGroups`): one ``track_many.lua`` call for all their periods, atomic, or one
    per period when periods may live on different cluster nodes (``split_periods``), all in
    one round trip."""
    groups = BatchGroups()
    for activity in activities:
        groups.add(activity)
    calls = groups.script_calls(schema, retention, now, split_periods)
    if calls:
        replies = yield calls
        for number, reply in enumerate(replies):
            groups.check_reply(number, reply, split_periods)


@dataclass(slots=True)
class _BucketGroup:
    """What a batch does to one bucket of one period (ids as sets: each costs one element).

    ``ids``: every id added to it or moved out of it (all go into its sketch). ``checks``:
    the ids added to it before any move of theirs in the batch: whether the server has
    records of them decides their correction, as in ``track.lua``.
    """

    added: bool = False
    moved_out: bool = False
    ids: set[str] = dataclasses.field(default_factory=set)
    checks: set[str] = dataclasses.field(default_factory=set)


@dataclass(slots=True)
class _PeriodGroups:
    """A batch's work in one period: per bucket, and per id moved in the batch the flag its
    record for each bucket it touched since its first move in the batch ends with."""

    end: float
    buckets: dict[str, _BucketGroup] = dataclasses.field(default_factory=dict)
    moved: dict[str, dict[str, int]] = dataclasses.field(default_factory=dict)


class BatchGroups:
    """Activities grouped per period and bucket so that the result equals recording them one
    at a time, in order, with ``track.lua``.

    Why grouping is exact: within a period, besides the sketches (which only grow, in any
    order) and the bucket registry (the tracked bits only get set; indices are labels), what
    an operation reads and writes is its own id's records, and the counters summing them.
    Operations on different ids therefore commute, and only the order of each id's own
    operations matters. An id's adds before its first move in the batch see its records as
    they were before the batch (``checks``); from its first move on it has records for sure,
    and its record for each bucket it touches is decided by its last operation there
    (``moved``). The script applies each id's checks, then its last operations.
    """

    def __init__(self) -> None:
        self.periods: dict[Period, _PeriodGroups] = {}
        # Where the plain adds of one (periods, bucket) go, so that the common event costs one
        # lookup: keyed by the identity of the periods tuple (the one the checker keeps for
        # each day), which the entry holds and compares, so an id reused is never mistaken.
        self._targets: dict[tuple[int, Bucket], _Targets] = {}
        self._sections: list[tuple[Period, list[str]]] = []

    def _period(self, period: Period, end: float) -> _PeriodGroups:
        groups = self.periods.get(period)
        if groups is None:
            groups = self.periods[period] = _PeriodGroups(end)
        return groups

    @staticmethod
    def _bucket(groups: _PeriodGroups, code: str) -> _BucketGroup:
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
                targets = self._targets[key] = self._targets_of(activity)
            for moved, group, code in targets[1]:
                group.ids.add(new_id)
                last = moved.get(new_id)
                if last is None:
                    group.checks.add(new_id)
                else:
                    last[code] = BACK
            return
        old_code = _code(activity.old_bucket)
        code = _code(activity.bucket)
        for period, end in zip(periods, activity.ends, strict=True):
            groups = self._period(period, end)
            if old_id is not None:
                group = self._bucket(groups, old_code)
                group.moved_out = True
                group.ids.add(old_id)
                groups.moved.setdefault(old_id, {})[old_code] = OUT
            if new_id is not None:
                group = self._bucket(groups, code)
                group.added = True
                group.ids.add(new_id)
                last = groups.moved.get(new_id)
                if last is None:
                    group.checks.add(new_id)
                else:
                    last[code] = BACK

    def _targets_of(self, activity: Activity) -> _Targets:
        code = _code(activity.bucket)
        found = []
        for period, end in zip(activity.periods, activity.ends, strict=True):
            groups = self._period(period, end)
            group = self._bucket(groups, code)
            group.added = True
            found.append((groups.moved, group, code))
        return activity.periods, tuple(found)

    def script_calls(
        self, schema: KeySchema, retention: int, now: float, split_periods: bool = False
    ) -> list[Request]:
        """The ``track_many.lua`` calls: one for every period, or one per period."""
        hashes = _HASHES
        self._sections = []
        sections = []
        for period, groups in self.periods.items():
            self._sections.append((period, list(groups.buckets)))
            sections.append(self._section(schema, period, groups, retention, now, hashes))
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

    def check_reply(self, number: int, reply: Any, split_periods: bool) -> None:
        """Raise what the reply of script call ``number`` other than 0 means: a bucket of a
        section is an aggregate in that period (and nothing was written)."""
        if reply == 0:
            return
        section, position = (int(value) for value in reply)
        period, codes = self._sections[number if split_periods else section - 1]
        code = codes[position - 1]
        argument = "bucket" if self.periods[period].buckets[code].added else "old_bucket"
        raise AggregateBucketError.tracked_into(argument, decode_bucket(code), period)

    @staticmethod
    def _section(
        schema: KeySchema,
        period: Period,
        groups: _PeriodGroups,
        retention: int,
        now: float,
        hashes: dict[str, bytes],
    ) -> tuple[list[str], list[Any]]:
        get = hashes.get

        def hash_of(id: str) -> bytes:
            if len(hashes) >= _HASH_CACHE_SIZE:
                hashes.clear()
            found = hashes[id] = id_hash(id)
            return found

        moved = groups.moved
        keys = [schema.reg(period), schema.chg(period)]
        args: list[Any] = [deadline(groups.end, now, retention), len(groups.buckets)]
        checked_then_moved: dict[str, list[int]] = {}
        positions = {}
        for position, (code, group) in enumerate(groups.buckets.items()):
            positions[code] = position
            keys.append(schema.hll(period, code))
            args += (code, group.added + 2 * group.moved_out)
            args += _id_list(group.ids)
            checks = group.checks
            if moved:
                for id in checks.intersection(moved):
                    checked_then_moved.setdefault(id, []).append(position)
                checks = checks.difference(moved)
            args.append(b"".join([get(id) or hash_of(id) for id in checks]))
        args.append(len(moved))
        for id, last in moved.items():
            entry = bytearray(get(id) or hash_of(id))
            for position in checked_then_moved.get(id, ()):
                entry += (position * 4).to_bytes(3, "big")
            for code, flag in last.items():
                entry += (positions[code] * 4 + (1 if flag == OUT else 2)).to_bytes(3, "big")
            args.append(bytes(entry))
        return keys, args


# The id hashes of recent batches: most ids of a batch were in the previous ones (hashing
# costs more than the rest of grouping an id). Cleared when full; a race only recomputes.
_HASHES: dict[str, bytes] = {}
_HASH_CACHE_SIZE = 1 << 17

_Target = tuple[dict[str, dict[str, int]], _BucketGroup, str]
_Targets = tuple[tuple[Period, ...], tuple[_Target, ...]]


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


# ---- collapse -------------------------------------------------------------------------------


def collapse(schema: KeySchema, job: CollapseJob, cluster: bool = False) -> Operation[None]:
    """Collapse the job's periods: one ``collapse.lua`` call per period (all in one round
    trip) measures it and, in the common case, stores its counts; a period whose aggregates
    need corrections computed here is stored by ``store.lua`` in a second round trip, unless
    a collapse that measured it later stored first (then it is measured again, up to
    :data:`MAX_MEASUREMENTS` times). Then, with ``job.rolling``, the rolling windows ending on
    each daily period measured are computed (see :func:`unions`; ``cluster``: the periods
    live in different slots) and stored by ``rolling.lua``. A period that fails is reported
    at the end, in one :class:`~activity_tracker.errors.CollapseError`, after every other
    period was stored."""
    failures: dict[Period, Exception] = {}
    # The server time of each period's last measurement: every read of its windows is later.
    measured: dict[Period, str] = {}
    todo = list(job.periods)
    for _ in range(MAX_MEASUREMENTS):
        if not todo:
            break
        replies = yield [collapse_call(schema, period, job) for period in todo]
        stores: list[tuple[Period, ScriptCall]] = []
        for period, reply in zip(todo, replies, strict=True):
            try:
                if isinstance(reply, Exception):
                    raise reply
                store = store_call(schema, period, reply)
            except ActivityTrackerError as exc:  # reported at the end, with the others
                failures[period] = exc
                continue
            if text(reply[0]) in _MEASURED and len(reply) > 1:
                measured[period] = text(reply[1])
            if store is not None:
                stores.append((period, store))
        if not stores:
            break
        results = yield [store for _, store in stores]
        todo = []
        for (period, _), result in zip(stores, results, strict=True):
            if isinstance(result, Exception):
                failures[period] = result
            elif result == 0:
                todo.append(period)
    if job.rolling:
        yield from _store_windows(schema, job, measured, failures, cluster)
    if failures:
        ordered = [(period, failures[period]) for period in job.periods if period in failures]
        raise collapse_error(ordered) from ordered[0][1]


# The collapse.lua statuses that come with the time of a measurement.
_MEASURED = ("empty", "stored", "measured")


def _store_windows(
    schema: KeySchema,
    job: CollapseJob,
    measured: Mapping[Period, str],
    failures: dict[Period, Exception],
    cluster: bool,
) -> Operation[None]:
    """Store the rolling windows of ``job.rolling`` ending on each daily period measured (a
    day found empty too: its windows hold earlier days), each with the time of that day's
    measurement, by ``rolling.lua``, which keeps a window measured later. A window with a
    day whose raw data expired is left as stored; a failed read fails its day."""
    days = tuple(p for p in job.periods if p.kind == DAILY and p in measured)
    if not days:
        return
    inquiry = WindowsInquiry(days, job.rolling, job.buckets, dict(job.aggregates))
    answers = yield from unions(schema, inquiry, cluster)
    stores: list[tuple[Period, ScriptCall]] = []
    for day in days:
        fields: list[str] = []
        for length in job.rolling:
            answer = answers[day, length]
            if isinstance(answer, Exception):
                failures.setdefault(day, answer)
            elif answer is not None:
                for bucket, found in answer.items():
                    value = f"{found.count},{sketch_size(found)}"
                    fields += (rolling_field(length, _code(bucket)), value)
        if fields:
            call = ScriptCall(
                "rolling", (schema.counts(day),), (measured[day], *fields), errors_as_replies=True
            )
            stores.append((day, call))
    if stores:
        results = yield [call for _, call in stores]
        for (day, _), result in zip(stores, results, strict=True):
            if isinstance(result, Exception):
                failures.setdefault(day, result)


def collapse_call(schema: KeySchema, period: Period, job: CollapseJob) -> ScriptCall:
    """The ``collapse.lua`` call measuring ``period`` for ``job``."""
    args: list[Any] = [schema.hll_prefix(period)]
    if job.buckets is None:
        args.append(-1)
    else:
        args.append(len(job.buckets))
        args += (_code(bucket) for bucket in job.buckets)
    args.append(len(job.aggregates))
    for name, sources in job.aggregates:
        args += (_code(name), len(sources), *(_code(source) for source in sources))
    keys = (schema.reg(period), schema.chg(period), schema.counts(period))
    return ScriptCall("collapse", keys, tuple(args), raw=True, errors_as_replies=True)


def store_call(schema: KeySchema, period: Period, reply: Sequence[Any]) -> ScriptCall | None:
    """What to do with a ``collapse.lua`` reply: nothing (stored, or nothing to store), or
    the ``store.lua`` call storing the counts it measured with the corrections it left to the
    client; raises :class:`AggregateBucketError` for a bad aggregate name."""
    status = text(reply[0])
    if status == "clash":
        raise AggregateBucketError.named_like_a_bucket(decode_bucket(text(reply[1])), period)
    if status == "cycle":
        raise AggregateBucketError.counting_itself(decode_bucket(text(reply[1])), period)
    if status != "measured":
        return None
    measured_at, expires, values, pending, records = reply[1:]
    fields = [text(value) for value in values]
    by_index = _records_by_index(records)
    for at in range(0, len(pending), 3):
        code, sketch_estimate = text(pending[at]), int(pending[at + 1])
        indices = {int(index) for index in text(pending[at + 2]).split(",")}
        restricted: dict[bytes, dict[int, int]] = {}
        for index in indices:
            for hash, flag in by_index.get(index, {}).items():
                restricted.setdefault(hash, {})[index] = flag
        count = corrected_count(sketch_estimate, union_subtracted([restricted]))
        fields += (code, f"{count},{sketch_estimate}")
    return ScriptCall(
        "store",
        (schema.counts(period),),
        (text(measured_at), text(expires), *fields),
        errors_as_replies=True,
    )


def _records_by_index(flat: Sequence[bytes]) -> dict[int, dict[bytes, int]]:
    """The records of a ``chg`` HGETALL reply (field, value, ...) as index -> {hash: flag}."""
    by_index: dict[int, dict[bytes, int]] = {}
    for blob in flat[1::2]:
        for hash, index, flag in decode_records(blob):
            by_index.setdefault(index, {})[hash] = flag
    return by_index


# ---- lookup ---------------------------------------------------------------------------------


def lookup(schema: KeySchema, job: LookupJob) -> Operation[list[Mapping[Bucket, Estimate]]]:
    """Read the stored counts of every period in one round trip."""
    return (yield from _stored(schema, job, ""))


def _stored(
    schema: KeySchema, job: LookupJob, prefix: str
) -> Operation[list[Mapping[Bucket, Estimate]]]:
    """The ``counts`` fields ``prefix + code`` of the job's buckets (all such fields when
    ``job.buckets`` is None; with no prefix, every field not starting with ``@``)."""
    if not job.periods:
        return []
    if job.buckets is None:
        replies = yield [Command(("HGETALL", schema.counts(period))) for period in job.periods]
        return [_all_estimates(reply, prefix) for reply in replies]
    fields = [prefix + _code(bucket) for bucket in job.buckets]
    replies = yield [Command(("HMGET", schema.counts(p), *fields)) for p in job.periods]
    return [
        {
            bucket: stored_estimate(value)
            for bucket, value in zip(job.buckets, reply, strict=True)
            if value is not None
        }
        for reply in replies
    ]


def stored_estimate(value: Any) -> Estimate:
    """A ``counts`` value: ``"<count>,<sketch estimate>"`` (a rolling window's has its
    measurement time after them), or a 1.x plain count (read as its own estimate)."""
    count, _, rest = text(value).partition(",")
    return estimate(int(count), float(rest.partition(",")[0] or count))


def _all_estimates(reply: Mapping[Any, Any], prefix: str) -> dict[Bucket, Estimate]:
    found: dict[Bucket, Estimate] = {}
    for field, value in reply.items():
        name = text(field)
        wanted = name.startswith(prefix) if prefix else not name.startswith("@")
        if wanted:
            found[decode_bucket(name[len(prefix) :])] = stored_estimate(value)
    return found


# ---- unions: rolling windows, count(), retention, measure() --------------------------------


def lookup_rolling(
    schema: KeySchema, days: int, job: LookupJob
) -> Operation[list[Mapping[Bucket, Estimate]]]:
    """Read the stored windows of ``days`` days ending on each of the job's days, in one
    round trip."""
    return (yield from _stored(schema, job, rolling_prefix(days)))


def unions(schema: KeySchema, inquiry: Inquiry[T], cluster: bool) -> Operation[T]:
    """Answer an inquiry (see :mod:`activity_tracker.unions`): one round trip reads the
    registries of its periods (and their counts' ``@expires``), one reads the change records
    it needs and estimates its unions: a multi-key ``PFCOUNT`` each on a standalone Redis;
    on a cluster (``cluster``), where the periods live in different slots, ``GET`` of each
    sketch, then one round trip on copies in one scratch slot (see :func:`scratch_counts`)."""
    periods = inquiry.periods
    reads = [read for period in periods for read in _registry_reads(schema, period)]
    replies = _named(reads, (yield from _sent(reads)))
    registries: dict[Period, Registry] = {}
    names: dict[Period, dict[int, Bucket]] = {}
    for number, period in enumerate(periods):
        fields, expires = replies[2 * number : 2 * number + 2]
        registries[period], names[period] = registry(period, fields, expires)
    plan = UnionPlan(inquiry, registries)
    with_records = list(plan.records)
    reads = [
        Command(("HGETALL", schema.chg(period)), raw=True, errors_as_replies=True)
        for period in with_records
    ]
    key_sets = [tuple(schema.hll(p, _code(b)) for p, b in refs) for refs in plan.sketch_sets]
    copied = list(dict.fromkeys(key for keys in key_sets for key in keys)) if cluster else []
    if cluster:
        reads += (Command(("GET", key), raw=True, errors_as_replies=True) for key in copied)
    else:
        reads += (Command(("PFCOUNT", *keys), errors_as_replies=True) for keys in key_sets)
    replies = _named(reads, (yield from _sent(reads)))
    records = {
        period: _records(reply, names[period], plan.records[period])
        for period, reply in zip(with_records, replies, strict=False)
    }
    fetched = replies[len(with_records) :]
    if cluster:
        estimates = yield from scratch_counts(
            schema, key_sets, dict(zip(copied, fetched, strict=True))
        )
    else:
        estimates = fetched
    return plan.finish(records, estimates)


def _sent(requests: Iterable[Request]) -> Operation[list[Any]]:
    """The replies to ``requests``, sent in one round trip (none when there are none)."""
    listed = list(requests)
    if not listed:
        return []
    replies: list[Any] = yield listed
    return replies


def _named(requests: Sequence[Command], replies: list[Any]) -> list[Any]:
    """``replies``, each error among them naming the keys of its request (Redis's errors do
    not: ``WRONGTYPE Operation against a key holding the wrong kind of value``)."""
    for number, reply in enumerate(replies):
        if isinstance(reply, Exception):
            command, *args = requests[number].args
            keys = ", ".join(text(key) for key in (args if command == "PFCOUNT" else args[:1]))
            named = type(reply)(f"{reply} (reading {keys})")
            named.__cause__ = reply.__cause__
            replies[number] = named
    return replies


def _registry_reads(schema: KeySchema, period: Period) -> tuple[Command, Command]:
    return (
        Command(("HGETALL", schema.reg(period)), errors_as_replies=True),
        Command(("HGET", schema.counts(period), EXPIRES_FIELD), errors_as_replies=True),
    )


def registry(period: Period, fields: Any, expires: Any) -> tuple[Registry, dict[int, Bucket]]:
    """A period's :class:`Registry` from the replies of ``HGETALL reg`` and ``HGET counts
    @expires``, and the bucket of each index of its change records."""
    for reply in (fields, expires):
        if isinstance(reply, Exception):
            return Registry({}, {}, reply), {}
    states: dict[str, str] = {}
    meta: dict[str, str] = {}
    for field, value in fields.items():
        name = text(field)
        (meta if name.startswith("@") else states)[name] = text(value)
    raw: dict[Bucket, RawBucket] = {}
    aggregates: dict[Bucket, tuple[Bucket, ...]] = {}
    names: dict[int, Bucket] = {}
    for code, state in states.items():
        bucket = decode_bucket(code)
        if state.startswith(AGGREGATE_MARK):
            sources = state[len(AGGREGATE_MARK) :].split("\n")
            aggregates[bucket] = tuple(decode_bucket(source) for source in sources if source)
            continue
        index, tracked = divmod(int(state), 2)
        out = int(meta.get(f"{OUT_FIELD_PREFIX}{index}", 0)) if index else 0
        raw[bucket] = RawBucket(bool(tracked), index > 0, out)
        if index:
            names[index] = bucket
    gone = expired(None if expires is None else text(expires), meta.get(DEADLINE_FIELD))
    return Registry(raw, aggregates, RawDataExpiredError(period) if gone else None), names


def _records(reply: Any, names: Mapping[int, Bucket], wanted: set[Bucket]) -> Records | Exception:
    """The records of the buckets ``wanted``, from the ``HGETALL chg`` reply of a period
    whose indices name ``names``."""
    if isinstance(reply, Exception):
        return reply
    indices = {index: bucket for index, bucket in names.items() if bucket in wanted}
    by_bucket: dict[Bucket, dict[bytes, int]] = {bucket: {} for bucket in wanted}
    for blob in reply.values():
        for hash, index, flag in decode_records(blob):
            if index in indices:
                by_bucket[indices[index]][hash] = flag
    return by_bucket


def scratch_counts(
    schema: KeySchema, key_sets: Sequence[tuple[str, ...]], sketches: Mapping[str, Any]
) -> Operation[list[int | Exception]]:
    """The estimate of the union of each of ``key_sets`` on a cluster, given what ``GET``
    gave of each sketch (``sketches``): each sketch that is a HyperLogLog is copied to a
    scratch key of one slot with a short expiry (so only bytes read from the tracker's own
    keys are ever written: CVE-2025-32023), then ``PFCOUNT`` of each set's copies, then the
    copies are deleted, all in one round trip. A key that is not a HyperLogLog fails the
    sets holding it (a :class:`~activity_tracker.errors.WrongKeyTypeError` naming it)."""
    token = secrets.token_hex(8)
    copies: dict[str, str] = {}
    broken: dict[str, Exception] = {}
    writes: list[Request] = []
    for number, (key, value) in enumerate(sketches.items()):
        if isinstance(value, Exception):
            broken[key] = value
        elif value is not None and not bytes(value).startswith(b"HYLL"):
            broken[key] = WrongKeyTypeError(
                "a key under the tracker's prefix holds other data, left untouched: "
                f"activity-tracker key {key} holds a string that is not a HyperLogLog"
            )
        elif value is not None:
            copies[key] = schema.scratch(token, number)
            writes.append(Command(("SET", copies[key], value, "PX", SCRATCH_MILLISECONDS)))
    estimates: list[int | Exception] = []
    counted: list[tuple[int, Command]] = []
    for keys in key_sets:
        problem = next((broken[key] for key in keys if key in broken), None)
        present = [copies[key] for key in keys if key in copies]
        if problem is None and present:
            command = Command(("PFCOUNT", *present), errors_as_replies=True)
            counted.append((len(estimates), command))
        estimates.append(0 if problem is None else problem)
    if counted:
        cleanup = Command(("DEL", *copies.values()))
        replies = yield [*writes, *(command for _, command in counted), cleanup]
        for (position, _), reply in zip(counted, replies[len(writes) :], strict=False):
            estimates[position] = reply
    return estimates

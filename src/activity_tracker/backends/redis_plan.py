"""What to send to Redis for each call, and how to read the replies. No I/O here.

Each operation is a generator: it yields a list of requests that the driver sends in one round
trip (a pipeline when there are several) and receives the list of replies back. The sync and
asyncio drivers in :mod:`.redis` are thin loops around these generators, so both share this
one copy of the logic, and it can be tested with plain data.
"""

from __future__ import annotations

import dataclasses
import secrets
import threading
from abc import abstractmethod
from collections.abc import Callable, Collection, Generator, Iterable, Iterator, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from functools import lru_cache
from importlib.resources import files
from typing import Any, TypeVar

from ..arguments import Activity, CollapseJob, LookupJob
from ..batch import GroupedActivities
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
    is_bucket_field,
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
    seen: RecordsSeen | None = None,
) -> Operation[None]:
    """Record many activities, with the result of recording them one by one in order (see
    :class:`BatchGroups`): one ``track_many.lua`` call for all their periods, atomic, or one
    per period when periods may live on different cluster nodes (``split_periods``), all in
    one round trip. :class:`~activity_tracker.batch.GroupedActivities` come with their plain
    adds grouped already. ``seen`` holds what earlier batches learnt of the ids with change
    records, and learns from this one; a call it misled (another client changed records
    since) writes nothing and is sent again without it."""
    groups = BatchGroups()
    if isinstance(activities, GroupedActivities):
        for (periods, ends), bucket, ids in activities.adds:
            groups.add_ids(periods, ends, bucket, ids)
        activities = activities.others
    for activity in activities:
        groups.add(activity)
    seen = seen if seen is not None else RecordsSeen()
    parts = groups.parts(split_periods)
    calls: list[Request] = [
        groups.script_call(schema, part, retention, now, seen) for part in parts
    ]
    if not calls:
        return
    replies = yield calls
    stale = [number for number, reply in enumerate(replies) if int(reply[0]) == STALE]
    if stale:
        for number in stale:
            seen.forget(parts[number])
        resent: list[Request] = [
            groups.script_call(schema, parts[n], retention, now, seen) for n in stale
        ]
        again = yield resent
        for number, reply in zip(stale, again, strict=True):
            replies[number] = reply
    for part, reply in zip(parts, replies, strict=True):
        groups.check_reply(part, reply, seen)


#: The first element of a ``track_many.lua`` reply.
WRITTEN, REFUSED, STALE = 0, 1, 2


class RecordsSeen:
    """What a client learnt of the ids with change records in recent periods, so that a
    batch checks only those of its ids (instead of sending the hash of each).

    Per period: the number of ids with records (``@moved``) and those ids. The ids with
    records in a period only ever grow, so while ``@moved`` has that number, they are these
    ids: the script checks that before writing, and a call relying on an out-of-date count
    writes nothing and is sent again with every hash. Of a period never seen, it guesses
    that no id has records (right for a period being filled by one client; a wrong guess
    costs one more round trip, once). Learnt from the batches' own replies: the ids known
    before a batch and those it moves have records after it; when they are as many as
    ``@moved`` then, they are all. Keeps up to :data:`MAX_IDS` ids in all (beyond, batches
    send every hash). Shared by the threads of a backend. Ids are compared as text where the
    script compares 8-byte hashes: the batch departs from ``track()`` only for two ids
    sharing a hash (see :func:`~activity_tracker.keys.id_hash`).
    """

    MAX_IDS = 1 << 18
    NOTHING: tuple[int, frozenset[str]] = (0, frozenset())

    def __init__(self) -> None:
        self.periods: dict[Period, tuple[int, frozenset[str]]] = {}
        self.unknown: set[Period] = set()  # guessed wrong: batches send every hash
        self._lock = threading.Lock()

    def get(self, period: Period) -> tuple[int, frozenset[str]] | None:
        """What is known of ``period``: the number of ids with records and those ids."""
        found = self.periods.get(period)
        if found is None and period not in self.unknown:
            return self.NOTHING
        return found

    def forget(self, periods: Iterable[Period]) -> None:
        """What was known of ``periods`` is out of date."""
        with self._lock:
            if len(self.unknown) >= 4096:
                self.unknown.clear()
            for period in periods:
                self.periods.pop(period, None)
                self.unknown.add(period)

    def learn(
        self,
        period: Period,
        before: tuple[int, frozenset[str]] | None,
        moved: AbstractSet[str],
        count: int,
    ) -> None:
        """After a batch that moved ``moved`` and left ``count`` ids with records, sent
        knowing ``before``."""
        if before is not None and not moved and before[0] == count:
            return
        ids = (before[1] if before is not None else frozenset()).union(moved)
        with self._lock:
            periods = self.periods
            periods.pop(period, None)
            if len(ids) != count or count > self.MAX_IDS:
                return
            self.unknown.discard(period)
            held = sum(len(known) for _, known in periods.values())
            while periods and held + count > self.MAX_IDS:
                held -= len(periods.pop(next(iter(periods)))[1])
            periods[period] = count, ids


class IdRun(Collection[str]):
    """Distinct ids that go into sketches together, sent once per script call however many
    buckets and periods take them: a set of a batch (:class:`SetRun`), or the unique values
    of a column. Besides the ids, it gives them as RESP bulk strings (what a driver sends),
    and the 8-byte hashes of those of them that the batch does not move."""

    __slots__ = ()

    @abstractmethod
    def encoded(self) -> bytes:
        """Each id as a RESP bulk string (``$<length>\\r\\n<id>\\r\\n``), concatenated."""

    @abstractmethod
    def among(self, ids: AbstractSet[str]) -> AbstractSet[str]:
        """The ids of this run that are in ``ids``."""

    @abstractmethod
    def hashes(self, leaving_out: AbstractSet[str]) -> bytes:
        """The concatenated hashes of the ids of this run not in ``leaving_out``."""

    def union(self, others: Sequence[IdRun]) -> IdRun:
        """The distinct ids of this run and ``others``."""
        return SetRun(frozenset(self).union(*others))


class SetRun(IdRun):
    """A set of ids as an :class:`IdRun`; the RESP form and hash of an id are remembered
    across batches (most ids of a batch were in the previous ones)."""

    __slots__ = ("ids",)

    def __init__(self, ids: set[str] | frozenset[str]) -> None:
        self.ids = ids

    def __len__(self) -> int:
        return len(self.ids)

    def __iter__(self) -> Iterator[str]:
        return iter(self.ids)

    def __contains__(self, id: object) -> bool:
        return id in self.ids

    def encoded(self) -> bytes:
        return _BULK_STRINGS.joined(self.ids)

    def among(self, ids: AbstractSet[str]) -> AbstractSet[str]:
        return self.ids.intersection(ids)

    def hashes(self, leaving_out: AbstractSet[str]) -> bytes:
        found = self.ids.intersection(leaving_out) if leaving_out else ()
        return _HASHES.joined(self.ids.difference(found) if found else self.ids)

    def union(self, others: Sequence[IdRun]) -> IdRun:
        if all(isinstance(other, SetRun) for other in others):
            return SetRun(self.ids.union(*(other.ids for other in others)))  # type: ignore[attr-defined]
        return super().union(others)


class _Memo:
    """What ``make`` gives for each id, remembered up to ``limit`` ids; safe to share between
    threads: when full it starts a new dict rather than clearing one others may be reading."""

    def __init__(self, make: Callable[[str], bytes], limit: int) -> None:
        self.make, self.limit = make, limit
        self.known: dict[str, bytes] = {}

    def __call__(self, id: str) -> bytes:
        found = self.known.get(id)
        if found is None:
            found = self.known[id] = self.make(id)
        return found

    def joined(self, ids: set[str] | frozenset[str]) -> bytes:
        """``make(id)`` for every id of ``ids``, concatenated."""
        known = self.known
        missing: Iterable[str] = ids.difference(known)  # looks each id up in known
        if missing:
            if len(known) + len(missing) > self.limit:  # type: ignore[arg-type]
                known = self.known = {}
                missing = ids
            make = self.make
            for id in missing:
                known[id] = make(id)
        return b"".join(map(known.__getitem__, ids))


def _bulk_string(id: str) -> bytes:
    raw = id.encode("utf-8")
    return b"$%d\r\n%b\r\n" % (len(raw), raw)


_MEMO_SIZE = 1 << 17
_HASHES = _Memo(id_hash, _MEMO_SIZE)
_BULK_STRINGS = _Memo(_bulk_string, _MEMO_SIZE)


@dataclass(frozen=True, slots=True)
class Spread:
    """The ids of ``run`` as consecutive script arguments, one each: a driver sends
    ``run.encoded()`` as it is, or the ids one by one."""

    run: IdRun


@dataclass(slots=True)
class _BucketGroup:
    """What a batch does to one bucket of one period.

    ``runs``: ids added to it before any move of theirs in the batch, in runs shared with
    other periods (they go into its sketch and are checked). ``ids``: the other ids added to
    it or moved out of it (all go into its sketch). ``checks``: those of ``ids`` added to it
    before any move of theirs in the batch: whether the server has records of them decides
    their correction, as in ``track.lua``.
    """

    added: bool = False
    moved_out: bool = False
    runs: list[IdRun] = dataclasses.field(default_factory=list)
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
    they were before the batch (``checks``, and every id of a run given to :meth:`add_ids`);
    from its first move on it has records for sure, and its record for each bucket it
    touches is decided by its last operation there (``moved``). The script applies each
    id's checks, then its last operations.
    """

    def __init__(self) -> None:
        self.periods: dict[Period, _PeriodGroups] = {}
        # Where the plain adds of one (periods, bucket) go, so that the common event costs one
        # lookup: keyed by the identity of the periods tuple (the one the checker keeps for
        # each day), which the entry holds and compares, so an id reused is never mistaken.
        self._targets: dict[tuple[int, Bucket], _Targets] = {}
        # What each script call was sent knowing of the ids with records, per period.
        self._known: dict[Period, tuple[int, frozenset[str]] | None] = {}

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

    def add_ids(
        self, periods: Sequence[Period], ends: Sequence[float], bucket: Bucket, ids: Collection[str]
    ) -> None:
        """Group adds of ``ids`` to ``bucket`` in ``periods`` (ending at ``ends``), none of
        which was moved in the batch before being added: in any order with the activities of
        :meth:`add`, as such adds commute with everything before them."""
        if isinstance(ids, IdRun):
            run = ids
        else:
            run = SetRun(ids if isinstance(ids, set | frozenset) else frozenset(ids))
        if not run:
            return
        code = _code(bucket)
        for period, end in zip(periods, ends, strict=True):
            group = self._bucket(self._period(period, end), code)
            group.added = True
            group.runs.append(run)

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

    def parts(self, split_periods: bool) -> list[list[Period]]:
        """The periods of each script call: all in one, or one each."""
        periods = list(self.periods)
        if split_periods:
            return [[period] for period in periods]
        return [periods] if periods else []

    def script_call(
        self,
        schema: KeySchema,
        periods: Sequence[Period],
        retention: int,
        now: float,
        seen: RecordsSeen,
    ) -> ScriptCall:
        """The ``track_many.lua`` call recording the batch in ``periods``: the id runs of
        its sections, each once, then the sections."""
        runs: dict[int, tuple[int, IdRun]] = {}

        def number(run: IdRun) -> int:
            found = runs.get(id(run))
            if found is None:
                found = runs[id(run)] = (len(runs) + 1, run)
            return found[0]

        keys = [schema.batch_scratch(periods[0])]
        sections: list[Any] = []
        for period in periods:
            known = self._known[period] = seen.get(period)
            section_keys, section_args = self._section(
                schema, period, self.periods[period], retention, now, number, known
            )
            keys += section_keys
            sections += section_args
        args: list[Any] = [len(runs)]
        for _, run in runs.values():
            args += (len(run), Spread(run))
        return ScriptCall("track_many", tuple(keys), (*args, *sections))

    def check_reply(self, periods: Sequence[Period], reply: Any, seen: RecordsSeen) -> None:
        """Learn from the reply of the call for ``periods``, or raise what it means: a
        bucket of a section is an aggregate in that period (and nothing was written)."""
        status, *rest = (int(value) for value in reply)
        if status == WRITTEN:
            for period, count in zip(periods, rest, strict=True):
                seen.learn(period, self._known[period], self.periods[period].moved.keys(), count)
            return
        section, position = rest
        period = periods[section - 1]
        buckets = self.periods[period].buckets
        code = list(buckets)[position - 1]
        argument = "bucket" if buckets[code].added else "old_bucket"
        raise AggregateBucketError.tracked_into(argument, decode_bucket(code), period)

    @staticmethod
    def _section(
        schema: KeySchema,
        period: Period,
        groups: _PeriodGroups,
        retention: int,
        now: float,
        number: Callable[[IdRun], int],
        known: tuple[int, frozenset[str]] | None,
    ) -> tuple[list[str], list[Any]]:
        moved = groups.moved
        keys = [schema.reg(period), schema.chg(period)]
        args: list[Any] = [deadline(groups.end, now, retention), len(groups.buckets)]
        checked: dict[str, list[int]] = {}  # checked ids sent as entries, and their buckets
        positions: dict[str, int] = {}
        moved_ids = moved.keys()
        # The checked ids that are sent as entries: those moved in the batch, and (when the
        # ids with records are known) those with records.
        entered = moved_ids if known is None else known[1].union(moved_ids)
        for position, (code, group) in enumerate(groups.buckets.items()):
            positions[code] = position
            keys.append(schema.hll(period, code))
            id_runs = [*group.runs, SetRun(group.ids)] if group.ids else group.runs
            args += (code, group.added + 2 * group.moved_out, len(id_runs))
            args += (number(run) for run in id_runs)
            checks = [*group.runs, SetRun(group.checks)] if group.checks else group.runs
            if known is None and len(checks) > 1:
                checks = [checks[0].union(checks[1:])]
            for run in checks:
                for id in run.among(entered):
                    checked.setdefault(id, []).append(position)
            hashes = b"".join(run.hashes(moved_ids) for run in checks) if known is None else b""
            args.append(hashes)
        args.append(-1 if known is None else known[0])
        entries = [*moved, *(id for id in checked if id not in moved)]
        args.append(len(entries))
        for id in entries:
            entry = bytearray(_HASHES(id))
            for position in checked.get(id, ()):
                entry += (position * 4).to_bytes(3, "big")
            for code, flag in moved.get(id, {}).items():
                entry += (positions[code] * 4 + (1 if flag == OUT else 2)).to_bytes(3, "big")
            args.append(bytes(entry))
        return keys, args


_Target = tuple[dict[str, dict[str, int]], _BucketGroup, str]
_Targets = tuple[tuple[Period, ...], tuple[_Target, ...]]


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
        wanted = name.startswith(prefix) if prefix else is_bucket_field(name)
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
        (states if is_bucket_field(name) else meta)[name] = text(value)
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

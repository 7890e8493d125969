"""Model-based property test: random track / move / removal / re-track sequences, replayed on a
backend, must give the counts of the exact-set model of DESIGN.md section 2.

A p=14 HyperLogLog counts a small set exactly unless two of its ids share a register (about
n²/32768 of random sets of n ids). The 12 ids used here share none, on Redis and in the memory
backend (``test_the_model_ids_share_no_register`` checks it), so every bucket count must equal
the model exactly, and every standard error must be that of the sketch the count came from
(0.81% of the ids ever added to, or moved out of, its buckets). Aggregates must equal the
model too, except in the case documented in the README ("Accuracy"): an id added to one
source before its first move in the period, whose last operation on another source is a
move out (and that was added to no source since its first move), is missing from the
aggregate. The model recognises each such id, counts it (hypothesis ``event``), and expects
exactly that undercount, never another difference.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from activity_tracker import ActivityTracker, Estimate
from activity_tracker.corrections import RELATIVE_STANDARD_ERROR
from activity_tracker.periods import DAILY, WEEKLY, Period

MONDAY = datetime.date(2024, 1, 8)
DAYS = [MONDAY + datetime.timedelta(days=n) for n in range(3)]
AFTER = MONDAY + datetime.timedelta(days=7)
IDS = [f"user-{n}" for n in range(10)] + [10, 11]
BUCKETS = [None, "web", "app"]

ids = st.sampled_from(IDS)
buckets = st.sampled_from(BUCKETS)
days = st.sampled_from(DAYS)
track_op = st.tuples(st.just("track"), ids, buckets, days)
move_op = st.tuples(st.just("move"), ids, buckets, ids, buckets, days)
remove_op = st.tuples(st.just("remove"), ids, buckets, days)
collapse_op = st.tuples(st.just("collapse"))
operations = st.lists(st.one_of(track_op, track_op, move_op, remove_op, collapse_op), max_size=40)
aggregates = st.dictionaries(
    st.sampled_from(["all", "agg"]),
    st.lists(buckets, min_size=1, max_size=3, unique=True),
    max_size=2,
)


@dataclass
class PeriodModel:
    """Exact sets of one period, plus the order of events the documented case depends on."""

    last_event: dict[object, dict[str, tuple[str, int]]] = field(default_factory=dict)
    first_move: dict[str, int] = field(default_factory=dict)
    held: dict[object, set[str]] = field(default_factory=dict)  # what each sketch holds

    def add(self, bucket: object, id: str, seq: int) -> None:
        self.last_event.setdefault(bucket, {})[id] = ("add", seq)
        self.held.setdefault(bucket, set()).add(id)

    def remove(self, bucket: object, id: str, seq: int) -> None:
        self.last_event.setdefault(bucket, {})[id] = ("remove", seq)
        self.first_move.setdefault(id, seq)
        self.held.setdefault(bucket, set()).add(id)

    def members(self, bucket: object) -> set[str]:
        events = self.last_event.get(bucket, {})
        return {id for id, (kind, _) in events.items() if kind == "add"}

    def exact_union(self, sources: list[object]) -> set[str]:
        return set().union(*(self.members(b) for b in sources))

    def sketch_of(self, sources: list[object]) -> set[str]:
        return set().union(*(self.held.get(b, set()) for b in sources))

    def documented_case(self, sources: list[object]) -> set[str]:
        """The ids of the exact union that the aggregate misses: added to a source before
        their first move, and whose every operation on the sources since is a move out."""
        missed = set()
        for id in self.exact_union(sources):
            since_move = [
                kind
                for kind, seq in (self.last_event.get(b, {}).get(id, ("", -1)) for b in sources)
                if id in self.first_move and seq >= self.first_move[id]
            ]
            if since_move and all(kind == "remove" for kind in since_move):
                missed.add(id)
        return missed


class Model:
    def __init__(self) -> None:
        self.periods: dict[Period, PeriodModel] = {}
        self.tracked: dict[Period, set[object]] = {}
        self.seq = 0

    def _each(self, day: datetime.date) -> list[Period]:
        return [Period.containing(kind, day) for kind in (DAILY, WEEKLY)]

    def track(self, id: object, bucket: object, day: datetime.date) -> None:
        for period in self._each(day):
            self.seq += 1
            self.periods.setdefault(period, PeriodModel()).add(bucket, str(id), self.seq)
            self.tracked.setdefault(period, set()).add(bucket)

    def remove(self, id: object, bucket: object, day: datetime.date) -> None:
        for period in self._each(day):
            self.seq += 1
            self.periods.setdefault(period, PeriodModel()).remove(bucket, str(id), self.seq)


def replay(tracker: ActivityTracker, model: Model, ops: list[tuple], aggregate_buckets) -> None:
    for op in ops:
        if op[0] == "track":
            _, id, bucket, day = op
            tracker.track(id=id, bucket=bucket, date=day)
            model.track(id, bucket, day)
        elif op[0] == "move":
            _, id, bucket, old_id, old_bucket, day = op
            tracker.track(id=id, bucket=bucket, old_id=old_id, old_bucket=old_bucket, date=day)
            model.remove(old_id, old_bucket, day)
            model.track(id, bucket, day)
        elif op[0] == "remove":
            _, old_id, old_bucket, day = op
            tracker.track(old_id=old_id, old_bucket=old_bucket, date=day)
            model.remove(old_id, old_bucket, day)
        else:
            collapse(tracker, aggregate_buckets)


def collapse(tracker: ActivityTracker, aggregate_buckets) -> None:
    tracker.collapse(date=AFTER, max_periods=7, aggregate_buckets=aggregate_buckets)


def test_the_model_ids_share_no_register(make_tracker):
    # Two ids in one register would count as one: the model test's exact counts rely on this.
    tracker = make_tracker()
    for id in IDS:
        tracker.track(id=id, date=MONDAY)
    tracker.collapse(date=MONDAY + datetime.timedelta(days=1))
    assert tracker.lookup_daily(start=MONDAY, end=MONDAY + datetime.timedelta(days=1)) == [
        (MONDAY, {None: len(IDS)})
    ]


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(ops=operations, aggregate_buckets=aggregates)
def test_counts_equal_the_exact_set_model(make_tracker, ops, aggregate_buckets):
    tracker = make_tracker(periods=[DAILY, WEEKLY])
    model = Model()
    replay(tracker, model, ops, aggregate_buckets)
    collapse(tracker, aggregate_buckets)

    for kind in (DAILY, WEEKLY):
        rows = tracker.lookup(
            kind, MONDAY, AFTER, buckets=[*BUCKETS, *aggregate_buckets], with_error=True
        )
        for start, estimates in rows:
            period = Period(kind, start)
            exact = model.periods.get(period, PeriodModel())
            tracked = model.tracked.get(period, set())
            for bucket in BUCKETS:
                # collapse(buckets=None) stores the buckets ids were added to in the period;
                # one ids were only moved out of has no count, and reads Estimate(0, 0.0).
                held = exact.sketch_of([bucket]) if bucket in tracked else set()
                assert estimates[bucket] == error_of(len(exact.members(bucket)), held), (
                    period,
                    bucket,
                )
            for name, sources in aggregate_buckets.items():
                missed = exact.documented_case(sources)
                for _ in missed:
                    event(
                        "aggregate: an id added before its first move, moved out of another source"
                    )
                expected = len(exact.exact_union(sources)) - len(missed)
                assert estimates[name] == error_of(expected, exact.sketch_of(sources)), (
                    period,
                    name,
                    sources,
                )


def error_of(count: int, sketch: set[str]) -> Estimate:
    """What a lookup with_error gives: the count, and the error of a sketch of these ids
    (a period with nothing collapsed reads Estimate(0, 0.0))."""
    return Estimate(count, RELATIVE_STANDARD_ERROR * len(sketch))


# ---- windows, count() and retention -------------------------------------------------------
#
# A rolling window or a count() range is one period of the exact-set model: the events of its
# days by day, then in tracking order within a day (the same as tracking order when tracking
# is live: the ops below are tracked day by day). Its count is the estimate of the union of
# the sketches of its days minus the ids whose change records, in the last day where they
# have any for its buckets, are all moves out. That departs from the model in the cases the
# README lists, each missing an id the model holds through an add that the deciding day's
# records do not show: (1) the add was on that day, before the id's first move there; (2) it
# was on a later day, without a move of the id since (or at all) that day; (3) it was on an
# earlier day, and the deciding day's moves out were of another bucket. Retention's union
# A ∪ B (of two periods' own sets) also misses an id that is in one set with no change
# records there and left the other. The test recognises each case, counts it (hypothesis
# ``event``) and expects exactly that undercount.

WEEK = [MONDAY + datetime.timedelta(days=n) for n in range(7)]
SUNDAY = WEEK[-1]
day_ordered = st.lists(st.one_of(track_op, track_op, move_op, remove_op), max_size=40).map(
    lambda ops: sorted(ops, key=lambda op: op[-1])
)
RANGES = [(DAYS[i], DAYS[j] + datetime.timedelta(days=1)) for i in range(3) for j in range(i, 3)]
Event = tuple[datetime.date, int, str, str, object]  # day, seq, "add" or "remove", id, bucket


Period_ = list[datetime.date]  # the days of one period of the model


@dataclass
class Log:
    """Every event, to read any days as one period, or as consecutive periods."""

    events: list[Event] = field(default_factory=list)

    def record(self, day: datetime.date, kind: str, id: object, bucket: object) -> None:
        self.events.append((day, len(self.events), kind, str(id), bucket))

    def of(self, days: Period_) -> list[Event]:
        return sorted(event for event in self.events if event[0] in days)

    def members(self, days: Period_, buckets: list[object]) -> set[str]:
        sets: dict[object, set[str]] = {}
        for _, _, kind, id, bucket in self.of(days):
            found = sets.setdefault(bucket, set())
            found.add(id) if kind == "add" else found.discard(id)
        return set().union(*(sets.get(bucket, set()) for bucket in buckets))

    def held(self, days: Period_, buckets: list[object]) -> set[str]:
        return {id for _, _, _, id, bucket in self.of(days) if bucket in buckets}

    def tracked(self, days: Period_) -> list[object]:
        return list({bucket for _, _, kind, _, bucket in self.of(days) if kind == "add"})

    def records(self, period: Period_, id: str, buckets: list[object]) -> dict[object, str]:
        """What the change records of ``id`` in ``period`` say of ``buckets``: the last
        operation on each bucket it touched since its first move in the period."""
        mine = [event for event in self.of(period) if event[3] == id]
        first = next((seq for _, seq, kind, _, _ in mine if kind == "remove"), None)
        if first is None:
            return {}
        return {b: kind for _, seq, kind, _, b in mine if seq >= first and b in buckets}

    def missed(self, periods: list[Period_], buckets: list[object]) -> dict[str, str]:
        """The ids of the union of ``periods`` (one period of the model) that the library
        misses, each with its documented case."""
        days = [day for period in periods for day in period]
        found = {}
        for id in self.members(days, buckets):
            deciding = [period for period in periods if self.records(period, id, buckets)]
            if not deciding or "add" in self.records(deciding[-1], id, buckets).values():
                continue
            adds = [
                day
                for day, _, kind, who, bucket in self.of(days)
                if who == id and bucket in buckets and kind == "add"
            ]
            found[id] = (
                "(1) added before its first move in the deciding period"
                if adds[-1] in deciding[-1]
                else "(2) added again on a later day without a move of its own"
                if adds[-1] > deciding[-1][-1]
                else "(3) added on an earlier day, moved out of another bucket later"
            )
        return found

    def missed_separately(self, pair: list[Period_], bucket: object) -> set[str]:
        """Retention's A ∪ B of two periods: ids in one set without records there, that
        left the other (their records for the bucket say moved out)."""
        union = self.members(pair[0], [bucket]) | self.members(pair[1], [bucket])
        missed = set()
        for id in union:
            flags = [found for found in (self.records(p, id, [bucket]) for p in pair) if found]
            if flags and all(found == {bucket: "remove"} for found in flags):
                missed.add(id)
        return missed

    def expected(self, periods: list[Period_], buckets: list[object], what: str) -> Estimate:
        """What the library gives for the union of ``buckets`` over ``periods``."""
        missed = self.missed(periods, buckets)
        for case in missed.values():
            event(f"{what}: {case}")
        days = [day for period in periods for day in period]
        count = len(self.members(days, buckets)) - len(missed)
        return error_of(count, self.held(days, buckets))


def replay_logged(tracker: ActivityTracker, log: Log, ops: list[tuple]) -> None:
    for op in ops:
        day = op[-1]
        if op[0] == "track":
            _, id, bucket, _ = op
            tracker.track(id=id, bucket=bucket, date=day)
        elif op[0] == "move":
            _, id, bucket, old_id, old_bucket, _ = op
            tracker.track(id=id, bucket=bucket, old_id=old_id, old_bucket=old_bucket, date=day)
            log.record(day, "remove", old_id, old_bucket)
        else:
            _, id, bucket, _ = op
            tracker.track(old_id=id, old_bucket=bucket, date=day)
            log.record(day, "remove", id, bucket)
            continue
        log.record(day, "add", id, bucket)


def daily(days: list[datetime.date]) -> list[Period_]:
    return [[day] for day in days]


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(ops=day_ordered, aggregate_buckets=aggregates, chosen=st.lists(buckets, max_size=3))
def test_windows_counts_and_retention_equal_the_exact_set_model(
    make_tracker, ops, aggregate_buckets, chosen
):
    tracker = make_tracker(periods=[DAILY, WEEKLY], rolling=(2,))
    log = Log()
    replay_logged(tracker, log, ops)
    tracker.collapse(date=AFTER, max_periods=7, aggregate_buckets=aggregate_buckets)
    names = [*BUCKETS, *aggregate_buckets]
    sources = {name: [name] for name in BUCKETS}
    sources.update((name, list(found)) for name, found in aggregate_buckets.items())

    # Windows: stored by the collapse (2 days; a bucket not added to in the window has no
    # stored window) and computed (3 days; and the 7 days ending on Sunday: the week).
    for length, start in ((2, MONDAY), (3, MONDAY), (7, SUNDAY)):
        rows = tracker.lookup_rolling(length, start, AFTER, names, with_error=True)
        for last, estimates in rows:
            window = [last - datetime.timedelta(days=back) for back in range(length - 1, -1, -1)]
            for name in names:
                expected = log.expected(daily(window), sources[name], "window")
                if length == 2 and name in BUCKETS and name not in log.tracked(window):
                    expected = Estimate(0, 0.0)
                assert estimates[name] == expected, (length, last, name)
    [(_, week)] = tracker.lookup_weekly(MONDAY, AFTER, names, with_error=True)
    [(_, window)] = tracker.lookup_rolling(7, SUNDAY, AFTER, names, with_error=True)
    for name in names:
        if not log.missed([WEEK], sources[name]) and not log.missed(daily(WEEK), sources[name]):
            # A bucket only moved out of has no weekly count stored: Estimate(0, 0.0).
            stored = name not in BUCKETS or name in log.tracked(WEEK)
            assert (window[name] if stored else window[name].count) == (
                week[name] if stored else week[name].count
            ), name

    # count() over every range of the three days, of the chosen buckets (none: all).
    for start, end in RANGES:
        days = [day for day in DAYS if start <= day < end]
        counted = tracker.count(start, end, chosen or None, with_error=True)
        expected = log.expected(daily(days), chosen or log.tracked(days), "count()")
        assert counted == expected, (start, end, chosen)

    # Retention of each bucket, day by day: |A| + |B| - |A ∪ B|, clamped.
    for bucket in BUCKETS:
        triangle = tracker.retention(
            "daily", MONDAY, DAYS[-1] + datetime.timedelta(days=1), bucket, with_error=True
        )
        assert [day for day, _ in triangle] == DAYS
        for first, (day, row) in enumerate(triangle):
            size = len(log.members([day], [bucket]))
            assert row[0] == error_of(size, log.held([day], [bucket]))
            for later, found in enumerate(row[1:], start=first + 1):
                pair = [[day], [DAYS[later]]]
                other = len(log.members(pair[1], [bucket]))
                missed = log.missed_separately(pair, bucket)
                for _ in missed:
                    event("retention: in one set without records there, left the other")
                union = len(log.members(pair[0], [bucket]) | log.members(pair[1], [bucket]))
                both = max(0, min(size + other - (union - len(missed)), size, other))
                held = log.held(pair[0] + pair[1], [bucket])
                assert found == error_of(both, held), (pair, bucket)

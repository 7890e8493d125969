"""Rolling windows, count() and retention: what they cost, and how close they are to exact sets.

1. Costs, on one Redis and on a three-node Redis Cluster started for the run (where the days
   of a window live in different slots, so unions are counted on copies in one slot):

   - ``collapse()`` of one day of 100 buckets of N ids each, with ``rolling=(7, 28, 30)``
     (30 days of data before it, so every window is full), next to the same collapse
     without windows;
   - ``lookup_rolling(7, ...)`` over 365 days x 10 buckets, windows stored by the collapses,
     and ``lookup_rolling(10, ...)``, a length computed from the raw daily sketches;
   - ``count()`` over 30 days x 10 buckets.

2. Windows against exact sets: a realistic run of days (returning users on ``web`` and
   ``ios``, anonymous sessions living a few days, some active on both platforms, 30% logging
   in, 5% of those sending one late event under the session id on a later day), collapsed
   every day with ``rolling=(7, 28)`` and the aggregate ``all`` = web + ios. Each stored
   window is compared with the exact-set model of its days: relative error (mean, p95), the
   share inside its ±2σ, and its departure from the model beyond HyperLogLog error, isolated
   exactly: the library reports ``estimate - subtracted`` (``Estimate`` gives both), an exact
   correction would subtract the ids the union's sketches hold that the model's union does
   not; the difference is the documented imprecision of windows (README, "Accuracy").

3. Retention against exact intersections: two weeks of n ids each sharing r n ids, for
   rates r from 50% down to 1%, several trials each: the error of ``retention()``'s figure in
   ids and relative to the exact intersection, its stderr (that of the union, 1.5 n to 2 n
   ids) relative to the intersection, and the share inside ±2σ. Then weekly retention of the
   realistic run, against its exact intersections.

Redis HLLs use 16384 registers: standard error 1.04 / sqrt(16384) = 0.81%.
"""

from __future__ import annotations

import datetime
import math
import random
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

import redis

import _common
from _common import Event, fmt, median, table
from activity_tracker import ActivityTracker, Estimate
from activity_tracker.corrections import RELATIVE_STANDARD_ERROR, sketch_size
from redis_server import running_cluster

DAY = _common.FIRST_DAY
ONE = datetime.timedelta(days=1)
PLATFORMS, PLATFORM_WEIGHTS = ("web", "ios"), (60, 40)
RATES = (0.5, 0.2, 0.1, 0.05, 0.02, 0.01)


# ---- 1. costs -------------------------------------------------------------------------------


@contextmanager
def stores(url: str, cluster: bool) -> Iterator[list[tuple[str, str]]]:
    """(name, url) of one Redis, and of a three-node cluster started for the block."""
    if not cluster:
        yield [("one Redis", url)]
        return
    with (
        tempfile.TemporaryDirectory(prefix="activity-tracker-cluster-") as work,
        running_cluster(Path(work)) as (cluster_url, _),
    ):
        yield [("one Redis", url), ("3-node cluster", cluster_url)]


def _timed(action: Callable[[], object], reps: int) -> float:
    spent = []
    for _ in range(reps):
        started = time.perf_counter()
        action()
        spent.append(time.perf_counter() - started)
    return median(spent)


def _delete(url: str, prefix: str) -> None:
    if not url.startswith("redis+cluster://"):
        client = redis.Redis.from_url(url)
        _common.delete_prefix(client, prefix)
        client.close()
        return
    cluster = redis.cluster.RedisCluster.from_url("redis://" + url.split("://", 1)[1])
    for node in cluster.get_primaries():
        connection = cluster.get_redis_connection(node)
        with connection.pipeline(transaction=False) as pipe:
            for key in connection.scan_iter(match=f"{prefix}*", count=5000):
                pipe.unlink(key)  # one key a command: a node holds many slots
            pipe.execute()
    cluster.close()


def costs(url: str, ids_per_bucket: int, reps: int, seed: int) -> list[tuple[str, float]]:
    """Median seconds of each measured call on the store at ``url``."""
    rng = random.Random(seed)
    population = _common.uuid_ids(rng, 5 * ids_per_bucket)
    buckets = [f"b{n:03d}" for n in range(100)]
    days = [DAY + n * ONE for n in range(30)]
    prefix = _common.unique_prefix("windows")
    found: list[tuple[str, float]] = []
    try:
        tracker = ActivityTracker(url=url, prefix=prefix, rolling=(7, 28, 30))
        plain = ActivityTracker(url=url, prefix=prefix)
        for day in days:
            tracker.track_many(
                (id, bucket, None, None, day)
                for bucket in buckets
                for id in rng.sample(population, ids_per_bucket)
            )
        after = days[-1] + ONE
        tracker.collapse(date=after, max_periods=30)
        found.append(("collapse, 1 day", _timed(lambda: plain.collapse(date=after), reps)))
        found.append(
            (
                "collapse, 1 day, rolling=(7, 28, 30)",
                _timed(lambda: tracker.collapse(date=after), reps),
            )
        )
        ten = buckets[:10]
        found.append(
            (
                "count(), 30 days x 10 buckets",
                _timed(lambda: tracker.count(days[0], after, ten), reps),
            )
        )
        year = [after + n * ONE for n in range(365)]
        end = year[-1] + ONE
        tracker.track_many(
            (f"u{n % 97}-{b}", bucket, None, None, day)
            for n, day in enumerate(year)
            for b, bucket in enumerate(ten)
        )
        started = time.perf_counter()
        tracker.collapse(date=end, max_periods=365)
        found.append(
            (
                "collapse of 365 days x 10 buckets, rolling=(7, 28, 30)",
                time.perf_counter() - started,
            )
        )
        stored = _timed(lambda: tracker.lookup_rolling(7, year[0], end, ten), reps)
        computed = _timed(lambda: tracker.lookup_rolling(10, year[0], end, ten), reps)
        found.append(("lookup_rolling(7): 365 days x 10 buckets, stored", stored))
        found.append(("lookup_rolling(10): 365 days x 10 buckets, computed", computed))
        tracker.close()
        plain.close()
    finally:
        _delete(url, prefix)
    return found


# ---- 2. a realistic run of days, and its exact-set model -----------------------------------


def realistic_days(rng: random.Random, days: int, users: int, sessions: int) -> list[list[Event]]:
    """Each day's events in time order (see the module's documentation)."""
    population = _common.uuid_ids(rng, users)
    rates = [min(1.0, rng.paretovariate(1.2) / 12) for _ in population]
    homes = rng.choices(PLATFORMS, weights=PLATFORM_WEIGHTS, k=users)
    timed: list[list[tuple[float, Event]]] = [[] for _ in range(days)]
    dates = [DAY + n * ONE for n in range(days)]
    for d in range(days):
        for user, rate, home in zip(population, rates, homes, strict=True):
            if rng.random() < rate:
                both = rng.random() < 0.2
                for platform in PLATFORMS if both else (home,):
                    timed[d].append((rng.random(), (user, platform, None, None, dates[d])))
        for session in _common.uuid_ids(rng, sessions):
            platform = rng.choices(PLATFORMS, weights=PLATFORM_WEIGHTS)[0]
            other = PLATFORMS[1 - PLATFORMS.index(platform)]
            lives = rng.randint(1, 3)
            shared = rng.random() < 0.05
            last = min(days - 1, d + lives - 1)
            for day in range(d, last + 1):
                t = rng.random() * 0.9
                timed[day].append((t, (session, platform, None, None, dates[day])))
                if shared and day == d:
                    timed[day].append((t + 0.01, (session, other, None, None, dates[day])))
            if rng.random() < 0.3:
                user = rng.choice(population)
                timed[last].append((0.95, (user, platform, session, platform, dates[last])))
                if rng.random() < 0.05 and last + 1 < days:
                    later = rng.randint(last + 1, min(days - 1, last + 3))
                    timed[later].append(
                        (rng.random(), (session, platform, None, None, dates[later]))
                    )
    return [[event for _, event in sorted(day)] for day in timed]


class DayOps(NamedTuple):
    """Per (id, bucket), the last operation of each day on it (True: an add), by day index:
    all a window of whole days needs to know of the exact-set model."""

    last: dict[tuple[str, str], dict[int, bool]]


def day_ops(days: Sequence[Sequence[Event]]) -> DayOps:
    last: defaultdict[tuple[str, str], dict[int, bool]] = defaultdict(dict)
    for d, events in enumerate(days):
        for id, bucket, old_id, old_bucket, _ in events:
            if old_id is not None and old_bucket is not None:
                last[old_id, old_bucket][d] = False
            last[id, bucket][d] = True
    return DayOps(dict(last))


def window_sets(
    ops: DayOps, days: int, length: int, buckets: Sequence[str]
) -> tuple[list[set[str]], list[set[str]]]:
    """For the window of ``length`` days ending on each day (by index): the exact union of
    ``buckets`` there, and every id their sketches hold there (added or moved out). An
    operation on day t is the last one of its (id, bucket) in the windows ending from t until
    its next operation, for at most ``length`` days; it is held in those ending t to
    t + length - 1."""
    members: list[set[str]] = [set() for _ in range(days)]
    held: list[set[str]] = [set() for _ in range(days)]
    for (id, bucket), by_day in ops.last.items():
        if bucket not in buckets:
            continue
        ordered = sorted(by_day)
        covered = 0
        for number, t in enumerate(ordered):
            stop = min(days, t + length)
            for end in range(max(t, covered), stop):
                held[end].add(id)
            covered = max(covered, stop)
            if by_day[t]:
                following = ordered[number + 1] if number + 1 < len(ordered) else days
                for end in range(t, min(following, stop)):
                    members[end].add(id)
    return members, held


class Compared(NamedTuple):
    """Per figure: its relative error, whether it is inside ±2σ of the exact figure, its
    departure from the model beyond HLL error (ids), whether it is inside ±2σ once that
    departure is set apart (HLL error alone), and the exact figure."""

    errors: list[float]
    inside: list[bool]
    departures: list[int]
    hll_inside: list[bool]
    exact: list[int]

    def add(self, found: Estimate, exact: int, departure: int) -> None:
        self.errors.append((found.count - exact) / exact if exact else 0.0)
        self.inside.append(abs(found.count - exact) <= 2 * found.stderr)
        self.departures.append(departure)
        self.hll_inside.append(abs(found.count - departure - exact) <= 2 * found.stderr)
        self.exact.append(exact)


def _compared() -> Compared:
    return Compared([], [], [], [], [])


def compare(found: Estimate, members: set[str], held: set[str], into: Compared) -> None:
    # The library subtracted (estimate - count); an exact correction would subtract the ids
    # the sketches hold that the model's union does not.
    exact = len(members)
    into.add(found, exact, (len(held) - exact) - (sketch_size(found) - found.count))


def windows_accuracy(
    url: str, days: int, users: int, sessions: int, seed: int
) -> tuple[dict[tuple[int, str], Compared], int, int, list[list[Event]]]:
    """Part 2: per (length, bucket), the comparison of every full stored window."""
    log = realistic_days(random.Random(seed), days, users, sessions)
    prefix = _common.unique_prefix("winacc")
    results: dict[tuple[int, str], Compared] = {}
    try:
        tracker = ActivityTracker(
            url=url, prefix=prefix, periods=["daily", "weekly"], rolling=(7, 28)
        )
        for events in log:
            tracker.track_many(events)
        end = DAY + days * ONE
        tracker.collapse(date=end, max_periods=days, aggregate_buckets={"all": list(PLATFORMS)})
        ops = day_ops(log)
        for length in (7, 28):
            start = DAY + (length - 1) * ONE
            rows = tracker.lookup_rolling(length, start, end, [*PLATFORMS, "all"], with_error=True)
            for bucket in (*PLATFORMS, "all"):
                sources = PLATFORMS if bucket == "all" else (bucket,)
                members, held = window_sets(ops, days, length, sources)
                compared = results.setdefault((length, bucket), _compared())
                for last, estimates in rows:
                    index = (last - DAY).days
                    compare(estimates[bucket], members[index], held[index], compared)
        weekly = weekly_retention(tracker, ops, days)
        tracker.close()
    finally:
        _delete(url, prefix)
    events = sum(len(day) for day in log)
    changes = sum(1 for day in log for event in day if event[2] is not None)
    results.update(weekly)
    return results, events, changes, log


def weekly_retention(
    tracker: ActivityTracker, ops: DayOps, days: int
) -> dict[tuple[int, str], Compared]:
    """Weekly retention of ``web`` in the realistic run, against exact intersections; the
    departure beyond HLL error is that of the union behind each figure."""
    weeks = days // 7
    end = DAY + 7 * weeks * ONE
    rows = tracker.retention("weekly", DAY, end, "web", with_error=True)
    members, held = window_sets(ops, days, 7, ("web",))
    sets = [(members[7 * w + 6], held[7 * w + 6]) for w in range(weeks)]
    compared = _compared()
    for first, (_, row) in enumerate(rows):
        for offset, found in enumerate(row[1:], start=1):
            (a, a_held), (b, b_held) = sets[first], sets[first + offset]
            # The figure without the imprecision: the same |A| and |B| (exactly corrected
            # bucket counts) and the union's estimate minus its exact correction, clamped.
            size_a, size_b = row[0].count, rows[first + offset][1][0].count
            wrongly_held = len(a_held | b_held) - len(a | b)
            ideal = size_a + size_b - (sketch_size(found) - wrongly_held)
            departure = found.count - max(0, min(ideal, size_a, size_b))
            compared.add(found, len(a & b), departure)
    return {(7, "weekly retention of web"): compared}


# ---- 3. retention against exact intersections ----------------------------------------------


def retention_trials(url: str, cohort: int, trials: int, seed: int) -> dict[float, Compared]:
    """Part 3: per rate, each trial's figure against the exact intersection."""
    rng = random.Random(seed)
    results = {rate: _compared() for rate in RATES}
    week2 = DAY + 7 * ONE
    prefix = _common.unique_prefix("retention")
    try:
        for trial in range(trials):
            tracker = ActivityTracker(url=url, prefix=f"{prefix}:{trial}", periods=["weekly"])
            first = _common.uuid_ids(rng, cohort)
            fresh = _common.uuid_ids(rng, cohort)
            events: list[Event] = []
            for rate in RATES:
                bucket = f"r{rate}"
                kept = round(rate * cohort)
                events += ((id, bucket, None, None, DAY) for id in first)
                events += ((id, bucket, None, None, week2) for id in first[:kept])
                events += ((id, bucket, None, None, week2) for id in fresh[: cohort - kept])
            tracker.track_many(events)
            for rate in RATES:
                [(_, row), _] = tracker.retention(
                    "weekly", DAY, week2 + 7 * ONE, f"r{rate}", with_error=True
                )
                results[rate].add(row[1], round(rate * cohort), 0)  # no id changes
            tracker.close()
    finally:
        _delete(url, prefix)
    return results


# ---- report ---------------------------------------------------------------------------------


def _p95(values: Sequence[float]) -> float:
    ordered = sorted(abs(v) for v in values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def accuracy_table(results: dict[tuple[int, str], Compared]) -> str:
    rows = []
    for (length, bucket), found in results.items():
        off = [d for d in found.departures if d]
        share = [abs(d) / e for d, e in zip(found.departures, found.exact, strict=True) if e]
        rows.append(
            (
                bucket if bucket.startswith("weekly") else f"{length}-day window, {bucket}",
                len(found.errors),
                fmt(statistics.fmean(found.exact)),
                f"{100 * statistics.fmean(abs(e) for e in found.errors):.2f}% / "
                f"{100 * _p95(found.errors):.2f}%",
                f"{sum(found.inside) / len(found.inside):.0%}",
                f"{sum(found.hll_inside) / len(found.hll_inside):.0%}",
                f"{len(off)} of {len(found.departures)}",
                f"{statistics.fmean(found.departures):+.1f} / {max(found.departures, key=abs):+d}",
                f"{100 * statistics.fmean(share):.3f}% / {100 * max(share):.3f}%",
            )
        )
    return table(
        [
            "figure",
            "figures",
            "mean exact",
            "absolute error, mean / p95",
            "inside ±2σ",
            "inside ±2σ, departure apart",
            "departing from the model",
            "departure, ids (mean / largest)",
            "departure, % of exact (mean / max)",
        ],
        rows,
    )


def retention_table(results: dict[float, Compared], cohort: int) -> str:
    rows = []
    for rate, found in results.items():
        exact = found.exact[0]
        stderr = RELATIVE_STANDARD_ERROR * (2 - rate) * cohort
        errors = [e * x for e, x in zip(found.errors, found.exact, strict=True)]
        rows.append(
            (
                f"{rate:.0%}",
                fmt(exact),
                f"{statistics.fmean(abs(e) for e in errors):.1f}",
                f"{100 * statistics.fmean(abs(e) for e in found.errors):.1f}% / "
                f"{100 * _p95(found.errors):.1f}%",
                f"±{200 * stderr / exact:.1f}%",
                f"{sum(found.inside) / len(found.inside):.0%}",
            )
        )
    return table(
        [
            "retention rate",
            "exact intersection",
            "mean absolute error, ids",
            "absolute error / exact, mean / p95",
            "±2σ / exact",
            "inside ±2σ",
        ],
        rows,
    )


def plot(results: dict[float, Compared], cohort: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(8, 4.5))
    rates = sorted(results)
    fine = [r / 100 for r in range(1, 51)]
    band = [200 * RELATIVE_STANDARD_ERROR * (2 - r) / r for r in fine]
    axes.fill_between(
        [100 * r for r in fine], [-b for b in band], band, color="#dddddd", label="±2σ of the union"
    )
    for rate in rates:
        errors = [100 * e for e in results[rate].errors]
        axes.scatter([100 * rate] * len(errors), errors, s=14, color="C0")
    axes.scatter([], [], s=14, color="C0", label="retention() - exact, one trial")
    axes.set_xscale("log")
    axes.set_xticks([100 * r for r in rates], [f"{r:.0%}" for r in rates])
    axes.set_xlabel(f"retention rate (|A ∩ B| / |A|, cohorts of {cohort:,} ids)")
    axes.set_ylabel("error, % of the exact intersection")
    axes.set_title("The error of an intersection is that of the union: large for low rates")
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main(argv: Sequence[str] | None = None, command: str | None = None) -> list[list[str]]:
    """Run, print and save the report; return its headline rows for ``run.py``."""
    args = _common.arguments(__doc__.splitlines()[0], argv)
    if args.quick:
        ids, reps, run = 100, 2, (35, 5_000, 1_000)
        cohort, trials = 10_000, 3
    else:
        ids, reps, run = 1_000, 5, (63, 50_000, 10_000)
        cohort, trials = 100_000, 10
    with _common.redis_url(args.url) as url:
        measured = {}
        with stores(url, cluster=True) as targets:
            for name, target in targets:
                measured[name] = costs(target, ids, reps, args.seed)
        accuracy, events, changes, _ = windows_accuracy(url, *run, args.seed)
        retention = retention_trials(url, cohort, trials, args.seed)
        names = list(measured)
        cost_rows = [
            (what, *(f"{1000 * dict(measured[n])[what]:,.1f} ms" for n in names))
            for what, _ in measured[names[0]]
        ]
        days, users, sessions = run
        body = (
            f"## Costs\n\nMedian of {reps} runs; 30 days of 100 buckets of {ids:,} ids each "
            "(a random share of 5x as many), then a year of 10 buckets.\n\n"
            + table(["call", *names], cost_rows)
            + "\n\nOn the cluster a union's sketches are copied to one slot (GET, then SET, "
            "PFCOUNT and DEL in one round trip): every sketch crosses the network twice.\n\n"
            "## Windows and weekly retention against exact sets\n\n"
            f"{days} days, {users:,} users (daily activity from a Pareto law, 20% on both "
            f"platforms when active), {sessions:,} new anonymous sessions a day living 1 to 3 "
            "days (5% also on the other platform), 30% logging in on their last day, 5% of "
            "those sending one event under the session id 1 to 3 days later: "
            f"{events:,} events, {changes:,} id changes. Every full window stored by the "
            "collapses, and every figure of the weekly retention of web.\n\n"
            + accuracy_table(accuracy)
            + "\n\nThe departure isolates the documented imprecision of windows from HLL "
            "error: reported count minus (estimate of the same sketches - the exact number of "
            "ids they hold beyond the model's union); negative: ids missed.\n\n"
            "## Retention against exact intersections\n\n"
            f"Two weeks of {cohort:,} ids each, sharing the rate's share; {trials} trials per "
            "rate. The figure is |A| + |B| - |A ∪ B|; its standard error is the union's, "
            "0.81% of 2 - rate times the cohort, whatever the intersection: relative to a "
            "small intersection it is large.\n\n" + retention_table(retention, cohort) + "\n"
        )
        png = args.out / "windows.png"
        args.out.mkdir(parents=True, exist_ok=True)
        plot(retention, cohort, png)
        _common.report(
            "windows",
            "Rolling windows, count() and retention",
            command or _common.command_line("windows.py", argv),
            url,
            body,
            args.out,
            png.name,
        )
    return headline(measured, accuracy, retention, ids)


def headline(
    measured: dict[str, list[tuple[str, float]]],
    accuracy: dict[tuple[int, str], Compared],
    retention: dict[float, Compared],
    ids: int,
) -> list[list[str]]:
    rows = []
    for name, figures in measured.items():
        found = dict(figures)
        rows.append(
            [
                f"collapse with rolling=(7, 28, 30), 100 buckets x {ids:,} ids, {name}",
                f"{1000 * found['collapse, 1 day, rolling=(7, 28, 30)']:,.0f} ms "
                f"(without windows {1000 * found['collapse, 1 day']:,.0f} ms)",
                "",
                "",
            ]
        )
        rows.append(
            [
                f"lookup_rolling: 365 days x 10 buckets, {name}",
                f"stored {1000 * found['lookup_rolling(7): 365 days x 10 buckets, stored']:,.0f}"
                f" ms, computed "
                f"{1000 * found['lookup_rolling(10): 365 days x 10 buckets, computed']:,.0f} ms",
                "",
                "",
            ]
        )
        rows.append(
            [
                f"count(): 30 days x 10 buckets, {name}",
                f"{1000 * found['count(), 30 days x 10 buckets']:,.0f} ms",
                "",
                "",
            ]
        )
    windows = [c for key, c in accuracy.items() if not key[1].startswith("weekly")]
    inside = [i for c in windows for i in c.inside]
    hll_inside = [i for c in windows for i in c.hll_inside]
    errors = [abs(e) for c in windows for e in c.errors]
    worst = max(
        abs(d) / e for c in windows for d, e in zip(c.departures, c.exact, strict=True) if e
    )
    floor = 0.95 - 2 * math.sqrt(0.95 * 0.05 / len(inside))
    rows.append(
        [
            "rolling windows inside their ±2σ, HLL error alone (7 and 28 days, with logins)",
            f"{sum(hll_inside) / len(hll_inside):.0%} of {len(hll_inside)}",
            f"about 95% (>= {floor:.0%})",
            "yes" if sum(hll_inside) / len(hll_inside) >= floor else "NO",
        ]
    )
    rows.append(
        [
            "rolling windows against exact sets, documented imprecision included",
            f"mean absolute error {100 * statistics.fmean(errors):.2f}%, inside ±2σ "
            f"{sum(inside) / len(inside):.0%}; departure at most {100 * worst:.1f}% of a window",
            "",
            "",
        ]
    )
    low, high = retention[min(retention)], retention[max(retention)]
    rows.append(
        [
            "retention figure error vs exact, rate 50% / 1%",
            f"{100 * statistics.fmean(abs(e) for e in high.errors):.1f}% / "
            f"{100 * statistics.fmean(abs(e) for e in low.errors):.1f}% of the intersection",
            "",
            "",
        ]
    )
    return rows


if __name__ == "__main__":
    main()
    sys.exit(0)

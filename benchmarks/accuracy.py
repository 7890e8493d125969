"""Accuracy: counts reported by this library against exact distinct counts.

1. Error against N (log steps, seeded trials), one day each, through ``track_many()`` then
   ``collapse()`` and ``lookup_daily()``:

   - bucket ``plain``: N distinct uuid-like ids; also sent raw to a Redis HLL with ``PFADD``
     and read with ``PFCOUNT`` (Redis's own HLL, the baseline), and to the ``memory`` backend
     when it is installed;
   - buckets ``left`` and ``right`` of N ids each, half of them shared, and the aggregate
     ``both`` = their union (1.5 N ids);
   - bucket ``moved``: N ids, then 10% of them moved out to another bucket (0.9 N ids); its
     error is given relative to the N ids its sketch holds, to compare with the HLL's own.

   Relative error = (reported - exact) / exact; the table gives mean, p95 and max of its
   absolute value over the trials.

2. Error bars (issue 8): many days, each with N anonymous sessions in ``anon`` (N drawn
   log-uniformly), half of them logging in (moved out of ``anon``, the user's id added to
   ``auth``), collapsed with the aggregate ``all`` = anon + auth. How many counts fall inside
   count ± 2 standard errors of the exact count, per kind of count (expect about 95%). The
   standard errors are ``lookup_daily(..., with_error=True)``'s (``Estimate(count, stderr)``:
   the error of the sketch the count came from); a library without ``with_error`` is measured
   with the ± its command line shows, 0.81% of the count.

3. Aggregate imprecision (issue 8): a realistic day of two platforms. Anonymous sessions on
   ``web`` and ``ios`` (60/40), a few events each; some sessions also active on the other
   platform before they log in (one shared anonymous id, e.g. an app and its web view); a share
   of sessions logging in on their platform (the session id replaced by the user's id), some
   sending one late event under the session id after the login; returning users active under
   their own id on one platform or both; events in time order. Aggregate ``all`` = web + ios.
   Its count is compared with the exact-set model of DESIGN.md section 2, and the departure
   from the model beyond HyperLogLog error is isolated exactly: the library reports
   ``estimate(sketch) - corrections``, and an exact correction would give
   ``PFCOUNT`` of the same ids (a raw HLL of every id the union sketch holds: tracked in, or
   moved out of, web or ios) minus the number of those ids the model's union does not hold.
   The difference between the two is the library's departure; the same check on the buckets
   must find none.

Redis HLLs use 16384 registers: standard error 1.04 / sqrt(16384) = 0.81%.
"""

from __future__ import annotations

import datetime
import inspect
import math
import random
import statistics
import sys
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import redis

import _common
from _common import Event, fmt, table
from activity_tracker import ActivityTracker

STANDARD_ERROR = 1.04 / 16384**0.5
DAY = _common.FIRST_DAY
NEXT_DAY = DAY + datetime.timedelta(days=1)
SERIES = {
    "raw": "Redis PFADD/PFCOUNT (baseline)",
    "plain": "activity-tracker, Redis",
    "memory": "activity-tracker, memory backend",
    "both": "aggregate (union of 2 buckets)",
    "moved": "bucket with 10% ids moved out (error / N)",
}
# Whether lookups give error bars (version 2: Estimate(count, stderr)).
HAS_ERROR_BARS = "with_error" in inspect.signature(ActivityTracker.lookup).parameters
BAND_KINDS = ("anon", "auth", "all")
PLATFORMS, PLATFORM_WEIGHTS = ("web", "ios"), (60, 40)
SHARED_SESSIONS = 0.05  # sessions also active on the other platform before logging in
LOGINS = 0.30  # sessions that log in
LATE_EVENTS = 0.05  # logged-in sessions sending one more event under the session id
BOTH_PLATFORMS = 0.20  # returning users active on both platforms


def memory_tracker() -> ActivityTracker | None:
    try:
        return ActivityTracker(backend="memory")
    except (ValueError, TypeError, ImportError):
        return None


def trial(url: str, n: int, seed: int, full_scenarios: bool) -> dict[str, float]:
    """Signed relative errors of one trial."""
    rng = random.Random(seed)
    ids = _common.uuid_ids(rng, n + n // 2 if full_scenarios else n)
    client = redis.Redis.from_url(url)
    prefix = _common.unique_prefix(f"acc{n}")
    errors: dict[str, float] = {}
    try:
        tracker = ActivityTracker(client=client, prefix=prefix)
        plain = ids[:n]
        tracker.track_many((id, "plain", None, None, DAY) for id in plain)
        for start in range(0, n, 10_000):
            client.pfadd(f"{prefix}:raw", *plain[start : start + 10_000])
        errors["raw"] = client.pfcount(f"{prefix}:raw") / n - 1
        aggregates = {}
        if full_scenarios:
            left, right = ids[:n], ids[n // 2 : n // 2 + n]
            tracker.track_many((id, "left", None, None, DAY) for id in left)
            tracker.track_many((id, "right", None, None, DAY) for id in right)
            tracker.track_many((id, "moved", None, None, DAY) for id in plain)
            tracker.track_many(
                (f"m{k}", "dest", id, "moved", DAY) for k, id in enumerate(plain[: n // 10])
            )
            aggregates = {"both": ["left", "right"]}
        tracker.collapse(date=NEXT_DAY, aggregate_buckets=aggregates)
        [(_, counts)] = tracker.lookup_daily(start=DAY, end=NEXT_DAY)
        errors["plain"] = counts["plain"] / n - 1
        if full_scenarios:
            union = len(set(ids[:n]) | set(ids[n // 2 : n // 2 + n]))
            errors["both"] = counts["both"] / union - 1
            # Relative to the ids the sketch holds (N), as the HLL's own error is.
            errors["moved"] = (counts["moved"] - (n - n // 10)) / n
        memory = memory_tracker()
        if memory is not None:
            memory.track_many((id, "plain", None, None, DAY) for id in plain)
            memory.collapse(date=NEXT_DAY)
            [(_, memory_counts)] = memory.lookup_daily(start=DAY, end=NEXT_DAY)
            errors["memory"] = memory_counts["plain"] / n - 1
            memory.close()
    finally:
        _common.delete_prefix(client, prefix)
        client.close()
    return errors


def summary(values: list[float]) -> tuple[float, float, float]:
    absolute = sorted(abs(v) for v in values)
    p95 = absolute[min(len(absolute) - 1, round(0.95 * (len(absolute) - 1)))]
    return statistics.fmean(absolute), p95, absolute[-1]


def plot(results: dict[int, dict[str, list[float]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = sorted(results)
    figure, axes = plt.subplots(figsize=(8, 4.5))
    axes.fill_between(
        [sizes[0] / 2, sizes[-1] * 2],
        -STANDARD_ERROR * 100,
        STANDARD_ERROR * 100,
        color="#dddddd",
        label="±1.04/sqrt(16384) = ±0.81%",
    )
    markers = {"raw": "x", "plain": "o", "memory": "s", "both": "^", "moved": "v"}
    shift = {"raw": 0.84, "plain": 0.92, "memory": 1.0, "both": 1.09, "moved": 1.19}
    for key, label in SERIES.items():
        xs = [n * shift[key] for n in sizes for _ in results[n].get(key, [])]
        ys = [100 * e for n in sizes for e in results[n].get(key, [])]
        if xs:
            axes.scatter(xs, ys, marker=markers[key], s=18, label=label)
    axes.set_xscale("log")
    axes.set_xlim(sizes[0] / 2, sizes[-1] * 2)
    axes.set_xlabel("exact distinct count N")
    axes.set_ylabel("relative error (%)")
    axes.set_title("Reported count vs exact count (each point one trial)")
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def with_errors(
    tracker: ActivityTracker, start: datetime.date, end: datetime.date, buckets: list[str]
) -> list[tuple[datetime.date, dict[str, tuple[int, float]]]]:
    """Daily ``(count, stderr)`` per bucket: ``with_error=True``'s ``Estimate`` when the
    library has it, else version 1.0.0's ± (0.81% of the count, as its command line shows)."""
    if HAS_ERROR_BARS:
        rows: list[tuple[datetime.date, dict[str, Any]]] = tracker.lookup_daily(
            start, end, buckets, with_error=True
        )
        return [
            (day, {b: (int(e.count), float(e.stderr)) for b, e in values.items()})
            for day, values in rows
        ]
    return [
        (day, {b: (count, STANDARD_ERROR * count) for b, count in values.items()})
        for day, values in tracker.lookup_daily(start, end, buckets)
    ]


class Bands(NamedTuple):
    """Per kind of count: whether each fell inside ±2σ, and its error in standard errors."""

    inside: dict[str, list[bool]]
    z: dict[str, list[float]]
    sizes: list[int]


def bands(url: str, days: int, low: int, high: int, seed: int) -> Bands:
    """Part 2: ``days`` days of N sessions (log-uniform in [low, high]), half logging in."""
    rng = random.Random(seed)
    client = redis.Redis.from_url(url)
    prefix = _common.unique_prefix("bands")
    exact: dict[datetime.date, dict[str, int]] = {}
    try:
        tracker = ActivityTracker(periods=["daily"], client=client, prefix=prefix)
        for d in range(days):
            day = DAY + datetime.timedelta(days=d)
            n = round(math.exp(rng.uniform(math.log(low), math.log(high))))
            sessions = _common.uuid_ids(rng, n)
            users = _common.uuid_ids(rng, n // 2)
            tracker.track_many((s, "anon", None, None, day) for s in sessions)
            tracker.track_many(
                (u, "auth", s, "anon", day) for u, s in zip(users, sessions, strict=False)
            )
            exact[day] = {"anon": n - n // 2, "auth": n // 2, "all": n}
        end = DAY + datetime.timedelta(days=days)
        tracker.collapse(date=end, max_periods=days, aggregate_buckets={"all": ["anon", "auth"]})
        rows = with_errors(tracker, DAY, end, list(BAND_KINDS))
    finally:
        _common.delete_prefix(client, prefix)
        client.close()
    result = Bands({k: [] for k in BAND_KINDS}, {k: [] for k in BAND_KINDS}, [])
    for day, values in rows:
        result.sizes.append(exact[day]["all"])
        for kind, (count, stderr) in values.items():
            error = count - exact[day][kind]
            result.inside[kind].append(abs(error) <= 2 * stderr)
            result.z[kind].append(error / stderr if stderr else math.inf if error else 0.0)
    return result


def coverage_floor(trials: int) -> float:
    """The lowest share inside ±2σ that 95% coverage would plausibly give over ``trials``
    independent counts: 95% minus two binomial standard errors."""
    return 0.95 - 2 * math.sqrt(0.95 * 0.05 / trials)


def realistic_day(rng: random.Random, day: datetime.date, sessions: int) -> list[Event]:
    """Part 3: one day of two platforms, sessions, logins and returning users, in time order."""
    timed: list[tuple[float, Event]] = []
    users = _common.uuid_ids(rng, sessions)
    for session, user in zip(_common.uuid_ids(rng, sessions), users, strict=True):
        platform = rng.choices(PLATFORMS, weights=PLATFORM_WEIGHTS)[0]
        other = PLATFORMS[1 - PLATFORMS.index(platform)]
        t = rng.random()
        for _ in range(rng.randint(1, 3)):
            timed.append((t, (session, platform, None, None, day)))
            t += rng.random() * 0.01
        if rng.random() < SHARED_SESSIONS:
            timed.append((t, (session, other, None, None, day)))
            t += rng.random() * 0.01
        if rng.random() < LOGINS:
            timed.append((t, (user, platform, session, platform, day)))
            t += rng.random() * 0.01
            timed.append((t, (user, platform, None, None, day)))
            if rng.random() < LATE_EVENTS:
                timed.append((t + rng.random() * 0.01, (session, platform, None, None, day)))
    for user in users[: sessions // 2]:  # returning users, under their own id
        platforms = PLATFORMS if rng.random() < BOTH_PLATFORMS else rng.choices(PLATFORMS)
        for platform in platforms:
            timed.append((rng.random(), (user, platform, None, None, day)))
    timed.sort(key=lambda pair: pair[0])
    return [event for _, event in timed]


class Model(NamedTuple):
    """The exact-set model of one day (DESIGN.md section 2), and every id each bucket's sketch
    holds (tracked in it, or moved out of it)."""

    members: dict[str, set[str]]
    held: dict[str, set[str]]


def model(events: Iterable[Event]) -> Model:
    members: defaultdict[str, set[str]] = defaultdict(set)
    held: defaultdict[str, set[str]] = defaultdict(set)
    for id, bucket, old_id, old_bucket, _ in events:
        if old_id is not None and old_bucket is not None:
            members[old_bucket].discard(old_id)
            held[old_bucket].add(old_id)
        members[bucket].add(id)
        held[bucket].add(id)
    return Model(members, held)


class Departures(NamedTuple):
    """Per day: the aggregate's exact count, its reported count, and how far the reported
    count is from an exact correction of the same sketch; the same for the buckets."""

    exact: list[int]
    reported: list[int]
    aggregate: list[int]
    buckets: list[int]
    events: int
    changes: int


def departures(url: str, days: int, sessions: int, seed: int) -> Departures:
    """Part 3."""
    rng = random.Random(seed)
    client = redis.Redis.from_url(url)
    prefix = _common.unique_prefix("aggregate")
    result = Departures([], [], [], [], 0, 0)
    ideal: dict[datetime.date, dict[str, int]] = {}
    try:
        tracker = ActivityTracker(periods=["daily"], client=client, prefix=f"{prefix}:lib")
        for d in range(days):
            day = DAY + datetime.timedelta(days=d)
            events = realistic_day(rng, day, sessions)
            tracker.track_many(events)
            result = result._replace(
                events=result.events + len(events),
                changes=result.changes + sum(1 for e in events if e[2] is not None),
            )
            exact = model(events)
            exact.members["all"] = exact.members["web"] | exact.members["ios"]
            exact.held["all"] = exact.held["web"] | exact.held["ios"]
            ideal[day] = {"exact": len(exact.members["all"])}
            for bucket in ("web", "ios", "all"):
                held = list(exact.held[bucket])
                key = f"{prefix}:ref:{d}:{bucket}"
                for start in range(0, len(held), 10_000):
                    client.pfadd(key, *held[start : start + 10_000])
                wrongly_held = len(held) - len(exact.members[bucket])
                ideal[day][bucket] = max(0, client.pfcount(key) - wrongly_held)
        end = DAY + datetime.timedelta(days=days)
        tracker.collapse(date=end, max_periods=days, aggregate_buckets={"all": list(PLATFORMS)})
        for day, counts in tracker.lookup_daily(DAY, end, ["web", "ios", "all"]):
            result.exact.append(ideal[day]["exact"])
            result.reported.append(counts["all"])
            result.aggregate.append(counts["all"] - ideal[day]["all"])
            result.buckets.extend(counts[b] - ideal[day][b] for b in PLATFORMS)
    finally:
        _common.delete_prefix(client, prefix)
        client.close()
    return result


def error_table(plan: list[tuple[int, int]], results: dict[int, dict[str, list[float]]]) -> str:
    rows = []
    for n, trials in plan:
        row: list[object] = [fmt(n), trials]
        for key in SERIES:
            values = results[n].get(key)
            if values:
                mean, p95, worst = summary(values)
                row.append(f"{100 * mean:.2f} / {100 * p95:.2f} / {100 * worst:.2f}")
            else:
                row.append("n/a")
        rows.append(row)
    return table(["N", "trials", *SERIES.values()], rows)


def band_text(result: Bands) -> str:
    rows = []
    for kind in BAND_KINDS:
        inside, z = result.inside[kind], result.z[kind]
        rows.append(
            (
                kind,
                len(inside),
                f"{sum(inside)} ({sum(inside) / len(inside):.1%})",
                fmt(math.sqrt(statistics.fmean(v * v for v in z)), 2),
            )
        )
    source = (
        "`lookup_daily(..., with_error=True)`"
        if HAS_ERROR_BARS
        else "this version has no `with_error`: 0.81% of the count, the ± its command line shows"
    )
    return (
        f"{len(result.sizes)} days of N sessions (N from {min(result.sizes):,} to "
        f"{max(result.sizes):,}, log-uniform), half of them logging in. Standard errors: "
        f"{source}.\n\n"
        + table(["count", "counts", "inside ±2σ", "rms error / stderr"], rows)
        + "\n\nAn honest ±2σ holds about 95% of counts, and rms error / stderr is about 1 "
        "(below 1 where the sketch does better than its nominal 0.81%).\n"
    )


def departure_text(result: Departures, sessions: int) -> str:
    days = len(result.aggregate)
    off = [d for d in result.aggregate if d]
    relative = [abs(r - e) / e for r, e in zip(result.reported, result.exact, strict=True)]
    share = [abs(d) / e for d, e in zip(result.aggregate, result.exact, strict=True)]
    return (
        f"{days} days of {sessions:,} sessions ({result.events:,} events, {result.changes:,} "
        f"id changes): {SHARED_SESSIONS:.0%} of sessions also active on the other platform "
        f"before logging in, {LOGINS:.0%} logging in, {LATE_EVENTS:.0%} of those sending a "
        f"late event, {sessions // 2:,} returning users a day ({BOTH_PLATFORMS:.0%} on both "
        "platforms).\n\n"
        + table(
            ["", "value"],
            [
                ("aggregate counts departing from the exact-set model", f"{len(off)} of {days}"),
                (
                    "departure per day, ids (mean / max)",
                    f"{statistics.fmean(result.aggregate):+.1f} / "
                    f"{max(result.aggregate, key=abs):+d}",
                ),
                (
                    "departure per day, % of the exact count (mean / max)",
                    f"{100 * statistics.fmean(share):.3f}% / {100 * max(share):.3f}%",
                ),
                (
                    "aggregate error against the exact count, HLL included (mean / max)",
                    f"{100 * statistics.fmean(relative):.2f}% / {100 * max(relative):.2f}%",
                ),
                (
                    "bucket counts departing from the model (web, ios)",
                    f"{sum(1 for b in result.buckets if b)} of {len(result.buckets)}",
                ),
            ],
        )
        + "\n"
    )


def main(argv: Sequence[str] | None = None, command: str | None = None) -> list[list[str]]:
    """Run, print and save the report; return its headline rows for ``run.py``."""
    args = _common.arguments(__doc__.splitlines()[0], argv)
    if args.quick:
        plan = [(10, 10), (100, 10), (1_000, 5), (10_000, 3), (100_000, 2)]
        band_days, band_sizes, agg_days, agg_sessions = 40, (2_000, 20_000), 10, 5_000
    else:
        plan = [
            (10, 20),
            (100, 20),
            (1_000, 20),
            (10_000, 10),
            (100_000, 5),
            (1_000_000, 3),
            (10_000_000, 1),
        ]
        band_days, band_sizes, agg_days, agg_sessions = 100, (5_000, 100_000), 30, 20_000
    results: dict[int, dict[str, list[float]]] = {}
    with _common.redis_url(args.url) as url:
        for n, trials in plan:
            results[n] = {}
            for t in range(trials):
                # 10^7 ids: the plain bucket only (4 x 10^7 events would take too long).
                errors = trial(url, n, args.seed * 1_000 + t * 7 + n, n <= 1_000_000)
                for key, error in errors.items():
                    results[n].setdefault(key, []).append(error)
        band = bands(url, band_days, *band_sizes, args.seed)
        aggregate = departures(url, agg_days, agg_sessions, args.seed)
        same = all(
            results[n]["plain"] == results[n]["raw"] for n in results if "plain" in results[n]
        )
        big = [n for n in results if n >= 10_000]
        moved_all = [abs(e) for n in big for e in results[n].get("moved", [])]
        plain_all = [abs(e) for n in big for e in results[n]["plain"]]
        memory_note = (
            ""
            if any("memory" in results[n] for n in results)
            else " The memory backend was not installed when this ran: its column is n/a."
        )
        body = (
            "## Error against N\n\nAbsolute relative error in %, as mean / p95 / max over the "
            "trials.\n\n"
            + error_table(plan, results)
            + "\n\nThe library's count of a plain bucket "
            + ("equals" if same else "differs from")
            + " Redis's own PFCOUNT of the same ids in every trial: no error beyond Redis's HLL. "
            + (
                "Buckets with id changes (N >= 10,000): mean |error| "
                f"{100 * statistics.fmean(moved_all):.2f}% of the ids in the sketch vs "
                f"{100 * statistics.fmean(plain_all):.2f}% "
                "for plain buckets. "
                if moved_all
                else ""
            )
            + f"Standard error: {100 * STANDARD_ERROR:.2f}%."
            + memory_note
            + "\n\n## Error bars: half the sessions log in\n\n"
            + band_text(band)
            + "\n## Aggregate imprecision: two platforms, logins, an aggregate of both\n\n"
            + departure_text(aggregate, agg_sessions)
        )
        png = args.out / "accuracy.png"
        args.out.mkdir(parents=True, exist_ok=True)
        plot(results, png)
        _common.report(
            "accuracy",
            "Accuracy",
            command or _common.command_line("accuracy.py", argv),
            url,
            body,
            args.out,
            png.name,
        )
    return headline(plan, results, same, band, aggregate)


def headline(
    plan: list[tuple[int, int]],
    results: dict[int, dict[str, list[float]]],
    same: bool,
    band: Bands,
    aggregate: Departures,
) -> list[list[str]]:
    top = max(n for n, _ in plan)
    mean, _, worst = summary(results[top]["plain"])
    raw_mean, _, _ = summary(results[top]["raw"])
    shares = {k: sum(v) / len(v) for k, v in band.inside.items()}
    floor = coverage_floor(len(band.sizes))
    off = sum(1 for d in aggregate.aggregate if d)
    return [
        [
            f"accuracy at N = {top:,} ({len(results[top]['plain'])} trials)",
            f"mean {100 * mean:.2f}%, max {100 * worst:.2f}% "
            f"(Redis PFCOUNT: {100 * raw_mean:.2f}%)",
            "no worse than Redis HLL (0.81%)",
            "yes" if same else "NO",
        ],
        [
            "counts inside their ±2σ band, half the sessions logging in"
            + ("" if HAS_ERROR_BARS else " (± = 0.81% of the count: no with_error)"),
            ", ".join(f"{k} {v:.0%}" for k, v in shares.items()) + f" of {len(band.sizes)} days",
            f"about 95% for each (>= {floor:.0%})",
            "yes" if min(shares.values()) >= floor else "NO",
        ],
        [
            "aggregate departures from the exact-set model, two platforms with logins",
            f"{off} of {len(aggregate.aggregate)} days, at most "
            f"{max(abs(d) for d in aggregate.aggregate)} ids",
            "",
            "",
        ],
    ]


if __name__ == "__main__":
    main()
    sys.exit(0)

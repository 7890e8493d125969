"""Ingest throughput: this library against hand-written redis-py, and collapse / lookup time.

The same seeded zipf-like workload (uuid-like ids, four buckets, 1% id changes) goes through
five writers, with periods daily + weekly + monthly:

(a) exact sets, written the way the original activity-tracker works: one ``SADD`` round trip
    per period per event (a ``SADD``+``SREM`` transaction for an id change), no pipelining;
(b) raw redis-py ``PFADD``: one pipeline of three ``PFADD`` per event;
(c) raw redis-py grouped multi-element ``PFADD``: ids appended per key for 10,000 events,
    then one pipeline of one ``PFADD key id id ...`` per key (the best hand-written code);
(d) this library's ``track()``, one call per event;
(e) this library's ``track_many()``, called on the same 10,000-event chunks as (c) (repeats
    dropped and ids de-duplicated locally, id changes recorded exactly).

(a), (b) and (d) send the first events of the workload one by one; (c) and (e) the whole of
it. Writers take turns on blocks of events (100 for the per-event writers, 10,000 for the
batch ones; the order rotates) so that the machine's noise hits all alike; each ratio is
computed within one repetition and the table gives medians. Raw writers (b, c) cannot
record id changes (an HLL cannot forget), so they only add the new id: they do less than
(d) and (e).
"""

from __future__ import annotations

import datetime
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path

import redis

import _common
from _common import Event, fmt, median, table
from activity_tracker import ActivityTracker

PERIODS = ("daily", "weekly", "monthly")
CHUNK = 10_000


def original_period_names(day: datetime.date) -> tuple[str, str, str]:
    """Computed per call, as the original library did."""
    week = day - datetime.timedelta(days=day.weekday())
    return (f"daily-{day:%Y%m%d}", f"weekly-{week:%Y%m%d}", f"monthly-{day:%Y%m}")


def cached_period_names() -> Callable[[datetime.date], tuple[str, str, str]]:
    """What careful hand-written code does: name each day's periods once."""
    cache: dict[datetime.date, tuple[str, str, str]] = {}

    def names(day: datetime.date) -> tuple[str, str, str]:
        found = cache.get(day)
        if found is None:
            found = cache[day] = original_period_names(day)
        return found

    return names


def exact_sets(client: redis.Redis, prefix: str, events: Sequence[Event]) -> None:
    """(a) The original library: per period, ``SADD`` (or ``SADD``+``SREM`` for a change)."""
    for id, bucket, old_id, old_bucket, day in events:
        for name in original_period_names(day):
            add_key = f"{prefix}:active:{name}:raw:{bucket}"
            if old_id is not None:
                with client.pipeline() as pipe:
                    pipe.sadd(add_key, id)
                    pipe.srem(f"{prefix}:active:{name}:raw:{old_bucket}", old_id)
                    pipe.execute()
            else:
                client.sadd(add_key, id)


def raw_pipeline(client: redis.Redis, prefix: str, events: Sequence[Event]) -> None:
    """(b) One pipeline of three ``PFADD`` per event."""
    names = cached_period_names()
    for id, bucket, _, _, day in events:
        pipe = client.pipeline(transaction=False)
        for name in names(day):
            pipe.pfadd(f"{prefix}:{name}:{bucket}", id)
        pipe.execute()


def raw_grouped(client: redis.Redis, prefix: str, events: Sequence[Event]) -> None:
    """(c) Ids grouped per key for 10,000 events, one multi-element ``PFADD`` per key."""
    names = cached_period_names()
    for start in range(0, len(events), CHUNK):
        groups: defaultdict[str, list[str]] = defaultdict(list)
        for id, bucket, _, _, day in events[start : start + CHUNK]:
            for name in names(day):
                groups[f"{prefix}:{name}:{bucket}"].append(id)
        pipe = client.pipeline(transaction=False)
        for key, ids in groups.items():
            pipe.pfadd(key, *ids)
        pipe.execute()


def library_track(tracker: ActivityTracker, events: Sequence[Event]) -> None:
    """(d) ``track()`` per event."""
    track = tracker.track
    for id, bucket, old_id, old_bucket, day in events:
        track(id=id, bucket=bucket, old_id=old_id, old_bucket=old_bucket, date=day)


def library_batch(tracker: ActivityTracker, events: Sequence[Event]) -> None:
    """(e) ``track_many()``."""
    tracker.track_many(events)


WRITERS = {
    "a": "(a) exact sets, SADD per period per event (original library)",
    "b": "(b) raw redis-py, pipeline of 3 PFADD per event",
    "c": "(c) raw redis-py, grouped multi-element PFADD",
    "d": "(d) activity-tracker track() per event",
    "e": "(e) activity-tracker track_many()",
}


def measure(url: str, small: list[Event], big: list[Event], reps: int) -> dict[str, list[float]]:
    """Events per second of each writer, per repetition.

    The machine is noisy, so writers are interleaved finely: within a repetition, the
    per-event writers (a, b, d) take turns on blocks of 100 events and the batch writers
    (c, e) on chunks of 10,000, in an order that rotates, each into its own keys. A slow
    patch of the machine then hits every writer alike, and each repetition's ratios compare
    writers over the same stretch of time.
    """
    client = redis.Redis.from_url(url)
    speeds: dict[str, list[float]] = {key: [] for key in WRITERS}

    def writers(prefixes: dict[str, str]) -> dict[str, Callable[[Sequence[Event]], None]]:
        trackers = {
            key: ActivityTracker(periods=PERIODS, client=client, prefix=prefixes[key])
            for key in "de"
        }
        return {
            "a": lambda events: exact_sets(client, prefixes["a"], events),
            "b": lambda events: raw_pipeline(client, prefixes["b"], events),
            "c": lambda events: raw_grouped(client, prefixes["c"], events),
            "d": lambda events: library_track(trackers["d"], events),
            "e": lambda events: library_batch(trackers["e"], events),
        }

    def repetition(rep: int, warm: bool = False) -> None:
        prefixes = {key: _common.unique_prefix(f"tp-{key}") for key in WRITERS}
        write = writers(prefixes)
        spent = dict.fromkeys(WRITERS, 0.0)
        for group, events, size in (("abd", small, 100), ("ce", big, CHUNK)):
            if warm:
                events = events[:size]
            for turn, start in enumerate(range(0, len(events), size)):
                block = events[start : start + size]
                shift = (rep + turn) % len(group)
                for key in group[shift:] + group[:shift]:
                    started = time.perf_counter()
                    write[key](block)
                    spent[key] += time.perf_counter() - started
        if not warm:
            for key in WRITERS:
                speeds[key].append(len(small if key in "abd" else big) / spent[key])
        for prefix in prefixes.values():
            _common.delete_prefix(client, prefix)

    try:
        repetition(0, warm=True)  # connections made, scripts loaded
        for rep in range(reps):
            repetition(rep)
    finally:
        client.close()
    return speeds


def collapse_and_lookup(url: str, seed: int, reps: int) -> list[tuple[str, float]]:
    """Median seconds of: a collapse of 100 buckets + 10 aggregates (1,000 ids per bucket),
    and a lookup of 365 days x 10 buckets."""
    client = redis.Redis.from_url(url)
    prefix = _common.unique_prefix("collapse")
    tracker = ActivityTracker(client=client, prefix=prefix)
    day = _common.FIRST_DAY
    try:
        ids = _common.uuid_ids(__import__("random").Random(seed), 1_000)
        buckets = [f"b{n:03d}" for n in range(100)]
        tracker.track_many((id, bucket, None, None, day) for bucket in buckets for id in ids)
        aggregates = {f"agg{j}": buckets[10 * j : 10 * j + 10] for j in range(10)}
        collapse_times = []
        for _ in range(reps):
            started = time.perf_counter()
            tracker.collapse(date=day + datetime.timedelta(days=1), aggregate_buckets=aggregates)
            collapse_times.append(time.perf_counter() - started)

        end = day + datetime.timedelta(days=1)
        start = end - datetime.timedelta(days=365)
        ten = buckets[:10]
        tracker.track_many(
            (f"u{n}", bucket, None, None, start + datetime.timedelta(days=n))
            for n in range(365)
            for bucket in ten
        )
        tracker.collapse(date=end, max_periods=365)
        lookup_times = []
        for _ in range(reps):
            started = time.perf_counter()
            rows = tracker.lookup_daily(start=start, end=end, buckets=ten)
            lookup_times.append(time.perf_counter() - started)
        assert len(rows) == 365 and rows[0][1] == dict.fromkeys(ten, 1), rows[0]
    finally:
        _common.delete_prefix(client, prefix)
        client.close()
    return [
        ("collapse: 100 buckets x 1,000 ids + 10 aggregates, 1 day", median(collapse_times)),
        ("lookup_daily: 365 days x 10 buckets", median(lookup_times)),
    ]


def plot(speeds: dict[str, list[float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [WRITERS[key].split(" ", 1)[1] for key in WRITERS]
    values = [median(speeds[key]) for key in WRITERS]
    colors = ["#999999", "#6baed6", "#2171b5", "#fd8d3c", "#d94801"]
    figure, axes = plt.subplots(figsize=(9, 4.5))
    bars = axes.barh(range(len(values)), values, color=colors)
    axes.set_yticks(
        range(len(values)), [f"({k}) {label}" for k, label in zip(WRITERS, labels, strict=True)]
    )
    axes.invert_yaxis()
    axes.set_xscale("log")
    axes.set_xlabel("events per second (median, log scale; periods daily+weekly+monthly)")
    for bar, value in zip(bars, values, strict=True):
        axes.text(value, bar.get_y() + bar.get_height() / 2, f" {value:,.0f}", va="center")
    axes.set_title("Ingest throughput, zipf-like workload")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main(argv: Sequence[str] | None = None, command: str | None = None) -> list[list[str]]:
    """Run, print and save the report; return its headline rows for ``run.py``."""
    args = _common.arguments(__doc__.splitlines()[0], argv)
    small_n, big_n, users, reps = (
        (3_000, 200_000, 50_000, 3) if args.quick else (20_000, 1_000_000, 200_000, 7)
    )
    big = _common.workload(big_n, users, args.seed)
    small = big[:small_n]
    with _common.redis_url(args.url) as url:
        speeds = measure(url, small, big, reps)
        timings = collapse_and_lookup(url, args.seed, reps)
        ratios = [
            (rep + 1, d / a, d / b, e / c)
            for rep, (a, b, c, d, e) in enumerate(zip(*(speeds[k] for k in WRITERS), strict=True))
        ]
        medians = [median([r[i] for r in ratios]) for i in (1, 2, 3)]
        targets = (2.0, 0.9, 1.0)
        writers = table(
            ["writer", "events", "events/s (median)", "min", "max"],
            [
                (
                    WRITERS[key],
                    fmt(len(small if key in "abd" else big)),
                    fmt(median(speeds[key])),
                    fmt(min(speeds[key])),
                    fmt(max(speeds[key])),
                )
                for key in WRITERS
            ],
        )
        ratio_table = table(
            [
                "repetition",
                "track() / (a) exact",
                "track() / (b) raw",
                "track_many() / (c) grouped",
            ],
            [(rep, fmt(x, 2), fmt(y, 2), fmt(z, 2)) for rep, x, y, z in ratios]
            + [("median", *(fmt(m, 2) for m in medians))]
            + [("target", *(f">= {t}" for t in targets))]
            + [
                ("met", *("yes" if m >= t else "NO" for m, t in zip(medians, targets, strict=True)))
            ],
        )
        ops = table(["operation", "median time"], [(n, f"{t * 1000:,.1f} ms") for n, t in timings])
        distinct = len({(e[0], e[1], e[4]) for e in big})
        body = (
            f"Workload: {big_n:,} events, {users:,} zipf-weighted uuid-like users, 4 buckets, "
            f"3 days, 1% id changes (seed {args.seed}); {distinct:,} distinct "
            f"(id, bucket, day). {reps} interleaved repetitions.\n\n{writers}\n\n"
            f"Ratios within each repetition:\n\n{ratio_table}\n\n{ops}\n"
        )
        png = args.out / "throughput.png"
        args.out.mkdir(parents=True, exist_ok=True)
        plot(speeds, png)
        _common.report(
            "throughput",
            "Throughput",
            command or _common.command_line("throughput.py", argv),
            url,
            body,
            args.out,
            png.name,
        )
    names = ("(a) exact sets", "(b) raw PFADD pipeline", "(c) raw grouped PFADD")
    keys = ("a", "b", "c")
    rows = []
    for name, key, ratio, target in zip(names, keys, medians, targets, strict=True):
        mine = "d" if key != "c" else "e"
        rows.append(
            [
                f"{'track()' if mine == 'd' else 'track_many()'} vs {name}",
                f"{ratio:.2f}x ({median(speeds[mine]):,.0f} vs "
                f"{median(speeds[key]):,.0f} events/s)",
                f">= {target}x",
                "yes" if ratio >= target else "NO",
            ]
        )
    for name, seconds in timings:
        rows.append([name, f"{seconds * 1000:,.1f} ms", "", ""])
    return rows


if __name__ == "__main__":
    main()
    sys.exit(0)

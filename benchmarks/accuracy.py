"""Accuracy: counts reported by this library against exact distinct counts.

For each N (log steps) and each seeded trial, one day holds, each through ``track_many()``
then ``collapse()`` and ``lookup_daily()``:

- bucket ``plain``: N distinct uuid-like ids; also sent raw to a Redis HLL with ``PFADD``
  and read with ``PFCOUNT`` (Redis's own HLL, the baseline), and to the ``memory`` backend
  when it is installed;
- buckets ``left`` and ``right`` of N ids each, half of them shared, and the aggregate
  ``both`` = their union (1.5 N ids);
- bucket ``moved``: N ids, then 10% of them moved out to another bucket (0.9 N ids); its
  error is given relative to the N ids its sketch holds, to compare with the HLL's own.

Relative error = (reported - exact) / exact; the table gives mean, p95 and max of its
absolute value over the trials. Redis HLLs use 16384 registers: standard error
1.04 / sqrt(16384) = 0.81%.
"""

from __future__ import annotations

import datetime
import random
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path

import redis

import _common
from _common import fmt, table
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


def main(argv: Sequence[str] | None = None, command: str | None = None) -> list[list[str]]:
    """Run, print and save the report; return its headline rows for ``run.py``."""
    args = _common.arguments(__doc__.splitlines()[0], argv)
    if args.quick:
        plan = [(10, 10), (100, 10), (1_000, 5), (10_000, 3), (100_000, 2)]
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
    results: dict[int, dict[str, list[float]]] = {}
    with _common.redis_url(args.url) as url:
        for n, trials in plan:
            results[n] = {}
            for t in range(trials):
                # 10^7 ids: the plain bucket only (4 x 10^7 events would take too long).
                errors = trial(url, n, args.seed * 1_000 + t * 7 + n, n <= 1_000_000)
                for key, error in errors.items():
                    results[n].setdefault(key, []).append(error)
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
            "Absolute relative error in %, as mean / p95 / max over the trials.\n\n"
            + table(["N", "trials", *SERIES.values()], rows)
            + "\n\nThe library's count of a plain bucket "
            + ("equals" if same else "differs from")
            + " Redis's own PFCOUNT of the same ids in every trial: no error beyond Redis's HLL. "
            + (
                "Buckets with id changes (N >= 10,000): mean |error| "
                f"{100 * statistics.fmean(moved_all):.2f}% of the ids in the sketch vs "
                f"{100 * statistics.fmean(plain_all):.2f}% "
                "for plain buckets: the moves are subtracted exactly, so they add no error "
                "beyond the HLL's. "
                if moved_all
                else ""
            )
            + f"Standard error: {100 * STANDARD_ERROR:.2f}%. At N = 10 every count is exact."
            + memory_note
            + "\n"
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
    top = max(n for n, _ in plan)
    mean, p95, worst = summary(results[top]["plain"])
    raw_mean, _, _ = summary(results[top]["raw"])
    return [
        [
            f"accuracy at N = {top:,} ({len(results[top]['plain'])} trials)",
            f"mean {100 * mean:.2f}%, max {100 * worst:.2f}% "
            f"(Redis PFCOUNT: {100 * raw_mean:.2f}%)",
            "no worse than Redis HLL (0.81%)",
            "yes" if same else "NO",
        ]
    ]


if __name__ == "__main__":
    main()
    sys.exit(0)

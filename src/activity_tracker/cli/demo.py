"""``demo``: a synthetic but realistic event log, counted by the tracker and exactly.

:func:`synthetic_events` is pure (seeded), so ``examples/make_sample_log.py`` reuses it.
"""

from __future__ import annotations

import datetime
import random
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import click
import redis
from rich.console import Console
from rich.table import Table

from .. import periods as _periods
from ..corrections import Estimate
from ..embedded import embedded_client, release
from ..keys import COUNTS, HLL, Bucket, KeySchema
from ..periods import Period
from ..tracker import ActivityTracker
from . import ingestion as _ingest
from .events import Event, format_csv_line
from .options import plot_option
from .reporting import SIGMAS, bucket_label, error_bound

DEMO_PERIODS = (_periods.DAILY, _periods.WEEKLY, _periods.MONTHLY)
DEMO_PREFIX = "demo"
BUCKETS: tuple[Bucket, ...] = ("anon", "web", "app")
AGGREGATES: dict[str, list[Bucket]] = {"users": ["web", "app"]}
#: Relative activity by weekday, Monday first: weekends are quieter.
WEEKLY_SEASON = (1.0, 1.03, 1.0, 0.97, 0.9, 0.6, 0.55)
DEFAULT_START = datetime.date(2024, 4, 1)


def synthetic_events(
    users: int = 20_000,
    days: int = 30,
    start: datetime.date = DEFAULT_START,
    seed: int = 1,
) -> Iterator[Event]:
    """A realistic log, in time order: ``users`` signed-up users over ``days`` days from
    ``start``.

    Each user has a habit (a few use the product daily, most now and then: a beta
    distribution), a platform (``app``, ``web`` or both) and a sign-up day (most existed before
    ``start``, the rest join during the period). Activity follows the week (quieter weekends).
    A web visit starts as an anonymous session in bucket ``anon`` a third of the time and
    then logs in: the session id is replaced by the user id in bucket ``web`` (an id change).
    Anonymous visitors who never log in add more ``anon`` sessions. Timestamps are local times
    without an offset, so they fall on the same day in every time zone.
    """
    if users < 1 or days < 1:
        raise ValueError("users and days must be at least 1")
    rng = random.Random(seed)
    habits = [rng.betavariate(0.7, 2.8) for _ in range(users)]
    platforms = [rng.choices(("app", "web", "both"), (0.45, 0.4, 0.15))[0] for _ in range(users)]
    joined = [0 if rng.random() < 0.75 else rng.randrange(days) for _ in range(users)]
    width = len(str(users))
    session = 0
    for offset in range(days):
        day = start + datetime.timedelta(days=offset)
        season = WEEKLY_SEASON[day.weekday()]
        today: list[tuple[int, str, str, str | None, str | None]] = []
        for user in range(users):
            if joined[user] > offset or rng.random() >= habits[user] * season:
                continue
            user_id = f"u{user:0{width}d}"
            platform = platforms[user]
            if platform == "both":
                platform = rng.choice(("app", "web"))
            second = _time_of_day(rng)
            if platform == "web" and rng.random() < 1 / 3:
                session += 1
                session_id = f"s{session:06x}"
                today.append((second, session_id, "anon", None, None))
                login = min(second + rng.randrange(5, 600), 86_399)
                today.append((login, user_id, "web", session_id, "anon"))
            else:
                today.append((second, user_id, platform, None, None))
            if rng.random() < 0.3:  # a second visit the same day: counted once
                today.append((_time_of_day(rng), user_id, platform, None, None))
        visitors = int(users * 0.08 * season * rng.uniform(0.9, 1.1))
        for _ in range(visitors):
            session += 1
            today.append((_time_of_day(rng), f"s{session:06x}", "anon", None, None))
        today.sort(key=lambda event: event[0])
        midnight = datetime.datetime.combine(day, datetime.time())
        for second, id_, bucket, old_id, old_bucket in today:
            yield Event(
                date=midnight + datetime.timedelta(seconds=second),
                id=id_,
                bucket=bucket,
                old_id=old_id,
                old_bucket=old_bucket,
            )


def _time_of_day(rng: random.Random) -> int:
    """A second of the day, busiest in the afternoon and evening."""
    hour = min(max(rng.gauss(15, 4.5), 0), 23.999)
    return int(hour * 3600)


class ExactCounts:
    """The exact-set model (DESIGN.md §2): a set of ids per period and bucket."""

    def __init__(self, kinds: Iterable[str]) -> None:
        self.kinds = tuple(kinds)
        self.sets: dict[tuple[Period, Bucket], set[str]] = {}

    def apply(self, event: Event) -> None:
        day = event.date.date() if isinstance(event.date, datetime.datetime) else event.date
        for kind in self.kinds:
            period = Period.containing(kind, day)
            if event.old_id is not None:
                self.sets.get((period, event.old_bucket), set()).discard(event.old_id)
            if event.id is not None:
                self.sets.setdefault((period, event.bucket), set()).add(event.id)

    def ids(self, period: Period, bucket: Bucket) -> set[str]:
        if isinstance(bucket, str) and bucket in AGGREGATES:
            union: set[str] = set()
            for source in AGGREGATES[bucket]:
                union |= self.sets.get((period, source), set())
            return union
        return self.sets.get((period, bucket), set())

    def count(self, period: Period, bucket: Bucket) -> int:
        return len(self.ids(period, bucket))


def _bytes(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:,.0f} {unit}" if unit == "B" else f"{size:,.1f} {unit}"
        size /= 1024
    return f"{size} B"


#: The kind each key is counted in by :func:`_memory`: its part of a period (any other key,
#: the registries and id-change records, in ``corrections``).
_MEMORY_KINDS: dict[str | None, str] = {HLL: "sketches", COUNTS: "counts"}


def _memory(client: redis.Redis, schema: KeySchema) -> dict[str, tuple[int, int]]:
    """MEMORY USAGE of the keys of ``schema``, as {kind: (bytes, keys)}, the kind being
    ``sketches`` (HyperLogLogs), ``counts`` (collapsed counts) or ``corrections`` (the
    id-change records and the registry of each period)."""
    usage: dict[str, tuple[int, int]] = {}
    for key in client.scan_iter(match=schema.pattern(), count=1000):
        text = key.decode() if isinstance(key, bytes) else str(key)
        kind = _MEMORY_KINDS.get(schema.part(text), "corrections")
        size, keys = usage.get(kind, (0, 0))
        usage[kind] = (size + int(client.memory_usage(key, samples=0) or 0), keys + 1)
    return usage


def _exact_memory(client: redis.Redis, exact: ExactCounts, pairs: list[tuple[Period, str]]) -> int:
    """MEMORY USAGE of the exact sets, stored as Redis sets for the measurement, then deleted."""
    total = 0
    for number, (period, bucket) in enumerate(pairs):
        ids = exact.ids(period, bucket)
        if not ids:
            continue
        key = f"demo-exact:{number}"
        members = sorted(ids)
        for index in range(0, len(members), 10_000):
            client.sadd(key, *members[index : index + 10_000])
        total += int(client.memory_usage(key, samples=0) or 0)
        client.delete(key)
    return total


@click.command()
@click.option(
    "--users",
    type=click.IntRange(min=1),
    default=20_000,
    show_default=True,
    help="Signed-up users in the synthetic population.",
)
@click.option(
    "--days",
    type=click.IntRange(min=1, max=366),
    default=30,
    show_default=True,
    help="Days of activity, from --start.",
)
@click.option(
    "--start",
    metavar="YYYY-MM-DD",
    default=DEFAULT_START.isoformat(),
    show_default=True,
    help="First day of the log.",
)
@click.option("--seed", type=int, default=1, show_default=True, help="Random seed.")
@plot_option("a chart of the daily estimates (±2σ bands) with the exact counts as crosses")
@click.pass_obj
def demo(settings: object, users: int, days: int, start: str, seed: int, plot: str | None) -> None:
    """See the tracker at work on a synthetic log, against exact counts.

    Generates a realistic log (USERS users over DAYS days: a few daily users and many
    occasional ones, quieter weekends, app and web users, anonymous web sessions that log in
    and so change id, anonymous visitors), ingests it into a fresh temporary embedded Redis
    (--url and --prefix do not apply; nothing of yours is touched), collapses it with the
    aggregate bucket users = web + app, and prints each estimate next to the exact count with
    the relative error, then the memory the sketches take against exact sets of ids.
    """
    try:
        first_day = datetime.date.fromisoformat(start)
    except ValueError:
        raise click.BadParameter(f"{start!r} is not a date", param_hint="--start") from None
    console = Console(highlight=False, width=None if Console().is_terminal else 110)
    err = Console(stderr=True, highlight=False)
    end_day = first_day + datetime.timedelta(days=days)
    with tempfile.TemporaryDirectory(prefix="activity-tracker-demo-") as directory:
        store = Path(directory) / "demo.db"
        log = Path(directory) / "events.csv"
        exact = ExactCounts(DEMO_PERIODS)
        events = 0
        with log.open("w", encoding="utf-8") as out:
            for event in synthetic_events(users, days, first_day, seed):
                exact.apply(event)
                out.write(format_csv_line(event) + "\n")
                events += 1
        err.print(f"generated {events:,} events for {users:,} users over {days} days", markup=False)
        client = embedded_client(store)
        try:
            tracker = ActivityTracker(periods=list(DEMO_PERIODS), client=client, prefix=DEMO_PREFIX)
            began = time.perf_counter()
            summary = _ingest.ingest(tracker, [str(log)])
            ingest_seconds = time.perf_counter() - began
            err.print(
                f"ingested into a temporary embedded Redis in {ingest_seconds:.1f}s "
                f"({summary.events / max(ingest_seconds, 1e-9):,.0f} events/s)",
                markup=False,
            )
            tracker.collapse(aggregate_buckets=AGGREGATES, date=end_day, max_periods=days)
            buckets: list[Bucket] = [*BUCKETS, *AGGREGATES]
            estimates: dict[tuple[Period, Bucket], Estimate] = {}
            for kind in DEMO_PERIODS:
                for period_start, counts in tracker.lookup(
                    period=kind, start=first_day, end=end_day, buckets=buckets, with_error=True
                ):
                    for bucket, estimate in counts.items():
                        estimates[(Period(kind, period_start), bucket)] = estimate
            _print_comparison(console, exact, estimates, buckets)
            usage = _memory(client, KeySchema(DEMO_PREFIX))
            exact_pairs = [
                (period, bucket) for (period, bucket) in estimates if isinstance(bucket, str)
            ]
            exact_bytes = _exact_memory(client, exact, exact_pairs)
            _print_memory(console, usage, exact_bytes, len(exact_pairs))
            if plot:
                from .plot import plot_counts

                daily = sorted(
                    (period.start, bucket, estimate)
                    for (period, bucket), estimate in estimates.items()
                    if period.kind == _periods.DAILY
                )
                series: dict[Bucket, list[tuple[datetime.date, float, float]]] = {}
                truth: dict[Bucket, list[tuple[datetime.date, float, float]]] = {}
                for day, bucket, estimate in daily:
                    series.setdefault(bucket, []).append(
                        (day, float(estimate.count), estimate.stderr)
                    )
                    true = exact.count(Period(_periods.DAILY, day), bucket)
                    truth.setdefault(bucket, []).append((day, float(true), 0.0))
                plot_counts(
                    plot, series, exact=truth, title="demo: daily active ids, estimate vs exact"
                )
                err.print(f"wrote {plot}", markup=False)
            tracker.close()
        finally:
            client.close()
            release(store)


def _print_comparison(
    console: Console,
    exact: ExactCounts,
    estimates: dict[tuple[Period, Bucket], Estimate],
    buckets: list[Bucket],
) -> None:
    daily = sorted({p for p, _ in estimates if p.kind == _periods.DAILY})
    shown = [
        *daily[-3:],
        *sorted({p for p, _ in estimates if p.kind != _periods.DAILY}, key=_period_order),
    ]
    table = Table(title="Estimated vs exact distinct ids")
    for name, justify in (
        ("period", "left"),
        ("bucket", "left"),
        ("exact", "right"),
        ("estimate", "right"),
        ("error", "right"),
        ("±2σ", "right"),
    ):
        table.add_column(name, justify=justify, no_wrap=True)  # type: ignore[arg-type]
    for period in shown:
        for index, bucket in enumerate(buckets):
            true = exact.count(period, bucket)
            estimate = estimates.get((period, bucket), Estimate(0, 0.0))
            table.add_row(
                f"{period.kind} {period.start}" if index == 0 else "",
                bucket_label(bucket),
                f"{true:,}",
                f"{estimate.count:,}",
                _relative(estimate.count, true),
                f"±{error_bound(estimate):,}",
                end_section=index == len(buckets) - 1,
            )
    console.print(table)
    console.print(
        f"±2σ = {SIGMAS} standard errors of the sketch each count was read from (0.81% of "
        "what it holds, sessions that logged in included): about 95% of estimates fall that "
        "close to the exact count. users = web ∪ app (an aggregate).",
        soft_wrap=True,
    )
    errors = [
        (estimate.count - exact.count(period, bucket)) / max(exact.count(period, bucket), 1)
        for (period, bucket), estimate in estimates.items()
    ]
    within = sum(
        abs(estimate.count - exact.count(period, bucket)) <= SIGMAS * estimate.stderr
        for (period, bucket), estimate in estimates.items()
    )
    console.print(
        f"All {len(errors)} counts ({len(daily)} days, weeks and months x {len(buckets)} "
        f"buckets): mean |error| {sum(map(abs, errors)) / len(errors):.2%}, "
        f"max {max(map(abs, errors)):.2%}, {within} within ±2σ."
    )


def _print_memory(
    console: Console, usage: dict[str, tuple[int, int]], exact_bytes: int, counts: int
) -> None:
    table = Table(title="Memory (Redis MEMORY USAGE)")
    table.add_column("what", no_wrap=True)
    table.add_column("keys", justify="right")
    table.add_column("memory", justify="right")
    described = {
        "sketches": "HyperLogLog sketches (at most ~14 KiB each)",
        "corrections": "id-change records and registries",
        "counts": "collapsed counts",
    }
    total = 0
    for kind, label in described.items():
        size, keys = usage.get(kind, (0, 0))
        total += size
        table.add_row(label, f"{keys:,}", _bytes(size))
    table.add_row("the tracker, in all", "", _bytes(total), end_section=True)
    table.add_row(f"exact sets of the ids of the same {counts} counts", "", _bytes(exact_bytes))
    console.print(table)
    console.print(
        "Sketches stay the same size however many users; exact sets grow with them. The "
        "id-change records grow with the number of id changes (11 to 16 bytes each at 10^4 "
        "to 10^6 changes a day; here a third of web visits log in).",
        soft_wrap=True,
    )


def _period_order(period: Period) -> tuple[int, datetime.date]:
    return (_periods.KINDS.index(period.kind), period.start)


def _relative(estimate: int, true: int) -> str:
    if true == 0:
        return "exact" if estimate == 0 else "n/a"
    value = (estimate - true) / true
    return "0.00%" if estimate == true else f"{value:+.2%}"


__all__ = ["ExactCounts", "demo", "synthetic_events"]

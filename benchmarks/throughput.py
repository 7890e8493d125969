"""Throughput: this library against the round-trip floor, the original library and the best
hand-written redis-py code, and collapse / lookup time.

The workload of issue 12: 200,000 events of 50,000 zipf-weighted uuid-like ids over four
buckets and three days, 1% of events starting an anonymous session and 1% logging one in (an
id change), periods daily + monthly. Writers, each into its own keys:

(floor) a bare ``EVALSHA`` of a script returning 0 through redis-py, one per event: the cost of
    one round trip, below which no per-event writer can go;
(a) the original activity-tracker on its own two periods, reproduced faithfully: per period a
    backend call that formats the period's name and builds the key, then one ``SADD`` round
    trip (a ``MULTI``/``SADD``/``SREM``/``EXEC`` pipeline for an id change);
(b) the best hand-written per-event code: key names cached per (day, bucket), one pipeline of
    two ``PFADD`` per event;
(c) the best hand-written batch: ids de-duplicated locally into a set per (day, bucket), key
    names cached, each monthly key given the union of its days' sets, one pipeline of
    multi-element ``PFADD``, per chunk of 10,000 events;
(d) this library's ``track()``, one call per event;
(e) this library's ``track_many()``, on the same 10,000-event chunks as (c);
and the asyncio twins of (floor), (b) and (d) through ``redis.asyncio`` (each block one
``run_until_complete`` of one event loop).

(b) and (c) cannot record an id change (a HyperLogLog cannot forget): they only add the new
id, doing less than (a), (d) and (e). Writers take turns on the same blocks of events (100
events for the per-event writers, 10,000 for the batch ones) in an order that rotates, so
that the machine's noise hits all alike; each ratio is taken within one repetition (every
writer's time over the same stretch) and the tables give medians over repetitions. The full
run sends every event through every writer; ``--quick`` sends 40 blocks of 100 events spread
evenly over the workload through the per-event writers (and every event through the batch
ones), which keeps the mix of days, buckets and id changes, so its ratios estimate the same
quantities. Server time per event is read from ``INFO commandstats`` around each block.
"""

from __future__ import annotations

import asyncio
import datetime
import random
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import redis
import redis.asyncio

import _common
from _common import Event, fmt, median, table
from activity_tracker import ActivityTracker, AsyncActivityTracker, BufferedTracker

PERIODS = ("daily", "monthly")
EVENTS, USERS = 200_000, 50_000
BLOCK, CHUNK = 100, 10_000
QUICK_BLOCKS = 40
PER_EVENT = ("floor", "a", "b", "d", "floor-async", "b-async", "d-async")
BATCH = ("c", "e")

WRITERS = {
    "floor": "(floor) bare EVALSHA of `return 0`, one per event",
    "a": "(a) original library: SADD round trip per period per event",
    "b": "(b) hand-written: pipeline of 2 PFADD per event, cached key names",
    "d": "(d) activity-tracker track() per event",
    "c": "(c) hand-written batch: local de-dup, cached key names, multi-element PFADD",
    "e": "(e) activity-tracker track_many()",
    "floor-async": "(floor) asyncio: bare EVALSHA of `return 0`, one per event",
    "b-async": "(b) asyncio: pipeline of 2 PFADD per event, cached key names",
    "d-async": "(d) asyncio: AsyncActivityTracker track() per event",
}
SCRIPT_COMMANDS = ("evalsha", "eval", "evalsha_ro", "eval_ro", "fcall", "fcall_ro")
# Per writer: the top-level commands whose server time is the writer's (commands run inside
# a script are counted again under their own names, so only the outer ones are summed).
SERVER_COMMANDS = {
    "floor": SCRIPT_COMMANDS,
    "a": ("sadd", "srem"),
    "b": ("pfadd",),
    "d": SCRIPT_COMMANDS,
    "c": ("pfadd",),
    "e": SCRIPT_COMMANDS,
    "floor-async": SCRIPT_COMMANDS,
    "b-async": ("pfadd",),
    "d-async": SCRIPT_COMMANDS,
}


class Goal(NamedTuple):
    """One row of issue 12's table: ``mine`` / ``baseline`` events per second >= ``target``."""

    label: str
    mine: str
    baseline: str
    target: float


GOALS = (
    Goal("track() vs (floor) bare EVALSHA per event", "d", "floor", 0.95),
    Goal("track() vs (b) hand-written pipeline of 2 PFADD", "d", "b", 1.0),
    Goal("track() vs (a) original library, its 2 periods", "d", "a", 2.0),
    Goal("track_many() vs (c) hand-written batch", "e", "c", 1.0),
    Goal("asyncio track() vs asyncio (floor)", "d-async", "floor-async", 0.95),
    Goal("asyncio track() vs asyncio (b)", "d-async", "b-async", 1.0),
)
BUFFERED_TARGET_US = 2.0


class OriginalBackend:
    """The original library's Redis backend, as it stores data: a set per period and bucket,
    named ``active:<period>:raw:<bucket>`` (here under a prefix), one round trip per call."""

    def __init__(self, client: redis.Redis, prefix: str) -> None:
        self.client = client
        self.prefix = prefix
        self.period_formats = {"daily": "daily-{0:%Y%m%d}", "monthly": "monthly-{0:%Y%m}"}

    def key(self, *pieces: str | None) -> str:
        return ":".join(piece for piece in (self.prefix, *pieces) if piece)

    def track(
        self,
        period: str,
        id: str | None = None,
        bucket: str | None = None,
        old_id: str | None = None,
        old_bucket: str | None = None,
        date: datetime.date | None = None,
    ) -> None:
        date = date or datetime.date.today()
        name = self.period_formats[period].format(date)
        add_key = self.key("active", name, "raw", bucket)
        old_key = self.key("active", name, "raw", old_bucket)
        if id is not None and old_id is not None:
            with self.client.pipeline() as pipe:
                pipe.sadd(add_key, str(id))
                pipe.srem(old_key, str(old_id))
                pipe.execute()
        elif id is not None:
            self.client.sadd(add_key, str(id))
        elif old_id is not None:
            self.client.srem(old_key, str(old_id))


class OriginalTracker:
    """The original ``ActivityTracker.track``: one backend call per period."""

    def __init__(self, backend: OriginalBackend, periods: Sequence[str]) -> None:
        self.backend = backend
        self.periods = periods

    def track(self, periods: Sequence[str] | None = None, **kwargs: Any) -> None:
        for period in periods or self.periods:
            self.backend.track(period, **kwargs)


class KeyNames:
    """Hand-written code's key names: the daily and monthly HLL of a (day, bucket), built once."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.cache: dict[tuple[datetime.date, str], tuple[str, str]] = {}

    def __call__(self, day: datetime.date, bucket: str) -> tuple[str, str]:
        found = self.cache.get((day, bucket))
        if found is None:
            found = self.cache[day, bucket] = (
                f"{self.prefix}:{day:%Y%m%d}:{bucket}",
                f"{self.prefix}:{day:%Y%m}:{bucket}",
            )
        return found


Writer = Callable[[Sequence[Event]], None]


def floor_writer(client: redis.Redis) -> Writer:
    sha = client.script_load("return 0")
    evalsha = client.evalsha

    def write(events: Sequence[Event]) -> None:
        for _ in events:
            evalsha(sha, 0)

    return write


def original_writer(client: redis.Redis, prefix: str) -> Writer:
    track = OriginalTracker(OriginalBackend(client, prefix), PERIODS).track

    def write(events: Sequence[Event]) -> None:
        for id, bucket, old_id, old_bucket, day in events:
            track(id=id, bucket=bucket, old_id=old_id, old_bucket=old_bucket, date=day)

    return write


def pipeline_writer(client: redis.Redis, prefix: str) -> Writer:
    names = KeyNames(prefix)

    def write(events: Sequence[Event]) -> None:
        for id, bucket, _, _, day in events:
            daily, monthly = names(day, bucket)
            pipe = client.pipeline(transaction=False)
            pipe.pfadd(daily, id)
            pipe.pfadd(monthly, id)
            pipe.execute()

    return write


def batch_writer(client: redis.Redis, prefix: str) -> Writer:
    names = KeyNames(prefix)

    def write(events: Sequence[Event]) -> None:
        days: defaultdict[tuple[datetime.date, str], set[str]] = defaultdict(set)
        for id, bucket, _, _, day in events:
            days[day, bucket].add(id)
        months: defaultdict[str, set[str]] = defaultdict(set)
        pipe = client.pipeline(transaction=False)
        for (day, bucket), ids in days.items():
            daily, monthly = names(day, bucket)
            pipe.pfadd(daily, *ids)
            months[monthly] |= ids
        for monthly, ids in months.items():
            pipe.pfadd(monthly, *ids)
        pipe.execute()

    return write


def track_writer(tracker: ActivityTracker) -> Writer:
    track = tracker.track

    def write(events: Sequence[Event]) -> None:
        for id, bucket, old_id, old_bucket, day in events:
            track(id=id, bucket=bucket, old_id=old_id, old_bucket=old_bucket, date=day)

    return write


def async_writers(
    loop: asyncio.AbstractEventLoop, client: redis.asyncio.Redis, prefixes: dict[str, str]
) -> tuple[dict[str, Writer], AsyncActivityTracker]:
    """The asyncio writers (floor), (b) and (d), each block run to completion on ``loop``;
    and the tracker of (d), to close."""
    sha = loop.run_until_complete(client.script_load("return 0"))
    names = KeyNames(prefixes["b-async"])
    tracker = AsyncActivityTracker(periods=PERIODS, client=client, prefix=prefixes["d-async"])

    async def floor(events: Sequence[Event]) -> None:
        for _ in events:
            await client.evalsha(sha, 0)

    async def pipeline(events: Sequence[Event]) -> None:
        for id, bucket, _, _, day in events:
            daily, monthly = names(day, bucket)
            pipe = client.pipeline(transaction=False)
            pipe.pfadd(daily, id)
            pipe.pfadd(monthly, id)
            await pipe.execute()

    async def track(events: Sequence[Event]) -> None:
        for id, bucket, old_id, old_bucket, day in events:
            await tracker.track(
                id=id, bucket=bucket, old_id=old_id, old_bucket=old_bucket, date=day
            )

    def on_loop(write: Callable[[Sequence[Event]], Any]) -> Writer:
        return lambda events: loop.run_until_complete(write(events))

    writers = {
        "floor-async": on_loop(floor),
        "b-async": on_loop(pipeline),
        "d-async": on_loop(track),
    }
    return writers, tracker


def track_many_writer(tracker: ActivityTracker) -> Writer:
    def write(events: Sequence[Event]) -> None:
        tracker.track_many(events)

    return write


def server_usec(client: redis.Redis) -> dict[str, int]:
    stats = client.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(stat["usec"]) for name, stat in stats.items()}


class Speeds(NamedTuple):
    """Per writer and repetition: events per second, and server microseconds per event."""

    events_per_s: dict[str, list[float]]
    server_us: dict[str, list[float]]


def blocks(events: Sequence[Event], size: int, count: int | None) -> list[Sequence[Event]]:
    """``events`` in blocks of ``size``; with ``count``, that many blocks spread evenly."""
    starts = range(0, len(events), size)
    if count is not None and count < len(starts):
        starts = range(0, count * (len(events) // count), len(events) // count)
    return [events[start : start + size] for start in starts]


def measure(
    url: str, per_event: list[Sequence[Event]], chunks: list[Sequence[Event]], reps: int
) -> Speeds:
    """Each repetition writes into fresh keys: the per-event writers take turns on each block
    of ``per_event``, then the batch writers on each of ``chunks``, the order rotating from
    block to block, so a slow patch of the machine hits every writer alike."""
    client = redis.Redis.from_url(url)
    loop = asyncio.new_event_loop()
    async_client = redis.asyncio.Redis.from_url(url)
    speeds = Speeds({key: [] for key in WRITERS}, {key: [] for key in WRITERS})

    def repetition(rep: int, warm: bool) -> None:
        prefixes = {key: _common.unique_prefix(f"tp-{key}") for key in WRITERS}
        trackers = {
            key: ActivityTracker(periods=PERIODS, client=client, prefix=prefixes[key])
            for key in "de"
        }
        write: dict[str, Writer] = {
            "floor": floor_writer(client),
            "a": original_writer(client, prefixes["a"]),
            "b": pipeline_writer(client, prefixes["b"]),
            "d": track_writer(trackers["d"]),
            "c": batch_writer(client, prefixes["c"]),
            "e": track_many_writer(trackers["e"]),
        }
        asyncio_writers, async_tracker = async_writers(loop, async_client, prefixes)
        write.update(asyncio_writers)
        spent = dict.fromkeys(WRITERS, 0.0)
        server = dict.fromkeys(WRITERS, 0)
        sent = dict.fromkeys(WRITERS, 0)
        for group, work in ((PER_EVENT, per_event), (BATCH, chunks)):
            for turn, block in enumerate(work[:1] if warm else work):
                shift = (rep + turn) % len(group)
                for key in group[shift:] + group[:shift]:
                    before = server_usec(client)
                    started = time.perf_counter()
                    write[key](block)
                    spent[key] += time.perf_counter() - started
                    after = server_usec(client)
                    server[key] += sum(
                        after.get(c, 0) - before.get(c, 0) for c in SERVER_COMMANDS[key]
                    )
                    sent[key] += len(block)
        if not warm:
            for key in WRITERS:
                speeds.events_per_s[key].append(sent[key] / spent[key])
                speeds.server_us[key].append(server[key] / sent[key])
        loop.run_until_complete(async_tracker.close())
        for prefix in prefixes.values():
            _common.delete_prefix(client, prefix)

    try:
        repetition(0, warm=True)  # connections made, scripts loaded
        for rep in range(reps):
            repetition(rep, warm=False)
    finally:
        client.close()
        loop.run_until_complete(async_client.aclose())
        loop.close()
    return speeds


class BufferedCost(NamedTuple):
    """Per repetition, per ``BufferedTracker.track()`` call in a loop: microseconds of CPU of
    the calling thread, microseconds of the loop's wall clock, and the events dropped."""

    caller_us: float
    wall_us: float
    dropped: int


def buffered_cost(url: str, events: Sequence[Event], reps: int) -> list[BufferedCost]:
    """What ``BufferedTracker.track()`` costs the thread calling it, its background thread
    sending meanwhile with room for every event (none dropped). The wall clock of the loop
    also holds the sending thread's share of the interpreter (one thread runs Python at a
    time): the caller's own cost is the CPU time of its thread."""
    client = redis.Redis.from_url(url)
    costs = []
    try:
        for _ in range(reps):
            prefix = _common.unique_prefix("tp-buffered")
            tracker = ActivityTracker(periods=PERIODS, client=client, prefix=prefix)
            buffered = BufferedTracker(tracker, max_pending=len(events))
            track = buffered.track
            started, cpu = time.perf_counter(), time.thread_time()
            for id, bucket, old_id, old_bucket, day in events:
                track(id=id, bucket=bucket, old_id=old_id, old_bucket=old_bucket, date=day)
            cpu, wall = time.thread_time() - cpu, time.perf_counter() - started
            n = len(events)
            costs.append(BufferedCost(cpu / n * 1e6, wall / n * 1e6, buffered.dropped))
            buffered.close()
            _common.delete_prefix(client, prefix)
    finally:
        client.close()
    return costs


def collapse_and_lookup(url: str, seed: int, reps: int) -> list[tuple[str, float]]:
    """Median seconds of: a collapse of 100 buckets + 10 aggregates (1,000 ids per bucket),
    and a lookup of 365 days x 10 buckets."""
    client = redis.Redis.from_url(url)
    prefix = _common.unique_prefix("collapse")
    tracker = ActivityTracker(client=client, prefix=prefix)
    day = _common.FIRST_DAY
    try:
        ids = _common.uuid_ids(random.Random(seed), 1_000)
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


def ratios(speeds: Speeds) -> list[list[float]]:
    """Per goal, the ratio of each repetition."""
    rates = speeds.events_per_s
    return [
        [mine / base for mine, base in zip(rates[g.mine], rates[g.baseline], strict=True)]
        for g in GOALS
    ]


def plot(speeds: Speeds, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, panels = plt.subplots(1, 2, figsize=(11, 3.8), width_ratios=(3, 2))
    colors = {"floor": "#bbbbbb", "a": "#999999", "b": "#2171b5", "c": "#2171b5"}
    colors |= {"floor-async": colors["floor"], "b-async": colors["b"]}
    for axes, group, title in (
        (panels[0], PER_EVENT, "per event"),
        (panels[1], BATCH, "batch"),
    ):
        values = [median(speeds.events_per_s[key]) for key in group]
        bars = axes.barh(
            range(len(group)), values, color=[colors.get(key, "#d94801") for key in group]
        )
        axes.set_yticks(range(len(group)), [f"({key})" for key in group])
        axes.invert_yaxis()
        axes.set_xlabel("events per second (median)")
        axes.set_title(f"{title}, periods daily + monthly")
        for bar, value in zip(bars, values, strict=True):
            axes.text(value, bar.get_y() + bar.get_height() / 2, f" {value:,.0f}", va="center")
        axes.set_xlim(0, max(values) * 1.3)
    figure.suptitle("Ingest throughput, 200,000-event zipf workload (writers as in throughput.md)")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def met(value: float, target: float) -> str:
    return "yes" if value >= target else "NO"


def main(argv: Sequence[str] | None = None, command: str | None = None) -> list[list[str]]:
    """Run, print and save the report; return its headline rows for ``run.py``."""
    args = _common.arguments(__doc__.splitlines()[0], argv)
    reps = 5 if args.quick else 3
    events = _common.workload(EVENTS, USERS, args.seed)
    per_event = blocks(events, BLOCK, QUICK_BLOCKS if args.quick else None)
    chunks = blocks(events, CHUNK, None)
    buffered_events = events[: 50_000 if args.quick else EVENTS]
    with _common.redis_url(args.url) as url:
        speeds = measure(url, per_event, chunks, reps)
        buffered = buffered_cost(url, buffered_events, reps)
        timings = collapse_and_lookup(url, args.seed, reps)
        per_rep = ratios(speeds)
        medians = [median(r) for r in per_rep]
        per_event_n = sum(len(b) for b in per_event)
        writers = table(
            ["writer", "events", "events/s (median)", "min", "max", "server µs/event"],
            [
                (
                    WRITERS[key],
                    fmt(per_event_n if key in PER_EVENT else len(events)),
                    fmt(median(speeds.events_per_s[key])),
                    fmt(min(speeds.events_per_s[key])),
                    fmt(max(speeds.events_per_s[key])),
                    fmt(median(speeds.server_us[key]), 1),
                )
                for key in WRITERS
            ],
        )
        ratio_table = table(
            ["repetition", *(g.label for g in GOALS)],
            [(rep + 1, *(fmt(r[rep], 2) for r in per_rep)) for rep in range(reps)]
            + [("median", *(fmt(m, 2) for m in medians))]
            + [("target", *(f">= {g.target}" for g in GOALS))]
            + [("met", *(met(m, g.target) for m, g in zip(medians, GOALS, strict=True)))],
        )
        buffered_us = median([cost.caller_us for cost in buffered])
        ops = table(["operation", "median time"], [(n, f"{t * 1000:,.1f} ms") for n, t in timings])
        changes = sum(1 for e in events if e[2] is not None)
        distinct = len({(e[0], e[1], e[4]) for e in events})
        body = (
            f"Workload: {len(events):,} events, {USERS:,} zipf-weighted uuid-like ids, 4 buckets, "
            f"3 days, {changes:,} id changes (seed {args.seed}); {distinct:,} distinct "
            f"(id, bucket, day); periods daily + monthly. Per-event writers: "
            f"{len(per_event)} blocks of {BLOCK} events"
            + (" spread evenly over the workload" if args.quick else "")
            + f"; batch writers: {len(chunks)} chunks of {CHUNK:,}. {reps} interleaved "
            "repetitions. Server µs/event: the writer's top-level commands in `INFO commandstats` "
            "(a script's time includes the commands it runs).\n\n"
            f"{writers}\n\nRatios within each repetition:\n\n{ratio_table}\n\n"
            f"`BufferedTracker.track()` costs its caller {buffered_us:.2f} µs per call: CPU of "
            f"the calling thread, median of {reps} loops of {len(buffered_events):,} events "
            f"({', '.join(f'{c.caller_us:.2f}' for c in buffered)}), the background thread "
            "sending meanwhile with room for every event (dropped: "
            f"{', '.join(str(c.dropped) for c in buffered)}); target <= {BUFFERED_TARGET_US} "
            "µs. Wall clock of those loops per call, which also holds the sending thread's "
            "share of the interpreter: "
            f"{', '.join(f'{c.wall_us:.2f}' for c in buffered)} µs.\n\n"
            "Ingest (issue 12 point 4): [ingest.md](ingest.md).\n\n"
            f"{ops}\n"
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
    rates = speeds.events_per_s
    rows = [
        [
            goal.label,
            f"{ratio:.2f}x ({median(rates[goal.mine]):,.0f} vs "
            f"{median(rates[goal.baseline]):,.0f} events/s)",
            f">= {goal.target}x",
            met(ratio, goal.target),
        ]
        for goal, ratio in zip(GOALS, medians, strict=True)
    ]
    rows.append(
        [
            "BufferedTracker.track() cost to its caller (its thread's CPU)",
            f"{buffered_us:.2f} µs per call (loop wall clock "
            f"{median([cost.wall_us for cost in buffered]):.2f} µs)",
            f"<= {BUFFERED_TARGET_US} µs",
            "yes" if buffered_us <= BUFFERED_TARGET_US else "NO",
        ]
    )
    rows += [[name, f"{seconds * 1000:,.1f} ms", "", ""] for name, seconds in timings]
    return rows


if __name__ == "__main__":
    main()
    sys.exit(0)

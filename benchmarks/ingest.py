"""Ingest: ``activity-tracker ingest`` of a Parquet file and of a CSV file, end to end (reading
the file, checking, grouping, writing), through the columnar path (issue 12 point 4).

1. Parquet: a 2,000,000-event file of the throughput workload's kind (400,000 zipf-weighted
   uuid-like ids, four buckets, three days, 1% of events logging a session in: an id change),
   periods daily + monthly, written with pyarrow's defaults. Each repetition ingests it into
   fresh keys with the ``ingest`` that the command runs (after a first, unmeasured run that
   imports and warms up), and once as the command itself in a new process, startup included.
2. CSV against ``track_many()``: the throughput workload (200,000 events) as the CSV lines
   ``activity-tracker`` writes (``timestamp,id[,bucket][,old_id,old_bucket]``), ingested,
   and ``track_many()`` of the same events in chunks of 10,000 (throughput.py's writer
   (e)), taking turns in each repetition, each into fresh keys; the ratio is taken within
   each repetition.

The machine's other work shows in the spread: the tables give medians, minimums and maximums.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import redis

import _common
import throughput
from _common import fmt, median, table
from activity_tracker import ActivityTracker
from activity_tracker.cli.events import Event, format_csv_line
from activity_tracker.cli.ingestion import ingest

PERIODS = ("daily", "monthly")
PARQUET_EVENTS, PARQUET_USERS = 2_000_000, 400_000
PARQUET_TARGET = 1_000_000  # events per second, end to end
CSV_TARGET = 0.8  # ingest of the CSV / track_many() of its events


def write_parquet(path: Path, seed: int) -> None:
    events = _common.workload(PARQUET_EVENTS, PARQUET_USERS, seed)
    ids, buckets, old_ids, old_buckets, days = zip(*events, strict=True)
    data = {"timestamp": pa.array(days, pa.date32()), "id": ids, "bucket": buckets}
    data |= {"old_id": old_ids, "old_bucket": old_buckets}
    pq.write_table(pa.table(data), path)


def write_csv(path: Path, events: Sequence[_common.Event]) -> None:
    with path.open("w", encoding="utf-8") as file:
        for id, bucket, old_id, old_bucket, day in events:
            file.write(format_csv_line(Event(day, id, bucket, old_id, old_bucket)) + "\n")


def parquet_speed(url: str, path: Path, reps: int) -> tuple[list[float], float]:
    """Events per second of ``ingest`` per repetition, and of the command in a new process."""
    client = redis.Redis.from_url(url)
    speeds = []
    try:
        for rep in range(reps + 1):
            prefix = _common.unique_prefix("ingest-parquet")
            tracker = ActivityTracker(periods=PERIODS, client=client, prefix=prefix)
            started = time.perf_counter()
            summary = ingest(tracker, [str(path)])
            spent = time.perf_counter() - started
            assert summary.events == PARQUET_EVENTS and summary.stopped is None, summary
            if rep:  # the first run imports pyarrow and loads the script
                speeds.append(summary.events / spent)
            _common.delete_prefix(client, prefix)
        prefix = _common.unique_prefix("ingest-command")
        program = str(Path(sys.executable).with_name("activity-tracker"))
        command = [program, "--url", url, "--prefix", prefix, "ingest", str(path)]
        command += ["--period", "daily", "--period", "monthly"]
        started = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        command_speed = PARQUET_EVENTS / (time.perf_counter() - started)
        _common.delete_prefix(client, prefix)
    finally:
        client.close()
    return speeds, command_speed


def csv_against_track_many(
    url: str, path: Path, events: Sequence[_common.Event], reps: int
) -> tuple[list[float], list[float]]:
    """Events per second of ``ingest`` of the CSV and of ``track_many()``, per repetition."""
    client = redis.Redis.from_url(url)
    ingested, batched = [], []
    chunks = throughput.blocks(events, throughput.CHUNK, None)
    try:
        for rep in range(reps + 1):
            spent = {}
            for writer in ("ingest", "track_many") if rep % 2 else ("track_many", "ingest"):
                prefix = _common.unique_prefix(f"ingest-{writer}")
                tracker = ActivityTracker(periods=PERIODS, client=client, prefix=prefix)
                started = time.perf_counter()
                if writer == "ingest":
                    assert ingest(tracker, [str(path)]).events == len(events)
                else:
                    for chunk in chunks:
                        tracker.track_many(chunk)
                spent[writer] = time.perf_counter() - started
                _common.delete_prefix(client, prefix)
            if rep:  # the first repetition warms up
                ingested.append(len(events) / spent["ingest"])
                batched.append(len(events) / spent["track_many"])
    finally:
        client.close()
    return ingested, batched


def main(argv: Sequence[str] | None = None, command: str | None = None) -> list[list[str]]:
    """Run, print and save the report; return its headline rows for ``run.py``."""
    args = _common.arguments(__doc__.splitlines()[0], argv)
    reps = 3 if args.quick else 5
    events = _common.workload(throughput.EVENTS, throughput.USERS, args.seed)
    with tempfile.TemporaryDirectory(prefix="activity-tracker-ingest-") as work:
        parquet, csv = Path(work) / "events.parquet", Path(work) / "events.csv"
        write_parquet(parquet, args.seed)
        write_csv(csv, events)
        with _common.redis_url(args.url) as url:
            speeds, command_speed = parquet_speed(url, parquet, reps)
            ingested, batched = csv_against_track_many(url, csv, events, reps)
            sizes = (parquet.stat().st_size, csv.stat().st_size)
            ratios = [a / b for a, b in zip(ingested, batched, strict=True)]
            parquet_rows = [
                (
                    f"`ingest` of {PARQUET_EVENTS:,} events from Parquet ({sizes[0]:,} bytes)",
                    fmt(median(speeds)),
                    fmt(min(speeds)),
                    fmt(max(speeds)),
                ),
                (
                    "the same, as `activity-tracker ingest` in a new process (1 run)",
                    fmt(command_speed),
                    "",
                    "",
                ),
            ]
            csv_rows = [
                (f"`ingest` of the CSV ({sizes[1]:,} bytes)", *_spread(ingested)),
                ("`track_many()` of its events, chunks of 10,000", *_spread(batched)),
            ]
            body = (
                f"Periods daily + monthly; seed {args.seed}; {reps} measured repetitions "
                "after one that warms up.\n\n"
                + table(["Parquet", "events/s (median)", "min", "max"], parquet_rows)
                + f"\n\nTarget: >= {PARQUET_TARGET:,} events/s end to end.\n\n"
                + table(
                    [f"CSV, {len(events):,} events", "events/s (median)", "min", "max"],
                    csv_rows,
                )
                + "\n\nRatio ingest / track_many() per repetition: "
                + ", ".join(f"{r:.2f}" for r in ratios)
                + f" (median {median(ratios):.2f}; target >= {CSV_TARGET}).\n"
            )
            _common.report(
                "ingest",
                "Ingest",
                command or _common.command_line("ingest.py", argv),
                url,
                body,
                args.out,
                None,
            )
    parquet_speed_median, ratio = median(speeds), median(ratios)
    return [
        [
            f"`activity-tracker ingest` of a {PARQUET_EVENTS:,}-event Parquet file",
            f"{parquet_speed_median:,.0f} events/s",
            f">= {PARQUET_TARGET:,} events/s",
            "yes" if parquet_speed_median >= PARQUET_TARGET else "NO",
        ],
        [
            "`activity-tracker ingest` of the events as CSV vs track_many()",
            f"{ratio:.2f}x ({median(ingested):,.0f} vs {median(batched):,.0f} events/s)",
            f">= {CSV_TARGET}x",
            "yes" if ratio >= CSV_TARGET else "NO",
        ],
    ]


def _spread(values: list[float]) -> tuple[str, str, str]:
    return fmt(median(values)), fmt(min(values)), fmt(max(values))


if __name__ == "__main__":
    main()
    sys.exit(0)

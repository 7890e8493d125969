"""Processes writing and collapsing the same periods at once, on a real Redis (issue 8 point
2, issue 9 point 3): no raw key ever lives without an expiry, and a stored count is never
replaced by one measured earlier."""

from __future__ import annotations

import datetime
import multiprocessing
import time
from collections.abc import Callable
from typing import Any

from activity_tracker import ActivityTracker
from activity_tracker.keys import KeySchema, encode_bucket
from activity_tracker.periods import Period

DAY = datetime.date(2024, 1, 10)
DAYS = [DAY + datetime.timedelta(days=n) for n in range(4)]
AFTER = DAYS[-1] + datetime.timedelta(days=1)
FORK = multiprocessing.get_context("fork")


def start(target: Callable[..., None], *args: Any) -> multiprocessing.process.BaseProcess:
    process = FORK.Process(target=target, args=args, daemon=True)
    process.start()
    return process


def join(processes: list[multiprocessing.process.BaseProcess]) -> None:
    for process in processes:
        process.join(timeout=120)
        assert process.exitcode == 0, process


def create_buckets(url: str, prefix: str, worker: int, operations: int) -> None:
    """Track, move and batch into buckets that did not exist before, over several days."""
    tracker = ActivityTracker(periods=["daily", "weekly"], url=url, prefix=prefix)
    for n in range(operations):
        day, name = DAYS[n % len(DAYS)], f"{worker}-{n}"
        if n % 3 == 0:
            tracker.track(
                id=f"u{name}",
                bucket=f"in{name}",
                old_id=f"s{name}",
                old_bucket=f"out{name}",
                date=day,
            )
        elif n % 3 == 1:
            tracker.track(id=f"u{name}", bucket=f"new{name}", date=day)
        else:
            events = [(f"b{name}-{k}", f"batch{name}", None, None, day) for k in range(5)]
            events.append((f"x{name}", f"new{name}", f"y{name}", f"left{name}", day))
            tracker.track_many(events)
    tracker.close()


def test_no_raw_key_lives_without_an_expiry_while_writers_create_buckets_during_collapses(
    redis_url, prefix, redis_client
):
    writers = [start(create_buckets, redis_url, prefix, worker, 600) for worker in range(2)]
    tracker = ActivityTracker(periods=["daily", "weekly"], url=redis_url, prefix=prefix)
    collapses = 0
    while any(writer.is_alive() for writer in writers):
        tracker.collapse(date=AFTER, max_periods=len(DAYS), aggregate_buckets={"all": ["in0-0"]})
        collapses += 1
    join(writers)
    tracker.close()
    assert collapses >= 3  # collapses ran while buckets were being created

    raw, without_expiry = 0, []
    for key in redis_client.scan_iter(match=f"{prefix}:*", count=1000):
        if key.endswith(b":counts"):
            continue
        raw += 1
        if redis_client.ttl(key) < 0:
            without_expiry.append(key)
    assert raw > 2_000
    assert without_expiry == []


def add_new_ids(url: str, prefix: str, batches: int) -> None:
    tracker = ActivityTracker(url=url, prefix=prefix)
    for batch in range(batches):
        bucket = "a" if batch % 2 else "b"
        tracker.track_many((f"new-{batch}-{n}", bucket, None, None, DAY) for n in range(200))
    tracker.close()


def collapse_until(url: str, prefix: str, done: Any) -> None:
    tracker = ActivityTracker(url=url, prefix=prefix)
    while not done.is_set():
        tracker.collapse(date=DAY + datetime.timedelta(days=1), aggregate_buckets=AGGREGATES)
    tracker.close()


# "ab" has two sources with id changes: its corrections are computed by the client and
# stored with a compare-and-set; "a1" has one: it is stored by the script itself.
AGGREGATES = {"ab": ["a", "b"], "a1": ["a"]}


def test_concurrent_collapses_never_store_a_count_measured_earlier(redis_url, prefix, redis_client):
    tracker = ActivityTracker(url=redis_url, prefix=prefix)
    setup = [(f"s{n}", "a" if n % 2 else "b", None, None, DAY) for n in range(2_000)]
    setup += [(f"u{n}", "auth", f"s{n}", "a" if n % 2 else "b", DAY) for n in range(100)]
    tracker.track_many(setup)
    tracker.close()

    done = FORK.Event()
    writer = start(add_new_ids, redis_url, prefix, 60)
    collapsers = [start(collapse_until, redis_url, prefix, done) for _ in range(3)]
    counts = KeySchema(prefix).counts(Period("daily", DAY))
    fields = [encode_bucket(b) for b in ("a", "b", "ab", "a1")] + ["@measured"]
    seen: list[list[int]] = []
    drops = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (writer.is_alive() or len(seen) < 50):
        values = redis_client.hmget(counts, fields)
        if None in values:
            continue
        current = [int(value.split(b",")[0]) for value in values]
        if seen and any(now < before for now, before in zip(current, seen[-1], strict=True)):
            drops.append((seen[-1], current))
        seen.append(current)
    done.set()
    join([writer, *collapsers])
    assert drops == []
    assert len({values[2] for values in seen}) > 5  # the union grew while it was collapsed

"""What is specific to the memory backend: threads, precision, sketch size, hashing, asyncio.
Its semantics are the contract suite's and the model test's job (both run on it)."""

from __future__ import annotations

import asyncio
import datetime
import math
import os
import subprocess
import sys
import threading
import time

import datasketch
import pytest

from activity_tracker import ActivityTracker, AsyncActivityTracker
from activity_tracker.backends.memory import PRECISION, MemoryBackend, hash64
from activity_tracker.keys import Bucket
from activity_tracker.periods import DAILY, Period

DAY = datetime.date(2024, 1, 10)
NEXT_DAY = DAY + datetime.timedelta(days=1)
ONE_DAY = {"start": DAY, "end": NEXT_DAY}


def counts_on(tracker: ActivityTracker, **collapse: object) -> dict[Bucket, int]:
    tracker.collapse(date=NEXT_DAY, **collapse)
    [(_, counts)] = tracker.lookup_daily(**ONE_DAY)
    return counts


def test_many_threads_tracking_at_once_give_exact_counts():
    tracker = ActivityTracker(backend="memory", periods=[DAILY, "weekly"])
    start = threading.Barrier(8)

    def work(thread: int) -> None:
        start.wait()
        for n in range(200):
            user = f"user-{(n + thread) % 10}"
            tracker.track(id=user, bucket="anon", date=DAY)
            # Each thread logs its own session in: tracked, then moved to "auth".
            tracker.track(id=f"s{thread}-{n % 3}", bucket="anon", date=DAY)
            tracker.track(
                id=thread, bucket="auth", old_id=f"s{thread}-{n % 3}", old_bucket="anon", date=DAY
            )
        tracker.track_many([(f"batch-{thread}", "batch", None, None, DAY)] * 50)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert counts_on(tracker, aggregate_buckets={"all": ["anon", "auth"]}) == {
        "anon": 10,
        "auth": 8,
        "batch": 8,
        "all": 18,
    }


def test_precision_is_redis_p14_within_four_standard_errors():
    tracker = ActivityTracker(backend="memory")
    n = 50_000
    tracker.track_many((f"user-{i}", None, None, None, DAY) for i in range(n))
    count = counts_on(tracker)[None]
    standard_error = 1.04 / math.sqrt(2**PRECISION)  # about 0.81%
    assert abs(count - n) / n <= 4 * standard_error
    # Hashing is deterministic, so this is a fixed result, not a flaky one.
    assert counts_on(tracker)[None] == count


def test_a_sketch_has_16384_registers_whatever_it_holds():
    backend = MemoryBackend()
    tracker = ActivityTracker(backend=backend)
    tracker.track(id=1, bucket="small", date=DAY)
    tracker.track_many((str(i), "big", None, None, DAY) for i in range(20_000))
    sketches = backend._periods[Period(DAILY, DAY)].sketches
    for bucket in ("small", "big"):
        hll = sketches[bucket]
        assert isinstance(hll, datasketch.HyperLogLog)
        assert hll.p == PRECISION == 14
        assert len(hll.reg) == 2**14 == 16384


def test_small_sets_count_exactly():
    tracker = ActivityTracker(backend="memory")
    for n in range(1, 31):
        tracker.track(id=f"user-{n}", bucket=f"b{n}", date=DAY)
        for user in range(1, n):
            tracker.track(id=f"user-{user}", bucket=f"b{n}", date=DAY)
    counts = counts_on(tracker)
    assert counts == {f"b{n}": n for n in range(1, 31)}


def test_ids_hash_the_same_in_every_process():
    ids = ["1", "user-42", "日本", ""]
    script = (
        f"from activity_tracker.backends.memory import hash64; print([hash64(i) for i in {ids!r}])"
    )
    seen = set()
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        result = subprocess.run(
            [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True
        )
        seen.add(result.stdout.strip())
    assert seen == {str([hash64(i) for i in ids])}
    assert all(0 <= hash64(i) < 2**64 for i in ids)


def test_options_other_than_retention_are_refused():
    with pytest.raises(TypeError, match="url"):
        ActivityTracker(backend="memory", url="redis://localhost:6379/0")
    with pytest.raises(ValueError, match="retention=None"):
        ActivityTracker(backend="memory", retention=None)
    with pytest.raises(TypeError, match="retention"):
        ActivityTracker(backend="memory", retention="1d")


def test_raw_data_expires_lazily_after_retention_and_counts_stay():
    backend = MemoryBackend(retention=1)
    tracker = ActivityTracker(backend=backend)
    period = Period(DAILY, DAY)
    tracker.track(id=1, bucket="a", date=DAY)
    tracker.track(id=2, bucket="b", old_id=1, old_bucket="a", date=DAY)
    tracker.collapse(date=NEXT_DAY, aggregate_buckets={"all": ["a", "b"]})
    # The day ended long ago: its data lives `retention` from its first write.
    first_deadline = backend._periods[period].deadline
    assert first_deadline == math.ceil(first_deadline) <= time.time() + 2
    time.sleep(max(0.0, first_deadline - time.time()) + 0.05)
    assert backend._live(period, time.time()) is None
    # A late event starts a new generation of raw data, with a deadline of its own, but the
    # counts are final: a collapse leaves them as they were.
    tracker.track(id=3, bucket="a", date=DAY)
    assert backend._periods[period].deadline > first_deadline
    tracker.collapse(date=NEXT_DAY)
    assert tracker.lookup_daily(**ONE_DAY) == [(DAY, {"a": 0, "all": 1, "b": 1})]


def test_async_tracker_on_memory():
    async def scenario() -> list[tuple[datetime.date, dict[Bucket, int]]]:
        async with AsyncActivityTracker(backend="memory") as tracker:
            await tracker.track(id="s1", bucket="anon", date=DAY)
            await tracker.track(id=1, bucket="auth", old_id="s1", old_bucket="anon", date=DAY)
            await tracker.track_many([(2, "auth", None, None, DAY)])
            await tracker.collapse(date=NEXT_DAY, aggregate_buckets={"all": ["anon", "auth"]})
            return await tracker.lookup_daily(**ONE_DAY)

    assert asyncio.run(scenario()) == [(DAY, {"all": 2, "anon": 0, "auth": 2})]


@pytest.mark.parametrize("tracker_class", [ActivityTracker, AsyncActivityTracker])
def test_without_the_memory_extra_the_error_names_it(monkeypatch, tracker_class):
    monkeypatch.setitem(sys.modules, "datasketch", None)  # import datasketch now fails
    monkeypatch.delitem(sys.modules, "activity_tracker.backends.memory")
    with pytest.raises(ModuleNotFoundError) as caught:
        tracker_class(backend="memory")
    assert caught.value.name == "datasketch"
    assert str(caught.value) == (
        "the memory backend needs datasketch, which is not installed: "
        "pip install 'activity-tracker[memory]'"
    )


def test_the_library_and_its_command_line_import_without_datasketch():
    # The light install (no extra) has no datasketch, hence no numpy or scipy.
    code = (
        "import sys\n"
        "import activity_tracker, activity_tracker.cli, activity_tracker.backends.redis\n"
        "import activity_tracker.integrations.asgi, activity_tracker.buffer\n"
        "print(sorted({'datasketch', 'numpy', 'scipy'} & set(sys.modules)))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout == "[]\n", result.stderr

"""The columnar path: ``track_columns()`` and ``ingest`` of Parquet and CSV files give exactly
what ``track_many()`` (or ``track()`` one by one) of the same events gives, id changes
included, on real Redis: the same change records, counters and sketches, not only counts."""

from __future__ import annotations

import datetime
import zoneinfo
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from activity_tracker import ActivityTracker
from activity_tracker.cli import ingestion
from activity_tracker.cli.events import Event, format_csv_line
from activity_tracker.columnar import track_columns
from test_batch_model import events as model_events
from test_batch_model import one_by_one, state
from test_model import DAYS, Model

DAY = datetime.date(2024, 1, 10)
NEXT_DAY = DAY + datetime.timedelta(days=1)


def columns_of(ops: list[tuple]) -> dict[str, list[object]]:
    """The model test's operations as columns (ids as text, as track() compares them)."""
    found: dict[str, list[object]] = {
        name: [] for name in ("ids", "buckets", "old_ids", "old_buckets", "dates")
    }
    for op in ops:
        if op[0] == "flush":
            continue
        if op[0] == "track":
            _, id, bucket, day = op
            row = (str(id), bucket, None, None, day)
        elif op[0] == "move":
            _, id, bucket, old_id, old_bucket, day = op
            row = (str(id), bucket, str(old_id), old_bucket, day)
        else:
            _, old_id, old_bucket, day = op
            row = (None, None, str(old_id), old_bucket, day)
        for name, value in zip(found, row, strict=True):
            found[name].append(value)
    return found


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(before=model_events, ops=model_events, chunk_size=st.integers(min_value=1, max_value=40))
def test_columns_leave_redis_as_track_one_by_one_does(
    redis_url, prefix, redis_client, before, ops, chunk_size
):
    run = f"{prefix}:{redis_client.incr(f'{prefix}:runs')}"
    one = ActivityTracker(periods=["daily", "weekly"], url=redis_url, prefix=f"{run}:one")
    many = ActivityTracker(periods=["daily", "weekly"], url=redis_url, prefix=f"{run}:many")
    try:
        one_by_one(one, Model(), before)
        one_by_one(many, Model(), before)
        one_by_one(one, Model(), ops)
        columns = columns_of(ops)
        if columns["dates"]:
            assert track_columns(many, **columns, chunk_size=chunk_size) == len(columns["dates"])
        assert state(redis_client, f"{run}:many") == state(redis_client, f"{run}:one")
    finally:
        one.close()
        many.close()


def login_workload(events: int, users: int) -> list[tuple]:
    """Zipf-like activity with 5% of events logging a session in, and some of those
    sessions tracked again after their move (so batches meet ids with records)."""
    rng = np.random.default_rng(7)
    people = [f"user-{n}" for n in range(users)]
    weights = 1.0 / np.arange(1, users + 1)
    picks = rng.choice(users, size=events, p=weights / weights.sum())
    log: list[tuple] = []
    sessions: list[str] = []
    for n, pick in enumerate(picks):
        day = DAYS[n * len(DAYS) // events]
        draw = rng.random()
        if draw < 0.05:
            sessions.append(f"session-{n}")
            log.append((sessions[-1], "anon", None, None, day))
        elif draw < 0.10 and sessions:
            log.append((people[pick], "auth", sessions.pop(0), "anon", day))
        elif draw < 0.11 and n > 100:
            log.append((f"session-{int(rng.integers(n))}", "anon", None, None, day))
        else:
            log.append((people[pick], ("web", "app", None)[n % 3], None, None, day))
    return log


def test_a_workload_with_logins_leaves_redis_as_track_many_does(redis_client, prefix):
    log = login_workload(20_000, 3_000)
    batch = ActivityTracker(periods=["daily", "monthly"], client=redis_client, prefix=f"{prefix}:b")
    columns = ActivityTracker(
        periods=["daily", "monthly"], client=redis_client, prefix=f"{prefix}:c"
    )
    batch.track_many(log)
    ids, buckets, old_ids, old_buckets, dates = (list(column) for column in zip(*log, strict=True))
    table = pa.table({"id": ids, "bucket": buckets, "old_id": old_ids, "old_bucket": old_buckets})
    assert track_columns(
        columns,
        ids=table["id"],  # a ChunkedArray
        buckets=np.array(buckets, dtype=object),
        old_ids=table["old_id"].combine_chunks(),
        old_buckets=old_buckets,
        dates=pa.array(dates, pa.date32()),
        chunk_size=3_000,
    ) == len(log)
    assert state(redis_client, f"{prefix}:c") == state(redis_client, f"{prefix}:b")


def counts(tracker: ActivityTracker, day: datetime.date = DAY) -> dict[object, int]:
    tracker.collapse(date=day + datetime.timedelta(days=1))
    [(_, found)] = tracker.lookup_daily(start=day, end=day + datetime.timedelta(days=1))
    return found


def test_ids_buckets_and_dates_come_in_many_forms(make_tracker):
    tracker = make_tracker(timezone="Europe/Paris")
    utc = datetime.timezone.utc
    # 23:30 UTC on the 9th is the 10th in Paris; naive times are taken as local already.
    aware = pa.array([datetime.datetime(2024, 1, 9, 23, 30, tzinfo=utc)] * 2)
    track_columns(tracker, ids=np.array([1, 2]), dates=aware, buckets="web")
    track_columns(tracker, ids=["3"], dates=[datetime.datetime(2024, 1, 10, 23, 30)])
    epoch = datetime.datetime(2024, 1, 10, 12, tzinfo=utc).timestamp()
    track_columns(tracker, ids=["4", "5"], dates=[int(epoch), int(epoch * 1000)], buckets="web")
    texts = ["2024-01-10", "2024-01-10T01:00:00+02:00", "2024-01-09T23:30:00Z"]
    track_columns(tracker, ids=["6", "7", "8"], dates=texts)
    track_columns(tracker, ids=pa.array(["1", "9"]).dictionary_encode(), dates=DAY, buckets="web")
    assert counts(tracker) == {None: 4, "web": 5}


def test_bad_columns_name_the_argument_and_row_and_write_nothing(make_tracker):
    tracker = make_tracker()
    with pytest.raises(TypeError, match="needs ids, old_ids or both"):
        track_columns(tracker, dates=[DAY])
    with pytest.raises(ValueError, match="buckets has 1 values"):
        track_columns(tracker, ids=["a", "b"], buckets=["web"], dates=DAY)
    with pytest.raises(ValueError, match=r"ids\[1\]: track\(\) needs id, old_id or both"):
        track_columns(tracker, ids=["a", None], old_ids=[None, None], dates=DAY)
    with pytest.raises(TypeError, match="buckets must be a bucket name, None or an array"):
        track_columns(tracker, ids=["a"], buckets=5, dates=DAY)
    with pytest.raises(TypeError, match="ids must hold text or whole numbers"):
        track_columns(tracker, ids=[1.5], dates=DAY)
    with pytest.raises(ValueError, match=r"dates\[1\]: a date is needed"):
        track_columns(tracker, ids=["a", "b"], dates=[DAY, None])
    with pytest.raises(ValueError, match=r"dates\[1\]: timestamp: 'soon'"):
        track_columns(tracker, ids=["a", "b"], dates=["2024-01-10", "soon"])
    with pytest.raises(ValueError, match="chunk_size"):
        track_columns(tracker, ids=["a"], dates=DAY, chunk_size=0)
    assert counts(tracker) == {}


def write_csv(path: Path, log: list[tuple], header: bool = True) -> str:
    lines = ["timestamp,id,bucket,old_id,old_bucket"] if header else []
    lines += [format_csv_line(Event(e[4], e[0], e[1], e[2], e[3])) for e in log]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


@pytest.mark.redis_only
def test_ingest_of_a_large_csv_leaves_redis_as_track_many_does(
    make_tracker, redis_client, prefix, tmp_path
):
    log = login_workload(20_000, 2_000)  # ~700 KB: read in blocks of columns after the first
    by_columns = make_tracker(prefix=f"{prefix}:csv", periods=["daily", "monthly"])
    by_events = make_tracker(prefix=f"{prefix}:events", periods=["daily", "monthly"])
    summary = ingestion.ingest(by_columns, [write_csv(tmp_path / "log.csv", log)])
    by_events.track_many(log)
    assert summary.events == len(log) and summary.stopped is None
    assert state(redis_client, f"{prefix}:csv") == state(redis_client, f"{prefix}:events")


def test_a_bad_line_in_a_block_of_columns_stops_ingest_at_that_line(make_tracker, tmp_path):
    tracker = make_tracker()
    log = [(f"user-{n}", "web", None, None, DAY) for n in range(30_000)]
    path = Path(write_csv(tmp_path / "log.csv", log))
    lines = path.read_text().splitlines()
    lines[25_001] = "2024-01-10"  # line 25,002: no id
    lines.insert(20_000, "# a comment, then a blank line")
    lines.insert(20_001, "")
    path.write_text("\n".join(lines) + "\n")
    summary = ingestion.ingest(tracker, [str(path)], batch_size=1_000)
    assert summary.stopped is not None
    assert (summary.stopped.line_number, summary.stopped.reason) == (25_004, "no id and no old_id")
    # Written: every line before the batch holding it (its block goes line by line, in
    # batches of 1,000 events); not counted: the header, the comment and the blank line.
    resume = summary.stopped.resume_line
    assert 25_004 - 1_000 < resume <= 25_004 and summary.events == resume - 4
    reference = make_tracker()
    reference.track_many(log[: summary.events])
    assert counts(tracker) == counts(reference)
    summary = ingestion.ingest(tracker, [str(path)], skip_bad=True)
    assert len(summary.bad_lines) == 1
    reference.track_many(log[:25_000] + log[25_001:])
    assert counts(tracker) == counts(reference)


def test_csv_columns_read_as_line_by_line_reading_does(make_tracker, tmp_path):
    # Unknown columns counted, offsets and epochs on their day in the tracker's zone.
    lines = ["Timestamp,ID,Bucket,Extra"]
    for n in range(4_000):
        when = ("2024-01-10T00:30:00+02:00", "1704931200", "2024-01-10")[n % 3]
        lines.append(f"{when},user-{n},web,{'x' if n % 2 else ''}")
    text = "\n".join(lines) + "\n"
    path = tmp_path / "log.csv"
    path.write_text(text)
    found = {}
    for block_size in (1 << 20, 1 << 30):  # blocks of columns; one block read line by line
        tracker = make_tracker(timezone="UTC")
        original = ingestion.FIRST_BLOCK_SIZE
        ingestion.FIRST_BLOCK_SIZE = min(block_size, 100)
        try:
            summary = ingestion.ingest(tracker, [str(path)])
        finally:
            ingestion.FIRST_BLOCK_SIZE = original
        found[block_size] = (summary.events, dict(summary.unknown_keys), counts(tracker, DAY))
        found[block_size] += (counts(tracker, DAY - datetime.timedelta(days=1)),)
    assert found[1 << 20] == found[1 << 30]
    assert found[1 << 20][:2] == (4_000, {"extra": 2_000})


@pytest.mark.redis_only
def test_ingest_of_parquet_leaves_redis_as_track_many_does(
    make_tracker, redis_client, prefix, tmp_path
):
    log = login_workload(20_000, 2_000)
    ids, buckets, old_ids, old_buckets, dates = (list(column) for column in zip(*log, strict=True))
    path = tmp_path / "log.parquet"
    pq.write_table(
        pa.table(
            {
                "timestamp": pa.array(dates, pa.date32()),
                "id": ids,
                "bucket": buckets,
                "old_id": old_ids,
                "old_bucket": old_buckets,
                "country": ["fr", None] * 10_000,
            }
        ),
        path,
        row_group_size=5_000,
    )
    by_columns = make_tracker(prefix=f"{prefix}:pq", periods=["daily", "monthly"])
    by_events = make_tracker(prefix=f"{prefix}:events", periods=["daily", "monthly"])
    summary = ingestion.ingest(by_columns, [str(path)])
    by_events.track_many(log)
    assert (summary.events, summary.stopped, dict(summary.unknown_keys)) == (
        len(log),
        None,
        {"country": 10_000},
    )
    assert state(redis_client, f"{prefix}:pq") == state(redis_client, f"{prefix}:events")


def test_a_bad_parquet_row_stops_ingest_there_and_resuming_skips_the_rows_before(
    make_tracker, tmp_path
):
    tracker = make_tracker()
    ids: list[str | None] = [f"user-{n}" for n in range(1_000)]
    ids[700] = None  # row 701: no id
    path = tmp_path / "log.parquet"
    when = [datetime.datetime(2024, 1, 10, 12, tzinfo=zoneinfo.ZoneInfo("UTC"))] * 1_000
    pq.write_table(pa.table({"timestamp": when, "id": ids}), path)
    summary = ingestion.ingest(tracker, [str(path)])
    assert summary.stopped is not None
    assert (summary.stopped.line_number, summary.stopped.reason) == (701, "no id and no old_id")
    assert summary.stopped.resume_line == 1  # the whole chunk (here, the file) is unwritten
    summary = ingestion.ingest(tracker, [str(path)], start_line=702)
    assert summary.events == 299
    summary = ingestion.ingest(tracker, [str(path)], skip_bad=True)
    assert (summary.events, len(summary.bad_lines)) == (999, 1)
    reference = make_tracker()
    reference.track_many((id, None, None, None, DAY) for id in ids if id is not None)
    assert counts(tracker) == counts(reference)

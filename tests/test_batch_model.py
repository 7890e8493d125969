"""Model-based property test of the batch path: random track / move / removal / re-track
sequences sent through ``batch()`` / ``track_many()`` must leave Redis exactly as calling
``track()`` on each event in order does, whatever the batch boundaries.

Exactly means more than equal counts: the change records (each id's record per bucket),
each bucket's exact OUT count and tracked bit, the number of ids with records, and every
HyperLogLog's count (at these sizes a p=14 HyperLogLog counts exactly) must be the same.
Counts after a collapse, aggregates included, must then be equal too, and equal to the
exact-set model of ``test_model.py``.
"""

from __future__ import annotations

import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from activity_tracker import ActivityTracker
from activity_tracker.keys import decode_records
from activity_tracker.periods import DAILY, WEEKLY, Period
from test_model import AFTER, BUCKETS, DAYS, MONDAY, Model, PeriodModel

# Few ids and buckets, so that one batch often moves, re-tracks and re-moves the same id.
IDS = ["a", "b", "c\nd", 4]  # "c\nd": its lists cannot be sent newline-joined
ids = st.sampled_from(IDS)
buckets = st.sampled_from(BUCKETS)
days = st.sampled_from(DAYS[:2])
track_op = st.tuples(st.just("track"), ids, buckets, days)
move_op = st.tuples(st.just("move"), ids, buckets, ids, buckets, days)
remove_op = st.tuples(st.just("remove"), ids, buckets, days)
flush_op = st.tuples(st.just("flush"))
# A repeat of the operation `back` positions earlier: repeats are what the batch drops or
# merges, so they must come often, with moves between them.
repeat_op = st.tuples(st.just("repeat"), st.integers(min_value=1, max_value=4))
# Track, move out (of any bucket), track the same again: the repeat must not be dropped.
retrack_op = st.tuples(st.just("retrack"), ids, buckets, days, buckets, ids)
events = st.lists(
    st.one_of(track_op, move_op, move_op, remove_op, flush_op, repeat_op, repeat_op, retrack_op),
    max_size=30,
).map(lambda ops: resolve_repeats(ops))


def resolve_repeats(ops: list[tuple]) -> list[tuple]:
    resolved: list[tuple] = []
    for op in ops:
        if op[0] == "repeat":
            if len(resolved) >= op[1]:
                resolved.append(resolved[-op[1]])
        elif op[0] == "retrack":
            _, id, bucket, day, old_bucket, new_id = op
            resolved.append(("track", id, bucket, day))
            resolved.append(("move", new_id, bucket, id, old_bucket, day))
            resolved.append(("track", id, bucket, day))
        else:
            resolved.append(op)
    return resolved


aggregates = st.dictionaries(
    st.sampled_from(["all", "agg"]),
    st.lists(buckets, min_size=1, max_size=3, unique=True),
    max_size=2,
)


def as_event(op: tuple, form: int) -> object:
    """``op`` as track_many() takes it: a dict, or a tuple of track()'s arguments."""
    if op[0] == "track":
        _, id, bucket, day = op
        kwargs = {"id": id, "bucket": bucket, "date": day}
    elif op[0] == "move":
        _, id, bucket, old_id, old_bucket, day = op
        kwargs = {"id": id, "bucket": bucket, "old_id": old_id, "old_bucket": old_bucket}
        kwargs["date"] = day
    else:
        _, old_id, old_bucket, day = op
        kwargs = {"old_id": old_id, "old_bucket": old_bucket, "date": day}
    if form == 0:
        return kwargs
    names = ("id", "bucket", "old_id", "old_bucket", "date")
    return tuple(kwargs.get(name) for name in names)


def one_by_one(tracker: ActivityTracker, model: Model, ops: list[tuple]) -> None:
    for op in ops:
        if op[0] == "flush":
            continue
        kwargs = as_event(op, 0)
        assert isinstance(kwargs, dict)
        tracker.track(**kwargs)
        day = kwargs["date"]
        if "old_id" in kwargs:
            model.remove(kwargs["old_id"], kwargs["old_bucket"], day)
        if "id" in kwargs:
            model.track(kwargs["id"], kwargs["bucket"], day)


def batched(tracker: ActivityTracker, ops: list[tuple], max_events: int, form: int) -> None:
    with tracker.batch(max_events=max_events) as batch:
        chunk: list[object] = []
        for op in ops:
            if op[0] == "flush":
                batch.track_many(chunk)
                chunk = []
                batch.flush()
            elif form == 2:
                kwargs = as_event(op, 0)
                assert isinstance(kwargs, dict)
                batch.track(**kwargs)
            else:
                chunk.append(as_event(op, form))
        batch.track_many(chunk)


def state(client: redis.Redis, prefix: str) -> dict[bytes, object]:
    """Everything the tracker stored under ``prefix``, with the labels it may choose freely
    (bucket indices, the order of records, the deadline's second) replaced by what they
    mean: per period, each bucket's tracked bit and OUT count, the ids with records, each
    id hash's record per bucket code; every sketch's count; the counts hashes."""
    found: dict[bytes, object] = {}
    for key in client.scan_iter(match=f"{prefix}:*", count=1000):
        name = key[len(prefix) :]
        if key.endswith(b":reg"):
            fields = client.hgetall(key)
            codes = {
                int(value) // 2: code
                for code, value in fields.items()
                if not code.startswith(b"@") and int(value) // 2
            }
            buckets = {
                code: (int(value) % 2, int(fields.get(b"@out:%d" % (int(value) // 2), 0)))
                for code, value in fields.items()
                if not code.startswith(b"@")
            }
            found[name] = (buckets, fields.get(b"@moved"), codes)
        elif key.endswith(b":chg"):
            found[name] = None  # decoded with its registry below
        elif key.endswith(b":counts"):
            found[name] = client.hgetall(key)
        else:
            found[name] = client.pfcount(key)
    for name in [n for n in found if n.endswith(b":chg")]:
        codes = found[name[: -len(b"chg")] + b"reg"][2]  # type: ignore[index]
        records: dict[bytes, dict[bytes, int]] = {}
        for blob in client.hvals(prefix.encode() + name):
            for hash, index, flag in decode_records(blob):
                records.setdefault(hash, {})[codes[index]] = flag
        found[name] = records
    return {
        name: value[:2] if name.endswith(b":reg") else value  # type: ignore[index]
        for name, value in found.items()
    }


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    before=events,
    ops=events,
    max_events=st.integers(min_value=1, max_value=40),
    form=st.integers(min_value=0, max_value=2),
    aggregate_buckets=aggregates,
)
def test_a_batch_leaves_redis_as_track_one_by_one_does(
    redis_url, prefix, redis_client, before, ops, max_events, form, aggregate_buckets
):
    run = f"{prefix}:{redis_client.incr(f'{prefix}:runs')}"
    one = ActivityTracker(periods=[DAILY, WEEKLY], url=redis_url, prefix=f"{run}:one")
    many = ActivityTracker(periods=[DAILY, WEEKLY], url=redis_url, prefix=f"{run}:many")
    try:
        model = Model()
        # What was there before the batch decides the corrections of its first adds.
        one_by_one(one, model, before)
        one_by_one(many, Model(), before)
        one_by_one(one, model, ops)
        batched(many, ops, max_events, form)
        assert state(redis_client, f"{run}:many") == state(redis_client, f"{run}:one")

        for tracker in (one, many):
            tracker.collapse(date=AFTER, max_periods=7, aggregate_buckets=aggregate_buckets)
        names = [*BUCKETS, *aggregate_buckets]
        for kind in ("daily", "weekly"):
            rows = many.lookup(kind, start=MONDAY, end=AFTER, buckets=names)
            assert rows == one.lookup(kind, start=MONDAY, end=AFTER, buckets=names)
            for start, counts in rows:
                exact = model.periods.get(Period(kind, start), PeriodModel())
                for bucket in BUCKETS:
                    assert counts[bucket] == len(exact.members(bucket)), (kind, start, bucket)
    finally:
        one.close()
        many.close()

"""The Redis operations as plain data: which keys and arguments, and how replies become counts.

No server here: the operations are generators, driven by hand with made-up replies.
"""

from __future__ import annotations

import datetime

import pytest

from activity_tracker.arguments import Activity, CollapseJob, LookupJob
from activity_tracker.backends import redis_plan
from activity_tracker.backends.redis_plan import Command, ScriptCall
from activity_tracker.corrections import corrected_count
from activity_tracker.keys import SKETCHES_EXPIRE_FIELD, KeySchema
from activity_tracker.periods import Period

SCHEMA = KeySchema("p")
DAY = Period("daily", datetime.date(2024, 1, 10))
MONTH = Period("monthly", datetime.date(2024, 1, 1))


def test_corrected_count_subtracts_moves_and_never_goes_negative():
    assert corrected_count(10, 3) == 7
    assert corrected_count(2, 5) == 0


def only_batch(operation):
    batch = next(operation)
    with pytest.raises(StopIteration):
        operation.send([0] * len(batch))
    return batch


def test_a_move_is_one_script_call_covering_every_period():
    activity = Activity((DAY, MONTH), "u1", "auth", "s1", "anon")
    [call] = only_batch(redis_plan.track(SCHEMA, activity, split_periods=False))
    assert call == ScriptCall(
        "track",
        (
            "p:{d2024-01-10}:moved",
            "p:{d2024-01-10}:counts",
            "p:{d2024-01-10}:hll:b:anon",
            "p:{d2024-01-10}:out:b:anon",
            "p:{d2024-01-10}:back:b:anon",
            "p:{d2024-01-10}:left",
            "p:{d2024-01-10}:buckets",
            "p:{d2024-01-10}:hll:b:auth",
            "p:{d2024-01-10}:out:b:auth",
            "p:{d2024-01-10}:back:b:auth",
            "p:{m2024-01-01}:moved",
            "p:{m2024-01-01}:counts",
            "p:{m2024-01-01}:hll:b:anon",
            "p:{m2024-01-01}:out:b:anon",
            "p:{m2024-01-01}:back:b:anon",
            "p:{m2024-01-01}:left",
            "p:{m2024-01-01}:buckets",
            "p:{m2024-01-01}:hll:b:auth",
            "p:{m2024-01-01}:out:b:auth",
            "p:{m2024-01-01}:back:b:auth",
        ),
        ("1", "1", "u1", "b:auth", "s1", "b:anon"),
    )


def test_on_a_cluster_each_period_is_its_own_call():
    activity = Activity((DAY, MONTH), "u1", None, None, None)
    calls = only_batch(redis_plan.track(SCHEMA, activity, split_periods=True))
    assert [call.keys for call in calls] == [
        (SCHEMA.moved(p), SCHEMA.counts(p), SCHEMA.buckets(p), *SCHEMA.bucket_keys(p, "default"))
        for p in (DAY, MONTH)
    ]
    assert calls[0].args == ("1", "0", "u1", "default", "", "default")


def test_collapse_plans_from_what_each_period_holds():
    job = CollapseJob(periods=(DAY,), buckets=None, aggregates=(("all", ("a", "b")),))
    operation = redis_plan.collapse(SCHEMA, job, retention=60, now=1000.0)
    listing = next(operation)
    assert listing == [
        Command(("SMEMBERS", "p:{d2024-01-10}:buckets")),
        Command(("SMEMBERS", "p:{d2024-01-10}:left")),
        Command(("HGET", "p:{d2024-01-10}:counts", SKETCHES_EXPIRE_FIELD)),
    ]
    [measure] = operation.send([{b"b:b", b"b:a"}, {b"b:anon"}, None])
    assert measure.script == "collapse"
    assert measure.args == ("60", "2", "1", "2")
    assert measure.keys[:3] == (
        "p:{d2024-01-10}:moved",
        "p:{d2024-01-10}:buckets",
        "p:{d2024-01-10}:left",
    )
    # Buckets ids were only moved out of come last, for their expiry only.
    assert measure.keys[-3:] == SCHEMA.bucket_keys(DAY, "b:anon")
    # Buckets a, b, then the aggregate followed by its sources.
    hlls = [key for key in measure.keys if ":hll:" in key]
    assert hlls == [
        "p:{d2024-01-10}:hll:b:a",
        "p:{d2024-01-10}:hll:b:b",
        "p:{d2024-01-10}:hll:b:all",
        "p:{d2024-01-10}:hll:b:a",
        "p:{d2024-01-10}:hll:b:b",
        "p:{d2024-01-10}:hll:b:anon",
    ]
    # Replies: (estimate, moved out) for a, b, then the aggregate.
    [store] = operation.send([[5, 1, 3, 0, 7, 2]])
    assert store == Command(
        ("HSET", "p:{d2024-01-10}:counts", "b:a", "4", "b:b", "3", "b:all", "5",
         SKETCHES_EXPIRE_FIELD, "1060.0")
    )  # fmt: skip
    with pytest.raises(StopIteration):
        operation.send([1])


def test_collapse_skips_empty_and_expired_periods_and_refuses_clashing_aggregates():
    job = CollapseJob(periods=(DAY, MONTH), buckets=None, aggregates=())
    operation = redis_plan.collapse(SCHEMA, job, retention=None, now=1000.0)
    next(operation)
    with pytest.raises(StopIteration):  # nothing tracked in one, sketches expired in the other
        operation.send([set(), set(), None, {b"default"}, set(), b"999.5"])

    clash = CollapseJob(periods=(DAY,), buckets=("x",), aggregates=(("web", ("x",)),))
    operation = redis_plan.collapse(SCHEMA, clash, retention=None, now=1000.0)
    next(operation)
    with pytest.raises(ValueError, match="web"):
        operation.send([{"b:web"}, set(), None])
    operation = redis_plan.collapse(SCHEMA, clash, retention=None, now=1000.0)
    next(operation)
    with pytest.raises(ValueError, match="web"):  # a bucket ids were moved out of
        operation.send([{"b:x"}, {"b:web"}, None])


def test_collapse_of_a_period_with_only_moves_out_expires_its_keys_and_counts_nothing():
    job = CollapseJob(periods=(DAY,), buckets=None, aggregates=(("all", ("anon",)),))
    operation = redis_plan.collapse(SCHEMA, job, retention=60, now=1000.0)
    next(operation)
    [expire] = operation.send([set(), {b"b:anon"}, None])
    assert expire.args == ("60", "0", "0")
    assert expire.keys == (
        SCHEMA.moved(DAY),
        SCHEMA.buckets(DAY),
        SCHEMA.left(DAY),
        *SCHEMA.bucket_keys(DAY, "b:anon"),
    )
    [store] = operation.send([[]])
    assert store == Command(("HSET", SCHEMA.counts(DAY), SKETCHES_EXPIRE_FIELD, "1060.0"))


def test_lookup_reads_every_period_in_one_batch_and_decodes_buckets():
    job = LookupJob(periods=(DAY, DAY.next()), buckets=None)
    operation = redis_plan.lookup(SCHEMA, job)
    assert len(next(operation)) == 2
    with pytest.raises(StopIteration) as done:
        operation.send(
            [{b"default": b"3", b"b:a%3Ab": b"1", SKETCHES_EXPIRE_FIELD.encode(): b"9"}, {}]
        )
    assert done.value.value == [{None: 3, "a:b": 1}, {}]

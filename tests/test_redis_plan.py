"""The Redis operations as plain data: which keys and arguments, and how replies become counts.

No server here: the operations are generators, driven by hand with made-up replies.
"""

from __future__ import annotations

import datetime

import pytest

from activity_tracker import AggregateBucketError, CollapseError, CollapseValueError, Estimate
from activity_tracker.arguments import Activity, CollapseJob, LookupJob
from activity_tracker.backends import redis_plan
from activity_tracker.backends.redis_plan import Command, ScriptCall
from activity_tracker.corrections import RELATIVE_STANDARD_ERROR
from activity_tracker.errors import WrongKeyTypeError
from activity_tracker.inquiries import CountInquiry, WindowsInquiry
from activity_tracker.keys import BACK, OUT, KeySchema, encode_record, id_hash
from activity_tracker.periods import Period

SCHEMA = KeySchema("p")
DAY = Period("daily", datetime.date(2024, 1, 10))
MONTH = Period("monthly", datetime.date(2024, 1, 1))
ENDS = (1_704_931_200.0, 1_706_745_600.0)  # when DAY and MONTH end (UTC)
NOW = 1_704_900_000.0  # during DAY
RETENTION = 100


def test_a_move_is_one_script_call_with_its_fixed_arguments_first():
    activity = Activity((DAY, MONTH), ENDS, "u1", "auth", "s1", "anon")
    operation = redis_plan.track(SCHEMA, activity, RETENTION, NOW, split_periods=False)
    [call] = next(operation)
    assert call == ScriptCall(
        "track",
        (
            "p:{d2024-01-10}:reg",
            "p:{d2024-01-10}:chg",
            "p:{d2024-01-10}:hll:b:auth",
            "p:{d2024-01-10}:hll:b:anon",
            "p:{m2024-01-01}:reg",
            "p:{m2024-01-01}:chg",
            "p:{m2024-01-01}:hll:b:auth",
            "p:{m2024-01-01}:hll:b:anon",
        ),
        (
            "3",
            "b:auth",
            "b:anon",
            1_704_931_300,  # each period's proposed deadline: its end + retention
            1_706_745_700,
            "u1",
            id_hash("u1"),
            "s1",
            id_hash("s1"),
        ),
    )
    with pytest.raises(StopIteration):
        operation.send([0])


def test_a_backfill_proposes_a_deadline_from_now_and_an_add_sends_no_old_id():
    activity = Activity((DAY,), ENDS[:1], "u1", None, None, None)
    later = ENDS[0] + 5_000.5
    [call] = next(redis_plan.track(SCHEMA, activity, RETENTION, later, split_periods=False))
    assert call.keys == (SCHEMA.reg(DAY), SCHEMA.chg(DAY), SCHEMA.hll(DAY, "default"))
    assert call.args == ("1", "default", "", 1_704_936_301, "u1", id_hash("u1"), "", b"")


def test_on_a_cluster_each_period_is_its_own_call():
    activity = Activity((DAY, MONTH), ENDS, None, None, "s1", "anon")
    calls = next(redis_plan.track(SCHEMA, activity, RETENTION, NOW, split_periods=True))
    assert [call.keys for call in calls] == [
        (SCHEMA.reg(p), SCHEMA.chg(p), SCHEMA.hll(p, "b:anon")) for p in (DAY, MONTH)
    ]
    assert calls[1].args == ("2", "", "b:anon", 1_706_745_700, "", b"", "s1", id_hash("s1"))


def test_a_refusal_names_the_bucket_and_period_that_is_an_aggregate():
    activity = Activity((DAY, MONTH), ENDS, "u1", "all", "s1", "anon")
    operation = redis_plan.track(SCHEMA, activity, RETENTION, NOW, split_periods=False)
    next(operation)
    with pytest.raises(AggregateBucketError, match=r"bucket: 'all' .* monthly period") as caught:
        operation.send([[1, 2]])
    assert isinstance(caught.value, ValueError)
    with pytest.raises(AggregateBucketError, match=r"old_bucket: 'anon' .* daily period"):
        redis_plan.check_track_reply(activity, (DAY, MONTH), [2, 1])


def test_collapse_is_one_call_per_period_and_nothing_more_when_the_script_stored():
    job = CollapseJob(periods=(DAY, MONTH), buckets=None, aggregates=(("all", ("a", None)),))
    operation = redis_plan.collapse(SCHEMA, job)
    calls = next(operation)
    assert calls[0] == ScriptCall(
        "collapse",
        (SCHEMA.reg(DAY), SCHEMA.chg(DAY), SCHEMA.counts(DAY)),
        ("p:{d2024-01-10}:hll:", -1, 1, "b:all", 2, "b:a", "default"),
        raw=True,
        errors_as_replies=True,
    )
    with pytest.raises(StopIteration):
        operation.send([[b"stored"], [b"empty"]])


def test_collapse_computes_the_corrections_the_script_left_and_stores_them_if_newer():
    job = CollapseJob(periods=(DAY,), buckets=("a",), aggregates=(("all", ("a", "b")),))
    operation = redis_plan.collapse(SCHEMA, job)
    [call] = next(operation)
    assert call.args == ("p:{d2024-01-10}:hll:", 1, "b:a", 1, "b:all", 2, "b:a", "b:b")
    x, y, z = id_hash("x"), id_hash("y"), id_hash("z")
    # Buckets a (index 1) and b (index 2) have records: x moved out of a, y moved out of a
    # and then added to b, z moved out of a bucket outside the aggregate (index 3).
    records = [
        b"5",
        encode_record(x, 1, OUT) + encode_record(y, 1, OUT),
        b"9",
        encode_record(y, 2, BACK) + encode_record(z, 3, OUT),
    ]
    reply = [b"measured", b"1700000000123456", b"1799", [b"b:a", b"7,9"], [b"b:all", 12, b"1,2"]]
    [store] = operation.send([[*reply, records]])
    assert store == ScriptCall(
        "store",
        (SCHEMA.counts(DAY),),
        ("1700000000123456", "1799", "b:a", "7,9", "b:all", "11,12"),
        errors_as_replies=True,
    )
    with pytest.raises(StopIteration):
        operation.send([1])


def test_a_store_refused_for_older_data_measures_again():
    job = CollapseJob(periods=(DAY,), buckets=None, aggregates=(("all", ("a", "b")),))
    operation = redis_plan.collapse(SCHEMA, job)
    measure = next(operation)
    reply = [b"measured", b"1", b"2", [], [b"b:all", 3, b"1,2"], []]
    assert operation.send([reply])[0].script == "store"
    assert operation.send([0]) == measure  # a collapse that measured later stored first
    with pytest.raises(StopIteration):
        operation.send([[b"stored"]])


def test_failed_periods_are_reported_together_after_the_others():
    periods = tuple(Period("daily", datetime.date(2024, 1, n)) for n in (1, 2, 3))
    job = CollapseJob(periods=periods, buckets=None, aggregates=(("web", ("x",)),))
    operation = redis_plan.collapse(SCHEMA, job)
    next(operation)
    foreign = WrongKeyTypeError("WRONGTYPE activity-tracker key p:{d2024-01-01}:chg holds a list")
    with pytest.raises(CollapseError) as caught:
        operation.send([foreign, [b"stored"], [b"clash", b"b:web"]])
    error = caught.value
    assert not isinstance(error, ValueError)
    assert [period for period, _ in error.failures] == [periods[0], periods[2]]
    assert "daily 2024-01-01: " in str(error) and "chg holds a list" in str(error)
    assert "daily 2024-01-03: aggregate_buckets: 'web' is a bucket used" in str(error)
    assert error.__cause__ is foreign

    operation = redis_plan.collapse(SCHEMA, job)
    next(operation)
    with pytest.raises(CollapseValueError, match="2 periods") as caught:
        operation.send([[b"clash", b"b:web"], [b"cycle", b"b:web"], [b"final"]])
    assert isinstance(caught.value, ValueError)


def test_lookup_reads_every_period_in_one_batch_and_reads_1x_plain_counts():
    job = LookupJob(periods=(DAY, DAY.next()), buckets=None)
    operation = redis_plan.lookup(SCHEMA, job)
    assert len(next(operation)) == 2
    with pytest.raises(StopIteration) as done:
        operation.send(
            [{b"default": b"3", b"b:a%3Ab": b"1,40", b"@expires": b"9", b"@measured": b"1"}, {}]
        )
    assert done.value.value == [
        {
            None: Estimate(3, 3 * RELATIVE_STANDARD_ERROR),
            "a:b": Estimate(1, 40 * RELATIVE_STANDARD_ERROR),
        },
        {},
    ]
    some = LookupJob(periods=(DAY,), buckets=("a", None))
    operation = redis_plan.lookup(SCHEMA, some)
    assert next(operation) == [Command(("HMGET", SCHEMA.counts(DAY), "b:a", "default"))]
    with pytest.raises(StopIteration) as done:
        operation.send([[None, "2,2"]])
    assert done.value.value == [{None: Estimate(2, 2 * RELATIVE_STANDARD_ERROR)}]


PREVIOUS = Period("daily", datetime.date(2024, 1, 9))


def test_a_collapse_with_rolling_windows_stores_them_with_the_time_of_the_days_measurement():
    job = CollapseJob(periods=(DAY,), buckets=None, aggregates=(), rolling=(2,))
    operation = redis_plan.collapse(SCHEMA, job, cluster=False)
    next(operation)
    reads = operation.send([[b"stored", b"1700000000000001"]])
    # The registries (and counts' @expires) of the window's days, oldest first.
    assert reads == [
        Command(("HGETALL", SCHEMA.reg(PREVIOUS)), errors_as_replies=True),
        Command(("HGET", SCHEMA.counts(PREVIOUS), "@expires"), errors_as_replies=True),
        Command(("HGETALL", SCHEMA.reg(DAY)), errors_as_replies=True),
        Command(("HGET", SCHEMA.counts(DAY), "@expires"), errors_as_replies=True),
    ]
    # web tracked on both days (index 1 on the day with a move out of it).
    estimates = operation.send([{b"b:web": b"1"}, None, {b"b:web": b"3", b"@out:1": b"1"}, None])
    keys = (SCHEMA.hll(PREVIOUS, "b:web"), SCHEMA.hll(DAY, "b:web"))
    assert estimates == [Command(("PFCOUNT", *keys), errors_as_replies=True)]
    [store] = operation.send([7])
    assert store == ScriptCall(
        "rolling",
        (SCHEMA.counts(DAY),),
        ("1700000000000001", "@rolling:2:b:web", "6,7"),
        errors_as_replies=True,
    )
    with pytest.raises(StopIteration):
        operation.send([1])


def test_windows_are_stored_for_empty_days_and_not_for_final_or_failed_ones():
    other = Period("daily", datetime.date(2024, 1, 11))
    job = CollapseJob(periods=(PREVIOUS, DAY, other), buckets=None, aggregates=(), rolling=(1,))
    operation = redis_plan.collapse(SCHEMA, job)
    next(operation)
    foreign = WrongKeyTypeError("chg holds a list")
    reads = operation.send([[b"final"], [b"empty", b"5"], foreign])
    assert [read.args[1] for read in reads] == [SCHEMA.reg(DAY), SCHEMA.counts(DAY)]
    with pytest.raises(CollapseError) as caught:
        operation.send([{}, None])  # nothing to count: no store either
    assert [period for period, _ in caught.value.failures] == [other]


def test_a_union_on_a_cluster_copies_its_sketches_to_one_slot_and_deletes_them(monkeypatch):
    monkeypatch.setattr(redis_plan.secrets, "token_hex", lambda size: "t0")
    operation = redis_plan.unions(SCHEMA, WindowsInquiry((DAY,), (2,), None, {}), cluster=True)
    next(operation)
    gets = operation.send([{b"b:web": b"1"}, None, {b"b:web": b"1", b"b:app": b"1"}, None])
    app2, web1, web2 = (
        SCHEMA.hll(DAY, "b:app"),
        SCHEMA.hll(PREVIOUS, "b:web"),
        SCHEMA.hll(DAY, "b:web"),
    )
    assert gets == [
        Command(("GET", key), raw=True, errors_as_replies=True) for key in (app2, web1, web2)
    ]
    copies = [SCHEMA.scratch("t0", n) for n in range(3)]
    assert copies[0] == "p:{ut0}:0"
    writes = operation.send([None, b"HYLL-web1", b"HYLL-web2"])  # app's sketch expired since
    assert writes == [
        Command(("SET", copies[1], b"HYLL-web1", "PX", 60_000)),
        Command(("SET", copies[2], b"HYLL-web2", "PX", 60_000)),
        Command(("PFCOUNT", copies[1], copies[2]), errors_as_replies=True),
        Command(("DEL", copies[1], copies[2])),
    ]
    with pytest.raises(StopIteration) as done:
        operation.send([b"OK", b"OK", 2, 2])
    assert done.value.value == {
        (DAY, 2): {
            "app": Estimate(0, 0.0),  # app's sketch only: gone
            "web": Estimate(2, 2 * RELATIVE_STANDARD_ERROR),
        }
    }


def test_a_cluster_union_never_copies_a_string_that_is_not_a_hyperloglog():
    operation = redis_plan.unions(SCHEMA, CountInquiry((DAY,), None), cluster=True)
    next(operation)
    operation.send([{b"b:web": b"1"}, None])
    with pytest.raises(WrongKeyTypeError, match=r"p:\{d2024-01-10\}:hll:b:web holds a string"):
        operation.send([b"\x00not a sketch"])  # nothing written: no round trip left


def test_a_registry_decodes_buckets_indices_counters_aggregates_and_expiry():
    fields = {
        b"default": b"1",
        b"b:anon": b"2",  # index 1, only moved out of
        b"b:auth": b"5",  # index 2, tracked
        b"b:all": b"ab:anon\nb:auth",
        b"@out:1": b"3",
        b"@deadline": b"1800",
        b"@moved": b"3",
    }
    registry, names = redis_plan.registry(DAY, fields, b"1800")
    assert registry.raw == {
        None: (True, False, 0),
        "anon": (False, True, 3),
        "auth": (True, True, 0),
    }
    assert registry.aggregates == {"all": ("anon", "auth")}
    assert registry.problem is None
    assert names == {1: "anon", 2: "auth"}
    gone, _ = redis_plan.registry(DAY, {}, b"1800")
    assert str(gone.problem).startswith("the raw data of the daily period of 2024-01-10")


def test_stored_windows_are_read_by_field_and_without_their_measurement_time():
    job = LookupJob(periods=(DAY,), buckets=("web", None))
    operation = redis_plan.lookup_rolling(SCHEMA, 7, job)
    assert next(operation) == [
        Command(("HMGET", SCHEMA.counts(DAY), "@rolling:7:b:web", "@rolling:7:default"))
    ]
    with pytest.raises(StopIteration) as done:
        operation.send([[b"5,9,1700000000000001", None]])
    assert done.value.value == [{"web": Estimate(5, 9 * RELATIVE_STANDARD_ERROR)}]
    every = redis_plan.lookup_rolling(SCHEMA, 7, LookupJob(periods=(DAY,), buckets=None))
    next(every)
    fields = {b"b:web": b"1,1", b"@rolling:7:b:web": b"5,9,1", b"@rolling:28:b:web": b"8,9,1"}
    with pytest.raises(StopIteration) as done:
        every.send([fields])
    assert done.value.value == [{"web": Estimate(5, 9 * RELATIVE_STANDARD_ERROR)}]

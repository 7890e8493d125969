"""The union plan and the reads made of it (windows, count(), retention, measure()), with
plain data: no server."""

from __future__ import annotations

import datetime

import pytest

from activity_tracker import AggregateBucketError, Estimate, RawDataExpiredError
from activity_tracker.corrections import RELATIVE_STANDARD_ERROR, estimate
from activity_tracker.inquiries import (
    CountInquiry,
    MeasureInquiry,
    RetentionInquiry,
    RollingInquiry,
    WindowsInquiry,
    window,
)
from activity_tracker.keys import BACK, OUT
from activity_tracker.periods import DAILY, WEEKLY, Period
from activity_tracker.unions import EMPTY, RawBucket, Registry, UnionPlan, expired

MON = datetime.date(2024, 1, 8)
D1, D2, D3 = (Period(DAILY, MON + datetime.timedelta(days=n)) for n in range(3))
S, U, V = b"session1", b"user-001", b"user-002"
TRACKED = RawBucket(tracked=True, indexed=False, out=0)


def test_a_window_is_the_days_ending_with_its_last_day_in_order():
    assert window(D3.start, 3) == (D1, D2, D3)
    assert window(D1.start, 1) == (D1,)


def test_raw_data_has_expired_when_the_counts_were_collapsed_from_another_generation():
    assert not expired(None, None)  # never collapsed, nothing kept: a period without events
    assert not expired(None, "1700")  # not collapsed yet
    assert not expired("1700", "1700")  # collapsed from the raw data still there
    assert expired("1700", None)  # collapsed, then the raw data expired
    assert expired("1700", "1900")  # expired, then late events started new raw data


def test_a_union_over_days_merges_every_raw_sketch_and_reads_no_records_without_changes():
    registries = {
        D1: Registry({"web": TRACKED, "app": TRACKED}, {}),
        D2: Registry({"web": TRACKED}, {}),
    }
    plan = UnionPlan(CountInquiry((D1, D2, D3), None), registries)
    assert plan.sketch_sets == [((D1, "app"), (D1, "web"), (D2, "web"))]
    assert plan.records == {}
    assert plan.finish({}, [5]) == estimate(5, 5)


def test_one_bucket_of_one_period_with_changes_is_corrected_by_its_exact_counter():
    registries = {
        D1: Registry({"anon": RawBucket(True, True, 2), "auth": RawBucket(True, False, 0)}, {})
    }
    plan = UnionPlan(CountInquiry((D1,), ("anon", "auth")), registries)
    assert plan.records == {}  # anon's @out is the whole correction: no records read
    assert plan.finish({}, [10]) == estimate(8, 10)


def test_several_buckets_or_days_with_changes_are_corrected_from_their_records():
    changed = RawBucket(True, True, 1)
    registries = {
        D1: Registry({"anon": changed, "auth": RawBucket(True, True, 0)}, {}),
        D2: Registry({"anon": changed}, {}),
    }
    plan = UnionPlan(CountInquiry((D1, D2), ("anon", "auth")), registries)
    assert plan.records == {D1: {"anon", "auth"}, D2: {"anon"}}
    records = {
        # S logged in as U on day 1; V moved out of auth on day 1, then out of anon on day 2.
        D1: {"anon": {S: OUT}, "auth": {U: BACK, V: OUT}},
        D2: {"anon": {V: OUT}},
    }
    assert plan.finish(records, [20]) == estimate(18, 20)


def test_aggregates_expand_to_their_raw_sources_by_the_callers_definition_first():
    registries = {
        D1: Registry({"web": TRACKED, "app": TRACKED}, {"all": ("web",)}),
        D2: Registry({"web": TRACKED, "app": TRACKED}, {}),
    }
    stored = UnionPlan(RollingInquiry((D2.start,), 2, ("all",)), registries)
    # Day 1 defines "all" as web; day 2 has no "all".
    assert stored.sketch_sets == [((D1, "web"),)]
    given = UnionPlan(WindowsInquiry((D2,), (2,), ("all",), {"all": ("web", "app")}), registries)
    assert given.sketch_sets == [((D1, "app"), (D1, "web"), (D2, "app"), (D2, "web"))]


def test_a_cycle_of_definitions_adds_nothing_more():
    registries = {D1: Registry({"web": TRACKED}, {"b": ("a", "web")})}
    plan = UnionPlan(MeasureInquiry(D1, ("a",), {"a": ("b",)}), registries)
    assert plan.sketch_sets == [((D1, "web"),)]


def test_an_expired_day_raises_for_reads_and_skips_the_windows_of_a_collapse():
    gone = Registry({}, {}, RawDataExpiredError(D1))
    registries = {D1: gone, D2: Registry({"web": TRACKED}, {})}
    with pytest.raises(RawDataExpiredError, match="daily period of 2024-01-08 has expired"):
        UnionPlan(CountInquiry((D1, D2), None), registries)
    assert isinstance(RawDataExpiredError(D1), ValueError)
    plan = UnionPlan(WindowsInquiry((D2,), (1, 2), None, {}), registries)
    assert plan.finish({}, [1]) == {(D2, 1): {"web": estimate(1, 1)}, (D2, 2): None}


def test_a_failed_read_raises_for_reads_and_fails_only_the_windows_needing_it():
    broken = ConnectionError("chg holds a list")
    changed = RawBucket(True, True, 1)
    registries = {D1: Registry({"a": changed}, {}), D2: Registry({"a": changed}, {})}
    plan = UnionPlan(WindowsInquiry((D1, D2), (1, 2), None, {}), registries)
    answers = plan.finish({D1: broken, D2: {"a": {}}}, [3, 4, 5])
    assert answers[D1, 1] == {"a": estimate(2, 3)}
    assert answers[D2, 1] == {"a": estimate(3, 4)}
    assert answers[D2, 2] is broken
    strict = UnionPlan(CountInquiry((D1, D2), None), registries)
    with pytest.raises(ConnectionError):
        strict.finish({D1: broken, D2: {"a": {}}}, [5])
    with pytest.raises(KeyError):  # an error estimating the union raises too
        strict.finish({D1: {}, D2: {}}, [KeyError("corrupt")])


def test_rolling_rows_without_buckets_carry_what_each_window_tracked_and_registered():
    registries = {
        D1: Registry({"web": TRACKED, "gone": RawBucket(False, True, 1)}, {}),
        D2: Registry({"app": TRACKED}, {"all": ("web", "app")}),
    }
    plan = UnionPlan(RollingInquiry((D1.start, D2.start), 1, None), registries)
    rows = plan.finish({}, [4, 6, 7])
    assert [sorted(row) for row in rows] == [["web"], ["all", "app"]]


def test_retention_is_a_triangle_of_intersections_with_the_error_of_each_union():
    weeks = tuple(Period(WEEKLY, MON + datetime.timedelta(days=7 * n)) for n in range(3))
    registries = {week: Registry({"app": TRACKED}, {}) for week in weeks}
    plan = UnionPlan(RetentionInquiry(weeks, "app"), registries)
    singles = [((week, "app"),) for week in weeks]
    pairs = [((weeks[i], "app"), (weeks[j], "app")) for i, j in ((0, 1), (0, 2), (1, 2))]
    assert plan.sketch_sets == singles + pairs
    triangle = plan.finish({}, [100, 80, 60, 150, 145, 110])
    assert triangle == [
        (weeks[0].start, [estimate(100, 100), estimate(30, 150), estimate(15, 145)]),
        (weeks[1].start, [estimate(80, 80), estimate(30, 110)]),
        (weeks[2].start, [estimate(60, 60)]),
    ]
    assert triangle[0][1][1] == Estimate(30, 150 * RELATIVE_STANDARD_ERROR)


def test_measure_counts_the_period_and_refuses_an_aggregate_named_like_its_bucket():
    registries = {D1: Registry({"web": TRACKED, "left": RawBucket(False, True, 1)}, {})}
    plan = UnionPlan(MeasureInquiry(D1, None, {"all": ("web", "left")}), registries)
    assert plan.finish({}, [3, 4]) == {"web": estimate(3, 3), "all": estimate(3, 4)}
    with pytest.raises(AggregateBucketError, match="'web' is a bucket used"):
        UnionPlan(MeasureInquiry(D1, None, {"web": ("left",)}), registries)


def test_a_period_without_registry_reads_as_no_events():
    plan = UnionPlan(CountInquiry((D1, D2), ("web",)), {})
    assert plan.sketch_sets == []
    assert plan.finish({}, []) == Estimate(0, 0.0)
    assert EMPTY.raw == {} and EMPTY.problem is None

"""The correction arithmetic and the change-record layout, with plain data (no server)."""

from __future__ import annotations

import math

import pytest

from activity_tracker import Estimate
from activity_tracker.corrections import (
    RELATIVE_STANDARD_ERROR,
    corrected_count,
    estimate,
    intersection,
    sketch_size,
    union_subtracted,
)
from activity_tracker.keys import (
    BACK,
    OUT,
    SHARDS,
    deadline,
    decode_records,
    encode_record,
    id_hash,
    shard_of,
)

A, B, C = b"hash-of-a", b"hash-of-b", b"hash-of-c"


def test_corrected_count_subtracts_and_never_goes_negative():
    assert corrected_count(10, 3) == 7
    assert corrected_count(2, 5) == 0


def test_an_estimate_carries_the_error_of_its_sketch_not_of_the_corrected_count():
    # 3,000 sessions in the sketch, 2,028 of them moved out: the count is small, its error
    # is that of the 3,000 the sketch holds.
    found = estimate(corrected_count(3_000, 2_028), 3_000)
    assert found == Estimate(972, 3_000 * RELATIVE_STANDARD_ERROR)
    assert found.count == 972
    assert math.isclose(found.stderr, 24.375)
    assert RELATIVE_STANDARD_ERROR == 1.04 / 128


def test_one_period_subtracts_ids_moved_out_and_not_added_back():
    records = {
        A: {"anon": OUT},  # a session that logged in: gone from the union
        B: {"anon": OUT, "auth": BACK},  # moved out of one bucket, added to another since
        C: {"auth": BACK},  # added back only
    }
    assert union_subtracted([records]) == 1


def test_an_empty_record_set_and_no_periods_subtract_nothing():
    assert union_subtracted([]) == 0
    assert union_subtracted([{}]) == 0
    assert union_subtracted([{A: {}}]) == 0


def test_several_periods_decide_each_id_by_its_last_period_with_records():
    monday = {A: {"web": OUT}, B: {"web": OUT}, C: {"web": BACK}}
    tuesday = {A: {"web": BACK}, C: {"web": OUT}}
    # A came back on Tuesday; B's last records (Monday) say out; C went out on Tuesday.
    assert union_subtracted([monday, tuesday]) == 2
    # Time order matters: the same periods the other way round decide by Monday.
    assert union_subtracted([tuesday, monday]) == 2
    assert union_subtracted([{A: {"web": OUT}}, {A: {"web": BACK}}]) == 0
    assert union_subtracted([{A: {"web": BACK}}, {A: {"web": OUT}}]) == 1


def test_each_period_a_set_subtracts_ids_that_left_every_period_where_they_have_records():
    week1 = {A: {"anon": OUT}, B: {"anon": BACK}, C: {"anon": OUT}}
    week2 = {A: {"anon": OUT}, B: {"anon": OUT}}
    # A left both; B was back in week 1 (in its set); C left week 1, has no record in week 2.
    assert union_subtracted([week1, week2], separate=True) == 2
    # As one period of all events, B's last records (week 2) say out: subtracted too.
    assert union_subtracted([week1, week2]) == 3
    assert union_subtracted([week2, week1], separate=True) == 2
    assert union_subtracted([{A: {"anon": OUT, "auth": BACK}}], separate=True) == 0
    assert union_subtracted([], separate=True) == 0


def test_an_intersection_is_inclusion_exclusion_clamped_with_the_error_of_the_union():
    first, second = estimate(100, 100), estimate(40, 40)
    assert intersection(first, second, estimate(120, 120)) == Estimate(
        20, 120 * RELATIVE_STANDARD_ERROR
    )
    # HLL error can push the sum outside [0, min(|A|, |B|)]: clamped.
    assert intersection(first, second, estimate(150, 150)).count == 0
    assert intersection(first, second, estimate(90, 90)).count == 40
    assert intersection(estimate(0, 0), estimate(0, 0), estimate(0, 0)) == Estimate(0, 0.0)


def test_the_sketch_size_of_an_estimate_is_its_stderr_over_the_relative_error():
    assert [sketch_size(estimate(0, n)) for n in (0, 1, 7, 12_345, 10**9)] == [
        0,
        1,
        7,
        12_345,
        10**9,
    ]


def test_records_are_ten_bytes_an_id_hash_and_a_big_endian_index_and_flag():
    hash = id_hash("session-1")
    assert len(hash) == 8
    record = encode_record(hash, 3, OUT) + encode_record(hash, 300, BACK)
    assert len(record) == 20
    assert record[8:10] == bytes([0, 6])
    assert record[18:20] == (601).to_bytes(2, "big")
    assert list(decode_records(record)) == [(hash, 3, OUT), (hash, 300, BACK)]


def test_id_hashes_are_blake2b_and_shards_take_the_first_two_bytes():
    import hashlib

    assert id_hash("日本") == hashlib.blake2b("日本".encode(), digest_size=8).digest()
    hash = bytes([0x12, 0x34]) + bytes(6)
    assert shard_of(hash) == (0x12 * 256 + 0x34) % SHARDS
    assert {shard_of(id_hash(f"user-{n}")) for n in range(20_000)} == set(range(SHARDS))


@pytest.mark.parametrize(
    ("period_end", "now", "retention", "expected"),
    [
        (1_000.0, 500.0, 60, 1_060),  # live tracking: from the period's end
        (1_000.0, 2_000.5, 60, 2_061),  # backfill: from now
    ],
)
def test_the_deadline_counts_retention_from_the_later_of_period_end_and_now(
    period_end, now, retention, expected
):
    assert deadline(period_end, now, retention) == expected

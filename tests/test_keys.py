import datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from activity_tracker.keys import (
    CHG,
    COUNTS,
    DEADLINE_FIELD,
    EXPIRES_FIELD,
    HLL,
    MEASURED_FIELD,
    MOVED_FIELD,
    NEXT_INDEX_FIELD,
    OUT_FIELD_PREFIX,
    REG,
    SCRATCH,
    KeySchema,
    check_prefix,
    decode_bucket,
    encode_bucket,
    is_bucket_field,
    rolling_field,
)
from activity_tracker.periods import KINDS, Period

AWKWARD_BUCKETS = [
    None,
    "",
    "a",
    "a:b",
    "a:",
    ":a",
    "{a}",
    "}{",
    "a b",
    "a%20b",
    "é",
    "日本",
    "b:",
    "default",
    "hll:x",
    "reg",
    "a\nb",
]


def test_awkward_bucket_names_never_share_a_key():
    schema = KeySchema("p")
    period = Period.containing("daily", datetime.date(2024, 1, 1))
    keys = [schema.hll(period, encode_bucket(b)) for b in AWKWARD_BUCKETS]
    assert len(set(keys)) == len(AWKWARD_BUCKETS)
    for key in keys:
        # Only the period's hash tag may hold braces, and no space reaches a key.
        assert key.count("{") == key.count("}") == 1
        assert " " not in key


@given(st.one_of(st.none(), st.text()), st.one_of(st.none(), st.text()))
def test_bucket_encoding_is_injective_and_reversible(a, b):
    try:
        code_a, code_b = encode_bucket(a), encode_bucket(b)
    except ValueError:
        return  # lone surrogates are refused, checked below
    assert decode_bucket(code_a) == a
    assert (code_a == code_b) == (a == b)


def test_lone_surrogates_are_refused():
    with pytest.raises(ValueError, match="bucket"):
        encode_bucket("\ud800")


def test_keys_of_different_periods_and_kinds_differ():
    schema = KeySchema("p")
    day = datetime.date(2024, 1, 1)
    periods = [Period.containing(kind, day) for kind in KINDS]
    keys = [schema.hll(period, "default") for period in periods] + [
        maker(period) for period in periods for maker in (schema.reg, schema.chg, schema.counts)
    ]
    assert len(set(keys)) == len(keys)
    for period in periods:
        tag = "{" + period.tag + "}"
        assert all(tag in key for key in keys if period.tag in key)


def test_prefix_checks():
    assert check_prefix("app:activity") == "app:activity"
    for bad in ("", "a{b", "b}"):
        with pytest.raises(ValueError, match="prefix"):
            check_prefix(bad)
    with pytest.raises(TypeError, match="prefix"):
        check_prefix(3)


def test_scan_pattern_escapes_glob_characters():
    assert KeySchema("a*b?[c]").pattern() == "a\\*b\\?\\[c\\]:*"
    assert KeySchema("x").pattern() == "x:*"


def test_v2_key_names_never_clash_with_those_of_1x():
    schema = KeySchema("p")
    period = Period.containing("daily", datetime.date(2024, 1, 1))
    names = {key.rsplit("}:", 1)[1] for key in (schema.reg(period), schema.chg(period))}
    assert names.isdisjoint({"buckets", "moved", "left"})
    assert schema.hll(period, "b:x").startswith(schema.hll_prefix(period))
    # A code never holds a newline: an aggregate's definition joins its sources by one.
    assert "\n" not in encode_bucket("a\nb")


@pytest.mark.parametrize("prefix", ["p", "app:activity", "a*b"])
def test_part_names_each_key_of_a_period(prefix):
    schema = KeySchema(prefix)
    for kind in KINDS:
        period = Period.containing(kind, datetime.date(2024, 1, 31))
        assert schema.part(schema.reg(period)) == REG
        assert schema.part(schema.chg(period)) == CHG
        assert schema.part(schema.counts(period)) == COUNTS
        assert schema.part(schema.batch_scratch(period)) == SCRATCH
        for bucket in AWKWARD_BUCKETS:
            assert schema.part(schema.hll(period, encode_bucket(bucket))) == HLL


def test_part_is_none_for_keys_that_are_not_a_period_key_of_the_tracker():
    schema = KeySchema("p")
    period = Period.containing("daily", datetime.date(2024, 1, 1))
    others = [
        KeySchema("q").reg(period),
        KeySchema("p:x").counts(period),  # a prefix that starts with ours
        KeySchema("pp").hll(period, "default"),
        schema.scratch("abc", 3),  # a cluster union's copy: no period's
        schema.reg(period) + "x",
        schema.reg(period).replace("reg", "buckets"),  # a 1.x name
        schema.hll_prefix(period)[:-1],
        "p:",
        "p:{d2024-01-01",
        "",
    ]
    assert [schema.part(key) for key in others] == [None] * len(others)


def test_bucket_fields_are_told_from_the_others():
    codes = [encode_bucket(bucket) for bucket in AWKWARD_BUCKETS] + [encode_bucket("@x")]
    assert all(is_bucket_field(code) for code in codes)
    others = [
        DEADLINE_FIELD,
        NEXT_INDEX_FIELD,
        MOVED_FIELD,
        OUT_FIELD_PREFIX + "1",
        MEASURED_FIELD,
        EXPIRES_FIELD,
        rolling_field(7, encode_bucket("web")),
    ]
    assert not any(is_bucket_field(field) for field in others)

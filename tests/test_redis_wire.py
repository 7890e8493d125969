"""The per-event request as bytes: what ``TrackWire`` sends is, byte for byte, what redis-py
would send for the ``EVALSHA`` of ``redis_plan.track``'s call, whatever the calls before it
encoded. No server here."""

from __future__ import annotations

import datetime

import pytest
import redis

from activity_tracker.arguments import Activity
from activity_tracker.backends import redis_plan
from activity_tracker.backends.redis_wire import TrackWire
from activity_tracker.keys import KeySchema
from activity_tracker.periods import Period

SCHEMA = KeySchema("p")
SHA = "0123456789abcdef0123456789abcdef01234567"
DAY = Period("daily", datetime.date(2024, 1, 10))
MONTH = Period("monthly", datetime.date(2024, 1, 1))
ENDS = (1_704_931_200.0, 1_706_745_600.0)  # when DAY and MONTH end (UTC)
DURING = 1_704_900_000.0  # during DAY
RETENTION = 100


def redis_py_bytes(activity: Activity, now: float) -> bytes:
    """What redis-py sends for the track.lua call of ``activity`` at ``now``."""
    [call] = next(redis_plan.track(SCHEMA, activity, RETENTION, now, split_periods=False))
    packed = redis.Connection().pack_command("EVALSHA", SHA, len(call.keys), *call.keys, *call.args)
    return b"".join(packed)


ACTIVITIES = [
    Activity((DAY, MONTH), ENDS, "u1", None, None, None),
    Activity((DAY, MONTH), ENDS, "u2", "web", None, None),
    Activity((DAY,), ENDS[:1], "ünï", "bücket: {x}", None, None),
    Activity((DAY, MONTH), ENDS, "u1", "auth", "s1", "anon"),
    Activity((DAY, MONTH), ENDS, None, None, "s1", "anon"),
    Activity((MONTH,), ENDS[1:], "u3", "auth", "s3", "auth"),
]


def test_each_kind_of_call_is_what_redis_py_sends():
    wire = TrackWire(SCHEMA, RETENTION, ("return 0", SHA))
    for activity in ACTIVITIES + ACTIVITIES:  # the second time, from the encoded prefixes
        assert b"".join(wire.packed(activity, DURING)) == redis_py_bytes(activity, DURING)


@pytest.mark.parametrize(
    "later",
    [
        pytest.param(DURING + 20_000, id="before the last call: a clock set back"),
        pytest.param(ENDS[0] + 10, id="the day is over"),
        pytest.param(ENDS[0] + 10.5, id="half a second later"),
        pytest.param(ENDS[0] + 12.25, id="two seconds later"),
        pytest.param(ENDS[1] + 86_400 * 400, id="a year later"),
    ],
)
def test_a_prefix_encoded_earlier_gives_the_deadlines_proposed_now(later):
    wire = TrackWire(SCHEMA, RETENTION, ("return 0", SHA))
    for activity in ACTIVITIES:
        wire.packed(activity, DURING)
        wire.packed(activity, ENDS[0] + 10)
    for activity in ACTIVITIES:
        assert b"".join(wire.packed(activity, later)) == redis_py_bytes(activity, later)


def test_the_script_load_is_what_redis_py_sends():
    source = "-- ünïcode\nreturn 0"
    wire = TrackWire(SCHEMA, RETENTION, (source, SHA))
    expected = redis.Connection().pack_command("SCRIPT", "LOAD", source)
    assert b"".join(wire.load) == b"".join(expected)

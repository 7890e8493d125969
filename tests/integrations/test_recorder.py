"""The throttle-and-buffer core the middleware share."""

from __future__ import annotations

import datetime
import uuid

import pytest
from helpers import SendSpy, counts_today

from activity_tracker.integrations.recorder import ActivityRecorder


def test_ids_are_compared_as_the_tracker_compares_them(buffered):
    recorder = ActivityRecorder(buffered)
    spy = SendSpy(buffered)
    same = uuid.UUID(int=7)
    identities = [123, "123", b"123", (123, None), same, str(same), (123, ""), (123, "web")]
    tracked = [recorder.record(identity) for identity in identities]
    # None and "" are different buckets; 123, "123" and b"123" one id.
    assert tracked == [True, False, False, False, True, False, True, True]
    assert len(spy.events) == 4
    assert counts_today(buffered, [None, "", "web"]) == {None: 2, "": 1, "web": 1}


def test_memory_is_bounded_and_the_least_recently_seen_is_forgotten(buffered):
    recorder = ActivityRecorder(buffered, max_ids=2)
    spy = SendSpy(buffered)
    for identity in ("a", "b", "a", "c", "a", "b", "c"):
        recorder.record(identity)
    # a, b tracked; a seen again (b is now the least recent); c evicts b; a still known;
    # b again is tracked (evicting c), so c is tracked again.
    assert [event["id"] for event in spy.events] == ["a", "b", "c", "b", "c"]
    assert counts_today(buffered, [None]) == {None: 3}


def test_a_new_day_starts_with_nobody_seen(buffered, monkeypatch):
    recorder = ActivityRecorder(buffered)
    spy = SendSpy(buffered)
    day = datetime.date(2024, 3, 1)
    monkeypatch.setattr(recorder, "_today", lambda: day)
    assert recorder.record("a") and not recorder.record("a")
    day = datetime.date(2024, 3, 2)
    assert recorder.record("a") and not recorder.record("a")
    assert [event["date"] for event in spy.events] == [datetime.date(2024, 3, 1), day]
    buffered.flush()
    tracker = buffered.tracker
    tracker.collapse(date=datetime.date(2024, 3, 3), max_periods=2)
    rows = tracker.lookup_daily(datetime.date(2024, 3, 1), datetime.date(2024, 3, 3), [None])
    assert rows == [(datetime.date(2024, 3, 1), {None: 1}), (datetime.date(2024, 3, 2), {None: 1})]


def test_nobody_is_not_tracked_and_a_failed_track_is_not_remembered(buffered):
    recorder = ActivityRecorder(buffered)
    assert recorder.record(None) is False
    with pytest.raises(TypeError, match="bucket must be a str or None"):
        recorder.record(("x", 3))
    with pytest.raises(TypeError, match="an id, an \\(id, bucket\\) pair or None"):
        recorder.record(("x",))
    assert recorder.record("x") is True


@pytest.mark.parametrize(
    ("max_ids", "error", "message"),
    [
        ("10", TypeError, "max_ids must be an int"),
        (True, TypeError, "max_ids"),
        (0, ValueError, "at least 1"),
    ],
)
def test_bad_max_ids(buffered, max_ids, error, message):
    with pytest.raises(error, match=message):
        ActivityRecorder(buffered, max_ids=max_ids)

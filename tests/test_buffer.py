"""``BufferedTracker`` when Redis stalls: ``track()`` never waits for it, a full buffer drops
and counts, and a process exits within ``exit_timeout`` whatever Redis does. On a real Redis:
what it sends counts as the events tracked one by one would, from many threads or a forked
child, and ``date=None`` is the day of the call.

Redis here is a silent TCP server and the client waits for ever (``socket_timeout=None``),
so the background thread is stuck in its send for as long as a test wants: nothing depends
on timing. A call that hangs fails through the watchdog of ``finishing()``.
"""

from __future__ import annotations

import datetime
import logging
import multiprocessing
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from activity_tracker import ActivityTracker, BackendConnectionError, BufferedTracker
from silent_server import WATCHDOG_SECONDS, finishing

DAY = datetime.date(2024, 1, 10)


def test_track_never_waits_for_a_stalled_redis_and_counts_what_it_drops(silent_server, caplog):
    tracker = ActivityTracker(url=silent_server.url, socket_timeout=None)
    buffered = BufferedTracker(tracker, max_events=2, max_pending=10, interval=60)
    with caplog.at_level(logging.WARNING, logger="activity_tracker"):
        buffered.track(id=0, date=DAY)
        buffered.track(id=1, date=DAY)  # two waiting: the thread takes them and sends
        assert silent_server.wait_for_bytes()  # ... and is now stuck in that send
        finishing(lambda: [buffered.track(id=n, date=DAY) for n in range(2, 17)])
        assert finishing(lambda: buffered.track_many([(n, None, None, None, DAY) for n in "abc"]))
    assert buffered.dropped == 15 + 3 - 10
    assert len(buffered._pending) == 10
    assert caplog.text.count("dropping new events") == 1  # once per episode
    silent_server.close()  # the stuck send fails; so do the sends of what was waiting
    with pytest.raises(BackendConnectionError):
        finishing(lambda: buffered.close(timeout=WATCHDOG_SECONDS))
    assert (buffered.lost, buffered.dropped) == (12, 8)  # every event is accounted for


def test_a_process_holding_buffered_events_exits_within_the_exit_timeout(silent_server):
    script = textwrap.dedent(
        f"""
        import logging
        from activity_tracker import ActivityTracker, BufferedTracker

        logging.basicConfig(level=logging.WARNING)
        tracker = ActivityTracker(url={silent_server.url!r}, socket_timeout=None)
        buffered = BufferedTracker(tracker, interval=60, exit_timeout=0.5)
        for n in range(5):
            buffered.track(id=n)
        print("tracked")
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=WATCHDOG_SECONDS
    )
    assert (result.returncode, result.stdout) == (0, "tracked\n")
    assert "5 buffered events not sent" in result.stderr
    assert "exit timeout (0.5s)" in result.stderr
    assert "Traceback" not in result.stderr


def test_an_explicit_close_may_be_bounded_and_says_whether_it_finished(silent_server):
    tracker = ActivityTracker(url=silent_server.url, socket_timeout=None)
    buffered = BufferedTracker(tracker, interval=60)
    buffered.track(id=1, date=DAY)
    assert finishing(lambda: buffered.close(timeout=0.1)) is False
    with pytest.raises(RuntimeError, match="closed"):
        buffered.track(id=2, date=DAY)
    silent_server.close()
    with pytest.raises(BackendConnectionError):
        finishing(lambda: buffered.flush(timeout=WATCHDOG_SECONDS))


@pytest.mark.parametrize(
    ("options", "error", "argument"),
    [
        ({"max_pending": 0}, ValueError, "max_pending"),
        ({"max_pending": 2.5}, TypeError, "max_pending"),
        ({"exit_timeout": 0}, ValueError, "exit_timeout"),
        ({"exit_timeout": float("inf")}, ValueError, "exit_timeout"),
        ({"exit_timeout": "1"}, TypeError, "exit_timeout"),
    ],
)
def test_buffer_options_are_checked(options, error, argument):
    tracker = ActivityTracker(backend="memory")
    with pytest.raises(error, match=argument):
        BufferedTracker(tracker, **options)


# ---- on a real Redis: what is kept is what the exact-set model counts ----------------------

# Ids that share no register of a sketch (see test_model.py): small sets count exactly.
IDS = [f"user-{n}" for n in range(10)]
DAYS = [DAY, DAY + datetime.timedelta(days=1)]

few_ids = st.sampled_from(IDS[:4])  # so that events repeat, and change the ids they repeat
plain_add = st.tuples(st.just("add"), few_ids, st.sampled_from(["a", "b"]))
id_change = st.tuples(st.just("change"), few_ids, st.sampled_from(["a", "b"]), few_ids)
days = st.sampled_from(DAYS)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    events=st.lists(
        st.tuples(st.one_of(plain_add, plain_add, plain_add, id_change), days),
        min_size=10,
        max_size=80,
    ),
    max_events=st.integers(1, 100),
)
def test_repeats_and_id_changes_count_as_tracked_one_by_one(redis_url, prefix, events, max_events):
    """Sends happen while events are kept (max_events is small): a repeat not kept again
    never hides an add that an id change in between made count."""
    tracker = ActivityTracker(url=redis_url, prefix=f"{prefix}:{uuid.uuid4().hex[:8]}")
    buffered = BufferedTracker(tracker, max_events=max_events, max_pending=1000, interval=60)
    model: dict[tuple[datetime.date, str], set[str]] = {}
    for (kind, id, bucket, *old), day in events:
        if kind == "change":  # old[0] leaves the other bucket, id joins this one
            other = "b" if bucket == "a" else "a"
            buffered.track(id=id, bucket=bucket, old_id=old[0], old_bucket=other, date=day)
            model.setdefault((day, other), set()).discard(old[0])
        else:
            buffered.track(id=id, bucket=bucket, date=day)
        model.setdefault((day, bucket), set()).add(id)
    buffered.close()
    assert (buffered.dropped, buffered.lost) == (0, 0)
    tracker.collapse(date=DAYS[-1] + datetime.timedelta(days=1), max_periods=2)
    rows = tracker.lookup_daily(start=DAY, end=DAYS[-1] + datetime.timedelta(days=1))
    found = {(day, bucket): count for day, counts in rows for bucket, count in counts.items()}
    expected = {key: len(ids) for key, ids in model.items() if ids}
    assert {key: count for key, count in found.items() if count} == expected
    tracker.close()


def test_a_repeat_after_an_id_change_is_kept(redis_url, prefix):
    tracker = ActivityTracker(url=redis_url, prefix=prefix)
    buffered = BufferedTracker(tracker, interval=60)
    buffered.track(id="user-9", bucket="a", date=DAY)  # day and bucket now known
    buffered.track(id="user-0", bucket="a", date=DAY)
    buffered.track(id="user-1", bucket="b", old_id="user-0", old_bucket="a", date=DAY)
    buffered.track(id="user-0", bucket="a", date=DAY)  # back in a
    buffered.track(id="user-0", bucket="a", date=DAY)  # a repeat: changes nothing
    buffered.close()
    tracker.collapse(date=DAYS[1])
    assert tracker.lookup_daily(start=DAY, end=DAYS[1]) == [(DAY, {"a": 2, "b": 1})]


def test_date_none_is_the_day_of_the_call_across_midnight(monkeypatch):
    tracker = ActivityTracker(backend="memory", timezone="Europe/Paris")
    midnight = datetime.datetime(2024, 3, 31, tzinfo=ZoneInfo("Europe/Paris")).timestamp()
    for now, day in [
        (midnight - 1, datetime.date(2024, 3, 30)),
        (midnight, datetime.date(2024, 3, 31)),  # the day clocks go forward
        (midnight + 86_400 - 3_600 - 1, datetime.date(2024, 3, 31)),  # 23 hours long
        (midnight + 86_400 - 3_600, datetime.date(2024, 4, 1)),
        (midnight - 10, datetime.date(2024, 3, 30)),  # a clock set back
    ]:
        monkeypatch.setattr(time, "time", lambda now=now: now)
        assert tracker._checker.today() == day
        assert tracker._checker.activity(id="x").periods[0].start == day


def test_threads_tracking_at_once_are_all_counted(redis_url, prefix):
    tracker = ActivityTracker(url=redis_url, prefix=prefix)
    buffered = BufferedTracker(tracker, max_events=50)

    def work(bucket: str) -> None:
        for n in range(1000):
            buffered.track(id=IDS[n % len(IDS)], bucket=bucket, date=DAY)

    threads = [threading.Thread(target=work, args=(f"t{n}",)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    buffered.close()
    tracker.collapse(date=DAYS[1])
    assert tracker.lookup_daily(start=DAY, end=DAYS[1]) == [
        (DAY, {f"t{n}": len(IDS) for n in range(8)})
    ]
    assert (buffered.dropped, buffered.lost) == (0, 0)


def _track_in_child(buffered: BufferedTracker) -> None:
    buffered.track(id="child", bucket="child", date=DAY)
    buffered.close()


def test_a_forked_child_starts_empty_and_sends_its_own_events(redis_url, prefix):
    tracker = ActivityTracker(url=redis_url, prefix=prefix)
    buffered = BufferedTracker(tracker, interval=60)
    buffered.track(id="parent", bucket="parent", date=DAY)  # waiting, with a thread running
    child = multiprocessing.get_context("fork").Process(target=_track_in_child, args=(buffered,))
    child.start()
    child.join(timeout=WATCHDOG_SECONDS)
    assert child.exitcode == 0
    tracker.collapse(date=DAYS[1])
    assert tracker.lookup_daily(start=DAY, end=DAYS[1]) == [(DAY, {"child": 1})]
    buffered.close()
    tracker.collapse(date=DAYS[1])
    assert tracker.lookup_daily(start=DAY, end=DAYS[1]) == [(DAY, {"child": 1, "parent": 1})]

"""``BufferedTracker`` when Redis stalls: ``track()`` never waits for it, a full buffer drops
and counts, and a process exits within ``exit_timeout`` whatever Redis does.

Redis here is a silent TCP server and the client waits for ever (``socket_timeout=None``),
so the background thread is stuck in its send for as long as a test wants: nothing depends
on timing. A call that hangs fails through the watchdog of ``finishing()``.
"""

from __future__ import annotations

import datetime
import logging
import subprocess
import sys
import textwrap

import pytest

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

"""What the middleware tests share: a tracker on the test Redis and today's counts in it, and
a Redis that is down."""

from __future__ import annotations

import datetime
import time
from collections.abc import Iterator
from contextlib import contextmanager

from activity_tracker import ActivityTracker, BufferedTracker
from activity_tracker.keys import Bucket


@contextmanager
def buffered_tracker(redis_url: str, prefix: str) -> Iterator[BufferedTracker]:
    """A BufferedTracker over a tracker (UTC days) on the test Redis, closed afterwards."""
    tracker = ActivityTracker(url=redis_url, prefix=prefix, timezone="UTC")
    buffered = BufferedTracker(tracker, interval=0.05)
    try:
        yield buffered
    finally:
        buffered.close()
        tracker.close()


def counts_today(buffered: BufferedTracker, buckets: list[Bucket]) -> dict[Bucket, int]:
    """Send what is buffered, collapse today (still open) and read its counts back."""
    buffered.flush()
    tracker = buffered.tracker
    today = datetime.datetime.now(tracker.timezone).date()
    tomorrow = today + datetime.timedelta(days=1)
    tracker.collapse(date=tomorrow)
    [(day, counts)] = tracker.lookup_daily(today, tomorrow, buckets)
    assert day == today
    return counts


class SendSpy:
    """Counts the events handed to a BufferedTracker (and still hands them on)."""

    def __init__(self, buffered: BufferedTracker) -> None:
        self.events: list[dict[str, object]] = []
        self._track = buffered.track
        buffered.track = self._spy  # type: ignore[method-assign]

    def _spy(self, **event: object) -> None:
        self.events.append(event)
        self._track(**event)  # type: ignore[arg-type]


#: Nothing listens there: a connection is refused at once.
UNREACHABLE = "redis://127.0.0.1:1/0"


def wait_for_a_failed_send(buffered: BufferedTracker) -> None:
    """Wait until the buffer's thread has tried to send and failed (its events are lost):
    the next ``track()`` raises that error."""
    deadline = time.monotonic() + 60
    while buffered.lost == 0:
        assert time.monotonic() < deadline, "the buffer never tried to send"
        time.sleep(0.05)

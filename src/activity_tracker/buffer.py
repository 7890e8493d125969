"""``BufferedTracker``: ``track()`` that returns at once, for web apps.

Events are checked in the caller's thread (a bad argument raises there, and ``date=None``
is the day of the call), kept in process, and sent by a background thread with the batch
path (:meth:`ActivityTracker.track_many`'s grouping) every ``max_events`` events or every
``interval`` seconds, whichever comes first, and at exit.

What a crash can lose: the events not sent yet. The buffer never holds more than
``max_events`` (``track()`` waits for the thread to take them when it is full), so that is at
most ``2 * max_events`` events (those being sent and those waiting), all tracked within the
last ``interval`` seconds plus the duration of one send. A normal exit loses nothing:
:meth:`close` (also run by ``atexit`` and by ``with``) sends everything.
"""

from __future__ import annotations

import atexit
import datetime
import logging
import os
import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING

from .arguments import Activity
from .batch import Event
from .keys import Bucket

if TYPE_CHECKING:
    from .tracker import ActivityTracker

log = logging.getLogger("activity_tracker")

DEFAULT_MAX_EVENTS = 1000
DEFAULT_INTERVAL = 1.0


class BufferedTracker:
    """Collects ``track()`` events in process and sends them from a background thread.

    ``BufferedTracker(tracker, max_events=1000, interval=1.0)``: ``track()`` and
    ``track_many()`` take the arguments of :meth:`ActivityTracker.track`; events are sent
    every ``max_events`` events or ``interval`` seconds and by :meth:`flush` / :meth:`close`.
    Thread-safe. If a send fails, the error is logged (logger ``activity_tracker``), the
    events it carried are counted in :attr:`lost` and not retried, and the error is raised
    again by the next call of ``track()``, ``track_many()``, ``flush()`` or ``close()``.
    Survives ``fork()``: a child starts with an empty buffer and its own thread.
    """

    def __init__(
        self,
        tracker: ActivityTracker,
        max_events: int = DEFAULT_MAX_EVENTS,
        interval: float = DEFAULT_INTERVAL,
    ) -> None:
        if isinstance(max_events, bool) or not isinstance(max_events, int):
            raise TypeError(f"max_events must be an int, not {type(max_events).__name__}")
        if max_events < 1:
            raise ValueError(f"max_events must be at least 1, not {max_events}")
        if isinstance(interval, bool) or not isinstance(interval, int | float):
            raise TypeError(f"interval must be a number of seconds, not {type(interval).__name__}")
        if not interval > 0:
            raise ValueError(f"interval must be positive, not {interval!r}")
        self.tracker = tracker
        self.max_events = max_events
        self.interval = float(interval)
        #: Events whose send failed (they are not retried).
        self.lost = 0
        self._checker = tracker._checker
        self._closed = False
        self._start()
        atexit.register(self.close)

    def _start(self) -> None:
        self._pid = os.getpid()
        self._lock = threading.Condition()
        self._pending: list[Activity] = []
        self._sending = 0  # events taken by the thread and not sent yet
        self._error: BaseException | None = None
        self._stopping = False
        self._wanted = False  # flush() or a full buffer asks the thread to send now
        self._thread = threading.Thread(
            target=self._run, name="activity-tracker-buffer", daemon=True
        )
        self._thread.start()

    def track(
        self,
        id: object = None,
        bucket: Bucket = None,
        old_id: object = None,
        old_bucket: Bucket = None,
        date: datetime.date | None = None,
        periods: Iterable[str] | None = None,
    ) -> None:
        """Check and keep one event; see :meth:`ActivityTracker.track`."""
        activity = self._checker.activity(id, bucket, old_id, old_bucket, date, periods)
        self._add([activity])

    def track_many(self, events: Iterable[Event]) -> int:
        """Check and keep every event of ``events``; see :meth:`ActivityTracker.track_many`
        (events before a bad one are kept). Returns how many."""
        count = 0
        chunk: list[Activity] = []
        try:
            for index, event in enumerate(events):
                chunk.append(self._checker.event(event, index))
                count += 1
                if len(chunk) >= self.max_events:
                    self._add(chunk)
                    chunk = []
        finally:
            if chunk:
                self._add(chunk)
        return count

    def _add(self, activities: list[Activity]) -> None:
        if self._pid != os.getpid():
            self._start()  # forked: the parent's thread and buffer are not ours
        with self._lock:
            self._raise_error()
            if self._closed:
                raise RuntimeError("this BufferedTracker is closed")
            # The buffer never holds more than max_events: wait for the thread to take them.
            while self._pending and len(self._pending) + len(activities) > self.max_events:
                self._wanted = True
                self._lock.notify_all()
                self._lock.wait()
                self._raise_error()
            self._pending.extend(activities)
            if len(self._pending) >= self.max_events:
                self._wanted = True
                self._lock.notify_all()

    def _raise_error(self) -> None:
        error, self._error = self._error, None
        if error is not None:
            raise error

    def flush(self, timeout: float | None = None) -> bool:
        """Send everything tracked so far and wait until it is sent (or ``timeout`` seconds
        pass: then return False). Raises the error of a failed send, if any."""
        if self._pid != os.getpid():
            self._start()
        with self._lock:
            self._raise_error()
            self._wanted = True
            self._lock.notify_all()
            done = self._lock.wait_for(
                lambda: (not self._pending and not self._sending) or self._error is not None,
                timeout,
            )
            self._raise_error()
            return done

    def close(self, timeout: float | None = None) -> None:
        """Send everything and stop the thread; later ``track()`` calls raise. Idempotent."""
        atexit.unregister(self.close)
        if self._pid != os.getpid() or self._closed:
            self._closed = True
            return
        with self._lock:
            self._closed = True
            self._stopping = True
            self._lock.notify_all()
        self._thread.join(timeout)
        with self._lock:
            self._raise_error()

    def __enter__(self) -> BufferedTracker:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _run(self) -> None:
        lock = self._lock
        while True:
            with lock:
                lock.wait_for(lambda: self._stopping or self._wanted, self.interval)
                self._wanted = False
                taken, self._pending = self._pending, []
                self._sending = len(taken)
                stopping = self._stopping
                lock.notify_all()  # track() calls waiting for room may go on
            if taken:
                try:
                    self.tracker.backend.track_many(taken)
                except Exception as exc:  # kept for the caller: logged and raised later
                    log.exception("activity-tracker: sending %d buffered events failed", len(taken))
                    with lock:
                        self.lost += len(taken)
                        self._error = exc
            with lock:
                self._sending = 0
                lock.notify_all()
            if stopping and not taken:
                return

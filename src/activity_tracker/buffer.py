"""``BufferedTracker``: ``track()`` that returns at once, for web apps.

Events are checked in the caller's thread (a bad argument raises there, and ``date=None``
is the day of the call), kept in process, and sent by a background thread with the batch
path (:meth:`ActivityTracker.track_many`'s grouping), ``max_events`` at a time, whenever
``max_events`` are waiting or ``interval`` seconds have passed, and at exit.

The caller never waits for Redis: ``track()`` only appends to a buffer. The buffer holds at
most ``max_pending`` events (default ``10 * max_events``); when it is full, because Redis
is slow, down or silent, new events are dropped and counted in :attr:`dropped` (and logged
once per episode), so a stalled Redis costs events, never request threads or memory.

An exact repeat of a plain add still waiting or being sent (the same id, bucket and day,
with no id change of that id kept since) is not kept again: adding an id to a set it is
already in changes nothing, so the counts are those of keeping it.

What a crash can lose: the events not sent yet, at most ``max_pending + max_events`` (those
waiting and those being sent). A normal exit waits at most ``exit_timeout`` seconds (default
5) for the thread to send what is left; what it could not send by then is counted in
:attr:`lost` and logged. :meth:`close` (also run by ``with``) sends everything.
"""

from __future__ import annotations

import atexit
import datetime
import logging
import math
import os
import threading
import weakref
from collections.abc import Iterable
from typing import TYPE_CHECKING

from .arguments import Activity, positive_int
from .batch import Event
from .keys import Bucket

if TYPE_CHECKING:
    from .tracker import ActivityTracker

log = logging.getLogger("activity_tracker")

DEFAULT_MAX_EVENTS = 1000
DEFAULT_INTERVAL = 1.0
DEFAULT_PENDING_BATCHES = 10  # max_pending = this * max_events unless given
DEFAULT_EXIT_TIMEOUT = 5.0

# A plain add as the caller's thread keeps it: (id, bucket, day), its arguments checked.
_PlainAdd = tuple[str, Bucket, datetime.date]


class BufferedTracker:
    """Collects ``track()`` events in process and sends them from a background thread.

    ``BufferedTracker(tracker, max_events=1000, interval=1.0, max_pending=None,
    exit_timeout=5.0)``: ``track()`` and ``track_many()`` take the arguments of
    :meth:`ActivityTracker.track` and never wait for Redis; events are sent ``max_events`` at
    a time, when that many are waiting or every ``interval`` seconds, and by :meth:`flush` /
    :meth:`close`. At most ``max_pending`` events (default ``10 * max_events``) wait: beyond
    that, new events are dropped and counted in :attr:`dropped`. At exit, the thread gets
    ``exit_timeout`` seconds to send what is left. Thread-safe. If a send fails, the error is
    logged (logger ``activity_tracker``), the events it carried are counted in :attr:`lost`
    and not retried, and the error is raised again by the next call of ``track()``,
    ``track_many()``, ``flush()`` or ``close()``. Survives ``fork()``: a child starts with an
    empty buffer and its own thread.
    """

    def __init__(
        self,
        tracker: ActivityTracker,
        max_events: int = DEFAULT_MAX_EVENTS,
        interval: float = DEFAULT_INTERVAL,
        max_pending: int | None = None,
        exit_timeout: float = DEFAULT_EXIT_TIMEOUT,
    ) -> None:
        self.max_events = positive_int(max_events, "max_events")
        self.max_pending = (
            DEFAULT_PENDING_BATCHES * self.max_events
            if max_pending is None
            else positive_int(max_pending, "max_pending")
        )
        self.interval = _seconds(interval, "interval")
        self.exit_timeout = _seconds(exit_timeout, "exit_timeout")
        self.tracker = tracker
        #: Events whose send failed, or that were still waiting when the exit timeout ran out
        #: (they are not retried).
        self.lost = 0
        #: Events refused because ``max_pending`` events were already waiting.
        self.dropped = 0
        self._checker = tracker._checker
        self._closed = False
        self._start()
        atexit.register(self._close_at_exit)
        _BUFFERS.add(self)

    def _start(self) -> None:
        """A new, empty buffer; its thread starts with the first event kept."""
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._pending: list[Activity | _PlainAdd] = []
        # The plain adds kept, and the ids moved by an event kept, since the buffer was last
        # emptied (see the module: repeats); both are forgotten together.
        self._seen: set[_PlainAdd] = set()
        self._moved: set[str] = set()
        self._sending = 0  # events taken by the thread and not sent yet
        self._error: BaseException | None = None
        self._stopping = False
        self._wanted = False  # flush() asks the thread to send everything now
        self._dropping = False  # dropping events since the last send that went through
        self._thread: threading.Thread | None = None

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
        # This runs in request threads: the common event (a plain add whose arguments were
        # seen before) is kept as a tuple, without building its Activity (the thread does).
        day = None
        if old_id is None and old_bucket is None and periods is None:
            day = self._checker.plain_day(id, bucket, date)
        if day is None:
            self._add([self._checker.activity(id, bucket, old_id, old_bucket, date, periods)])
            return
        event: _PlainAdd = (id, bucket, day)  # type: ignore[assignment]
        lock = self._lock
        lock.acquire()  # half the cost of "with lock:", which shows here
        try:
            if self._thread is not None and self._error is None and not self._closed:
                pending = self._pending
                if event in self._seen and id not in self._moved:
                    return
                if len(pending) < self.max_pending:
                    self._seen.add(event)
                    pending.append(event)
                    if len(pending) >= self.max_events:
                        self._changed.notify_all()
                    return
        finally:
            lock.release()
        self._add([event])

    def track_many(self, events: Iterable[Event]) -> int:
        """Check and keep every event of ``events``; see :meth:`ActivityTracker.track_many`
        (events before a bad one are kept). Returns how many."""
        count = 0
        chunk: list[Activity | _PlainAdd] = []
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

    def _add(self, events: list[Activity | _PlainAdd]) -> None:
        with self._lock:
            self._raise_error()
            if self._closed:
                raise RuntimeError("this BufferedTracker is closed")
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="activity-tracker-buffer", daemon=True
                )
                self._thread.start()
            room = max(0, self.max_pending - len(self._pending))
            if len(events) > room:
                self._drop(len(events) - room)
                events = events[:room]
            for event in events:
                if isinstance(event, tuple):
                    self._seen.add(event)
                elif event.old_id is not None:
                    self._moved.add(event.old_id)
            self._pending.extend(events)
            if len(self._pending) >= self.max_events:
                self._changed.notify_all()

    def _drop(self, count: int) -> None:
        """Count ``count`` events refused for want of room (call with the lock held)."""
        self.dropped += count
        if not self._dropping:
            self._dropping = True
            log.warning(
                "activity-tracker: %d events are waiting for Redis, the most the buffer holds; "
                "dropping new events until a send goes through (see BufferedTracker.dropped)",
                self.max_pending,
            )

    def _raise_error(self) -> None:
        error, self._error = self._error, None
        if error is not None:
            raise error

    def flush(self, timeout: float | None = None) -> bool:
        """Send everything tracked so far and wait until it is sent (or ``timeout`` seconds
        pass: then return False). Raises the error of a failed send, if any."""
        with self._lock:
            self._raise_error()
            self._wanted = True
            self._changed.notify_all()
            done = self._changed.wait_for(
                lambda: (not self._pending and not self._sending) or self._error is not None,
                timeout,
            )
            self._raise_error()
            return done

    def close(self, timeout: float | None = None) -> bool:
        """Send everything and stop the thread; later ``track()`` calls raise. Waits at most
        ``timeout`` seconds (``None``: until the thread is done, each send being bounded by
        the client's timeouts) and returns whether the thread is done. Raises the error of a
        failed send, if any. Idempotent."""
        atexit.unregister(self._close_at_exit)
        with self._lock:
            thread, closed = self._thread, self._closed
            self._closed = True
            self._stopping = True
            self._changed.notify_all()
        if thread is None or closed:
            return True
        thread.join(timeout)
        with self._lock:
            self._raise_error()
        return not thread.is_alive()

    def _close_at_exit(self) -> None:
        """``close()`` bounded by ``exit_timeout``, which never raises: at exit, a failed send
        was logged already, and what is left unsent is logged and counted in :attr:`lost`."""
        try:
            done = self.close(self.exit_timeout)
        except Exception:  # the thread logged it as it failed
            return
        if not done:
            with self._lock:
                unsent = len(self._pending) + self._sending
                self.lost += unsent
            log.error(
                "activity-tracker: %d buffered events not sent: Redis did not take them "
                "within the exit timeout (%gs)",
                unsent,
                self.exit_timeout,
            )

    def __enter__(self) -> BufferedTracker:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _run(self) -> None:
        changed = self._changed
        plain_add = self._checker.plain_add
        while True:
            with changed:
                changed.wait_for(
                    lambda: self._stopping or self._wanted or len(self._pending) >= self.max_events,
                    self.interval,
                )
                taken = self._pending[: self.max_events]
                del self._pending[: self.max_events]
                if not self._pending:
                    self._wanted = False
                if not self._pending or len(self._seen) > self.max_pending:
                    self._seen.clear()
                    self._moved.clear()
                self._sending = len(taken)
                stopping = self._stopping
            if taken:
                activities = [
                    plain_add(*event) if isinstance(event, tuple) else event for event in taken
                ]
                try:
                    self.tracker.backend.track_many(activities)
                except Exception as exc:  # kept for the caller: logged and raised later
                    log.exception("activity-tracker: sending %d buffered events failed", len(taken))
                    with changed:
                        self.lost += len(taken)
                        self._error = exc
                else:
                    with changed:
                        self._dropping = False
            with changed:
                self._sending = 0
                changed.notify_all()
            if stopping and not taken:
                return


def _seconds(value: object, argument: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{argument} must be a number of seconds, not {type(value).__name__}")
    if not 0 < value < math.inf:
        raise ValueError(f"{argument} must be positive, not {value!r}")
    return float(value)


# Every BufferedTracker, for a forked child to forget its parent's events, thread and lock
# (fork() copies them, even a lock another thread held; the thread does not survive it).
_BUFFERS: weakref.WeakSet[BufferedTracker] = weakref.WeakSet()


def _after_fork() -> None:
    for buffered in list(_BUFFERS):
        buffered._start()


os.register_at_fork(after_in_child=_after_fork)

"""``ActivityRecorder``: what every middleware does after a request, once.

After the framework has handled a request, the middleware asks the application's
``identify`` callable who made it: an id, an ``(id, bucket)`` pair, or ``None`` (nobody to
count). The recorder tracks each ``(id, bucket)`` at most once per day (in the tracker's time
zone) per process, remembering at most ``max_ids`` pairs (least recently seen forgotten
first: a forgotten pair seen again is tracked again, which counts nothing twice), and hands
the event to a :class:`~activity_tracker.BufferedTracker`, so the request never waits on
Redis.
"""

from __future__ import annotations

import datetime
import hashlib
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from ..buffer import BufferedTracker
from ..tracker import ActivityTracker

log = logging.getLogger("activity_tracker")

#: Pairs remembered per process: about 150 bytes each (measured), so about 7.5 MB.
DEFAULT_MAX_IDS = 50_000

Identify = Callable[[Any], object]


def buffered(tracker: object, argument: str = "tracker") -> BufferedTracker:
    """``tracker`` if it is a :class:`BufferedTracker`, else a new one buffering the
    :class:`ActivityTracker` ``tracker``."""
    if isinstance(tracker, BufferedTracker):
        return tracker
    if isinstance(tracker, ActivityTracker):
        return BufferedTracker(tracker)
    raise TypeError(
        f"{argument} must be an ActivityTracker or a BufferedTracker, not {type(tracker).__name__}"
        " (an AsyncActivityTracker cannot be buffered: give an ActivityTracker)"
    )


def check_identify(identify: object) -> Identify:
    """``identify`` if it can be called, else a ``TypeError`` naming it."""
    if not callable(identify):
        raise TypeError(f"identify must be a callable, not {type(identify).__name__}")
    return identify


def _pair_key(id: object, bucket: object) -> bytes:
    """An 8-byte digest of (id as compared by the tracker, bucket); the bucket ``None`` and
    the bucket ``""`` differ."""
    raw = bytes(id) if isinstance(id, bytes | bytearray) else str(id).encode("utf-8", "replace")
    tag = b"\x00" if bucket is None else b"\x01" + str(bucket).encode("utf-8", "replace")
    return hashlib.blake2b(tag + b"\x00" + raw, digest_size=8).digest()


class ActivityRecorder:
    """Tracks who made each request, at most once per ``(id, bucket)`` and day per process.

    ``tracker``: an :class:`ActivityTracker` (buffered by a new
    :class:`~activity_tracker.BufferedTracker`) or a ``BufferedTracker`` of yours.
    ``max_ids``: how many ``(id, bucket)`` pairs of the day are remembered (at least 1).
    Thread-safe.
    """

    def __init__(self, tracker: object, max_ids: int = DEFAULT_MAX_IDS) -> None:
        if isinstance(max_ids, bool) or not isinstance(max_ids, int):
            raise TypeError(f"max_ids must be an int, not {type(max_ids).__name__}")
        if max_ids < 1:
            raise ValueError(f"max_ids must be at least 1, not {max_ids}")
        self.buffer = buffered(tracker)
        self.max_ids = max_ids
        self._timezone = self.buffer.tracker.timezone
        self._lock = threading.Lock()
        self._day: datetime.date | None = None
        self._seen: OrderedDict[bytes, None] = OrderedDict()

    def _today(self) -> datetime.date:
        return datetime.datetime.now(self._timezone).date()

    def record(self, identity: object) -> bool:
        """Track ``identity`` (an id, an ``(id, bucket)`` pair, or ``None`` for nobody) unless
        it was tracked today already; return whether it was. A bad id or bucket raises
        ``TypeError``/``ValueError`` as :meth:`ActivityTracker.track` does."""
        if identity is None:
            return False
        if isinstance(identity, tuple):
            if len(identity) != 2:
                raise TypeError(
                    f"identify must return an id, an (id, bucket) pair or None, not a tuple "
                    f"of {len(identity)}"
                )
            id, bucket = identity
        else:
            id, bucket = identity, None
        key = _pair_key(id, bucket)
        today = self._today()
        with self._lock:
            if today != self._day:
                self._day = today
                self._seen.clear()
            if key in self._seen:
                self._seen.move_to_end(key)
                return False
        self.buffer.track(id=id, bucket=bucket, date=today)
        with self._lock:
            if self._day == today:
                self._seen[key] = None
                if len(self._seen) > self.max_ids:
                    self._seen.popitem(last=False)
        return True

    def after_request(self, identify: Identify, request: object) -> None:
        """``record(identify(request))``, for middleware: nothing raised, ever. A failure
        (in ``identify``, a bad id, a send that failed earlier) is logged on the
        ``activity_tracker`` logger, so tracking cannot break the application's response."""
        try:
            self.record(identify(request))
        except Exception:
            log.exception("activity-tracker: tracking the request failed")

"""Sending many events at once: ``tracker.track_many(events)`` and ``tracker.batch()``.

A batch gives the counts that calling ``track()`` on each event, in order, would give (id
changes included), but sends the events together: on Redis, each distinct id goes once per
period and bucket into a multi-element ``PFADD``, so a user seen fifty times in a batch costs
one element. A batch holds at most ``max_events`` checked events before it sends them.
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING

from . import arguments
from .arguments import Activity
from .keys import Bucket
from .periods import DAILY, Period, end_epoch, local_date

if TYPE_CHECKING:
    from .tracker import ActivityTracker, AsyncActivityTracker

#: What ``track_many()`` takes for one event: a dict of ``track()``'s keyword arguments, or a
#: tuple of its positional ones ``(id, bucket, old_id, old_bucket, date, periods)``.
Event = Mapping[str, object] | Sequence[object]

TRACK_ARGUMENTS = ("id", "bucket", "old_id", "old_bucket", "date", "periods")
_ARGUMENT_NAMES = frozenset(TRACK_ARGUMENTS)
DEFAULT_MAX_EVENTS = 10_000
_CACHE_LIMIT = 4096
#: The periods of a day and when each ends: the first two fields of its activities.
_Periods = tuple[tuple[Period, ...], tuple[float, ...]]


def _plain_add_maker() -> Callable[[_Periods, str, Bucket], Activity]:
    """``lambda periods, id, bucket: Activity(*periods, id, bucket, None, None)``, made
    twice as fast: a frozen dataclass's ``__init__`` sets each field through
    ``object.__setattr__``; its slots can be set directly. This runs once per event of a
    batch. Falls back to the plain constructor if ``Activity`` ever stops having slots."""
    fields = ("periods", "ends", "id", "bucket", "old_id", "old_bucket")
    found = [getattr(getattr(Activity, name, None), "__set__", None) for name in fields]
    setters = [setter for setter in found if callable(setter)]
    if len(setters) != len(fields):
        return lambda periods, id, bucket: Activity(*periods, id, bucket, None, None)
    set_periods, set_ends, set_id, set_bucket, set_old_id, set_old_bucket = setters
    new = object.__new__

    def plain_add(periods: _Periods, id: str, bucket: Bucket) -> Activity:
        activity: Activity = new(Activity)
        set_periods(activity, periods[0])
        set_ends(activity, periods[1])
        set_id(activity, id)
        set_bucket(activity, bucket)
        set_old_id(activity, None)
        set_old_bucket(activity, None)
        return activity

    return plain_add


_plain_add = _plain_add_maker()


class ActivityChecker:
    """Checks ``track()`` arguments exactly as :func:`arguments.activity` does, remembering
    the buckets already checked and the periods of each day seen, so that the common event
    (an id, a known bucket, a date) costs little."""

    def __init__(self, kinds: tuple[str, ...], timezone: datetime.tzinfo | None) -> None:
        self.kinds = kinds
        self.timezone = timezone
        self._buckets: set[Bucket] = {None}
        self._periods: dict[datetime.date, _Periods] = {}
        # (since, until, day): the day of every call from since (epoch seconds) until the
        # day ends; see today().
        self._today: tuple[float, float, datetime.date] = (0.0, 0.0, datetime.date.min)

    def today(self) -> datetime.date:
        """The day of the call in the tracker's time zone: what ``date=None`` means. Worked
        out once, then reused until the day ends (or the clock is set back): the first
        instant of the next day is when the periods of this day end."""
        now = time.time()
        since, until, day = self._today
        if since <= now < until:
            return day
        day = datetime.datetime.fromtimestamp(now, self.timezone).date()
        self._today = (now, end_epoch(Period(DAILY, day), self.timezone), day)
        return day

    def plain_day(self, id: object, bucket: object, date: object) -> datetime.date | None:
        """The day of ``track(id, bucket, date=date)`` if its arguments need no more check:
        an ASCII str id within the size limit, a bucket already checked, and ``date`` None
        (today) or a ``datetime.date`` already seen; else None (see :meth:`activity`)."""
        if type(id) is not str or not id.isascii() or len(id) > arguments.MAX_ID_BYTES:
            return None
        try:
            if bucket not in self._buckets:
                return None
        except TypeError:  # unhashable
            return None
        day = self.today() if date is None else date
        if type(day) is not datetime.date or day not in self._periods:
            return None
        return day

    def plain_add(self, id: str, bucket: Bucket, day: datetime.date) -> Activity:
        """The activity of an event :meth:`plain_day` passed."""
        found = self._periods.get(day)
        return _plain_add(found or self._periods_of(day), id, bucket)

    def activity(
        self,
        id: object = None,
        bucket: object = None,
        old_id: object = None,
        old_bucket: object = None,
        date: object = None,
        periods: object = None,
    ) -> Activity:
        """The checked activity of one ``track()`` call."""
        if id is None or old_id is not None or old_bucket is not None or periods is not None:
            kinds = arguments.period_kinds(periods, self.kinds)
            return arguments.activity(kinds, self.timezone, id, bucket, old_id, old_bucket, date)
        if type(id) is not str or not id.isascii() or len(id) > arguments.MAX_ID_BYTES:
            id = arguments.id_text(id, "id")
        try:
            known = bucket in self._buckets
        except TypeError:  # unhashable: bucket_name says what is wrong with it
            known = False
        if not known:
            bucket = arguments.bucket_name(bucket, "bucket")
            if len(self._buckets) >= _CACHE_LIMIT:
                self._buckets = {None}
            self._buckets.add(bucket)
        if date is None:
            day = self.today()
        elif type(date) is datetime.date:
            day = date
        else:
            day = local_date(date, self.timezone, "date")
        found = self._periods.get(day)
        if found is None:
            if len(self._periods) >= _CACHE_LIMIT:
                self._periods = {}
            found = self._periods[day] = self._periods_of(day)
        return _plain_add(found, id, bucket)  # type: ignore[arg-type]

    def _periods_of(self, day: datetime.date) -> _Periods:
        periods = tuple(Period.containing(kind, day) for kind in self.kinds)
        return periods, arguments.period_ends(periods, self.timezone)

    def extend(
        self, pending: PendingEvents, events: Iterator[Event], first_index: int, limit: int
    ) -> tuple[int, bool]:
        """Check events from ``events`` into ``pending`` until it holds ``limit`` or
        ``events`` runs out; return how many events were consumed and whether it ran out.
        ``first_index`` is the index of the next event in the caller's ``events``, for error
        messages.

        The common event (a tuple or dict with an ASCII id, a bucket already seen and a
        ``datetime.date`` already seen, no id change) is checked inline here; any other goes
        through :meth:`event`, which checks it in full. An exact repeat of such an event
        since the last send is dropped when its id was not moved since: adding an id to a
        set it is already in changes nothing.
        """
        activities, seen, moved = pending.activities, pending.seen, pending.moved
        append, buckets, periods_of = activities.append, self._buckets, self._periods
        plain_add = _plain_add
        consumed = 0
        for event in events:
            consumed += 1
            try:
                if type(event) is tuple and len(event) == 5:
                    new_id, bucket, old_id, old_bucket, date = event
                elif type(event) is dict and _ARGUMENT_NAMES.issuperset(event):
                    get = event.get
                    new_id, bucket, old_id, old_bucket, date = (
                        get("id"),
                        get("bucket"),
                        get("old_id"),
                        get("old_bucket"),
                        get("date"),
                    )
                    if get("periods") is not None:
                        new_id = None  # the full check
                else:
                    new_id = None
                if (
                    type(new_id) is str
                    and new_id.isascii()  # else the full check: it may not be valid text
                    and len(new_id) <= arguments.MAX_ID_BYTES
                    and old_id is None
                    and old_bucket is None
                    and type(date) is datetime.date
                ):
                    key = (new_id, bucket, date)
                    if key in seen and new_id not in moved:
                        continue
                    found = periods_of.get(date)
                    if found is not None and bucket in buckets:
                        activity = plain_add(found, new_id, bucket)
                    else:
                        activity = self.event(event, first_index + consumed - 1)
                    seen.add(key)
                    append(activity)
                    if len(activities) >= limit:
                        return consumed, False
                    continue
            except TypeError:  # an unhashable bucket: the full check below says what is wrong
                pass
            pending.add(self.event(event, first_index + consumed - 1))
            if len(activities) >= limit:
                return consumed, False
        return consumed, True

    def event(self, event: Event, index: int) -> Activity:
        """The checked activity of ``events[index]``; errors name it."""
        try:
            if isinstance(event, Mapping):
                if not _ARGUMENT_NAMES.issuperset(event):
                    unknown = sorted(map(str, set(event).difference(_ARGUMENT_NAMES)))
                    raise TypeError(
                        f"unknown key(s) {', '.join(unknown)}; an event takes "
                        f"{', '.join(TRACK_ARGUMENTS)}"
                    )
                return self.activity(**event)
            if isinstance(event, str | bytes) or not isinstance(event, Sequence):
                raise TypeError(
                    "an event must be a dict of track() arguments or a tuple "
                    f"(id, bucket, old_id, old_bucket, date, periods), not {type(event).__name__}"
                )
            if len(event) > len(TRACK_ARGUMENTS):
                raise TypeError(f"an event tuple has at most {len(TRACK_ARGUMENTS)} items")
            return self.activity(*event)
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"events[{index}]: {exc}") from exc


class PendingEvents:
    """Checked events waiting to be sent, with what :meth:`ActivityChecker.extend` needs to
    drop repeats: the plain adds seen and the ids moved since the last send."""

    __slots__ = ("activities", "moved", "seen")

    def __init__(self) -> None:
        self.activities: list[Activity] = []
        self.seen: set[tuple[str, object, datetime.date]] = set()
        self.moved: set[str] = set()

    def add(self, activity: Activity) -> None:
        self.activities.append(activity)
        if activity.old_id is not None:
            self.moved.add(activity.old_id)

    def take(self) -> list[Activity]:
        """The events to send, leaving this empty."""
        activities = self.activities
        self.activities, self.seen, self.moved = [], set(), set()
        return activities


def _check_max_events(max_events: object) -> int:
    if isinstance(max_events, bool) or not isinstance(max_events, int):
        raise TypeError(f"max_events must be an int, not {type(max_events).__name__}")
    if max_events < 1:
        raise ValueError(f"max_events must be at least 1, not {max_events}")
    return max_events


class Batch:
    """Events collected and sent together; made by :meth:`ActivityTracker.batch`.

    ``track()`` takes the arguments of :meth:`ActivityTracker.track` and checks them at once
    (a bad one raises there and is not kept; ``date=None`` means the day of the call). Events
    are sent when ``max_events`` are pending, on :meth:`flush`, and when the ``with`` block
    ends, even by an exception: what was tracked before an error is recorded, as with
    ``track()``. Not thread-safe: use one batch per thread, or :class:`BufferedTracker`.
    """

    def __init__(self, tracker: ActivityTracker, max_events: int = DEFAULT_MAX_EVENTS) -> None:
        self.tracker = tracker
        self.max_events = _check_max_events(max_events)
        self._checker = tracker._checker
        self._pending = PendingEvents()

    @property
    def pending(self) -> int:
        """How many events are waiting to be sent."""
        return len(self._pending.activities)

    def track(
        self,
        id: object = None,
        bucket: Bucket = None,
        old_id: object = None,
        old_bucket: Bucket = None,
        date: datetime.date | None = None,
        periods: Iterable[str] | None = None,
    ) -> None:
        """Add one event; see :meth:`ActivityTracker.track`."""
        self._pending.add(self._checker.activity(id, bucket, old_id, old_bucket, date, periods))
        if len(self._pending.activities) >= self.max_events:
            self.flush()

    def track_many(self, events: Iterable[Event]) -> int:
        """Add every event of ``events`` (dicts or tuples, see :data:`Event`) in order; return
        how many. A bad event raises ``TypeError``/``ValueError`` naming ``events[i]``."""
        iterator, count = iter(events), 0
        while True:
            taken, done = self._checker.extend(self._pending, iterator, count, self.max_events)
            count += taken
            if done:
                return count
            self.flush()

    def flush(self) -> int:
        """Send the pending events now; return how many were sent. If sending fails, the
        error is raised and those events are not kept (a period's events are written all or
        nothing, but each period is written on its own)."""
        pending = self._pending.take()
        if pending:
            self.tracker.backend.track_many(pending)
        return len(pending)

    def close(self) -> None:
        """Send what is pending."""
        self.flush()

    def __enter__(self) -> Batch:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.flush()


class AsyncBatch:
    """The asyncio twin of :class:`Batch`, made by :meth:`AsyncActivityTracker.batch`:
    ``track()`` and ``track_many()`` are coroutines because they may send."""

    def __init__(self, tracker: AsyncActivityTracker, max_events: int = DEFAULT_MAX_EVENTS) -> None:
        self.tracker = tracker
        self.max_events = _check_max_events(max_events)
        self._checker = tracker._checker
        self._pending = PendingEvents()

    @property
    def pending(self) -> int:
        """How many events are waiting to be sent."""
        return len(self._pending.activities)

    async def track(
        self,
        id: object = None,
        bucket: Bucket = None,
        old_id: object = None,
        old_bucket: Bucket = None,
        date: datetime.date | None = None,
        periods: Iterable[str] | None = None,
    ) -> None:
        """See :meth:`Batch.track`."""
        self._pending.add(self._checker.activity(id, bucket, old_id, old_bucket, date, periods))
        if len(self._pending.activities) >= self.max_events:
            await self.flush()

    async def track_many(self, events: Iterable[Event]) -> int:
        """See :meth:`Batch.track_many`."""
        iterator, count = iter(events), 0
        while True:
            taken, done = self._checker.extend(self._pending, iterator, count, self.max_events)
            count += taken
            if done:
                return count
            await self.flush()

    async def flush(self) -> int:
        """See :meth:`Batch.flush`."""
        pending = self._pending.take()
        if pending:
            await self.tracker.backend.track_many(pending)
        return len(pending)

    async def close(self) -> None:
        """Send what is pending."""
        await self.flush()

    async def __aenter__(self) -> AsyncBatch:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.flush()

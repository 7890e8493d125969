"""Sending many events at once: ``tracker.track_many(events)`` and ``tracker.batch()``.

A batch gives the counts that calling ``track()`` on each event, in order, would give (id
changes included), but sends the events together: on Redis, each distinct id goes once per
period and bucket into a multi-element ``PFADD``, so a user seen fifty times in a batch costs
one element. A batch holds at most ``max_events`` checked events before it sends them.
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
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
    ``object.__setattr__``; its slots can be set directly. This runs once per plain add of
    ``track()`` and of a ``BufferedTracker``. Falls back to the plain constructor if
    ``Activity`` ever stops having slots."""
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
        if periods is not None or (id is None and old_id is None):
            kinds = arguments.period_kinds(periods, self.kinds)
            return arguments.activity(kinds, self.timezone, id, bucket, old_id, old_bucket, date)
        bucket = self._bucket(bucket, "bucket")
        old_bucket = self._bucket(old_bucket, "old_bucket")
        found = self._day(date)
        if id is not None and (
            type(id) is not str or not id.isascii() or len(id) > arguments.MAX_ID_BYTES
        ):
            id = arguments.id_text(id, "id")
        if old_id is not None and (
            type(old_id) is not str or not old_id.isascii() or len(old_id) > arguments.MAX_ID_BYTES
        ):
            old_id = arguments.id_text(old_id, "old_id")
        if old_id is None and old_bucket is None:
            return _plain_add(found, id, bucket)  # type: ignore[arg-type]
        return Activity(*found, id, bucket, old_id, old_bucket)

    def _bucket(self, bucket: object, argument: str) -> Bucket:
        try:
            known = bucket in self._buckets
        except TypeError:  # unhashable: bucket_name says what is wrong with it
            known = False
        if not known:
            bucket = arguments.bucket_name(bucket, argument)
            if len(self._buckets) >= _CACHE_LIMIT:
                self._buckets = {None}
            self._buckets.add(bucket)
        return bucket  # type: ignore[return-value]

    def _day(self, date: object) -> _Periods:
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
        return found

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

        The common event (a tuple or dict with an ASCII id, no id change, a ``datetime.date``,
        and a bucket already seen that day, and an id not moved since the last send) is
        checked inline here and its id put in the set of its day and bucket; any other goes
        through :meth:`event`, which checks it in full.
        """
        adds, moved, date_type = pending.adds, pending.moved, datetime.date
        consumed, held = 0, pending.events
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
                    and type(date) is date_type
                    and new_id not in moved
                ):
                    ids = adds.get((date, bucket))
                    if ids is None:
                        pending.events = held
                        index = first_index + consumed - 1
                        ids = self._new_day(pending, event, index, date, bucket)
                    ids.add(new_id)
                    held += 1
                    if held >= limit:
                        pending.events = held
                        return consumed, False
                    continue
            except TypeError:  # an unhashable bucket: the full check below says what is wrong
                pass
            pending.events = held
            pending.add(self.event(event, first_index + consumed - 1))
            held = pending.events
            if held >= limit:
                return consumed, False
        pending.events = held
        return consumed, True

    def _new_day(
        self, pending: PendingEvents, event: Event, index: int, date: object, bucket: object
    ) -> set[str]:
        """A new set for the ids added to ``bucket`` on ``date``, as plain add
        ``events[index]`` gives them: the event is checked in full first."""
        activity = self.event(event, index)
        pending.days[date, bucket] = (activity.periods, activity.ends), activity.bucket
        ids: set[str] = set()
        pending.adds[date, bucket] = ids
        return ids

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


@dataclass(frozen=True, slots=True)
class GroupedActivities:
    """Checked activities to record together, the plain adds grouped.

    ``adds``: per day and bucket, the periods of that day with their ends, the bucket, and
    the ids added to it with no id change before any move of theirs in the batch;
    ``others``: every other activity, in order; ``events``: how many events they came from.
    Recording the adds first, then the others, gives what recording every event in order
    gives: an add of an id not moved yet commutes with everything before it (it changes only
    its own id's records, and adds of one id commute). Iterating gives that sequence of
    activities, for any backend; the Redis backend sends the sets as they are.
    """

    adds: Sequence[tuple[_Periods, Bucket, Collection[str]]]
    others: list[Activity]
    events: int

    def __iter__(self) -> Iterator[Activity]:
        for (periods, ends), bucket, ids in self.adds:
            for id in ids:
                yield Activity(periods, ends, id, bucket, None, None)
        yield from self.others


class PendingEvents:
    """Checked events waiting to be sent: the plain adds as sets of ids per day and bucket
    (as the caller gave them: :meth:`ActivityChecker.extend` looks them up by what it is
    given), the other activities in order, and the ids moved since the last send."""

    __slots__ = ("adds", "days", "events", "moved", "others")

    def __init__(self) -> None:
        self.adds: dict[tuple[object, object], set[str]] = {}
        self.days: dict[tuple[object, object], tuple[_Periods, Bucket]] = {}
        self.others: list[Activity] = []
        self.moved: set[str] = set()
        self.events = 0

    def add(self, activity: Activity) -> None:
        self.others.append(activity)
        self.events += 1
        if activity.old_id is not None:
            self.moved.add(activity.old_id)

    def take(self) -> GroupedActivities:
        """The events to send, leaving this empty."""
        days = self.days
        taken = GroupedActivities(
            [(*days[key], ids) for key, ids in self.adds.items()], self.others, self.events
        )
        self.adds, self.days, self.others, self.moved, self.events = {}, {}, [], set(), 0
        return taken


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
        self.max_events = arguments.positive_int(max_events, "max_events")
        self._checker = tracker._checker
        self._pending = PendingEvents()

    @property
    def pending(self) -> int:
        """How many events are waiting to be sent."""
        return self._pending.events

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
        if self._pending.events >= self.max_events:
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
        if pending.events:
            self.tracker.backend.track_many(pending)
        return pending.events

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
        self.max_events = arguments.positive_int(max_events, "max_events")
        self._checker = tracker._checker
        self._pending = PendingEvents()

    @property
    def pending(self) -> int:
        """How many events are waiting to be sent."""
        return self._pending.events

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
        if self._pending.events >= self.max_events:
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
        if pending.events:
            await self.tracker.backend.track_many(pending)
        return pending.events

    async def close(self) -> None:
        """Send what is pending."""
        await self.flush()

    async def __aenter__(self) -> AsyncBatch:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.flush()

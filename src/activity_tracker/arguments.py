"""Checking what callers pass and turning it into plain requests for a backend.

Everything here is pure: every public call is checked in full before a backend sees it, so a
bad argument raises ``ValueError``/``TypeError`` naming it and nothing is written.
"""

from __future__ import annotations

import datetime
import math
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from . import periods as _periods
from .corrections import Estimate
from .keys import Bucket, bucket_order
from .periods import Period

DEFAULT_LOOKUP_DAYS = 365
#: How long the raw keys of a period live after the later of its end and its first write.
DEFAULT_RETENTION = datetime.timedelta(days=35)
#: The longest retention accepted (about a century): Redis's expiry must stay representable.
MAX_RETENTION = datetime.timedelta(days=36_525)
#: The longest id, in bytes of UTF-8 (ids are hashed: longer ones would only cost traffic).
MAX_ID_BYTES = 1024
#: The longest bucket name, in bytes of UTF-8 (a bucket name is part of key names).
MAX_BUCKET_BYTES = 256
# An int of more bits has more than MAX_ID_BYTES digits (4 bits > 1 digit): refused before
# str() is asked for them (which refuses more than 4,300 digits itself).
_MAX_ID_BITS = 4 * MAX_ID_BYTES


@dataclass(frozen=True, slots=True)
class Activity:
    """One call of ``track()``: in each period, move ``old_id`` out of ``old_bucket`` (if
    given), then add ``id`` to ``bucket`` (if given). ``ends`` holds the epoch seconds at
    which each period ends in the tracker's time zone (what its raw keys' expiry counts
    from)."""

    periods: tuple[Period, ...]
    ends: tuple[float, ...]
    id: str | None
    bucket: Bucket
    old_id: str | None
    old_bucket: Bucket


@dataclass(frozen=True, slots=True)
class CollapseJob:
    """One call of ``collapse()``: the periods to collapse, oldest first.

    ``buckets`` is ``None`` for "every bucket tracked in the period". ``aggregates`` keeps the
    caller's order, so an aggregate may use one defined before it.
    """

    periods: tuple[Period, ...]
    buckets: tuple[Bucket, ...] | None
    aggregates: tuple[tuple[str, tuple[Bucket, ...]], ...]
    #: The lengths of the rolling windows to store, in days, ending on each daily period.
    rolling: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class LookupJob:
    """One call of ``lookup()``: the periods wholly inside the range, oldest first."""

    periods: tuple[Period, ...]
    buckets: tuple[Bucket, ...] | None


def period_kinds(periods: object, default: tuple[str, ...]) -> tuple[str, ...]:
    """The period kinds of a call: ``periods`` if given, else the tracker's default."""
    if periods is None:
        return default
    if isinstance(periods, str) or not isinstance(periods, Iterable):
        raise TypeError("periods must be a list of PERIOD_* constants")
    kinds = tuple(dict.fromkeys(_periods.check_kind(kind, "periods") for kind in periods))
    if not kinds:
        raise ValueError("periods must name at least one period")
    return kinds


def period_ends(periods: Sequence[Period], timezone: datetime.tzinfo | None) -> tuple[float, ...]:
    """The :attr:`Activity.ends` of ``periods``."""
    return tuple(_periods.end_epoch(period, timezone) for period in periods)


def retention_seconds(retention: object) -> int:
    """The ``retention=`` option in whole seconds: a positive timedelta or number."""
    if retention is None:
        raise ValueError(
            "retention=None is no longer accepted: every raw key expires; pass a long "
            "retention instead, e.g. retention=datetime.timedelta(days=3650)"
        )
    if isinstance(retention, datetime.timedelta):
        seconds = retention.total_seconds()
    elif isinstance(retention, int | float) and not isinstance(retention, bool):
        seconds = float(retention)
    else:
        raise TypeError(f"retention must be a timedelta or seconds, not {type(retention).__name__}")
    if not 0 < seconds <= MAX_RETENTION.total_seconds():
        raise ValueError(f"retention must be positive and at most 100 years, not {retention!r}")
    return math.ceil(seconds)


def id_text(value: object, argument: str) -> str:
    """An id as the text it is compared by: ``123``, ``"123"`` and ``b"123"`` are the same
    id, a ``uuid.UUID`` is its ``str()``. Other types are a TypeError, and an id longer than
    :data:`MAX_ID_BYTES` bytes of UTF-8 a ValueError, both naming ``argument``."""
    if isinstance(value, str):
        text = value
    elif isinstance(value, int) and not isinstance(value, bool):
        if value.bit_length() > _MAX_ID_BITS:
            raise ValueError(
                f"{argument}: an int id has at most {MAX_ID_BYTES:,} digits (a documented limit)"
            )
        text = int.__repr__(value)  # digits, also for an IntEnum
    elif isinstance(value, uuid.UUID):
        return str(value)
    elif isinstance(value, bytes | bytearray):
        _check_size(len(value), MAX_ID_BYTES, argument, "an id")
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ValueError(f"{argument}: bytes ids must be UTF-8 text") from exc
    else:
        raise TypeError(
            f"{argument} must be a str, int, uuid.UUID or UTF-8 bytes, not {type(value).__name__}"
        )
    _check_text(text, MAX_ID_BYTES, argument, "an id")
    return text


def bucket_name(value: object, argument: str) -> Bucket:
    """A bucket name: ``None`` (the default bucket) or a str of at most
    :data:`MAX_BUCKET_BYTES` bytes of UTF-8."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise TypeError(f"{argument} must be a str or None, not {type(value).__name__}")
    _check_text(value, MAX_BUCKET_BYTES, argument, "a bucket name")
    return value


def _check_text(text: str, limit: int, argument: str, what: str) -> None:
    """Raise unless ``text`` is valid unicode of at most ``limit`` bytes of UTF-8."""
    if len(text) <= limit and text.isascii():
        return
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError as exc:
        shown = text[:40] + ("..." if len(text) > 40 else "")
        raise ValueError(f"{argument}: {shown!r} is not valid unicode text") from exc
    _check_size(size, limit, argument, what)


def _check_size(size: int, limit: int, argument: str, what: str) -> None:
    if size > limit:
        raise ValueError(
            f"{argument}: {size:,} bytes of UTF-8; {what} holds at most {limit:,} (a documented "
            "limit)"
        )


def positive_int(value: object, argument: str) -> int:
    """An int of at least 1 (a count of events, periods, rows), ``argument`` named if not."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{argument} must be an int, not {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{argument} must be at least 1, not {value}")
    return value


def bucket_list(value: object, argument: str) -> tuple[Bucket, ...] | None:
    """A list of bucket names, or ``None``; a bare str is refused (it is not a list)."""
    if value is None:
        return None
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise TypeError(f"{argument} must be a list of bucket names, not {type(value).__name__}")
    return tuple(dict.fromkeys(bucket_name(b, argument) for b in value))


def activity(
    kinds: tuple[str, ...],
    timezone: datetime.tzinfo | None,
    id: object,
    bucket: object,
    old_id: object,
    old_bucket: object,
    date: object,
) -> Activity:
    """Check the arguments of ``track()``."""
    if id is None and old_id is None:
        raise ValueError("track() needs id, old_id or both")
    checked_bucket = bucket_name(bucket, "bucket")
    checked_old_bucket = bucket_name(old_bucket, "old_bucket")
    day = _periods.local_date(date, timezone, "date")
    periods = tuple(Period.containing(kind, day) for kind in kinds)
    return Activity(
        periods=periods,
        ends=period_ends(periods, timezone),
        id=None if id is None else id_text(id, "id"),
        bucket=checked_bucket,
        old_id=None if old_id is None else id_text(old_id, "old_id"),
        old_bucket=checked_old_bucket,
    )


def collapse_job(
    kinds: tuple[str, ...],
    timezone: datetime.tzinfo | None,
    date: object,
    max_periods: object,
    buckets: object,
    aggregate_buckets: object,
    rolling: tuple[int, ...] = (),
) -> CollapseJob:
    """Check the arguments of ``collapse()``; ``rolling``: the tracker's window lengths,
    stored when the daily period is collapsed."""
    day = _periods.local_date(date, timezone, "date")
    max_periods = positive_int(max_periods, "max_periods")
    if max_periods > _periods.MAX_PERIODS:
        raise ValueError(
            f"max_periods must be at most {_periods.MAX_PERIODS:,}, not {max_periods:,}"
        )
    checked_buckets = bucket_list(buckets, "buckets")
    aggregates = _aggregates(aggregate_buckets, checked_buckets)
    found = [p for kind in kinds for p in _periods.finished_before(kind, day, max_periods)]
    return CollapseJob(
        periods=tuple(found),
        buckets=checked_buckets,
        aggregates=aggregates,
        rolling=rolling if _periods.DAILY in kinds else (),
    )


def _aggregates(
    value: object, buckets: tuple[Bucket, ...] | None
) -> tuple[tuple[str, tuple[Bucket, ...]], ...]:
    if value is None:
        return ()
    if not isinstance(value, Mapping):
        raise TypeError(
            "aggregate_buckets must be a dict of name -> list of buckets, "
            f"not {type(value).__name__}"
        )
    checked: list[tuple[str, tuple[Bucket, ...]]] = []
    for name, sources in value.items():
        if not isinstance(name, str):
            raise TypeError(f"aggregate_buckets: names must be str, not {type(name).__name__}")
        bucket_name(name, "aggregate_buckets")
        source_list = bucket_list(sources, f"aggregate_buckets[{name!r}]")
        if not source_list:
            raise ValueError(f"aggregate_buckets[{name!r}] must name at least one bucket")
        if name in source_list:
            raise ValueError(f"aggregate_buckets[{name!r}] cannot contain itself")
        if buckets is not None and name in buckets:
            raise ValueError(
                f"aggregate_buckets: {name!r} is also a bucket being collapsed; "
                "an aggregate needs a name of its own"
            )
        checked.append((name, source_list))
    return tuple(checked)


def lookup_job(
    kind: object,
    timezone: datetime.tzinfo | None,
    start: object,
    end: object,
    buckets: object,
) -> LookupJob:
    """Check the arguments of ``lookup()``; ``end`` defaults to today, ``start`` to a year
    before ``end``."""
    checked_kind = _periods.check_kind(kind)
    end_day = _periods.local_date(end, timezone, "end")
    start_day = (
        _periods.days_before(end_day, DEFAULT_LOOKUP_DAYS)
        if start is None
        else _periods.local_date(start, timezone, "start")
    )
    if start_day > end_day:
        raise ValueError(f"start ({start_day}) must not be after end ({end_day})")
    return LookupJob(
        periods=tuple(_periods.within(checked_kind, start_day, end_day)),
        buckets=bucket_list(buckets, "buckets"),
    )


def lookup_rows(
    job: LookupJob, counts: Sequence[Mapping[Bucket, Estimate]], with_error: bool
) -> list[tuple[datetime.date, dict[Bucket, Any]]]:
    """Shape per-period estimates into rows that all carry the same buckets: plain counts, or
    the :class:`Estimate` itself ``with_error``; a missing bucket reads 0 (or
    ``Estimate(0, 0.0)``)."""
    if job.buckets is not None:
        names: tuple[Bucket, ...] = job.buckets
    else:
        seen: dict[Bucket, None] = {}
        for period_counts in counts:
            seen.update(dict.fromkeys(period_counts))
        names = tuple(sorted(seen, key=bucket_order))
    missing = Estimate(0, 0.0)
    if with_error:
        return [
            (period.start, {name: period_counts.get(name, missing) for name in names})
            for period, period_counts in zip(job.periods, counts, strict=True)
        ]
    return [
        (period.start, {name: period_counts.get(name, missing).count for name in names})
        for period, period_counts in zip(job.periods, counts, strict=True)
    ]


#: The longest rolling window, in days: as long as the longest retention.
MAX_WINDOW_DAYS = MAX_RETENTION.days


def window_days(value: object, argument: str) -> int:
    """A rolling window's length: a number of days, from 1 to :data:`MAX_WINDOW_DAYS`."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{argument}: a window length is a number of days, not {value!r}")
    if not 1 <= value <= MAX_WINDOW_DAYS:
        raise ValueError(
            f"{argument}: a window length is from 1 to {MAX_WINDOW_DAYS:,} days, not {value}"
        )
    return value


def rolling_lengths(value: object, kinds: tuple[str, ...], retention: int) -> tuple[int, ...]:
    """The ``rolling=`` option: window lengths in days, each at most ``retention`` (seconds,
    that of the raw sketches the windows are made of), with the daily period tracked."""
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise TypeError(f"rolling must be a list of window lengths in days, not {value!r}")
    lengths = tuple(dict.fromkeys(window_days(length, "rolling") for length in value))
    if lengths and _periods.DAILY not in kinds:
        raise ValueError(
            "rolling: windows are made of daily sketches: track the daily period too "
            "(periods=[..., PERIOD_DAILY])"
        )
    for length in lengths:
        if length * 86_400 > retention:
            raise ValueError(
                f"rolling: a window of {length} days is longer than the retention of raw "
                f"data ({retention / 86_400:g} days): its first day's sketches would be gone "
                "when it is collapsed; pass a longer retention="
            )
    return lengths


def day_range(
    timezone: datetime.tzinfo | None, start: object, end: object
) -> tuple[datetime.date, datetime.date]:
    """``start`` and ``end`` of a range of days ``[start, end)`` (both required)."""
    days = []
    for argument, value in (("start", start), ("end", end)):
        if value is None:
            raise TypeError(f"{argument} must be a datetime.date or datetime.datetime, not None")
        days.append(_periods.local_date(value, timezone, argument))
    if days[0] > days[1]:
        raise ValueError(f"start ({days[0]}) must not be after end ({days[1]})")
    return days[0], days[1]


#: The most periods a retention triangle covers (its unions grow as their square).
MAX_COHORTS = 366


def cohorts(kind: str, start: datetime.date, end: datetime.date) -> tuple[Period, ...]:
    """The periods of a retention triangle over ``[start, end)``: at most :data:`MAX_COHORTS`."""
    found = tuple(_periods.within(kind, start, end))
    if len(found) > MAX_COHORTS:
        raise ValueError(
            f"start, end: {len(found):,} {kind} periods; a retention triangle covers at most "
            f"{MAX_COHORTS} (it counts a union for each pair of them)"
        )
    return found


def window_span(first_day: datetime.date, end: datetime.date) -> None:
    """Refuse windows computed over more than ``MAX_PERIODS`` days of raw sketches."""
    if (end - first_day).days > _periods.MAX_PERIODS:
        raise ValueError(
            f"start, end: these windows read {(end - first_day).days:,} days of raw sketches, "
            f"more than {_periods.MAX_PERIODS:,}"
        )


def first_window_day(last_day: datetime.date, days: int) -> datetime.date:
    """The first day of the window of ``days`` days ending with ``last_day``, or a
    ValueError when it would fall before ``date.min``."""
    if (last_day - datetime.date.min).days < days - 1:
        raise ValueError(
            f"start: the window of {days} days ending on {last_day} starts before 1 AD"
        )
    return last_day - datetime.timedelta(days=days - 1)


def measure_period(kind: object, timezone: datetime.tzinfo | None, date: object) -> Period:
    """The period ``measure()`` reads: that of ``kind`` holding ``date`` (default today)."""
    return Period.containing(_periods.check_kind(kind), _periods.local_date(date, timezone, "date"))


def aggregate_definitions(
    value: object, buckets: tuple[Bucket, ...] | None
) -> dict[Bucket, tuple[Bucket, ...]]:
    """``aggregate_buckets=`` checked as ``collapse()`` checks it, against ``buckets``."""
    return dict(_aggregates(value, buckets))

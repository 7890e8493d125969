"""The exceptions this library raises, to be caught by meaning.

Bad arguments raise plain :class:`ValueError` or :class:`TypeError` naming the argument, before
anything is written. Every exception class of the library's API derives from
:class:`ActivityTrackerError` (some also from ``ValueError``, ``TypeError`` or
``ConnectionError``); one raised for what went wrong in the store carries the underlying
exception as ``__cause__``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .periods import Period


class ActivityTrackerError(Exception):
    """Base class of every exception class of the library's API: ``except
    ActivityTrackerError`` catches them all (plain ``ValueError``/``TypeError`` for bad
    arguments aside)."""


class BackendConnectionError(ActivityTrackerError, ConnectionError):
    """The store cannot be reached (refused, timed out, dropped); ``__cause__`` says why."""


class WrongKeyTypeError(ActivityTrackerError, TypeError):
    """A key under the tracker's prefix holds data of another kind; it was left untouched."""


class StorageError(ActivityTrackerError):
    """The store answered with an error this library did not expect."""


class AggregateBucketError(ActivityTrackerError, ValueError):
    """A bucket name clashes with an aggregate in one period: ``track()`` into (or moving an
    id out of) a bucket that is an aggregate there, or an aggregate named like a bucket
    tracked there (or that ids were moved out of). Nothing was written for that period."""

    @classmethod
    def tracked_into(cls, argument: str, bucket: object, period: Period) -> AggregateBucketError:
        """``track()`` into (or, ``argument`` ``old_bucket``, out of) an aggregate of ``period``."""
        action = "moving an id out of" if argument == "old_bucket" else "tracking into"
        return cls(
            f"{argument}: {bucket!r} is an aggregate in the {period.kind} period of "
            f"{period.start} (made by collapse): {action} it is refused"
        )

    @classmethod
    def named_like_a_bucket(cls, name: object, period: Period) -> AggregateBucketError:
        """An aggregate named like a bucket tracked (or moved out of) in ``period``."""
        return cls(
            f"aggregate_buckets: {name!r} is a bucket used in the {period.kind} period of "
            f"{period.start}; an aggregate needs a name of its own"
        )

    @classmethod
    def counting_itself(cls, name: object, period: Period) -> AggregateBucketError:
        """An aggregate whose sources, through stored aggregates, include itself."""
        return cls(
            f"aggregate_buckets: {name!r} would count itself through the aggregates of the "
            f"{period.kind} period of {period.start}"
        )


class RawDataExpiredError(ActivityTrackerError, ValueError):
    """A computed rolling window, ``count()``, ``retention()`` or ``measure()`` needs the raw
    data (sketches and id changes) of a period whose raw data has expired: ``period`` names
    it. Raw data is kept for the tracker's ``retention`` after a period ends; what was
    collapsed stays."""

    def __init__(self, period: Period) -> None:
        super().__init__(
            f"the raw data of the {period.kind} period of {period.start} has expired (raw "
            "sketches are kept for the tracker's retention after a period ends): rolling "
            "windows that were not stored, count(), retention() and measure() cannot cover it"
        )
        self.period = period


class CollapseError(ActivityTrackerError):
    """Some periods of a ``collapse()`` failed; every other period was stored.

    ``failures`` holds ``(period, error)`` for each failed period, oldest first; each error
    names the key (or bucket) at fault. When every failure is an aggregate named like a
    bucket, the error raised is a :class:`CollapseValueError`, also a ``ValueError``."""

    def __init__(self, message: str, failures: Sequence[tuple[Period, Exception]]) -> None:
        super().__init__(message)
        self.failures = tuple(failures)


class CollapseValueError(CollapseError, ValueError):
    """A :class:`CollapseError` whose failures are all :class:`AggregateBucketError`."""


def collapse_error(failures: Sequence[tuple[Period, Exception]]) -> CollapseError:
    """The one error to raise for the failed periods of a collapse (to be raised ``from`` the
    first failure)."""
    details = "; ".join(f"{period.kind} {period.start}: {error}" for period, error in failures)
    kind = (
        CollapseValueError
        if all(isinstance(error, AggregateBucketError) for _, error in failures)
        else CollapseError
    )
    plural = "s" if len(failures) > 1 else ""
    return kind(f"collapse failed for {len(failures)} period{plural}: {details}", failures)

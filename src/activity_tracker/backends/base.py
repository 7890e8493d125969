"""The interface every store implements; ``ActivityTracker`` talks only to this."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping

from ..arguments import Activity, CollapseJob, LookupJob
from ..corrections import Estimate
from ..keys import Bucket
from ..unions import Inquiry, T


class Backend(ABC):
    """A store for activity sketches and counts.

    Backends receive checked arguments (see :mod:`activity_tracker.arguments`) and must honour
    the exact-set model of DESIGN.md: counts estimate what exact per-period sets would give.
    """

    @abstractmethod
    def track(self, activity: Activity) -> None:
        """Record one activity in each of its periods, in one round trip where there is one;
        raise :class:`~activity_tracker.errors.AggregateBucketError` before writing if its
        bucket (or old bucket) is an aggregate in one of them. Every raw datum of a period
        expires at the deadline its first write fixed (``keys.deadline``)."""

    def track_many(self, activities: Iterable[Activity]) -> None:
        """Record activities with the result of calling :meth:`track` on each in order (the
        default does just that; stores override it to send them together)."""
        for activity in activities:
            self.track(activity)

    @abstractmethod
    def collapse(self, job: CollapseJob) -> None:
        """Store the counts (and their sketches' estimates) of the job's periods, and the
        rolling windows of ``job.rolling`` ending on each daily period; a period that fails
        (an aggregate named like a bucket of that period, someone else's data) is left as it
        was, and once every other period is stored, one
        :class:`~activity_tracker.errors.CollapseError` names them all."""

    @abstractmethod
    def lookup(self, job: LookupJob) -> list[Mapping[Bucket, Estimate]]:
        """The stored estimates of each of the job's periods (only the requested buckets, or
        all when ``job.buckets`` is None); a bucket with no count is left out."""

    def lookup_rolling(self, days: int, job: LookupJob) -> list[Mapping[Bucket, Estimate]]:
        """The stored rolling windows of ``days`` days ending on each of the job's days (see
        ``CollapseJob.rolling``), like :meth:`lookup`."""
        raise NotImplementedError(f"{type(self).__name__} stores no rolling windows")

    def unions(self, inquiry: Inquiry[T]) -> T:
        """Answer an inquiry made of unions of raw sketches (rolling windows, ``count()``,
        retention, ``measure()``): read its periods' registries, make a
        :class:`~activity_tracker.unions.UnionPlan` of them, fetch what it asks for, finish
        it. Reads only."""
        raise NotImplementedError(f"{type(self).__name__} cannot count unions of sketches")

    def close(self) -> None:  # noqa: B027 - optional hook, nothing to release by default
        """Release connections or files held by the backend."""


class AsyncBackend(ABC):
    """The asyncio twin of :class:`Backend`, used by ``AsyncActivityTracker``."""

    @abstractmethod
    async def track(self, activity: Activity) -> None:
        """See :meth:`Backend.track`."""

    async def track_many(self, activities: Iterable[Activity]) -> None:
        """See :meth:`Backend.track_many`."""
        for activity in activities:
            await self.track(activity)

    @abstractmethod
    async def collapse(self, job: CollapseJob) -> None:
        """See :meth:`Backend.collapse`."""

    @abstractmethod
    async def lookup(self, job: LookupJob) -> list[Mapping[Bucket, Estimate]]:
        """See :meth:`Backend.lookup`."""

    async def lookup_rolling(self, days: int, job: LookupJob) -> list[Mapping[Bucket, Estimate]]:
        """See :meth:`Backend.lookup_rolling`."""
        raise NotImplementedError(f"{type(self).__name__} stores no rolling windows")

    async def unions(self, inquiry: Inquiry[T]) -> T:
        """See :meth:`Backend.unions`."""
        raise NotImplementedError(f"{type(self).__name__} cannot count unions of sketches")

    async def close(self) -> None:  # noqa: B027 - optional hook, nothing to release by default
        """Release connections held by the backend."""

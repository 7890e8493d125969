"""``ActivityCollector``: the tracker's counts as Prometheus gauges (``prometheus_client``).

Two gauge families, labelled ``period`` (``daily``, ``weekly``, ``monthly``, ``yearly``,
``rolling_7d``...) and ``bucket`` (``""`` for the default bucket):

- ``activity_tracker_active_ids``: the last finished period, as collapsed (0, or no sample
  with ``buckets=None``, until someone collapses it: ``activity-tracker serve`` or cron).
- ``activity_tracker_active_ids_current``: live estimates of the open periods, read with
  ``measure()`` from their raw data (nothing is stored). ``current=False`` leaves that family
  out.

A scrape reads only: one ``lookup()`` per period kind and one ``lookup_rolling()`` per
rolling length, plus one ``measure()`` per period kind with ``current=True``. A store error
fails the scrape (prometheus_client answers 500, so Prometheus records the target as down).
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Iterable, Iterator, Mapping

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .. import arguments
from ..buffer import BufferedTracker
from ..keys import Bucket
from ..periods import Period
from ..tracker import ActivityTracker

log = logging.getLogger("activity_tracker")

FINISHED = "activity_tracker_active_ids"
CURRENT = "activity_tracker_active_ids_current"
LABELS = ("period", "bucket")
_FINISHED_HELP = (
    "Distinct ids active in the last finished period, as collapsed (a HyperLogLog estimate: "
    "standard error about 0.81%)"
)
_CURRENT_HELP = (
    "Distinct ids active so far in the open period (a live HyperLogLog estimate: standard "
    "error about 0.81%)"
)


def rolling_label(length: int) -> str:
    """The ``period`` label of a rolling window of ``length`` days: ``rolling_7d``."""
    return f"rolling_{length}d"


def bucket_label(bucket: Bucket) -> str:
    """The ``bucket`` label: the bucket's name, ``""`` for the default bucket."""
    return "" if bucket is None else bucket


def _rolling_lengths(rolling: object) -> tuple[int, ...]:
    if isinstance(rolling, str) or not isinstance(rolling, Iterable):
        raise TypeError(f"rolling must be a list of window lengths in days, not {rolling!r}")
    lengths = []
    for length in rolling:
        if isinstance(length, bool) or not isinstance(length, int):
            raise TypeError(f"rolling: a window length is a number of days, not {length!r}")
        if length < 1:
            raise ValueError(f"rolling: a window length must be at least 1 day, not {length}")
        lengths.append(length)
    return tuple(dict.fromkeys(lengths))


class ActivityCollector(Collector):
    """A ``prometheus_client`` collector of a tracker's counts.

    ``ActivityCollector(tracker, buckets=None, periods=None, rolling=(), *, current=True,
    aggregate_buckets=None)``: ``tracker`` is an :class:`~activity_tracker.ActivityTracker`
    (or a :class:`~activity_tracker.BufferedTracker`, whose tracker is read). ``buckets``:
    the buckets to report (``None``: every bucket with a count); ``periods``: the period
    kinds (default: the tracker's); ``rolling``: rolling window lengths in days, reported as
    ``period="rolling_<n>d"`` for the window ending with yesterday (``lookup_rolling()``:
    stored by the daily collapse for the tracker's ``rolling=`` lengths, computed from the
    raw daily sketches for others); ``current``: also report live estimates of the open
    periods (``measure()``, with ``aggregate_buckets``, so aggregates have live estimates
    too). With ``buckets=None`` both families carry every bucket with a count in the last
    finished or the open period.

    Register it with ``prometheus_client.REGISTRY.register(collector)`` or a registry of
    yours. A bucket named ``""`` shares its label with the default bucket: when both have a
    count, the default bucket's is reported and a warning logged.
    """

    def __init__(
        self,
        tracker: ActivityTracker | BufferedTracker,
        buckets: Iterable[Bucket] | None = None,
        periods: Iterable[str] | None = None,
        rolling: Iterable[int] = (),
        *,
        current: bool = True,
        aggregate_buckets: Mapping[str, Iterable[Bucket]] | None = None,
    ) -> None:
        if isinstance(tracker, BufferedTracker):
            tracker = tracker.tracker
        if not isinstance(tracker, ActivityTracker):
            raise TypeError(
                f"tracker must be an ActivityTracker or a BufferedTracker, not "
                f"{type(tracker).__name__}"
            )
        self.tracker = tracker
        self.buckets = arguments.bucket_list(buckets, "buckets")
        self.periods = arguments.period_kinds(periods, tracker.periods)
        self.rolling = _rolling_lengths(rolling)
        if not isinstance(current, bool):
            raise TypeError(f"current must be True or False, not {current!r}")
        self.current = current
        # Checked now, as measure() would check it, so a bad one fails here, not per scrape.
        arguments.aggregate_definitions(aggregate_buckets, None)
        self.aggregate_buckets = aggregate_buckets

    def describe(self) -> Iterator[Metric]:
        """The families, without samples: registering the collector reads nothing."""
        yield GaugeMetricFamily(FINISHED, _FINISHED_HELP, labels=LABELS)
        if self.current:
            yield GaugeMetricFamily(CURRENT, _CURRENT_HELP, labels=LABELS)

    def collect(self) -> Iterator[Metric]:
        """Read the counts of the last finished periods and windows, and (with ``current``)
        measure the open periods."""
        tracker = self.tracker
        today = datetime.datetime.now(tracker.timezone).date()
        finished = GaugeMetricFamily(FINISHED, _FINISHED_HELP, labels=LABELS)
        live = GaugeMetricFamily(CURRENT, _CURRENT_HELP, labels=LABELS)
        for kind in self.periods:
            last = Period.containing(kind, today).previous()
            [(_, counts)] = tracker.lookup(kind, last.start, last.end, self.buckets)
            if self.current:
                measured = tracker.measure(
                    kind, today, self.buckets, aggregate_buckets=self.aggregate_buckets
                )
                if self.buckets is None:
                    counts = dict.fromkeys(measured, 0) | counts
                    measured = dict.fromkeys(counts, 0) | measured
                else:
                    measured = {bucket: measured[bucket] for bucket in self.buckets}
                self._add(live, kind, measured)
            self._add(finished, kind, counts)
        yesterday = today - datetime.timedelta(days=1)
        for length in self.rolling:
            [(_, counts)] = tracker.lookup_rolling(length, yesterday, today, self.buckets)
            self._add(finished, rolling_label(length), counts)
        yield finished
        if self.current:
            yield live

    @staticmethod
    def _add(family: GaugeMetricFamily, period: str, counts: Mapping[Bucket, int]) -> None:
        labels: dict[str, int] = {}
        # The default bucket first: it keeps the label "" when a bucket named "" has a count.
        for bucket, count in sorted(counts.items(), key=lambda item: item[0] is not None):
            label = bucket_label(bucket)
            if label in labels:
                log.warning(
                    "activity-tracker: bucket %r shares the Prometheus label %r with another "
                    "bucket; only one is reported",
                    bucket,
                    label,
                )
                continue
            labels[label] = count
        for label, count in labels.items():
            family.add_metric([period, label], count)

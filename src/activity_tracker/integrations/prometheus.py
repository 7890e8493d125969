"""``ActivityCollector``: the tracker's counts as Prometheus gauges (``prometheus_client``).

Two gauge families, labelled ``period`` (``daily``, ``weekly``, ``monthly``, ``yearly``,
``rolling_7d``...) and ``bucket`` (``""`` for the default bucket):

- ``activity_tracker_active_ids``: the last finished period, as collapsed (0, or no sample
  with ``buckets=None``, until someone collapses it: ``activity-tracker serve`` or cron).
- ``activity_tracker_active_ids_current``: live estimates of the open periods. The library
  has no read-only count of an open period, so each scrape makes one with the public API:
  ``collapse()`` of the open period (an explicit collapse of a period that is still open
  stores provisional counts, which the collapse after its end replaces), then ``lookup()``.
  ``current=False`` leaves that family out and makes the collector read-only.

A scrape costs one ``lookup()`` per period kind and rolling length, plus one ``collapse()``
per period kind with ``current=True``. A store error fails the scrape (prometheus_client
answers 500, so Prometheus records the target as down).
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, cast

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
    ``period="rolling_<n>d"`` for the window ending with yesterday (needs a tracker with
    ``lookup_rolling()``); ``current``: also report live estimates of the open periods,
    collapsing each open period at every scrape with ``aggregate_buckets`` (so aggregates
    have live estimates too); see the module's documentation. With ``buckets=None`` both
    families carry every bucket with a count in the last finished or the open period.

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
        if self.rolling and not hasattr(tracker, "lookup_rolling"):
            raise ValueError("rolling: this tracker has no lookup_rolling() (no rolling windows)")
        if not isinstance(current, bool):
            raise TypeError(f"current must be True or False, not {current!r}")
        self.current = current
        # Aggregates are reported like buckets but built, not collapsed, by collapse().
        aggregates = {} if aggregate_buckets is None else aggregate_buckets
        if not isinstance(aggregates, Mapping):
            raise TypeError(
                "aggregate_buckets must be a dict of name -> list of buckets, "
                f"not {type(aggregates).__name__}"
            )
        self._collapsed = (
            None if self.buckets is None else [b for b in self.buckets if b not in aggregates]
        )
        # Checked now, as collapse() would check it, so a bad one fails here, not per scrape.
        arguments.collapse_job(self.periods, tracker.timezone, None, 1, self._collapsed, aggregates)
        self.aggregate_buckets = aggregates

    def describe(self) -> Iterator[Metric]:
        """The families, without samples: registering the collector reads nothing."""
        yield GaugeMetricFamily(FINISHED, _FINISHED_HELP, labels=LABELS)
        if self.current:
            yield GaugeMetricFamily(CURRENT, _CURRENT_HELP, labels=LABELS)

    def collect(self) -> Iterator[Metric]:
        """Read the counts (and, with ``current``, refresh the open periods' first)."""
        tracker = self.tracker
        today = datetime.datetime.now(tracker.timezone).date()
        finished = GaugeMetricFamily(FINISHED, _FINISHED_HELP, labels=LABELS)
        live = GaugeMetricFamily(CURRENT, _CURRENT_HELP, labels=LABELS)
        for kind in self.periods:
            open_period = Period.containing(kind, today)
            last = open_period.previous()
            if self.current:
                tracker.collapse(
                    buckets=self._collapsed,
                    aggregate_buckets=self.aggregate_buckets,
                    date=open_period.end,
                    periods=[kind],
                )
            end = open_period.end if self.current else last.end
            rows = tracker.lookup(kind, last.start, end, self.buckets)
            self._add(finished, kind, rows[0][1])
            if self.current:
                self._add(live, kind, rows[1][1])
        for length in self.rolling:
            yesterday = today - datetime.timedelta(days=1)
            # The rolling windows of DESIGN §7: lookup_rolling(length, start, end, buckets).
            [(_, counts)] = cast(Any, tracker).lookup_rolling(
                length, yesterday, today, self.buckets
            )
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

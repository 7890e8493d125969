"""``serve``: one long-running process that collapses each period soon after it ends and
serves ``/metrics`` for Prometheus.

The schedule (:func:`periods_due`, :func:`end_time`) is pure; :class:`CollapseSchedule` runs
it against a tracker one step at a time, so a test can drive it with any clock.
"""

from __future__ import annotations

import datetime
import functools
import logging
import signal
import sys
import threading
import time
from collections.abc import Sequence
from types import FrameType

import click

from ..errors import ActivityTrackerError, BackendConnectionError
from ..keys import Bucket
from ..periods import Period
from ..tracker import ActivityTracker
from .options import (
    DEFAULT_PERIODS,
    aggregate_option,
    parse_aggregate,
    parse_bucket,
    periods_option,
)
from .settings import Settings

log = logging.getLogger("activity_tracker.serve")

DEFAULT_LISTEN = "127.0.0.1:9466"
DEFAULT_DELAY = 300.0
DEFAULT_RETENTION_DAYS = 35.0
DEFAULT_LATE_DAYS = 2.0
#: How often the periods that ended less than ``late`` ago are collapsed again.
LATE_INTERVAL = 3600.0
MAX_BACKOFF = 60.0
#: The longest sleep: the clock is read again after it, so a suspended machine or a clock
#: change delays a collapse by at most this.
_LONGEST_WAIT = 60.0


def end_time(period: Period, timezone: datetime.tzinfo | None) -> float:
    """The epoch time at which ``period`` ends: midnight starting its next day in
    ``timezone`` (``None``: local time)."""
    midnight = datetime.datetime.combine(period.end, datetime.time(), tzinfo=timezone)
    return midnight.timestamp()


def periods_due(
    kind: str,
    timezone: datetime.tzinfo | None,
    now: float,
    delay: float,
    retention: float,
    done: Period | None,
    late: float = 0.0,
) -> list[Period]:
    """The periods of ``kind`` to collapse at epoch time ``now``, oldest first.

    Those that ended at least ``delay`` seconds ago and either come after ``done`` (the last
    one collapsed; ``None`` at start) or ended less than ``late`` seconds ago (collapsed again,
    for late events), going back no further than ``retention`` seconds (older raw data has
    expired), but always the latest one.
    """
    today = datetime.datetime.fromtimestamp(now, timezone).date()
    period = Period.containing(kind, today).previous()
    while end_time(period, timezone) + delay > now:
        period = period.previous()
    due: list[Period] = []
    while done is None or period.start > done.start or end_time(period, timezone) + late > now:
        if due and end_time(period, timezone) + retention <= now:
            break
        due.append(period)
        period = period.previous()
    due.reverse()
    return due


def _span(kind: str, periods: Sequence[Period]) -> str:
    if len(periods) == 1:
        return f"{kind} {periods[0].start}"
    return f"{kind} {periods[0].start} to {periods[-1].start} ({len(periods)} periods)"


class CollapseSchedule:
    """Collapses the periods of ``kinds`` as they end, one :meth:`step` at a time.

    The first step catches up: every period whose raw data may still exist (``retention``
    seconds). Later steps collapse each period ``delay`` seconds after it ends in the
    tracker's time zone, and any it missed (a suspended machine); and every
    :data:`LATE_INTERVAL` seconds, again those that ended less than ``late`` seconds ago, so
    that events tracked late for them are counted (``late=0``: each period once). A store
    that cannot be reached is retried with backoff (1 s, doubling, at most 60 s); any other
    error is logged and the schedule goes on. One log line per collapse.
    """

    def __init__(
        self,
        tracker: ActivityTracker,
        kinds: Sequence[str],
        *,
        buckets: Sequence[Bucket] | None = None,
        aggregates: dict[str, list[Bucket]] | None = None,
        delay: float = DEFAULT_DELAY,
        retention: float = DEFAULT_RETENTION_DAYS * 86400,
        late: float = DEFAULT_LATE_DAYS * 86400,
    ) -> None:
        self.tracker = tracker
        self.kinds = tuple(kinds)
        self.buckets = buckets
        self.aggregates = aggregates
        self.delay = delay
        self.retention = retention
        self.late = late
        self.done: dict[str, Period | None] = dict.fromkeys(self.kinds)
        #: When each kind's recent periods are next collapsed again.
        self.late_at: dict[str, float] = dict.fromkeys(self.kinds, 0.0)
        #: The epoch time of each kind's last successful collapse (0: none yet).
        self.collapsed_at: dict[str, float] = dict.fromkeys(self.kinds, 0.0)
        self._backoff = 0.0

    def step(self, now: float) -> float:
        """Collapse whatever is due at epoch time ``now``; return when to step next."""
        timezone = self.tracker.timezone
        for kind in self.kinds:
            late = self.late if now >= self.late_at[kind] else 0.0
            due = periods_due(
                kind, timezone, now, self.delay, self.retention, self.done[kind], late
            )
            if due:
                began = time.perf_counter()
                try:
                    self.tracker.collapse(
                        buckets=self.buckets,
                        aggregate_buckets=self.aggregates,
                        date=due[-1].end,
                        max_periods=len(due),
                        periods=[kind],
                    )
                except BackendConnectionError as exc:
                    self._backoff = min(self._backoff * 2 or 1.0, MAX_BACKOFF)
                    log.warning(
                        "cannot collapse %s: %s; retrying in %gs",
                        _span(kind, due),
                        exc,
                        self._backoff,
                    )
                    return now + self._backoff
                except (ActivityTrackerError, ValueError, TypeError) as exc:
                    log.error(
                        "collapse of %s failed: %s; going on with the next period",
                        _span(kind, due),
                        " ".join(str(exc).split()),
                    )
                else:
                    log.info("collapsed %s in %.2fs", _span(kind, due), time.perf_counter() - began)
                    self.collapsed_at[kind] = time.time()
                self.done[kind] = due[-1]
            if late:
                self.late_at[kind] = now + LATE_INTERVAL
        self._backoff = 0.0
        # Every kind has a last period now: the next one to end is the one after it; and
        # while that last one ended less than ``late`` ago, the next collapse of it again.
        wakes = []
        for kind, done in self.done.items():
            if done is not None:
                wakes.append(end_time(done.next(), timezone) + self.delay)
                if self.late and end_time(done, timezone) + self.late > self.late_at[kind]:
                    wakes.append(self.late_at[kind])
        return min(wakes)

    def run(self, stop: threading.Event) -> None:
        """Step until ``stop`` is set, sleeping in between."""
        while not stop.is_set():
            wake = self.step(time.time())
            while not stop.is_set():
                remaining = wake - time.time()
                if remaining <= 0:
                    break
                stop.wait(min(remaining, _LONGEST_WAIT))


def _listen_address(ctx: click.Context, param: click.Parameter, value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise click.BadParameter(f"{value!r} is not HOST:PORT (e.g. {DEFAULT_LISTEN})")
    return host.strip("[]") or "0.0.0.0", int(port)


@click.command()
@periods_option(
    "Period kinds to collapse and report (repeatable). Default: daily, weekly, monthly."
)
@click.option(
    "--bucket",
    "buckets",
    multiple=True,
    metavar="NAME",
    help="Collapse and report only this bucket (repeatable; '' is the default bucket). "
    "Default: every bucket.",
)
@aggregate_option
@click.option(
    "--listen",
    default=DEFAULT_LISTEN,
    show_default=True,
    metavar="HOST:PORT",
    callback=_listen_address,
    help="Where to serve /metrics (port 0: any free port, logged at start).",
)
@click.option(
    "--delay",
    type=click.FloatRange(0, 86400),
    default=DEFAULT_DELAY,
    show_default=True,
    metavar="SECONDS",
    help="Collapse each period this long after it ends.",
)
@click.option(
    "--retention",
    type=click.FloatRange(min=0, min_open=True),
    default=DEFAULT_RETENTION_DAYS,
    show_default=True,
    metavar="DAYS",
    help="The tracker's retention of raw data: at start, serve catches up every period that "
    "ended less than this long ago. Use the retention your application's tracker has.",
)
@click.option(
    "--late",
    type=click.FloatRange(min=0),
    default=DEFAULT_LATE_DAYS,
    show_default=True,
    metavar="DAYS",
    help="Collapse each period again every hour until it ended this long ago, so that events "
    "tracked late for it are counted (0: once; at most --retention).",
)
@click.option(
    "--rolling",
    type=click.IntRange(min=1),
    multiple=True,
    metavar="DAYS",
    help="Also store, at each daily collapse, the rolling window of DAYS days ending that "
    "day, and serve it as period=rolling_<DAYS>d (repeatable; at most --retention).",
)
@click.option(
    "--no-current",
    is_flag=True,
    help="Leave out live estimates of the open periods (read from their raw data).",
)
@click.pass_obj
def serve(
    settings: Settings,
    periods: tuple[str, ...],
    buckets: tuple[str, ...],
    aggregates: tuple[str, ...],
    listen: tuple[str, int],
    delay: float,
    retention: float,
    late: float,
    rolling: tuple[int, ...],
    no_current: bool,
) -> None:
    """Collapse each period soon after it ends and serve /metrics for Prometheus.

    At start, catches up every finished period whose raw data is still kept (--retention),
    then collapses each period --delay seconds after it ends in --timezone, and again every
    hour until it ended --late days ago (late events), one log line per collapse. A store
    that cannot be reached is retried with backoff (1 s doubling to 60 s).
    /metrics has activity_tracker_active_ids{period,bucket} (the last finished period, as
    collapsed, and the --rolling windows ending yesterday),
    activity_tracker_active_ids_current{period,bucket} (live estimates of the
    open periods) and activity_tracker_last_collapse_timestamp_seconds{period}. Stops cleanly
    on SIGTERM or Ctrl-C. Needs the prometheus extra.
    """
    try:
        from prometheus_client import CollectorRegistry, Gauge, start_http_server

        from ..integrations.prometheus import ActivityCollector
    except ImportError as exc:
        raise click.ClickException(
            f"serve needs the prometheus extra: pip install 'activity-tracker[prometheus]' ({exc})"
        ) from exc
    if late > retention:
        raise click.BadParameter(
            f"{late:g} days is beyond --retention ({retention:g} days): older raw data has expired",
            param_hint="--late",
        )
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(message)s"
    )
    kinds = list(periods or DEFAULT_PERIODS)
    aggregate_buckets = dict(parse_aggregate(text) for text in aggregates)
    chosen = [parse_bucket(b) for b in buckets] or None
    tracker = ActivityTracker(
        periods=kinds,
        url=settings.store_url,
        prefix=settings.prefix,
        timezone=settings.timezone,
        retention=datetime.timedelta(days=retention),
        rolling=rolling,
    )
    schedule = CollapseSchedule(
        tracker,
        kinds,
        buckets=chosen,
        aggregates=aggregate_buckets or None,
        delay=delay,
        retention=retention * 86400,
        late=late * 86400,
    )
    registry = CollectorRegistry()
    registry.register(
        ActivityCollector(
            tracker,
            buckets=None if chosen is None else [*chosen, *aggregate_buckets],
            periods=kinds,
            rolling=rolling,
            current=not no_current,
            aggregate_buckets=aggregate_buckets,
        )
    )
    last_collapse = Gauge(
        "activity_tracker_last_collapse_timestamp_seconds",
        "When serve last collapsed a period of this kind (Unix time)",
        ["period"],
        registry=registry,
    )
    collapsed_at = schedule.collapsed_at
    for kind in kinds:
        last_collapse.labels(kind).set_function(functools.partial(collapsed_at.__getitem__, kind))
    host, port = listen
    server, thread = start_http_server(port, host, registry=registry)
    stop = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        log.info("stopping (%s)", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    log.info(
        "serving http://%s:%d/metrics; collapsing %s in %s %gs after each period ends",
        host,
        server.server_port,
        ", ".join(kinds),
        settings.describe(),
        delay,
    )
    try:
        schedule.run(stop)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
        tracker.close()
    log.info("stopped")

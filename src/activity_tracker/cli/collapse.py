"""``collapse``: turn finished periods into the counts ``report`` reads."""

from __future__ import annotations

import datetime

import click

from .. import periods as _periods
from . import windows as _windows
from .options import (
    DEFAULT_PERIODS,
    aggregate_option,
    parse_aggregate,
    parse_bucket,
    parse_date,
    periods_option,
)
from .output import stderr
from .settings import Settings, open_tracker


@click.command()
@periods_option("Period kinds to collapse (repeatable). Default: daily, weekly and monthly.")
@click.option(
    "--date",
    metavar="YYYY-MM-DD",
    help="Collapse the periods finished before the one containing this day. Default: today.",
)
@click.option(
    "--max-periods",
    type=click.IntRange(min=1, max=_periods.MAX_PERIODS),
    default=1,
    show_default=True,
    metavar="N",
    help=f"How many finished periods of each kind to (re)collapse, walking back (at most "
    f"{_periods.MAX_PERIODS:,}).",
)
@click.option(
    "--bucket",
    "buckets",
    multiple=True,
    metavar="NAME",
    help="Collapse only this bucket (repeatable; '' is the default bucket). Default: all.",
)
@aggregate_option
@click.option(
    "--rolling",
    type=click.IntRange(min=1, max=35),
    multiple=True,
    metavar="DAYS",
    help="Rolling windows to store, ending on each day collapsed (repeatable, at most the 35 "
    "days raw data is kept). Default: 7, 28 and 30, which report --rolling and --stickiness "
    "read.",
)
@click.pass_obj
def collapse(
    settings: Settings,
    periods: tuple[str, ...],
    date: str | None,
    max_periods: int,
    buckets: tuple[str, ...],
    aggregates: tuple[str, ...],
    rolling: tuple[int, ...],
) -> None:
    """Turn finished periods into counts that `report` can read.

    The period containing --date (default today) is still open and is left alone; the
    --max-periods finished periods before it are collapsed, and for each day, the rolling
    windows ending on it. Collapsing again recomputes the same counts and picks up late
    events, so it is safe to run from cron as often as you like, e.g. hourly:

    \b
      5 * * * *  activity-tracker collapse --aggregate total=web,app
    """
    day = parse_date(date, "--date")
    kinds = periods or DEFAULT_PERIODS
    aggregate_buckets = dict(parse_aggregate(text) for text in aggregates)
    with open_tracker(
        settings, kinds, existing=True, rolling=rolling or _windows.ROLLING
    ) as tracker:
        tracker.collapse(
            buckets=[parse_bucket(b) for b in buckets] if buckets else None,
            aggregate_buckets=aggregate_buckets or None,
            date=day,
            max_periods=max_periods,
        )
        today = day or datetime.datetime.now(tracker.timezone).date()
    done = []
    for kind in kinds:
        found = _periods.finished_before(kind, today, max_periods)
        if found:
            span = found[0].start.isoformat()
            if len(found) > 1:
                span = f"{found[0].start} to {found[-1].start}"
            done.append(f"{kind} {span}")
    stderr().print(
        f"collapsed {'; '.join(done)} in {settings.describe()}", markup=False, soft_wrap=True
    )

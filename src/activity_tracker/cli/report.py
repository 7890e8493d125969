"""``report``: collapsed counts, rolling windows or stickiness over a range of days, as a
table, CSV or JSON, optionally plotted."""

from __future__ import annotations

import click
from rich.console import Console

from .. import periods as _periods
from ..arguments import MAX_WINDOW_DAYS
from . import reporting as _report
from . import windows as _windows
from .options import (
    fill_range,
    format_option,
    parse_bucket,
    parse_range,
    period_option,
    plot_option,
    range_options,
)
from .output import stderr
from .settings import Settings, open_tracker

_DEFAULT_REPORT_DAYS = {
    _periods.DAILY: 31,
    _periods.WEEKLY: 7 * 13,
    _periods.MONTHLY: 366,
    _periods.YEARLY: 5 * 366,
}


@click.command()
@period_option(_periods.DAILY, "Which counts to show.")
@range_options(
    "First day of the range. Default: --end minus 31 days (daily), 13 weeks (weekly), "
    "a year (monthly), 5 years (yearly)."
)
@click.option(
    "--bucket",
    "buckets",
    multiple=True,
    metavar="NAME",
    help="Show this bucket (repeatable; '' is the default bucket). Default: every bucket with "
    "a count in the range.",
)
@format_option("period and bucket: period,start,bucket,count,plus_minus")
@plot_option("a line chart per bucket with its ±2σ band")
@click.option(
    "--rolling",
    type=click.IntRange(min=1, max=MAX_WINDOW_DAYS),
    metavar="DAYS",
    help="Show rolling windows instead: per day, the ids active in the DAYS days ending "
    "with it (7, 28 and 30 are stored by collapse; other lengths are computed from the raw "
    "daily sketches, kept 35 days).",
)
@click.option(
    "--stickiness",
    is_flag=True,
    help="Show stickiness instead: per day, its active ids as a % of the ids active in the 30 "
    "days ending with it (DAU/MAU), with ±.",
)
@click.pass_obj
def report(
    settings: Settings,
    period: str,
    start: str | None,
    end: str | None,
    buckets: tuple[str, ...],
    output_format: str,
    plot: str | None,
    rolling: int | None,
    stickiness: bool,
) -> None:
    """Show collapsed counts: one row per period lying wholly inside [--start, --end).

    Each count is an estimate; ± is two standard errors of the sketch it was read from (2 x
    1.04/sqrt(16384), about 1.6% of what that sketch holds, ids moved out of the bucket
    included), the range about 95% of counts fall in. Periods not collapsed yet read 0:
    run `collapse` first. --rolling and --stickiness show days (--period daily).
    """
    start_day, end_day = parse_range(start, end)
    if (rolling or stickiness) and period != _periods.DAILY:
        raise click.BadParameter("--rolling and --stickiness show days", param_hint="--period")
    if rolling and stickiness:
        raise click.BadParameter("give --rolling or --stickiness, not both", param_hint="--rolling")
    chosen = [parse_bucket(b) for b in buckets] if buckets else None
    with open_tracker(settings, [period], existing=True) as tracker:
        start_day, end_day = fill_range(
            start_day, end_day, tracker.timezone, _DEFAULT_REPORT_DAYS[period]
        )
        if stickiness:
            windows = tracker.lookup_rolling(
                _windows.STICKINESS_DAYS, start_day, end_day, chosen, with_error=True
            )
            daily = tracker.lookup_daily(start_day, end_day, chosen, with_error=True)
            return _report_stickiness(_windows.stickiness(daily, windows), output_format, plot)
        if rolling:
            rows = tracker.lookup_rolling(rolling, start_day, end_day, chosen, with_error=True)
            period = _windows.rolling_label(rolling)
        else:
            rows = tracker.lookup(
                period=period, start=start_day, end=end_day, buckets=chosen, with_error=True
            )
    if plot:
        from .plot import plot_counts, series_from_rows

        plot_counts(
            plot,
            series_from_rows(rows),
            title=f"{period} active ids, {start_day} to {end_day} (±2σ bands)",
        )
    if output_format == "json":
        click.echo(_report.as_json(period, rows))
    elif output_format == "csv":
        click.echo(_report.as_csv(period, rows), nl=False)
    else:
        console = Console(highlight=False)
        if not rows:
            console.print(f"no complete {period} period in [{start_day}, {end_day})")
        elif not _report.buckets_of(rows):
            console.print(
                f"no {period} counts in [{start_day}, {end_day}): nothing was tracked then, "
                "or it was not collapsed yet (run `activity-tracker collapse`)"
            )
        else:
            first_column = "last day" if rolling else "period start"
            console.print(_report.as_table(period, rows, first_column))
            console.print(_report.TABLE_NOTE, soft_wrap=True)
    if plot:
        stderr().print(f"wrote {plot}", markup=False)


def _report_stickiness(rows: list[_windows.ShareRow], output_format: str, plot: str | None) -> None:
    if plot:
        from .plot import plot_counts

        plot_counts(
            plot,
            _windows.share_series(rows),
            title=f"stickiness: daily active ids / the {_windows.STICKINESS_DAYS} days ending "
            "that day (±2σ bands)",
            ylabel="% of the trailing 30 days' active ids",
            note="bands: ±2σ from both counts' errors taken as independent",
        )
    if output_format == "json":
        click.echo(_windows.as_json(rows))
    elif output_format == "csv":
        click.echo(_windows.as_csv(rows), nl=False)
    else:
        console = Console(highlight=False)
        console.print(_windows.as_table(rows))
        console.print(_windows.STICKINESS_NOTE, soft_wrap=True)
    if plot:
        stderr().print(f"wrote {plot}", markup=False)

"""``retention``: the retention triangle of a bucket (of the ids active in each period, how
many were active again 1, 2, ... periods later), with ± and an optional heatmap."""

from __future__ import annotations

import datetime
import json
from collections.abc import Sequence

import click
from rich import box
from rich.console import Console
from rich.table import Table

from .. import periods as _periods
from ..corrections import Estimate
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
from .reporting import SIGMAS, csv_text, error_bound
from .settings import Settings, open_tracker

Triangle = Sequence[tuple[datetime.date, Sequence[Estimate]]]

#: The default range: the raw data kept by default (35 days after a period ends).
_DEFAULT_DAYS = {
    _periods.DAILY: 14,
    _periods.WEEKLY: 35,
    _periods.MONTHLY: 366,
    _periods.YEARLY: 5 * 366,
}
NOTE = (
    f"± = {SIGMAS} standard errors of the union of the two periods each figure is computed "
    "from (|A| + |B| - |A ∪ B|): small retention rates carry large relative errors."
)


def percent(part: Estimate, cohort: Estimate) -> float | None:
    """``part`` as a percentage of the cohort's size (None for an empty cohort)."""
    return None if cohort.count <= 0 else 100 * part.count / cohort.count


def records(period: str, rows: Triangle) -> list[dict[str, object]]:
    """One record per cohort and offset: ``cohort`` (its first day), ``offset`` (periods
    later; 0 is the cohort's size), ``count``, ``plus_minus`` and ``percent`` of the cohort
    (null for an empty cohort)."""
    found = []
    for cohort, row in rows:
        for offset, estimate in enumerate(row):
            share = percent(estimate, row[0])
            found.append(
                {
                    "period": period,
                    "cohort": cohort.isoformat(),
                    "offset": offset,
                    "count": estimate.count,
                    "plus_minus": error_bound(estimate),
                    "percent": None if share is None else round(share, 1),
                }
            )
    return found


def as_json(period: str, rows: Triangle) -> str:
    return json.dumps(records(period, rows), indent=2)


def as_csv(period: str, rows: Triangle) -> str:
    """CSV with a header ``period,cohort,offset,count,plus_minus,percent``."""
    fields = ["period", "cohort", "offset", "count", "plus_minus", "percent"]
    return csv_text(fields, records(period, rows))


def as_table(period: str, bucket_text: str, rows: Triangle) -> Table:
    """Cohorts down, periods later across: the cohort's size, then ``count ±bound`` over the
    share of the cohort."""
    table = Table(title=f"{period} retention of {bucket_text}", box=box.SIMPLE_HEAD)
    table.add_column("cohort", no_wrap=True)
    table.add_column("size", justify="right", no_wrap=True)
    for offset in range(1, len(rows)):
        table.add_column(f"+{offset}", justify="right", no_wrap=True)
    for cohort, row in rows:
        cells = [f"{row[0].count:,} ±{error_bound(row[0]):,}"]
        for estimate in row[1:]:
            share = percent(estimate, row[0])
            shown = "" if share is None else f"\n{share:.0f}%"
            cells.append(f"{estimate.count:,} ±{error_bound(estimate):,}{shown}")
        table.add_row(cohort.isoformat(), *cells)
    return table


@click.command()
@period_option(
    _periods.WEEKLY, "The cohorts' period (its sketches must be tracked and still kept)."
)
@range_options(
    "First day of the range. Default: --end minus 14 days (daily), 35 days (weekly: the raw "
    "data kept by default), a year (monthly), 5 years (yearly)."
)
@click.option(
    "--bucket",
    default="",
    show_default=False,
    metavar="NAME",
    help="The bucket ('' or left out: the default bucket; an aggregate counts its sources).",
)
@format_option("cohort and offset: period,cohort,offset,count,plus_minus,percent")
@plot_option("the triangle as a heatmap of retention rates with their ±2σ")
@click.pass_obj
def retention(
    settings: Settings,
    period: str,
    start: str | None,
    end: str | None,
    bucket: str,
    output_format: str,
    plot: str | None,
) -> None:
    """Show the retention triangle: for each period (cohort) inside [--start, --end), how many
    of its ids were active again in each later period of the range.

    Each figure is |A| + |B| - |A ∪ B| from the periods' raw sketches, clamped to [0, min(|A|,
    |B|)], so it needs the raw data of every period (kept for the tracker's retention, 35
    days by default, after a period ends). Its ± is two standard errors of the union A ∪ B:
    a rate of a few percent of a large cohort is known to within a few points, not better.
    """
    start_day, end_day = parse_range(start, end)
    with open_tracker(settings, [period], existing=True) as tracker:
        start_day, end_day = fill_range(start_day, end_day, tracker.timezone, _DEFAULT_DAYS[period])
        rows = tracker.retention(period, start_day, end_day, parse_bucket(bucket), with_error=True)
    bucket_text = "the default bucket" if not bucket else repr(bucket)
    if plot:
        from .plot import plot_retention

        plot_retention(
            plot,
            rows,
            title=f"{period} retention of {bucket_text}, {start_day} to {end_day}",
        )
    if output_format == "json":
        click.echo(as_json(period, rows))
    elif output_format == "csv":
        click.echo(as_csv(period, rows), nl=False)
    else:
        console = Console(highlight=False)
        if not rows:
            console.print(f"no complete {period} period in [{start_day}, {end_day})")
        else:
            console.print(as_table(period, bucket_text, rows))
            console.print(NOTE, soft_wrap=True)
    if plot:
        stderr().print(f"wrote {plot}", markup=False)

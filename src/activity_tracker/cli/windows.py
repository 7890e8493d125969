"""``report --rolling N`` and ``report --stickiness``: rolling windows of the daily sketches,
and daily actives as a share of the trailing 30 days' (DAU/MAU). Pure: the rows come from
``lookup_daily()`` and ``lookup_rolling()``."""

from __future__ import annotations

import datetime
import json
import math
from collections.abc import Sequence
from typing import NamedTuple

from rich.table import Table

from ..corrections import Estimate
from ..keys import Bucket
from .reporting import SIGMAS, bucket_label, buckets_of, csv_text

#: The windows ``collapse`` stores, ending on each day it collapses: what ``report --rolling``
#: reads for these lengths (others are computed from the raw daily sketches), and the
#: trailing 30 days of ``--stickiness``.
ROLLING = (7, 28, 30)
STICKINESS_DAYS = 30

Row = tuple[datetime.date, dict[Bucket, Estimate]]

STICKINESS_NOTE = (
    f"stickiness = daily active ids / ids active in the {STICKINESS_DAYS} days ending that day, "
    f"in %; ± = {SIGMAS} standard errors, from both counts' errors taken as independent (the "
    "day's ids are among the window's, so the true error is smaller)."
)


def rolling_label(days: int) -> str:
    """The ``period`` of a rolling window in the CSV and JSON records: ``rolling_7d``."""
    return f"rolling_{days}d"


class Share(NamedTuple):
    """A percentage and its standard error, in percentage points."""

    percent: float
    stderr: float


def share(part: Estimate, whole: Estimate) -> Share | None:
    """``part`` as a percentage of ``whole`` (None when ``whole`` is 0), its standard error
    propagated from both (to first order, as if independent)."""
    if whole.count <= 0:
        return None
    ratio = part.count / whole.count
    error = math.hypot(part.stderr / whole.count, ratio * whole.stderr / whole.count)
    return Share(100 * ratio, 100 * error)


ShareRow = tuple[datetime.date, dict[Bucket, Share | None]]


def stickiness(daily: Sequence[Row], windows: Sequence[Row]) -> list[ShareRow]:
    """Per day and bucket, the day's count over the trailing window's, from rows of the same
    days (``lookup_daily`` and ``lookup_rolling(30, ...)``, both ``with_error``)."""
    missing = Estimate(0, 0.0)
    rows: list[ShareRow] = []
    for (day, counts), (last_day, window) in zip(daily, windows, strict=True):
        assert day == last_day
        names = dict.fromkeys([*window, *counts])
        rows.append(
            (day, {b: share(counts.get(b, missing), window.get(b, missing)) for b in names})
        )
    return rows


def _cell(found: Share | None) -> str:
    return "-" if found is None else f"{found.percent:.1f}% ±{SIGMAS * found.stderr:.1f}"


def as_table(rows: Sequence[ShareRow]) -> Table:
    """Days down, buckets across, each cell ``percent ±bound``."""
    buckets = buckets_of(rows)
    table = Table(title=f"stickiness: daily / trailing {STICKINESS_DAYS} days")
    table.add_column("day", no_wrap=True)
    for bucket in buckets:
        table.add_column(bucket_label(bucket), justify="right", no_wrap=True)
    for day, shares in rows:
        table.add_row(day.isoformat(), *(_cell(shares.get(bucket)) for bucket in buckets))
    return table


def records(rows: Sequence[ShareRow]) -> list[dict[str, object]]:
    """One record per day and bucket with a trailing count: ``{"period": "stickiness",
    "start", "bucket", "percent", "plus_minus"}`` (percentage points, one decimal)."""
    return [
        {
            "period": "stickiness",
            "start": day.isoformat(),
            "bucket": bucket,
            "percent": round(found.percent, 1),
            "plus_minus": round(SIGMAS * found.stderr, 1),
        }
        for day, shares in rows
        for bucket, found in shares.items()
        if found is not None
    ]


def as_json(rows: Sequence[ShareRow]) -> str:
    return json.dumps(records(rows), indent=2)


def as_csv(rows: Sequence[ShareRow]) -> str:
    """CSV with a header ``period,start,bucket,percent,plus_minus``; the default bucket is an
    empty cell."""
    return csv_text(["period", "start", "bucket", "percent", "plus_minus"], records(rows))


def share_series(
    rows: Sequence[ShareRow],
) -> dict[Bucket, list[tuple[datetime.date, float, float]]]:
    """The series to plot: per bucket, (day, percent, standard error)."""
    series: dict[Bucket, list[tuple[datetime.date, float, float]]] = {}
    for day, shares in rows:
        for bucket, found in shares.items():
            if found is not None:
                series.setdefault(bucket, []).append((day, found.percent, found.stderr))
    return series

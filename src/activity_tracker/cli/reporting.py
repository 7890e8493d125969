"""``report``: counts as a table, CSV or JSON, with their error bound. Pure formatting."""

from __future__ import annotations

import csv
import datetime
import io
import json
from collections.abc import Mapping, Sequence

from rich.table import Table

from ..corrections import RELATIVE_STANDARD_ERROR, Estimate
from ..keys import Bucket

#: The ± shown next to each estimate is this many standard errors (about 95% of counts).
SIGMAS = 2
DEFAULT_BUCKET_LABEL = "(default)"

TABLE_NOTE = (
    f"± = {SIGMAS} standard errors of the HyperLogLog sketch each count was read from "
    f"({RELATIVE_STANDARD_ERROR:.2%} of what the sketch holds, ids moved out included): "
    "about 95% of counts lie that close to the exact count."
)

Row = tuple[datetime.date, dict[Bucket, Estimate]]


def error_bound(estimate: Estimate) -> int:
    """The ± of an estimate: two standard errors, rounded to a whole id."""
    return round(SIGMAS * estimate.stderr)


def bucket_label(bucket: Bucket) -> str:
    return DEFAULT_BUCKET_LABEL if bucket is None else bucket


def buckets_of(rows: Sequence[tuple[datetime.date, Mapping[Bucket, object]]]) -> list[Bucket]:
    seen: dict[Bucket, None] = {}
    for _, counts in rows:
        seen.update(dict.fromkeys(counts))
    return list(seen)


def records(period: str, rows: Sequence[Row]) -> list[dict[str, object]]:
    """One flat record per (period, bucket), for CSV and JSON."""
    return [
        {
            "period": period,
            "start": start.isoformat(),
            "bucket": bucket,
            "count": estimate.count,
            "plus_minus": error_bound(estimate),
        }
        for start, counts in rows
        for bucket, estimate in counts.items()
    ]


def as_json(period: str, rows: Sequence[Row]) -> str:
    """A JSON array of ``{"period", "start", "bucket", "count", "plus_minus"}``; the default
    bucket is ``null``."""
    return json.dumps(records(period, rows), indent=2)


def as_csv(period: str, rows: Sequence[Row]) -> str:
    """CSV with a header ``period,start,bucket,count,plus_minus``; the default bucket is an
    empty cell."""
    return csv_text(["period", "start", "bucket", "count", "plus_minus"], records(period, rows))


def csv_text(fields: Sequence[str], found: Sequence[Mapping[str, object]]) -> str:
    """CSV of ``found`` with a header of ``fields``; ``None`` (the default bucket, a share
    of nothing) is an empty cell."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(fields)
    for record in found:
        writer.writerow(["" if record[field] is None else record[field] for field in fields])
    return out.getvalue()


def as_table(period: str, rows: Sequence[Row], first_column: str = "period start") -> Table:
    """Periods down, buckets across, each cell ``estimate ±bound``."""
    buckets = buckets_of(rows)
    table = Table(title=f"{period} active ids")
    table.add_column(first_column, no_wrap=True)
    for bucket in buckets:
        table.add_column(bucket_label(bucket), justify="right", no_wrap=True)
    for start, counts in rows:
        table.add_row(
            start.isoformat(),
            *(_cell(counts.get(bucket, Estimate(0, 0.0))) for bucket in buckets),
        )
    return table


def _cell(estimate: Estimate) -> str:
    return f"{estimate.count:,} ±{error_bound(estimate):,}"

"""The command line's ± comes from the error of each count's sketch (pure formatting)."""

from __future__ import annotations

import datetime
import json

from rich.console import Console

from activity_tracker import Estimate
from activity_tracker.cli.plot import series_from_rows
from activity_tracker.cli.reporting import as_csv, as_json, as_table, error_bound

DAY = datetime.date(2024, 1, 10)
# 3,000 sessions in anon's sketch, 2,028 of them logged in: anon reads 972 ± 2 x 24.4.
ROWS = [(DAY, {"anon": Estimate(972, 24.375), None: Estimate(5, 0.040625)})]


def test_plus_minus_is_two_standard_errors_of_the_sketch_not_of_the_count():
    assert error_bound(Estimate(972, 24.375)) == 49
    assert as_csv("daily", ROWS).splitlines() == [
        "period,start,bucket,count,plus_minus",
        "daily,2024-01-10,anon,972,49",
        "daily,2024-01-10,,5,0",
    ]
    assert json.loads(as_json("daily", ROWS))[0] == {
        "period": "daily",
        "start": "2024-01-10",
        "bucket": "anon",
        "count": 972,
        "plus_minus": 49,
    }
    console = Console(width=100, record=True)
    console.print(as_table("daily", ROWS))
    assert "972 ±49" in console.export_text()


def test_plot_bands_use_each_points_standard_error():
    assert series_from_rows(ROWS) == {
        "anon": [(DAY, 972.0, 24.375)],
        None: [(DAY, 5.0, 0.040625)],
    }

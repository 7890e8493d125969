"""``report --rolling``, ``report --stickiness`` and ``retention`` on the command line, against
the embedded store and a real Redis."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib.image

from test_cli import PNG_SIGNATURE, _write, run, store_args  # noqa: F401 - the store fixture

LOG = """\
timestamp,id,bucket,old_id,old_bucket
2024-04-01T09:00:00,u1,web
2024-04-01T09:30:00,s1,anon
2024-04-01T09:31:00,u2,web,s1,anon
2024-04-02T09:00:00,u1,web
2024-04-02T10:00:00,u3,app
2024-04-03T09:00:00,u2,web
2024-04-03T09:10:00,u4,web
2024-04-04T09:00:00,u1,web
"""
# Exact: web {u1, u2} on the 1st, {u1} on the 2nd, {u2, u4} on the 3rd, {u1} on the 4th;
# app {u3} on the 2nd; anon is empty every day (s1 logged in as u2).
RANGE = ["--start", "2024-04-01", "--end", "2024-04-05"]


def _loaded(store: list[str], tmp_path: Path) -> list[str]:
    assert run([*store, "ingest", _write(tmp_path, "events.csv", LOG)]).exit_code == 0
    result = run([*store, "collapse", "--date", "2024-04-05", "--max-periods", "4"])
    assert result.exit_code == 0, result.output
    return store


def _json(args: list[str]) -> list[dict[str, object]]:
    result = run(args)
    assert result.exit_code == 0, result.output
    found: list[dict[str, object]] = json.loads(result.stdout)
    return found


def test_report_rolling_reads_stored_windows_and_computes_others(
    store_args: list[str],  # noqa: F811
    tmp_path: Path,
) -> None:
    store = _loaded(store_args, tmp_path)
    stored = _json([*store, "report", "--rolling", "7", *RANGE, "--format", "json"])
    web = [(r["start"], r["count"]) for r in stored if r["bucket"] == "web"]
    assert web == [("2024-04-01", 2), ("2024-04-02", 2), ("2024-04-03", 3), ("2024-04-04", 3)]
    assert {r["period"] for r in stored} == {"rolling_7d"}
    assert {r["count"] for r in stored if r["bucket"] == "anon"} == {0}
    computed = _json([*store, "report", "--rolling", "2", *RANGE, "--format", "json"])
    assert [r["count"] for r in computed if r["bucket"] == "web"] == [2, 2, 3, 3]
    assert [r["count"] for r in computed if r["bucket"] == "app"] == [0, 1, 1, 0]
    table = run([*store, "report", "--rolling", "7", *RANGE])
    assert table.exit_code == 0, table.output
    assert "rolling_7d active ids" in table.stdout and "last day" in table.stdout
    csv = run([*store, "report", "--rolling", "2", *RANGE, "--format", "csv"])
    assert csv.stdout.splitlines()[0] == "period,start,bucket,count,plus_minus"
    assert "rolling_2d,2024-04-03,web,3,0" in csv.stdout.splitlines()


def test_report_stickiness_is_daily_over_trailing_30_days(
    store_args: list[str],  # noqa: F811
    tmp_path: Path,
) -> None:
    store = _loaded(store_args, tmp_path)
    shares = _json([*store, "report", "--stickiness", *RANGE, "--format", "json"])
    web = {r["start"]: r["percent"] for r in shares if r["bucket"] == "web"}
    # 2 of 2, 1 of 2, 2 of 3 (u1, u2, u4), 1 of 3.
    assert web == {"2024-04-01": 100.0, "2024-04-02": 50.0, "2024-04-03": 66.7, "2024-04-04": 33.3}
    # anon has no trailing ids: no share, rather than a division by zero.
    assert [r for r in shares if r["bucket"] == "anon"] == []
    png = tmp_path / "stickiness.png"
    table = run([*store, "report", "--stickiness", *RANGE, "--plot", str(png)])
    assert table.exit_code == 0, table.output
    assert "66.7% ±" in table.stdout and "stickiness = daily active ids" in table.stdout
    assert png.read_bytes().startswith(PNG_SIGNATURE)
    csv = run([*store, "report", "--stickiness", *RANGE, "--format", "csv"])
    assert csv.stdout.splitlines()[0] == "period,start,bucket,percent,plus_minus"


def test_retention_prints_the_triangle_with_its_error_and_plots_a_heatmap(
    store_args: list[str],  # noqa: F811
    tmp_path: Path,
) -> None:
    store = _loaded(store_args, tmp_path)
    args = [*store, "retention", "--period", "daily", *RANGE, "--bucket", "web"]
    records = _json([*args, "--format", "json"])
    triangle: dict[str, list[object]] = {}
    for record in records:
        triangle.setdefault(str(record["cohort"]), []).append(record["count"])
    assert triangle == {
        "2024-04-01": [2, 1, 1, 1],
        "2024-04-02": [1, 0, 1],
        "2024-04-03": [2, 0],
        "2024-04-04": [1],
    }
    assert records[1] == {
        "period": "daily",
        "cohort": "2024-04-01",
        "offset": 1,
        "count": 1,
        "plus_minus": 0,  # 2 x 0.81% of the 2 ids of the union, rounded
        "percent": 50.0,
    }
    png = tmp_path / "retention.png"
    table = run([*args, "--plot", str(png)])
    assert table.exit_code == 0, table.output
    assert "daily retention of 'web'" in table.stdout and "50%" in table.stdout
    assert "|A| + |B| - |A ∪ B|" in table.stdout
    image = matplotlib.image.imread(png)
    assert image.shape[0] > 300 and image.shape[1] > 300
    csv = run([*args, "--format", "csv"])
    assert csv.stdout.splitlines()[:2] == [
        "period,cohort,offset,count,plus_minus,percent",
        "daily,2024-04-01,0,2,0,100.0",
    ]
    default = run([*store, "retention", "--period", "daily", *RANGE])
    assert default.exit_code == 0 and "retention of the default bucket" in default.stdout


def test_bad_window_options_are_usage_errors(store_args: list[str], tmp_path: Path) -> None:  # noqa: F811
    store = _loaded(store_args, tmp_path)
    for args in (
        ["report", "--rolling", "7", "--period", "weekly"],
        ["report", "--stickiness", "--period", "monthly"],
        ["report", "--rolling", "7", "--stickiness"],
        ["report", "--rolling", "0"],
        ["collapse", "--rolling", "36"],
        ["retention", "--period", "hourly"],
        ["retention", "--plot", "heatmap.gif"],
    ):
        assert run([*store, *args]).exit_code == 2, args

"""The ``activity-tracker`` command line, run in-process (click's runner) and as the installed
console script, against the embedded store and against a real Redis."""

from __future__ import annotations

import csv
import datetime
import gzip
import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from activity_tracker.cli import cli
from activity_tracker.cli.demo import ExactCounts, synthetic_events
from activity_tracker.cli.events import BadLine, Event, LogReader, format_csv_line, parse_timestamp
from activity_tracker.embedded import path_from_url, release, url_for_path

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

LOG = """\
timestamp,id,bucket,old_id,old_bucket
2024-04-01T09:00:00,u1,web
2024-04-01T09:30:00,s1,anon
2024-04-01T09:31:00,u2,web,s1,anon
2024-04-01T10:00:00,u3,app
2024-04-01T11:00:00,u1,app
2024-04-02T09:00:00,u1,web
"""
# Exact counts of LOG on 2024-04-01: anon {} (s1 moved out), web {u1, u2}, app {u3, u1}.


def _console_script() -> str:
    script = Path(sys.executable).with_name("activity-tracker")
    assert script.exists(), f"console script not installed next to {sys.executable}"
    return str(script)


@pytest.fixture
def embedded_url(tmp_path: Path) -> Iterator[str]:
    path = tmp_path / "store" / "activity.db"
    yield url_for_path(path)
    release(path)  # stop the server this test process started


@pytest.fixture(params=["embedded", "redis"])
def store_args(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[list[str]]:
    """Global options naming a fresh store: an embedded file, or the test Redis under a
    prefix of this test's own."""
    if request.param == "redis":
        redis_url = request.getfixturevalue("redis_url")
        prefix = request.getfixturevalue("prefix")
        yield ["--url", redis_url, "--prefix", prefix]
    else:
        path = tmp_path / "store" / "activity.db"
        yield ["--url", url_for_path(path)]
        release(path)


def run(args: list[str], input: str | bytes | None = None) -> Result:
    return CliRunner().invoke(cli, args, input=input, catch_exceptions=True)


def _write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def _counts(store: list[str], *extra: str) -> dict[tuple[str, str], int]:
    result = run(
        [
            *store,
            "report",
            "--start",
            "2024-04-01",
            "--end",
            "2024-04-03",
            "--format",
            "json",
            *extra,
        ]
    )
    assert result.exit_code == 0, result.output
    return {(r["start"], r["bucket"]): r["count"] for r in json.loads(result.stdout)}


# -- reading logs (pure) ---------------------------------------------------------------------


def test_timestamps() -> None:
    utc = datetime.timezone.utc
    assert parse_timestamp("2024-04-01") == datetime.date(2024, 4, 1)
    assert parse_timestamp("2024-04-01T23:30:00Z") == datetime.datetime(
        2024, 4, 1, 23, 30, tzinfo=utc
    )
    assert parse_timestamp("2024-04-01 23:30:00") == datetime.datetime(2024, 4, 1, 23, 30)
    assert parse_timestamp("1711929600") == datetime.datetime(2024, 4, 1, tzinfo=utc)
    assert parse_timestamp(1711929600000) == datetime.datetime(2024, 4, 1, tzinfo=utc)
    assert parse_timestamp("1711929600.5") == datetime.datetime(2024, 4, 1, 0, 0, 0, 500000, utc)


def test_reader_csv_positional_header_and_bad_lines() -> None:
    reader = LogReader()
    lines = [
        "2024-04-01,u1",
        "",
        "# a comment",
        "2024-04-01,u2,web",
        "2024-04-01,u3,,s1,anon",
        "yesterday,u4",
        "2024-04-01",
        "2024-04-01,,web",
        "2024-04-01,a,b,c,d,e",
    ]
    results = list(reader.read(enumerate(lines, 1)))
    day = datetime.date(2024, 4, 1)
    assert results[:3] == [
        Event(day, "u1"),
        Event(day, "u2", "web"),
        Event(day, "u3", None, "s1", "anon"),
    ]
    assert [type(r) for r in results[3:]] == [BadLine] * 4
    assert [r.line_number for r in results[3:] if isinstance(r, BadLine)] == [6, 7, 8, 9]
    header = LogReader()
    events = list(header.read(enumerate(["id,timestamp,extra", "u1,2024-04-01,x"], 1)))
    assert events == [Event(day, "u1")]


def test_reader_json_lines() -> None:
    reader = LogReader()
    lines = [
        '{"timestamp": "2024-04-01T10:00:00", "id": 5, "bucket": "app", "other": 1}',
        '{"timestamp": 1711929600, "old_id": "s1", "old_bucket": "anon"}',
        '{"timestamp": "2024-04-01", "id": 1.5}',
        "[1, 2]",
        "{not json",
    ]
    results = list(reader.read(enumerate(lines, 1)))
    assert results[0] == Event(datetime.datetime(2024, 4, 1, 10), "5", "app")
    assert isinstance(results[1], Event) and results[1].old_id == "s1"
    assert all(isinstance(r, BadLine) for r in results[2:])


def test_csv_lines_round_trip() -> None:
    awkward = Event(datetime.datetime(2024, 4, 1, 10), 'a,"b', "#x", None, None)
    for event in [awkward, *list(synthetic_events(users=50, days=2))]:
        [back] = LogReader().read([(1, format_csv_line(event))])
        assert back == event


def test_synthetic_log_is_seeded_and_has_id_changes() -> None:
    first = list(synthetic_events(users=200, days=7, seed=3))
    assert first == list(synthetic_events(users=200, days=7, seed=3))
    assert any(e.old_id is not None for e in first)
    assert {e.bucket for e in first} == {"anon", "web", "app"}
    exact = ExactCounts(["daily"])
    for event in first:
        exact.apply(event)
    assert exact.sets


# -- the commands ---------------------------------------------------------------------------


def test_ingest_collapse_report(store_args: list[str], tmp_path: Path) -> None:
    log = _write(tmp_path, "events.csv", LOG)
    result = run([*store_args, "ingest", log])
    assert result.exit_code == 0, result.output
    assert "ingested 6 events from 1 file" in result.stderr
    assert "events/s" in result.stderr
    result = run(
        [
            *store_args,
            "collapse",
            "--date",
            "2024-04-03",
            "--max-periods",
            "2",
            "--aggregate",
            "users=web,app",
        ]
    )
    assert result.exit_code == 0, result.output
    assert "collapsed daily 2024-04-01 to 2024-04-02" in result.stderr
    counts = _counts(store_args)
    assert counts[("2024-04-01", "anon")] == 0
    assert counts[("2024-04-01", "web")] == 2
    assert counts[("2024-04-01", "app")] == 2
    assert counts[("2024-04-01", "users")] == 3
    assert counts[("2024-04-02", "web")] == 1

    table = run([*store_args, "report", "--start", "2024-04-01", "--end", "2024-04-03"])
    assert table.exit_code == 0, table.output
    assert "2024-04-01" in table.stdout and "3 ±0" in table.stdout
    assert "2 standard errors" in table.stdout

    as_csv = run(
        [
            *store_args,
            "report",
            "--start",
            "2024-04-01",
            "--end",
            "2024-04-03",
            "--format",
            "csv",
            "--bucket",
            "web",
        ]
    )
    assert as_csv.exit_code == 0, as_csv.output
    rows = list(csv.DictReader(io.StringIO(as_csv.stdout)))
    assert rows == [
        {
            "period": "daily",
            "start": "2024-04-01",
            "bucket": "web",
            "count": "2",
            "plus_minus": "0",
        },
        {
            "period": "daily",
            "start": "2024-04-02",
            "bucket": "web",
            "count": "1",
            "plus_minus": "0",
        },
    ]

    weekly = run(
        [
            *store_args,
            "collapse",
            "--period",
            "weekly",
            "--date",
            "2024-04-08",
            "--bucket",
            "web",
            "--bucket",
            "app",
        ]
    )
    assert weekly.exit_code == 0, weekly.output
    result = run(
        [
            *store_args,
            "report",
            "--period",
            "weekly",
            "--start",
            "2024-04-01",
            "--end",
            "2024-04-08",
            "--format",
            "json",
        ]
    )
    assert json.loads(result.stdout) == [
        {"period": "weekly", "start": "2024-04-01", "bucket": b, "count": n, "plus_minus": 0}
        for b, n in [("app", 2), ("web", 2)]
    ]


def test_a_bad_line_stops_before_its_batch_and_says_how_to_resume(
    store_args: list[str], tmp_path: Path
) -> None:
    lines = LOG.splitlines()
    lines.insert(5, "not-a-time,u9,web")  # line 6
    log = _write(tmp_path, "events.csv", "\n".join(lines) + "\n")
    result = run([*store_args, "ingest", "--batch-size", "2", log])
    assert result.exit_code == 1
    # Lines 2-3 and 4-5 went in two batches; line 6 is bad: nothing from line 6 on is written.
    assert f"{log}:6: timestamp: 'not-a-time'" in result.stderr
    assert "ingested 4 events" in result.stderr
    assert f"--start-line 6 {log}" in result.stderr
    assert "Traceback" not in result.output
    assert len(result.stderr.strip().splitlines()) == 2  # the summary, then one error line
    run([*store_args, "collapse", "--date", "2024-04-03", "--max-periods", "2"])
    counts = _counts(store_args)
    assert counts[("2024-04-01", "web")] == 2  # u1, and u2 from line 4
    assert counts[("2024-04-01", "app")] == 1  # u3 from line 5; u1 on line 7 was not written


def test_bad_line_batches_and_resume(store_args: list[str], tmp_path: Path) -> None:
    lines = [
        "timestamp,id,bucket",
        "2024-04-01,a1,x",  # 2  batch 1
        "2024-04-01,a2,x",  # 3  batch 1
        "2024-04-01,a3,x",  # 4  batch 2 (not written: line 5 is bad)
        "2024-04-01",  # 5  bad
        "2024-04-01,a4,x",  # 6
    ]
    log = _write(tmp_path, "events.csv", "\n".join(lines) + "\n")
    result = run([*store_args, "ingest", "--batch-size", "2", log])
    assert result.exit_code == 1
    assert f"{log}:5: expected 2 to 5 columns" not in result.stderr  # header names them
    assert f"{log}:5: no id and no old_id" in result.stderr
    assert "stopped before writing lines 4-5" in result.stderr
    assert f"--start-line 4 {log}" in result.stderr
    run([*store_args, "collapse", "--date", "2024-04-02"])
    assert _counts(store_args)[("2024-04-01", "x")] == 2

    lines[4] = "2024-04-01,a5,x"  # fixed; resume as told (the header still names the columns)
    _write(tmp_path, "events.csv", "\n".join(lines) + "\n")
    result = run([*store_args, "ingest", "--start-line", "4", log])
    assert result.exit_code == 0, result.output
    assert "ingested 3 events" in result.stderr
    run([*store_args, "collapse", "--date", "2024-04-02"])
    assert _counts(store_args)[("2024-04-01", "x")] == 5


def test_skip_bad_counts_and_skips(store_args: list[str], tmp_path: Path) -> None:
    log = _write(tmp_path, "events.csv", "2024-04-01,a1,x\nbad\n2024-04-01,a2,x\n\xff\n")
    result = run([*store_args, "ingest", "--skip-bad", log])
    assert result.exit_code == 0, result.output
    assert f"skipped {log}:2: expected 2 to 5 columns" in result.stderr
    assert "skipped 2 malformed lines" in result.stderr
    assert "ingested 2 events" in result.stderr


def test_json_lines_gzip_and_stdin(store_args: list[str], tmp_path: Path) -> None:
    gz = tmp_path / "events.jsonl.gz"
    with gzip.open(gz, "wt", encoding="utf-8") as out:
        out.write('{"timestamp": "2024-04-01T12:00:00Z", "id": 1, "bucket": "j"}\n')
        out.write('{"timestamp": 1711972800, "id": 2, "bucket": "j"}\n')
    result = run(
        [*store_args, "--timezone", "UTC", "ingest", str(gz), "-"],
        input="2024-04-01,3,j\n2024-04-01,1,j\n",
    )
    assert result.exit_code == 0, result.output
    assert "ingested 4 events from 2 files" in result.stderr
    run([*store_args, "collapse", "--date", "2024-04-02"])
    assert _counts(store_args, "--bucket", "j")[("2024-04-01", "j")] == 3


def test_report_plot_writes_a_png(store_args: list[str], tmp_path: Path) -> None:
    run([*store_args, "ingest", _write(tmp_path, "events.csv", LOG)])
    run([*store_args, "collapse", "--date", "2024-04-03", "--max-periods", "2"])
    png = tmp_path / "chart.png"
    result = run(
        [*store_args, "report", "--start", "2024-04-01", "--end", "2024-04-03", "--plot", str(png)]
    )
    assert result.exit_code == 0, result.output
    assert f"wrote {png}" in result.stderr
    assert png.read_bytes().startswith(PNG_SIGNATURE)
    import matplotlib.image

    image = matplotlib.image.imread(png)
    assert image.shape[0] > 100 and image.shape[1] > 100


def test_usage_errors_exit_2(tmp_path: Path, embedded_url: str) -> None:
    assert run(["--url", embedded_url, "report", "--period", "hourly"]).exit_code == 2
    assert run(["--url", embedded_url, "report", "--start", "April"]).exit_code == 2
    assert run(["--url", embedded_url, "collapse", "--aggregate", "nope"]).exit_code == 2
    assert run(["--url", embedded_url, "ingest"]).exit_code == 2
    assert run(["nonsense"]).exit_code == 2
    assert run(["--timezone", "Mars/Olympus", "--url", embedded_url, "report"]).exit_code == 2
    late_start = ["report", "--start", "2024-04-15", "--end", "2024-04-08"]
    assert run(["--url", embedded_url, *late_start]).exit_code == 2
    assert run(["--url", embedded_url, "--prefix", "a{b}", "report"]).exit_code == 2


@pytest.mark.parametrize("command", ["report", "retention", "demo"])
def test_plot_to_a_file_of_no_chart_format_is_refused_before_any_work(
    command: str, embedded_url: str, tmp_path: Path
) -> None:
    chart = tmp_path / "chart.txt"
    result = run(["--url", embedded_url, command, "--plot", str(chart)])
    assert result.exit_code == 2
    assert "'--plot'" in result.stderr
    assert "name it .png, .svg or .pdf" in result.stderr
    assert result.stdout == ""  # demo generated no events, nothing was counted
    assert "generated" not in result.stderr
    assert not chart.exists()
    assert not path_from_url(embedded_url).exists()


def test_resume_hint_names_the_files_left(embedded_url: str, tmp_path: Path) -> None:
    good = _write(tmp_path, "a.csv", "2024-04-01,u1\n")
    bad = _write(tmp_path, "b b.csv", "2024-04-01,u2\n2024-04-01\n")
    last = _write(tmp_path, "c.csv", "2024-04-01,u3\n")
    result = run(["--url", embedded_url, "--prefix", "p", "ingest", good, bad, last])
    assert result.exit_code == 1
    assert "ingested 1 event from 2 files" in result.stderr
    hint = f"--url {embedded_url} --prefix p ingest --start-line 1 '{bad}' {last}"
    assert hint in result.stderr


def test_plot_without_matplotlib_is_a_clear_error(
    embedded_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    run(["--url", embedded_url, "ingest", _write(tmp_path, "events.csv", LOG)])
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)  # import fails
    result = run(["--url", embedded_url, "report", "--plot", str(tmp_path / "x.png")])
    assert result.exit_code == 1
    assert "pip install 'activity-tracker[plot]'" in result.stderr


def test_failures_are_one_line_and_exit_1(tmp_path: Path) -> None:
    result = run(["--url", "redis://127.0.0.1:1/0", "report"])
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: cannot reach Redis")
    assert len(result.stderr.strip().splitlines()) == 1
    missing = run(["--url", "redis://127.0.0.1:1/0", "ingest", str(tmp_path / "missing.csv")])
    assert missing.exit_code == 1
    debug = run(["--debug", "--url", "redis://127.0.0.1:1/0", "report"])
    assert debug.exit_code == 1
    assert type(debug.exception).__name__ == "BackendConnectionError"


def test_an_aggregate_named_like_a_bucket_is_refused(embedded_url: str) -> None:
    result = run(["--url", embedded_url, "collapse", "--bucket", "a", "--aggregate", "a=b,c"])
    assert result.exit_code == 1
    assert "aggregate" in result.stderr


def test_help_reads_like_a_manual() -> None:
    result = run(["--help"])
    assert result.exit_code == 0
    for word in ("ingest", "collapse", "report", "demo", "ACTIVITY_TRACKER_URL", "Exit status"):
        assert word in result.stdout
    ingest_help = run(["ingest", "--help"]).stdout
    assert "--skip-bad" in ingest_help and "--start-line" in ingest_help
    assert "timestamp,id[,bucket][,old_id,old_bucket]" in ingest_help


def test_demo_compares_estimates_with_exact_counts(tmp_path: Path) -> None:
    png = tmp_path / "demo.png"
    result = run(["demo", "--users", "300", "--days", "9", "--plot", str(png)])
    assert result.exit_code == 0, result.output
    assert "Estimated vs exact distinct ids" in result.stdout
    assert "weekly 2024-04-01" in result.stdout
    assert "users" in result.stdout
    assert "within ±2σ" in result.stdout
    assert "Memory (Redis MEMORY USAGE)" in result.stdout
    assert png.read_bytes().startswith(PNG_SIGNATURE)


# -- the installed console script, in separate processes --------------------------------------


def _script(
    args: list[str], env: dict[str, str], input: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_console_script(), *args],
        env={**os.environ, **env},
        input=input,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_separate_processes_share_the_default_embedded_store(tmp_path: Path) -> None:
    env = {"XDG_DATA_HOME": str(tmp_path / "data"), "ACTIVITY_TRACKER_URL": ""}
    log = _write(tmp_path, "events.csv", LOG)
    ingest = _script(["ingest", log], env)
    assert ingest.returncode == 0, ingest.stderr
    store = tmp_path / "data" / "activity-tracker" / "activity.db"
    assert f"embedded store {store}" in ingest.stderr
    assert store.exists()  # saved at exit
    assert not store.with_name("activity.db.sock").exists()  # and the server stopped
    collapse = _script(["collapse", "--date", "2024-04-03", "--max-periods", "2"], env)
    assert collapse.returncode == 0, collapse.stderr
    report = _script(
        ["report", "--start", "2024-04-01", "--end", "2024-04-02", "--format", "csv"], env
    )
    assert report.returncode == 0, report.stderr
    assert "daily,2024-04-01,web,2,0" in report.stdout.splitlines()
    bad = _script(["ingest", "-"], env, input="2024-04-01,x\noops\n")
    assert bad.returncode == 1
    assert "-:2:" in bad.stderr and "--start-line 1 -" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_console_script_on_real_redis(redis_url: str, prefix: str, tmp_path: Path) -> None:
    env = {"ACTIVITY_TRACKER_URL": redis_url}
    log = _write(tmp_path, "events.csv", LOG)
    assert _script(["--prefix", prefix, "ingest", log], env).returncode == 0
    assert _script(["--prefix", prefix, "collapse", "--date", "2024-04-02"], env).returncode == 0
    report = _script(
        [
            "--prefix",
            prefix,
            "report",
            "--start",
            "2024-04-01",
            "--end",
            "2024-04-02",
            "--format",
            "json",
        ],
        env,
    )
    assert report.returncode == 0, report.stderr
    assert {r["bucket"]: r["count"] for r in json.loads(report.stdout)} == {
        "anon": 0,
        "app": 2,
        "web": 2,
    }
    usage = _script(["report", "--format", "xml"], env)
    assert usage.returncode == 2

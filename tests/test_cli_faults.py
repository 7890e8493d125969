"""The command line when something is wrong: one line naming what and why, a non-zero exit,
and the same argument rules as the API (DESIGN.md section 6)."""

from __future__ import annotations

import gzip
import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import Result

from activity_tracker.arguments import MAX_BUCKET_BYTES, MAX_ID_BYTES
from activity_tracker.embedded import release, url_for_path
from activity_tracker.periods import MAX_PERIODS
from test_cli import PNG_SIGNATURE, run


@pytest.fixture
def store(tmp_path: Path) -> Iterator[list[str]]:
    """Global options naming a fresh embedded store (its directory exists, its file not)."""
    path = tmp_path / "store" / "activity.db"
    path.parent.mkdir()
    yield ["--url", url_for_path(path)]
    release(path)


def _error_line(result: Result) -> str:
    """The one ``Error:`` line of a failed command (after its summary line, if any)."""
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return errors[0]


def _log(lines: int) -> bytes:
    return "".join(f"2024-04-01T10:00:00,user-{n},web\n" for n in range(lines)).encode()


def test_a_truncated_gzip_file_is_one_line_naming_it_and_the_events_written(store, tmp_path):
    whole = gzip.compress(_log(12_000))
    truncated = tmp_path / "events.csv.gz"
    truncated.write_bytes(whole[: len(whole) * 2 // 3])
    result = run([*store, "ingest", "--batch-size", "5000", str(truncated)])
    assert result.exit_code == 1
    line = _error_line(result)
    assert line.startswith(f"Error: {truncated}: cannot read past line ")
    assert "truncated" in line
    # What was written: the lines read whole before the file ends, in whole batches (a
    # batch is 5,000 lines, or a block of lines with pyarrow).
    found = re.search(r"([\d,]+) events written", line)
    assert found is not None, line
    written = int(found[1].replace(",", ""))
    assert 5_000 <= written < 12_000
    assert f"--start-line {written + 1} {truncated}" in line
    report = run([*store, "collapse", "--date", "2024-04-02", "--period", "daily"])
    assert report.exit_code == 0, report.output
    counts = run(
        [*store, "report", "--start", "2024-04-01", "--end", "2024-04-02", "--format", "json"]
    )
    assert json.loads(counts.stdout)[0]["count"] == pytest.approx(written, rel=0.02)


def test_a_corrupt_or_missing_file_is_one_line_naming_it(store, tmp_path):
    whole = gzip.compress(_log(100))
    corrupt = tmp_path / "corrupt.csv.gz"
    corrupt.write_bytes(whole[:20] + b"\xff" * 40 + whole[60:])
    result = run([*store, "ingest", str(corrupt)])
    assert result.exit_code == 1
    assert "corrupt gzip data" in _error_line(result)
    missing = run([*store, "ingest", str(tmp_path / "missing.csv")])
    assert missing.exit_code == 1
    assert "missing.csv: cannot open it: No such file or directory" in _error_line(missing)


def test_skip_bad_fails_when_every_line_was_bad(store, tmp_path):
    log = tmp_path / "bad.csv"
    log.write_text("not a line\n2024-04-01\n{}\n")
    result = run([*store, "ingest", "--skip-bad", str(log)])
    assert result.exit_code == 1
    assert "every line read was malformed (3)" in _error_line(result)


def test_read_only_commands_refuse_a_store_that_does_not_exist(tmp_path):
    nowhere = url_for_path(tmp_path / "no" / "such" / "dir" / "x.db")
    for command in (["report"], ["collapse"]):
        result = run(["--url", nowhere, *command])
        assert result.exit_code == 1
        assert "the directory" in _error_line(result)
        assert "does not exist" in _error_line(result)
    assert not (tmp_path / "no").exists()  # nothing was created
    typo = url_for_path(tmp_path / "actvity.db")
    result = run(["--url", typo, "report"])
    assert result.exit_code == 1
    assert "ingest` creates it" in _error_line(result)
    assert not (tmp_path / "actvity.db").exists()


@pytest.mark.parametrize(("name", "signature"), [("c.svg", b"<?xml"), ("c.pdf", b"%PDF")])
def test_plot_writes_the_format_its_name_asks_for(store, tmp_path, name, signature):
    log = tmp_path / "e.csv"
    log.write_bytes(_log(3))
    assert run([*store, "ingest", str(log)]).exit_code == 0
    assert run([*store, "collapse", "--date", "2024-04-03", "--max-periods", "2"]).exit_code == 0
    chart = tmp_path / name
    result = run(
        [*store, "report", "--start", "2024-04-01", "--end", "2024-04-03", "--plot", str(chart)]
    )
    assert result.exit_code == 0, result.output
    assert chart.read_bytes().startswith(signature)
    assert not chart.read_bytes().startswith(PNG_SIGNATURE)


def test_plot_to_an_unknown_format_is_a_usage_error(store, tmp_path):
    result = run([*store, "report", "--plot", str(tmp_path / "chart.jpg")])
    assert result.exit_code == 2
    assert ".png, .svg or .pdf" in result.stderr
    assert not (tmp_path / "chart.jpg").exists()


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ('{"timestamp": "2024-04-01", "id": 1, "bucket": 7}', "bucket: expected text, not 7"),
        ('{"timestamp": "2024-04-01", "id": 1, "old_id": 2, "old_bucket": 7}', "old_bucket"),
        ('{"timestamp": "2024-04-01", "id": 1.5}', "id"),
        ('{"timestamp": "2024-04-01", "id": true}', "id"),
        ('{"timestamp": "2024-04-01", "id": [1]}', "id"),
        ('{"timestamp": "2024-04-01", "id": ' + "9" * 5000 + "}", "not usable JSON"),
        ('{"timestamp": "2024-04-01", "id": ' + "9" * 2000 + "}", "id: 2,000 bytes"),
        ('{"timestamp": "2024-04-01", "id": "' + "x" * (MAX_ID_BYTES + 1) + '"}', "id: "),
        ('{"timestamp": "2024-04-01", "id": 1, "bucket": "' + "b" * 300 + '"}', "bucket: "),
        ("2024-04-01," + "x" * (MAX_ID_BYTES + 1), "id: "),
        ("2024-04-01,1," + "b" * (MAX_BUCKET_BYTES + 1), "bucket: "),
        ("9999-12-31T23:00:00-05:00,1", "date: "),
        ("0001-01-01T01:00:00+05:00,1", "date: "),
    ],
)
def test_the_command_line_refuses_what_the_api_refuses(store, tmp_path, line, reason):
    log = tmp_path / "events.log"
    good = '{"timestamp": "2024-04-01", "id": "ok"}' if line.startswith("{") else "2024-04-01,ok"
    log.write_text(f"{good}\n{line}\n")
    stopped = run([*store, "--timezone", "Asia/Tokyo", "ingest", str(log)])
    assert stopped.exit_code == 1
    assert reason in _error_line(stopped)
    assert f"{log}:2: " in _error_line(stopped)
    skipped = run([*store, "--timezone", "America/New_York", "ingest", "--skip-bad", str(log)])
    assert skipped.exit_code == 0, skipped.output
    assert "skipped 1 malformed lines" in skipped.stderr


def test_calendar_edges_and_limits_on_the_command_line(store, tmp_path):
    log = tmp_path / "e.csv"
    log.write_bytes(_log(1))
    assert run([*store, "ingest", str(log)]).exit_code == 0
    too_many = run([*store, "collapse", "--max-periods", str(MAX_PERIODS + 1)])
    assert too_many.exit_code == 2
    assert run([*store, "collapse", "--date", "0001-01-01"]).exit_code == 0
    assert run([*store, "collapse", "--date", "9999-12-31", "--max-periods", "2"]).exit_code == 0
    early = run([*store, "report", "--end", "0001-01-03", "--format", "json"])
    assert early.exit_code == 0, early.output
    assert [row["start"] for row in json.loads(early.stdout)] == []  # no bucket has a count
    everything = run([*store, "report", "--start", "0001-01-01", "--end", "9999-12-31"])
    assert everything.exit_code == 1
    assert "start, end" in _error_line(everything)

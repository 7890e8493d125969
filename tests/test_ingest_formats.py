"""``ingest`` of real export layouts: a Segment/RudderStack export (the sample file committed
in examples/), column-mapped CSV and JSON lines, and unknown keys reported by name."""

from __future__ import annotations

import datetime
import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from activity_tracker.cli import cli
from activity_tracker.cli.events import BadLine, Event, Layout, LogReader

SEGMENT_SAMPLE = Path(__file__).resolve().parent.parent / "examples" / "segment-export.jsonl"


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


@pytest.fixture
def store(redis_url, prefix):
    return ["--url", redis_url, "--prefix", prefix]


def counts(store: list[str], period: str, *timezone: str) -> dict[tuple[str, str], int]:
    """Collapse the first two weeks of April 2024 and read the counts back."""
    window = ["--date", "2024-04-15", "--max-periods", "14", "--period", period]
    collapsed = run(*store, *timezone, "collapse", *window)
    assert collapsed.exit_code == 0, collapsed.output
    result = run(
        *store,
        *timezone,
        "report",
        "--period",
        period,
        "--start",
        "2024-04-01",
        "--end",
        "2024-04-15",
        "--format",
        "json",
    )
    assert result.exit_code == 0, result.output
    return {(r["start"], r["bucket"]): r["count"] for r in json.loads(result.stdout) if r["count"]}


def test_a_segment_export_with_logins_as_id_changes(store):
    # The sample's exact sets (worked out by hand from the file, UTC days):
    # 2024-04-01: anon sessions a1, a2, a3, a4; a1 and a3 log in (identify with both ids) as
    #   u-100 and u-200, a5 arrives already signed in as 300: anon {a2, a4}, users {u-100,
    #   u-200, 300}. 2024-04-02: u-100 (with a1 again), a6 then alias a6 -> u-400, a7,
    #   u-200 (server side, 23:30Z): anon {a7}, users {u-100, u-400, u-200}.
    # Week of 2024-04-01: anon {a2, a4, a7}, users {u-100, u-200, 300, u-400}.
    timezone = ["--timezone", "UTC"]
    result = run(*store, *timezone, "ingest", "--format", "segment", str(SEGMENT_SAMPLE))
    assert result.exit_code == 0, result.output
    assert "ingested 15 events from 1 file" in result.stderr
    # One record carries a key outside the Segment spec: named, with its count.
    assert "ignored 1 unknown key (records with a value in each): experiment (1)" in result.stderr
    assert counts(store, "daily", *timezone) == {
        ("2024-04-01", "anon"): 2,
        ("2024-04-01", "users"): 3,
        ("2024-04-02", "anon"): 1,
        ("2024-04-02", "users"): 3,
    }
    assert counts(store, "weekly", *timezone) == {
        ("2024-04-01", "anon"): 3,
        ("2024-04-01", "users"): 4,
    }


def test_segment_buckets_and_time_zone_are_options(store):
    # In Berlin u-200's 23:30Z event is on 2024-04-03, and u-100's 08:00Z one still on the 2nd.
    timezone = ["--timezone", "Europe/Berlin"]
    result = run(
        *store,
        *timezone,
        "ingest",
        "--format",
        "segment",
        "--user-bucket",
        "",
        "--anonymous-bucket",
        "visitors",
        str(SEGMENT_SAMPLE),
    )
    assert result.exit_code == 0, result.output
    assert counts(store, "daily", *timezone) == {
        ("2024-04-01", None): 3,
        ("2024-04-01", "visitors"): 2,
        ("2024-04-02", None): 2,
        ("2024-04-02", "visitors"): 1,
        ("2024-04-03", None): 1,
    }


MAPPED_CSV = """\
# exported from the accounts database
created_at,account,platform,session,session_platform,referrer
2024-04-01T08:00:00Z,acct-1,web,,,google
2024-04-01T09:00:00Z,sess-9,anon,,,
2024-04-01T09:05:00Z,acct-2,web,sess-9,anon,newsletter
2024-04-01T10:00:00Z,acct-1,app,,,
2024-04-02T10:00:00Z,acct-3,app
"""
MAPPING = [
    "--time-field",
    "created_at",
    "--id-field",
    "account",
    "--bucket-field",
    "platform",
    "--old-id-field",
    "session",
    "--old-bucket-field",
    "session_platform",
]


def test_column_mapped_csv(store, tmp_path):
    log = tmp_path / "accounts.csv"
    log.write_text(MAPPED_CSV)
    result = run(*store, "--timezone", "UTC", "ingest", *MAPPING, str(log))
    assert result.exit_code == 0, result.output
    assert "ingested 5 events" in result.stderr
    assert "ignored 1 unknown key (records with a value in each): referrer (2)" in result.stderr
    assert counts(store, "daily", "--timezone", "UTC") == {
        ("2024-04-01", "app"): 1,
        ("2024-04-01", "web"): 2,
        ("2024-04-02", "app"): 1,
    }


def test_column_mapped_json_lines_with_nested_keys(store, tmp_path):
    log = tmp_path / "events.jsonl"
    records = [
        {"ts": 1711962000, "actor": {"id": 7, "kind": "user"}, "site": "web", "ua": "x"},
        {"ts": 1711962060, "actor": {"id": "7"}, "site": "web", "ua": "y", "ip": "192.0.2.1"},
        {"ts": 1711962120, "actor": {"id": 8}, "site": "app"},
    ]
    log.write_text("".join(json.dumps(record) + "\n" for record in records))
    mapping = ["--time-field", "ts", "--id-field", "actor.id", "--bucket-field", "site"]
    result = run(*store, "--timezone", "UTC", "ingest", *mapping, str(log))
    assert result.exit_code == 0, result.output
    assert "ignored 2 unknown keys (records with a value in each): ua (2), ip (1)" in result.stderr
    assert counts(store, "daily", "--timezone", "UTC") == {
        ("2024-04-01", "app"): 1,
        ("2024-04-01", "web"): 1,
    }


def test_the_resume_command_keeps_the_layout(store, tmp_path):
    log = tmp_path / "accounts.csv"
    log.write_text(MAPPED_CSV + "yesterday,acct-4,web\n")
    result = run(*store, "ingest", "--batch-size", "2", *MAPPING, str(log))
    assert result.exit_code == 1
    assert f"ingest {' '.join(MAPPING)} --start-line 7 " in result.stderr


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--format", "segment", "--id-field", "user"], "--id-field does not apply to --format"),
        (["--user-bucket", "u"], "--user-bucket applies to --format segment only"),
        (["--id-field", ""], "the field of id must not be empty"),
        (["--format", "xml"], "'xml' is not one of"),
    ],
)
def test_bad_layout_options_are_usage_errors(store, tmp_path, options, message):
    log = tmp_path / "log.csv"
    log.write_text("2024-04-01,u1\n")
    result = run(*store, "ingest", *options, str(log))
    assert result.exit_code == 2
    assert message in result.output


# -- the reader (pure) -----------------------------------------------------------------------


def test_a_mapped_csv_needs_its_header():
    reader = LogReader(Layout(id_field="user"))
    results = list(reader.read(enumerate(["2024-04-01,u1", "2024-04-01,u2"], 1)))
    assert [type(r) for r in results] == [BadLine, BadLine]
    assert isinstance(results[0], BadLine) and "header row naming" in results[0].reason


def test_a_json_array_says_how_to_convert_it():
    [bad] = LogReader().read([(1, '[{"timestamp": "2024-04-01", "id": 1},')])
    assert isinstance(bad, BadLine) and "jq -c '.[]'" in bad.reason


def test_segment_records():
    reader = LogReader(Layout(format="segment"))
    lines = [
        '{"timestamp": "2024-04-01T09:00:00.5Z", "anonymousId": "a1"}',
        '{"timestamp": "2024-04-01T09:00:00Z", "anonymousId": "a1", "userId": "u1"}',
        '{"timestamp": "2024-04-01T09:00:00Z", "userId": 5, "anonymousId": null}',
        '{"timestamp": "2024-04-01T09:00:00Z", "type": "group", "groupId": "g1"}',
        '{"anonymousId": "a2"}',
        "timestamp,id",
    ]
    results = list(reader.read(enumerate(lines, 1)))
    nine = datetime.datetime(2024, 4, 1, 9, tzinfo=datetime.timezone.utc)
    assert results[:3] == [
        Event(nine.replace(microsecond=500000), "a1", "anon"),
        Event(nine, "u1", "users", "a1", "anon"),
        Event(nine, "5", "users"),
    ]
    assert [bad.reason for bad in results[3:] if isinstance(bad, BadLine)] == [
        "no userId and no anonymousId",
        "timestamp: missing",
        "not JSON: Expecting value at column 1",
    ]
    assert reader.unknown_keys == {}

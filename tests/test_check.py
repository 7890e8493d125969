"""``activity-tracker check``: the rules on plain data, then the command against throwaway
servers started with different configurations (and the embedded store)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from activity_tracker.cli import cli
from activity_tracker.cli.check import (
    NOTE,
    OK,
    WARNING,
    ServerFacts,
    assess,
    has_cve_2025_32023_fix,
)
from activity_tracker.embedded import release, url_for_path
from redis_server import start_redis_server, stop_redis_server

SAFE = ServerFacts(
    where="test",
    product="Redis",
    version="7.2.10",
    save="3600 1",
    config_refused=None,
    aof_enabled=True,
    maxmemory=1 << 30,
    policy="noeviction",
    used_memory="1M",
)


def levels(facts: ServerFacts, **changes: object) -> dict[str, set[str]]:
    """The levels of ``facts``' findings (with ``changes``), by topic."""
    found: dict[str, set[str]] = {}
    for finding in assess(replace(facts, **changes)):
        found.setdefault(finding.topic, set()).add(finding.level)
    return found


@pytest.mark.parametrize(
    ("version", "fixed"),
    [
        ("5.0.14", False),
        ("6.0.20", False),
        ("6.2.18", False),
        ("6.2.19", True),
        ("6.2.21", True),
        ("7.0.15", False),
        ("7.2.9", False),
        ("7.2.10", True),
        ("7.4.4", False),
        ("7.4.5", True),
        ("8.0.2", False),
        ("8.0.3", True),
        ("8.2.0", True),
        ("8.4.1", True),
    ],
)
def test_which_versions_carry_the_hyperloglog_cve_fix(version, fixed):
    assert has_cve_2025_32023_fix(version) is fixed
    assert (WARNING in levels(SAFE, version=version)["version"]) is not fixed


def test_a_safe_server_has_no_warning_and_each_risk_is_one():
    assert all(WARNING not in found for found in levels(SAFE).values())
    assert levels(SAFE, aof_enabled=False, save="")["persistence"] == {WARNING}
    assert levels(SAFE, aof_enabled=False)["persistence"] == {OK}  # RDB only: said what it loses
    assert levels(SAFE, policy="allkeys-lru")["memory"] == {WARNING}
    assert levels(SAFE, policy="volatile-ttl")["memory"] == {WARNING}
    assert levels(SAFE, policy="allkeys-lru", maxmemory=0)["memory"] == {NOTE}  # never evicts
    assert WARNING in levels(SAFE, version="6.0.20")["version"]


def test_a_disabled_config_is_said_not_guessed():
    refused = "unknown command 'CONFIG'"
    found = assess(replace(SAFE, aof_enabled=False, save=None, config_refused=refused))
    [persistence] = [f for f in found if f.topic == "persistence"]
    assert persistence.level == NOTE
    assert "CONFIG is disabled" in persistence.text and refused in persistence.text


def test_the_embedded_server_and_valkey_get_notes_not_warnings():
    old = replace(SAFE, version="6.2.14")
    assert {f.level for f in assess(old, local_only=True) if f.topic == "version"} == {NOTE}
    valkey = replace(SAFE, product="Valkey", version="8.1.1")
    assert {f.level for f in assess(valkey) if f.topic == "version"} == {NOTE}


# -- the command, on real servers -------------------------------------------------------------


@pytest.fixture
def server(tmp_path: Path) -> Iterator:
    """Start a throwaway server with extra options; stopped after the test."""
    started = []

    def start(*options: str) -> str:
        process, url = start_redis_server(tmp_path / str(len(started)), extra_args=options)
        started.append(process)
        return url

    yield start
    for process in started:
        stop_redis_server(process)


def check(url: str) -> Result:
    return CliRunner().invoke(cli, ["--url", url, "check"], catch_exceptions=True)


def lines_about(result: Result, topic: str) -> list[str]:
    """The levels of the findings on ``topic`` (lines ``  level  topic  text``)."""
    rows = [line.split(None, 2) for line in result.stdout.splitlines() if line.startswith(" ")]
    return [row[0] for row in rows if row[1] == topic]


def test_check_warns_of_a_server_without_persistence(server):
    result = check(server())  # the test servers: --save "" --appendonly no
    assert result.exit_code == 1
    assert lines_about(result, "persistence") == [WARNING]
    assert "a restart loses every sketch and count" in result.stdout
    assert "warning" in result.stderr and "counts are at risk" in result.stderr


def test_check_warns_of_an_eviction_policy_that_drops_sketches(server):
    for policy in ("allkeys-lru", "volatile-lru"):
        result = check(
            server("--save", "60", "1", "--maxmemory", "64mb", "--maxmemory-policy", policy)
        )
        assert result.exit_code == 1
        assert lines_about(result, "memory") == [WARNING]
        assert lines_about(result, "persistence") == [OK]
        assert f"policy {policy}" in result.stdout


def test_check_approves_persistence_and_noeviction(server):
    url = server("--appendonly", "yes", "--maxmemory", "64mb", "--maxmemory-policy", "noeviction")
    result = check(url)
    assert lines_about(result, "persistence") == [OK]
    assert lines_about(result, "memory") == [OK]
    version_ok = lines_about(result, "version") == [OK]
    assert result.exit_code == (0 if version_ok else 1)  # this machine's Redis may lack the fix


def test_check_copes_with_config_disabled_as_on_managed_redis(server):
    result = check(server("--rename-command", "CONFIG", ""))
    assert "Traceback" not in result.output
    assert lines_about(result, "persistence") == [NOTE]
    assert "CONFIG is disabled" in result.stdout
    assert lines_about(result, "memory") == [NOTE]  # INFO still tells maxmemory and its policy


def test_check_on_the_embedded_store(tmp_path):
    path = tmp_path / "activity.db"
    url = url_for_path(path)
    try:
        missing = check(url)
        assert missing.exit_code == 1
        assert "no store at" in missing.stderr
        events = tmp_path / "e.csv"
        events.write_text("2024-04-01,u1\n")
        assert CliRunner().invoke(cli, ["--url", url, "ingest", str(events)]).exit_code == 0
        result = check(url)
        assert result.exit_code == 0, result.output  # RDB saves; only you reach its socket
        assert lines_about(result, "persistence") == [OK]
        assert "embedded store" in result.stdout
    finally:
        release(path)


def test_check_cannot_reach_a_server_in_one_line():
    result = check("redis://127.0.0.1:1/0")
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: ")
    assert len(result.stderr.strip().splitlines()) == 1

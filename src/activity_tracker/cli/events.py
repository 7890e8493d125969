"""Reading event logs: text lines in, :class:`Event`s or :class:`BadLine`s out.

Pure: no Redis, no terminal. ``ingest`` feeds it lines and decides what to send.

Formats (:class:`Layout`; ``auto`` detects CSV or JSON lines per file from its first non-blank
line):

- CSV: columns ``timestamp,id[,bucket][,old_id,old_bucket]`` by position, or named by a header
  row. An empty or missing trailing field is "not given": an empty bucket is the default
  bucket.
- JSON lines: one object per line with keys ``timestamp``, ``id``, ``bucket``, ``old_id``,
  ``old_bucket`` (``null`` or a missing key is "not given").
- Column-mapped CSV and JSON lines: the same, with the fields named by the :class:`Layout`
  (``--time-field created_at --id-field user``...); a CSV file then needs a header row, and
  a JSON field may be a dotted path into nested objects (``context.traits.email``).
- ``segment``: a Segment or RudderStack export (JSON lines): ``userId`` in the user bucket,
  ``anonymousId`` in the anonymous bucket, and an event carrying both is the anonymous
  session logging in: ``anonymousId`` moves out of the anonymous bucket, ``userId`` joins the
  user bucket.

Keys (and header columns) that no field reads are counted by name in
:attr:`LogReader.unknown_keys`, so that ``ingest`` reports them rather than ignoring them
silently; for ``segment``, the fields of the Segment spec are known.

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
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
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


AUTO, CSV, JSONL, SEGMENT = "auto", "csv", "jsonl", "segment"
FORMATS = (AUTO, CSV, JSONL, SEGMENT)
#: The fields of the Segment spec (common fields and those of each call type), and those
#: RudderStack adds: known in a ``segment`` export, so not reported.
SEGMENT_FIELDS = frozenset(
    {
        *("anonymousId", "userId", "timestamp", "type", "event", "name", "category"),
        *("properties", "traits", "context", "integrations", "messageId", "receivedAt"),
        *("sentAt", "originalTimestamp", "channel", "version", "groupId", "previousId"),
        *("projectId", "writeKey", "_metadata", "request_ip", "rudderId"),
    }
)


@dataclass(frozen=True, slots=True)
class Layout:
    """Where a record keeps each field of an event: the file format and the field names.

    ``format``: ``auto`` (CSV or JSON lines, from the first line), ``csv``, ``jsonl`` or
    ``segment``. The ``*_field`` names are CSV header columns or JSON keys (a JSON key may be
    a dotted path into nested objects). ``segment`` reads ``time_field`` (default
    ``timestamp``), ``userId`` and ``anonymousId``, and puts them in ``user_bucket`` and
    ``anonymous_bucket``.
    """

    format: str = AUTO
    time_field: str = "timestamp"
    id_field: str = "id"
    bucket_field: str = "bucket"
    old_id_field: str = "old_id"
    old_bucket_field: str = "old_bucket"
    user_bucket: str | None = "users"
    anonymous_bucket: str | None = "anon"

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise ValueError(f"format: {self.format!r} is not one of {', '.join(FORMATS)}")
        for column, name in zip(COLUMNS, self.fields, strict=True):
            if not name:
                raise ValueError(f"the field of {column} must not be empty")

    @property
    def mapped(self) -> bool:
        """Whether fields are named other than ``timestamp,id,bucket,old_id,old_bucket``."""
        return self.fields != COLUMNS

    @property
    def fields(self) -> tuple[str, ...]:
        """The field names in the order of :data:`COLUMNS`."""
        return (
            self.time_field,
            self.id_field,
            self.bucket_field,
            self.old_id_field,
            self.old_bucket_field,
        )

    def event(self, record: Mapping[str, object]) -> Event:
        """The event of one record (a JSON object or a CSV row by column name); raises
        :class:`MalformedLine`."""
        if self.format == SEGMENT:
            return self._segment_event(record)
        named = dict(zip(COLUMNS, (_field(record, name) for name in self.fields), strict=True))
        return make_event(named)

    def _segment_event(self, record: Mapping[str, object]) -> Event:
        when = parse_timestamp(_field(record, self.time_field))
        user = _text(record.get("userId"), "userId")
        anonymous = _text(record.get("anonymousId"), "anonymousId")
        if user is None and anonymous is None:
            raise MalformedLine("no userId and no anonymousId")
        if user is None:
            return Event(when, anonymous, self.anonymous_bucket)
        if anonymous is None:
            return Event(when, user, self.user_bucket)
        return Event(when, user, self.user_bucket, anonymous, self.anonymous_bucket)

    def known(self, key: str) -> bool:
        """Whether a top-level key or column is read (or, for ``segment``, part of the spec)."""
        if self.format == SEGMENT:
            return key in SEGMENT_FIELDS or key == self.time_field.split(".")[0]
        return any(key in (name, name.split(".")[0]) for name in self.fields)


def _field(record: Mapping[str, object], name: str) -> object:
    """``record[name]``, or the value at the dotted path ``name`` in nested objects."""
    if name in record:
        return record[name]
    value: object = record
    for part in name.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


def make_event(fields: Mapping[str, object]) -> Event:
    """The event from a record's fields named as in :data:`COLUMNS`; raises
    :class:`MalformedLine`."""
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
    comments and a CSV header. :attr:`unknown_keys` counts, per name, the records with a
    value (not empty or null) in a key or CSV column that the layout does not read.
    """

    def __init__(self, layout: Layout | None = None) -> None:
        self.layout = layout or Layout()
        # "csv" or "jsonl": given, or from the first non-blank line
        self.format: str | None = {CSV: CSV, JSONL: JSONL, SEGMENT: JSONL}.get(self.layout.format)
        self._columns: tuple[str, ...] | None = None  # from a header row
        self._header_checked = False  # the first CSV line that is not a comment may be one
        self._unknown_columns: tuple[tuple[int, str], ...] = ()  # (position, name)
        self.unknown_keys: Counter[str] = Counter()

    @property
    def csv_columns(self) -> tuple[tuple[str, ...], tuple[tuple[int, str], ...]] | None:
        """Once the file is known to be CSV and its header row (if any) was read: the names
        of the columns of the rows to come (the header's, or :data:`COLUMNS` by position)
        and the (position, name) of those no field reads; else (and for a mapped layout
        without a header row, whose rows are refused) None."""
        if self.format != CSV or not self._header_checked:
            return None
        if self._columns is not None:
            return self._columns, self._unknown_columns
        return None if self.layout.mapped else (COLUMNS, ())

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
            self.format = JSONL if text.startswith(("{", "[")) else CSV
        try:
            if self.format == JSONL:
                return self.layout.event(self._json_fields(text))
            if text.startswith("#"):
                return None
            if not self._header_checked:
                self._header_checked = True
                if self._is_header(text):
                    return None
            return self.layout.event(self._csv_fields(text))
        except MalformedLine as exc:
            return BadLine(number, str(exc))

    def _is_header(self, text: str) -> bool:
        try:
            cells = [cell.strip() for cell in _split_csv(text)]
        except MalformedLine:
            return False
        layout = self.layout
        if layout.mapped:
            if layout.time_field in cells and {layout.id_field, layout.old_id_field} & set(cells):
                self._header(cells)
                return True
            raise MalformedLine(
                f"expected a header row naming the columns {layout.time_field!r} and "
                f"{layout.id_field!r} (or {layout.old_id_field!r}), got {text!r}"
            )
        cells = [cell.lower() for cell in cells]
        if "timestamp" not in cells or not ({"id", "old_id"} & set(cells)):
            return False
        self._header(cells)
        return True

    def _header(self, cells: list[str]) -> None:
        self._columns = tuple(cells)
        self._unknown_columns = tuple(
            (index, cell) for index, cell in enumerate(cells) if not self.layout.known(cell)
        )

    def _csv_fields(self, text: str) -> dict[str, object]:
        cells = _split_csv(text)
        if self._columns is None and self.layout.mapped:
            raise MalformedLine(
                f"no header row naming the columns {self.layout.time_field!r} and "
                f"{self.layout.id_field!r} at the top of the file"
            )
        if self._columns is not None:
            if len(cells) > len(self._columns):
                raise MalformedLine(
                    f"expected at most {len(self._columns)} columns as in the header, "
                    f"got {len(cells)}"
                )
            self.unknown_keys.update(
                name
                for index, name in self._unknown_columns
                if index < len(cells) and cells[index].strip()
            )
            return {name: cell.strip() for name, cell in zip(self._columns, cells, strict=False)}
        if not 2 <= len(cells) <= len(COLUMNS):
            raise MalformedLine(
                f"expected 2 to 5 columns (timestamp,id[,bucket][,old_id,old_bucket]), "
                f"got {len(cells)}"
            )
        return {name: cell.strip() for name, cell in zip(COLUMNS, cells, strict=False)}

    def _json_fields(self, text: str) -> dict[str, object]:
        if text == "[" or text.startswith("[{"):
            raise MalformedLine(
                "a JSON array: ingest reads JSON lines, one object per line "
                "(convert it with: jq -c '.[]' FILE)"
            )
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise MalformedLine(f"not JSON: {exc.msg} at column {exc.colno}") from None
        except ValueError as exc:  # a number of more digits than Python converts
            raise MalformedLine(f"not usable JSON: {exc}") from None
        if not isinstance(value, dict):
            raise MalformedLine(f"expected a JSON object, not {type(value).__name__}")
        self.unknown_keys.update(
            key
            for key, item in value.items()
            if item not in (None, "") and not self.layout.known(key)
        )
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

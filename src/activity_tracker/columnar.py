"""Events given as columns: :func:`track_columns` records pyarrow or numpy arrays (one event
per row) with the counts ``track_many()`` of the same rows in order gives, id changes
included, at millions of events a second; ``activity-tracker ingest`` reads Parquet and CSV
files through it. Needs pyarrow: ``pip install 'activity-tracker[arrow]'``.

How: the rows go in chunks, each one batch (on Redis, one call of the batch script). In a
chunk, the plain adds (an id, no id change, and no move of that id in an earlier row of the
chunk) commute with everything before them, so they are de-duplicated per day and bucket
with vectorised operations and sent as runs of distinct ids (:class:`ColumnRun`); the other
rows (id changes, and adds of an id after its move in the chunk: about twice the share of id
changes) are taken one by one, in order, as ``track_many()`` takes them.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from collections.abc import Set as AbstractSet
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from . import arguments
from .arguments import Activity
from .backends.redis_plan import IdRun
from .batch import ActivityChecker, GroupedActivities
from .cli.events import MalformedLine, parse_timestamp
from .keys import Bucket, id_hash
from .periods import local_date

if TYPE_CHECKING:
    from .tracker import ActivityTracker

T = TypeVar("T")
U = TypeVar("U")
#: Rows per batch (one call of the batch script on Redis).
DEFAULT_CHUNK_SIZE = 200_000
_DAY = 86_400
_EPOCH_MILLISECONDS_ABOVE = 1e11
_EPOCH = datetime.date(1970, 1, 1)


def track_columns(
    tracker: ActivityTracker,
    ids: object = None,
    dates: object = None,
    buckets: object = None,
    old_ids: object = None,
    old_buckets: object = None,
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> int:
    """Record one event per row, with the counts of ``tracker.track_many()`` of the rows in
    order (``track(id=ids[i], bucket=buckets[i], old_id=old_ids[i], ...)`` for each row
    ``i``); return how many.

    Each argument is a pyarrow ``Array`` or ``ChunkedArray``, a numpy array or a sequence,
    all of one length; a null is "not given" (as ``None`` in ``track()``). ``ids`` and
    ``old_ids`` hold text (or whole numbers, compared as text); ``buckets`` and
    ``old_buckets`` bucket names, or one name (or ``None``, the default bucket) for every row.
    ``dates``: dates, or timestamps (naive ones are taken as local time already; aware ones,
    and numbers, which are epoch seconds, or milliseconds above 10^11, count on their day in
    the tracker's time zone), or one date for every row, or ``None`` for today.

    Everything is checked first: a bad argument raises ``TypeError``/``ValueError`` naming
    it (and the row, as ``ids[12]``), and nothing is written. Then ``chunk_size`` rows at a
    time are written, each chunk all or nothing.
    """
    chunk_size = arguments.positive_int(chunk_size, "chunk_size")
    columns = Columns.of(tracker, ids, dates, buckets, old_ids, old_buckets)
    chunks = (columns.slice(start, chunk_size) for start in range(0, len(columns), chunk_size))
    return send(tracker, chunks)


def send(tracker: ActivityTracker, chunks: Iterable[Columns]) -> int:
    """Write each chunk as one batch, in order; return how many rows."""
    rows = 0
    for batch in pipelined(chunks, lambda chunk: chunk.grouped(tracker._checker)):
        tracker.backend.track_many(batch)
        rows += batch.events
    return rows


def pipelined(items: Iterable[T], prepare: Callable[[T], U]) -> Iterator[U]:
    """``prepare(item)`` for each item, in order, the next item taken and prepared in a
    thread while the caller handles the one before (Redis works on one core meanwhile,
    this process on the other)."""
    iterator = iter(items)
    done = object()

    def next_prepared() -> Any:
        item = next(iterator, done)
        return done if item is done else prepare(item)  # type: ignore[arg-type]

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="activity-tracker-columns") as pool:
        coming = pool.submit(next_prepared)
        while (prepared := coming.result()) is not done:
            coming = pool.submit(next_prepared)
            yield prepared


class Columns:
    """Checked columns of events: ids and old ids as large strings, buckets as dictionary
    arrays of checked names (null: the default bucket), days as date32 in the tracker's time
    zone."""

    def __init__(
        self,
        ids: pa.Array,
        days: pa.Array,
        buckets: pa.Array,
        old_ids: pa.Array,
        old_buckets: pa.Array,
    ) -> None:
        self.ids, self.days, self.buckets = ids, days, buckets
        self.old_ids, self.old_buckets = old_ids, old_buckets

    def __len__(self) -> int:
        return len(self.ids)

    @classmethod
    def of(
        cls,
        tracker: ActivityTracker,
        ids: object,
        dates: object,
        buckets: object,
        old_ids: object,
        old_buckets: object,
    ) -> Columns:
        """Check the arguments of :func:`track_columns`."""
        given = {"ids": ids, "old_ids": old_ids}
        arrays = {name: _array(value, name) for name, value in given.items() if value is not None}
        if not arrays:
            raise TypeError("track_columns() needs ids, old_ids or both")
        length = len(next(iter(arrays.values())))
        texts = {
            name: _text(arrays[name], name, length) if name in arrays else _nulls(length)
            for name in given
        }
        for name, text in texts.items():
            sizes = pc.binary_length(text)
            if (pc.max(sizes).as_py() or 0) > arguments.MAX_ID_BYTES:
                row = pc.index(pc.greater(sizes, arguments.MAX_ID_BYTES), True).as_py()
                arguments.id_text(text[row].as_py(), f"{name}[{row}]")
        missing = pc.and_(pc.is_null(texts["ids"]), pc.is_null(texts["old_ids"]))
        if pc.any(missing).as_py():
            row = pc.index(missing, True).as_py()
            raise ValueError(f"ids[{row}]: track() needs id, old_id or both")
        return cls(
            texts["ids"],
            days_of(dates, tracker.timezone, length),
            _buckets(buckets, "buckets", length),
            texts["old_ids"],
            _buckets(old_buckets, "old_buckets", length),
        )

    def slice(self, start: int, length: int) -> Columns:
        """Rows ``start`` to ``start + length`` (a zero-copy view of each column)."""
        return Columns(
            *(
                column.slice(start, length)
                for column in (self.ids, self.days, self.buckets, self.old_ids, self.old_buckets)
            )
        )

    def grouped(self, checker: ActivityChecker) -> GroupedActivities:
        """These rows as one batch: the plain adds as runs of distinct ids per day and
        bucket, the other rows as activities in order."""
        day_codes, day_values = _codes(self.days)
        day_periods = [checker._day(day) for day in day_values.to_pylist()]
        bucket_codes = np.asarray(self.buckets.indices.to_numpy(zero_copy_only=False), np.int64)
        bucket_values: list[Bucket] = self.buckets.dictionary.to_pylist()
        encoded = pc.dictionary_encode(self.ids)
        chunk = _ChunkIds(encoded.dictionary)
        has_id = encoded.indices.is_valid().to_numpy(zero_copy_only=False)
        id_codes = np.asarray(encoded.indices.fill_null(0).to_numpy(zero_copy_only=False), np.int64)
        one_by_one = self.old_ids.is_valid().to_numpy(zero_copy_only=False)
        if one_by_one.any():
            one_by_one |= _added_after_a_move(self.ids, self.old_ids, one_by_one)
        plain = has_id & ~one_by_one
        group_count, distinct = len(day_values) * len(bucket_values), len(chunk.values)
        adds: list[tuple[Any, Bucket, Collection[str]]] = []
        for group, members in _distinct_per_group(
            (day_codes * len(bucket_values) + bucket_codes)[plain],
            id_codes[plain],
            group_count,
            distinct,
        ):
            day, bucket = divmod(group, len(bucket_values))
            adds.append((day_periods[day], bucket_values[bucket], ColumnRun(chunk, members)))
        others = self._activities(one_by_one, day_periods, day_codes)
        return GroupedActivities(adds, others, len(self))

    def _activities(
        self, taken: np.ndarray, day_periods: list[Any], day_codes: np.ndarray
    ) -> list[Activity]:
        """The rows marked in ``taken`` as activities, in order."""
        where = pa.array(np.flatnonzero(taken))
        values = [
            column.take(where).to_pylist()
            for column in (self.ids, self.buckets, self.old_ids, self.old_buckets)
        ]
        days = day_codes[np.flatnonzero(taken)].tolist()
        activities = []
        for day, id, bucket, old_id, old_bucket in zip(days, *values, strict=True):
            periods, ends = day_periods[day]
            activities.append(Activity(periods, ends, id, bucket, old_id, old_bucket))
        return activities


def _added_after_a_move(ids: pa.Array, old_ids: pa.Array, moves: np.ndarray) -> np.ndarray:
    """Rows adding an id moved in an earlier row."""
    moved = pc.unique(old_ids.drop_null())
    rows = np.arange(len(ids))
    move_codes = pc.index_in(old_ids, value_set=moved).to_numpy(zero_copy_only=False)
    first = np.full(len(moved), len(ids))
    np.minimum.at(first, move_codes[moves].astype(np.int64), rows[moves])
    codes = pc.index_in(ids, value_set=moved)
    known = codes.is_valid().to_numpy(zero_copy_only=False)
    found = codes.fill_null(0).to_numpy(zero_copy_only=False)
    return np.asarray(known & (rows > first[found]), bool)


def _distinct_per_group(
    groups: np.ndarray, members: np.ndarray, group_count: int, member_count: int
) -> Iterator[tuple[int, np.ndarray]]:
    """Each group with its distinct members, from pairs (``groups[i]``, ``members[i]``)."""
    if group_count * member_count <= 1 << 25:
        seen = np.zeros((group_count, member_count), bool)
        seen[groups, members] = True
        for group in range(group_count):
            found = np.flatnonzero(seen[group])
            if len(found):
                yield group, found
        return
    keys = np.unique(groups * member_count + members)
    found_groups, found_members = np.divmod(keys, member_count)
    starts = np.flatnonzero(np.diff(found_groups, prepend=-1))
    for start, stop in zip(starts, [*starts[1:], len(keys)], strict=True):
        yield int(found_groups[start]), found_members[start:stop]


def _codes(column: pa.Array) -> tuple[np.ndarray, pa.Array]:
    encoded = pc.dictionary_encode(column)
    return np.asarray(encoded.indices.to_numpy(zero_copy_only=False), np.int64), encoded.dictionary


class _ChunkIds:
    """The distinct ids of a chunk, and what its runs need of them, each computed once: the
    RESP bulk string and the hash of each, and which of them are in a given set."""

    def __init__(self, values: pa.Array) -> None:
        self.values = values
        self._bulk: pa.Array | None = None
        self._hashes: np.ndarray | None = None
        self._among: dict[int, tuple[AbstractSet[str], np.ndarray]] = {}

    def bulk(self) -> pa.Array:
        if self._bulk is None:
            kind = self.values.type
            length = pc.cast(pc.binary_length(self.values), kind)
            parts = [pa.scalar(text, kind) for text in ("$", "\r\n", "")]
            dollar, newline, nothing = parts
            self._bulk = pc.binary_join_element_wise(
                dollar, length, newline, self.values, newline, nothing
            )
        return self._bulk

    def hashes(self) -> np.ndarray:
        if self._hashes is None:
            joined = b"".join(map(id_hash, self.values.to_pylist()))
            self._hashes = np.frombuffer(joined, np.uint8).reshape(-1, 8)
        return self._hashes

    def among(self, ids: AbstractSet[str]) -> np.ndarray:
        """Which distinct ids are in ``ids`` (remembered while ``ids`` lives)."""
        found = self._among.get(id(ids))
        if found is None or found[0] is not ids:
            value_set = pa.array(list(ids), self.values.type)
            mask = pc.is_in(self.values, value_set=value_set).to_numpy(zero_copy_only=False)
            found = self._among[id(ids)] = (ids, np.asarray(mask, bool))
        return found[1]


class ColumnRun(IdRun):
    """Some distinct ids of a chunk (``rows`` of its distinct ids) as an :class:`IdRun`."""

    __slots__ = ("chunk", "rows")

    def __init__(self, chunk: _ChunkIds, rows: np.ndarray) -> None:
        self.chunk, self.rows = chunk, rows

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self) -> Iterator[str]:
        return iter(self.chunk.values.take(pa.array(self.rows)).to_pylist())

    def __contains__(self, id: object) -> bool:
        return any(id == value for value in self)

    def encoded(self) -> bytes:
        taken = self.chunk.bulk().take(pa.array(self.rows))
        _, offsets, data = taken.buffers()
        width = np.int64 if pa.types.is_large_string(taken.type) else np.int32
        bounds = np.frombuffer(offsets, width)[taken.offset : taken.offset + len(taken) + 1]
        joined: bytes = data.to_pybytes()[bounds[0] : bounds[-1]] if len(taken) else b""
        return joined

    def among(self, ids: AbstractSet[str]) -> AbstractSet[str]:
        if not ids:
            return frozenset()
        chosen = self.rows[self.chunk.among(ids)[self.rows]]
        return frozenset(self.chunk.values.take(pa.array(chosen)).to_pylist())

    def hashes(self, leaving_out: AbstractSet[str]) -> bytes:
        rows = self.rows
        if leaving_out:
            rows = rows[~self.chunk.among(leaving_out)[rows]]
        return bytes(self.chunk.hashes()[rows].tobytes())

    def union(self, others: Sequence[IdRun]) -> IdRun:
        if all(isinstance(other, ColumnRun) and other.chunk is self.chunk for other in others):
            parts = [self.rows, *(other.rows for other in others)]  # type: ignore[attr-defined]
            return ColumnRun(self.chunk, np.unique(np.concatenate(parts)))
        return super().union(others)


# ---- reading files ----------------------------------------------------------------------------


def csv_block(data: bytes, columns: Sequence[str]) -> dict[str, pa.Array] | None:
    """The rows of ``data``, whole lines of CSV without quotes, as text columns named
    ``columns`` (missing trailing cells and empty ones are null, cells are stripped); blank
    lines and lines starting with ``#`` are not rows. None when ``data`` is not that simple:
    quotes, not UTF-8, a row with more cells than ``columns``."""
    if b'"' in data:
        return None
    try:
        text = pa.array([data], pa.large_binary()).cast(pa.large_string())
    except pa.ArrowInvalid:
        return None
    lines = pc.split_pattern(text, "\n").flatten()
    if data.endswith(b"\n"):
        lines = lines.slice(0, len(lines) - 1)
    lines = pc.utf8_trim_whitespace(lines)
    keep = pc.and_(pc.not_equal(lines, ""), pc.invert(pc.starts_with(lines, "#")))
    cells = pc.split_pattern(lines.filter(keep), ",")
    counts = pc.list_value_length(cells).to_numpy(zero_copy_only=False)
    if len(counts) and counts.max() > len(columns):
        return None
    values = cells.flatten()
    starts = cells.offsets.to_numpy(zero_copy_only=False)[:-1]
    found = {}
    for position, name in enumerate(columns):
        index = pa.array(starts + position, mask=counts <= position)
        column = pc.utf8_trim_whitespace(values.take(index))
        found[name] = pc.if_else(pc.equal(column, ""), pa.scalar(None, column.type), column)
    return found


def empty_as_null(column: pa.Array | pa.ChunkedArray) -> pa.Array:
    """A column with its empty strings null ("not given", as in the other formats)."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
        return column
    return pc.if_else(pc.equal(column, ""), pa.scalar(None, column.type), column)


# ---- checking columns -------------------------------------------------------------------------


def _array(value: object, name: str) -> pa.Array:
    """``value`` as one pyarrow array."""
    try:
        if isinstance(value, pa.ChunkedArray):
            return value.combine_chunks()
        if isinstance(value, pa.Array):
            return value
        if isinstance(value, str | bytes) or not isinstance(value, Sequence | np.ndarray):
            raise TypeError(
                f"{name} must be an array (pyarrow, numpy) or a list, not {type(value).__name__}"
            )
        return pa.array(value)
    except (pa.ArrowException, UnicodeError) as exc:
        raise ValueError(f"{name}: {exc}") from exc


def _nulls(length: int) -> pa.Array:
    return pa.nulls(length, pa.string())


def _text(array: pa.Array, name: str, length: int) -> pa.Array:
    """An array of ids as large strings (whole numbers as their text)."""
    if len(array) != length:
        raise ValueError(f"{name} has {len(array)} values where ids or old_ids have {length}")
    kind = array.type
    if pa.types.is_dictionary(kind):
        return _text(array.dictionary_decode(), name, length)
    if pa.types.is_null(kind):
        return _nulls(length)
    if not (
        pa.types.is_string(kind)
        or pa.types.is_large_string(kind)
        or pa.types.is_integer(kind)
        or pa.types.is_binary(kind)
        or pa.types.is_large_binary(kind)
    ):
        raise TypeError(f"{name} must hold text or whole numbers, not {kind}")
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return array
    try:
        return array.cast(pa.string())
    except pa.ArrowException as exc:
        raise ValueError(f"{name}: ids must be UTF-8 text ({exc})") from exc


def _buckets(value: object, name: str, length: int) -> pa.DictionaryArray:
    """Bucket names as a dictionary array of checked names (null: the default bucket)."""
    if value is None or isinstance(value, str):
        checked = arguments.bucket_name(value, name)
        indices = pa.array(np.zeros(length, np.int32))
        return pa.DictionaryArray.from_arrays(indices, pa.array([checked], pa.string()))
    if not isinstance(value, pa.Array | pa.ChunkedArray | Sequence | np.ndarray):
        raise TypeError(
            f"{name} must be a bucket name, None or an array of them, not {type(value).__name__}"
        )
    array = _array(value, name)
    if len(array) != length:
        raise ValueError(f"{name} has {len(array)} values where ids or old_ids have {length}")
    if pa.types.is_dictionary(array.type):
        array = array.dictionary_decode()
    if pa.types.is_null(array.type):
        array = _nulls(length)
    if not (pa.types.is_string(array.type) or pa.types.is_large_string(array.type)):
        raise TypeError(f"{name} must hold bucket names (text), not {array.type}")
    encoded = pc.dictionary_encode(array, null_encoding="encode")
    for bucket in encoded.dictionary.to_pylist():
        arguments.bucket_name(bucket, name)
    return encoded


def days_of(value: object, timezone: datetime.tzinfo | None, length: int) -> pa.Array:
    """The calendar day (date32) of each row in the tracker's ``timezone``: of ``value``,
    dates or timestamps (see :func:`track_columns`), or one date for all, or today."""
    if value is None or isinstance(value, datetime.date):
        day = local_date(value, timezone, "dates")
        return pa.array(np.full(length, (day - _EPOCH).days, np.int32), pa.date32())
    array = _array(value, "dates")
    if len(array) != length:
        raise ValueError(f"dates has {len(array)} values where ids or old_ids have {length}")
    if array.null_count:
        row = pc.index(array.is_null(), True).as_py()
        raise ValueError(f"dates[{row}]: a date is needed")
    kind = array.type
    if pa.types.is_dictionary(kind):
        return days_of(array.dictionary_decode(), timezone, length)
    if pa.types.is_date(kind):
        return array.cast(pa.date32())
    if pa.types.is_timestamp(kind):
        if kind.tz is None:
            return array.cast(pa.date32())
        seconds = array.cast(pa.timestamp("s", tz=kind.tz), safe=False).cast(pa.int64())
        return _local_days(seconds.to_numpy(zero_copy_only=False), timezone)
    if pa.types.is_integer(kind) or pa.types.is_floating(kind):
        return _local_days(_epoch_seconds(array.cast(pa.float64())), timezone)
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return _parsed_days(array, timezone)
    raise TypeError(f"dates must hold dates, timestamps or epoch seconds, not {kind}")


def _epoch_seconds(numbers: pa.Array) -> np.ndarray:
    values = numbers.to_numpy(zero_copy_only=False)
    if not np.isfinite(values).all() or (values < 0).any():
        row = int(np.flatnonzero(~np.isfinite(values) | (values < 0))[0])
        raise ValueError(f"dates[{row}]: {values[row]!r} is not a usable epoch time")
    seconds = np.where(values > _EPOCH_MILLISECONDS_ABOVE, values / 1000, values)
    return np.asarray(np.floor(seconds), np.int64)


def _parsed_days(texts: pa.Array, timezone: datetime.tzinfo | None) -> pa.Array:
    """Days of ISO-8601 dates or times (with an offset: converted; without: local) or epoch
    seconds, as text; raises ``ValueError`` naming the first row that is none of them."""
    texts = pc.utf8_trim_whitespace(texts)
    try:
        if pc.all(pc.equal(pc.utf8_length(texts), 10)).as_py():
            return texts.cast(pa.date32())
        numeric = pc.match_substring_regex(texts, r"^[0-9]+(\.[0-9]*)?$")
        if pc.all(numeric).as_py():
            return _local_days(_epoch_seconds(texts.cast(pa.float64())), timezone)
        texts = pc.replace_substring_regex(texts, r"[zZ]$", "+00:00")
        aware = pc.match_substring_regex(texts, r"[+-][0-9]{2}:?[0-9]{2}$").to_numpy(
            zero_copy_only=False
        )
        days = np.empty(len(texts), np.int32)
        if aware.any():
            instants = texts.filter(pa.array(aware)).cast(pa.timestamp("s", tz="UTC"), safe=False)
            days[aware] = _local_days(
                instants.cast(pa.int64()).to_numpy(zero_copy_only=False), timezone
            ).to_numpy(zero_copy_only=False)
        if not aware.all():
            naive = texts.filter(pa.array(~aware)).cast(pa.timestamp("s"), safe=False)
            days[~aware] = naive.cast(pa.date32()).cast(pa.int32()).to_numpy(zero_copy_only=False)
        return pa.array(days, pa.int32()).cast(pa.date32())
    except pa.ArrowException:
        return _days_one_by_one(texts, timezone)


def _days_one_by_one(texts: pa.Array, timezone: datetime.tzinfo | None) -> pa.Array:
    """What :func:`_parsed_days` cannot do at once, value by value, with ingest's rules."""
    days = []
    for row, text in enumerate(texts.to_pylist()):
        try:
            days.append(local_date(parse_timestamp(text), timezone, "dates"))
        except MalformedLine as exc:
            raise ValueError(f"dates[{row}]: {exc}") from None
    return pa.array(days, pa.date32())


def _local_days(seconds: np.ndarray, timezone: datetime.tzinfo | None) -> pa.Array:
    """The local day of each epoch second in ``timezone`` (local time when ``None``), with
    the zone's offset looked up once per hour (per second in an hour where it changes)."""
    hours, inverse = np.unique(seconds // 3600, return_inverse=True)
    starts = [_offset(int(hour) * 3600, timezone) for hour in hours]
    ends = [_offset(int(hour) * 3600 + 3599, timezone) for hour in hours]
    offsets = np.asarray(starts, np.int64)[inverse]
    changing = np.flatnonzero(np.not_equal(starts, ends)[inverse])
    for row in changing:
        offsets[row] = _offset(int(seconds[row]), timezone)
    return pa.array(((seconds + offsets) // _DAY).astype(np.int32), pa.int32()).cast(pa.date32())


def _offset(second: int, timezone: datetime.tzinfo | None) -> int:
    try:
        moment = datetime.datetime.fromtimestamp(second, datetime.timezone.utc)
        offset = moment.astimezone(timezone).utcoffset()
    except (OverflowError, OSError, ValueError) as exc:
        raise ValueError(f"dates: {second} is out of range") from exc
    return int(offset.total_seconds()) if offset is not None else 0

"""The Redis key schema: every key this library reads or writes, and what its values hold.

Per period (``P`` is its tag, e.g. ``d2024-01-31``) and bucket (``B`` is its code)::

    {prefix}:{P}:reg      hash: the period's registry (below)              expires at D
    {prefix}:{P}:hll:B    HyperLogLog: every id added to B, or moved out   expires at D
                          of it; for an aggregate, the union of its sources
    {prefix}:{P}:chg      hash: the id-change records (below)              expires at D
    {prefix}:{P}:counts   hash: collapsed counts                           kept for good
    {prefix}:{P}:scratch  HyperLogLog: a batch's ids for a moment          deleted by the
                          (track_many.lua merges it into several sketches) script using it

``{P}`` is a Redis Cluster hash tag: all keys of one period live in one slot, so the scripts
and multi-key commands of one period work on a cluster. Every raw key (all but ``counts``)
expires at the period's deadline D, fixed by the period's first write (see :func:`deadline`).

Bucket codes are injective: the default bucket ``None`` is ``default`` and a str bucket ``b``
is ``b:`` followed by ``b`` percent-encoded as UTF-8 with every byte outside
``[A-Za-z0-9_.~-]`` escaped. So ``:``, ``{``, ``}``, spaces, unicode and newlines never reach a
key name or a registry value, and no two (period, bucket) pairs share a key.

``reg`` fields: ``<code>`` -> a raw bucket's state ``index * 2 + tracked`` (``tracked`` is 1
once ids were added to it; ``index`` >= 1 names it in the change records, 0 until it first
appears in one), or an aggregate's definition ``a`` + its source codes joined by newlines;
``@deadline`` -> D (epoch seconds); ``@next`` -> the last index handed out; ``@moved`` -> how
many distinct id hashes have records (absent: none); ``@out:<index>`` -> how many ids' last
operation on that bucket is a move out (its exact correction).

``chg`` fields: the shard of an id hash (``"0"`` .. ``"1023"``) -> 10-byte records, each the
8-byte hash and a big-endian uint16 ``index * 2 + flag`` (:data:`OUT` or :data:`BACK`). An id
has one record per bucket it touched since its first move in the period.

``counts`` fields: ``<code>`` -> ``"<count>,<estimate>"`` (the estimate is that of the sketch
the count came from; a plain ``"<count>"`` written by 1.x reads as count = estimate);
``@measured`` -> the server time (microseconds) of the measurement stored; ``@expires`` -> D;
for a day, ``@rolling:<n>:<code>`` -> ``"<count>,<estimate>,<T>"``, the rolling window of
``n`` days ending that day (see :func:`rolling_field`; T is the server time of the
measurement it was computed after). Every field that is not a bucket count starts with ``@``.

On a cluster, unions of sketches of different periods (rolling windows, ``count()``,
retention) are estimated on copies of those sketches under a scratch tag of their own::

    {prefix}:{u<token>}:<n>   a copy of one of the tracker's sketches   expires in a minute

written, counted and deleted in one round trip (see :meth:`KeySchema.scratch`).

The Lua scripts read these field names themselves (passing them would cost every call):
``track.lua``, ``track_many.lua``, ``collapse.lua``, ``store.lua`` and ``rolling.lua`` spell
them as here.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator
from urllib.parse import quote, unquote

from .periods import Period

Bucket = str | None

DEFAULT_BUCKET_CODE = "default"
_STR_BUCKET_MARK = "b:"

#: The keys of a period, named by what they hold (see :meth:`KeySchema.part`).
REG, CHG, HLL, COUNTS, SCRATCH = "reg", "chg", "hll", "counts", "scratch"

#: What every ``reg`` and ``counts`` field that is not a bucket's code starts with.
_META_MARK = "@"
#: ``reg`` fields (no bucket code starts with ``@``).
DEADLINE_FIELD = "@deadline"
NEXT_INDEX_FIELD = "@next"
MOVED_FIELD = "@moved"
OUT_FIELD_PREFIX = "@out:"
#: An aggregate's ``reg`` value starts with this (a raw bucket's is a number).
AGGREGATE_MARK = "a"
#: Buckets with id changes in one period get indices 1..MAX_INDEX.
MAX_INDEX = 65535

#: ``counts`` fields.
MEASURED_FIELD = "@measured"
EXPIRES_FIELD = "@expires"
ROLLING_FIELD_MARK = "@rolling:"
#: How long a scratch copy of a sketch lives if the round trip deleting it never comes.
SCRATCH_MILLISECONDS = 60_000

#: The flag of a change record: the id's last operation on the bucket is a move out ...
OUT = 0
#: ... or an add after its first move in the period.
BACK = 1
SHARDS = 1024
HASH_SIZE = 8
RECORD_SIZE = HASH_SIZE + 2


def encode_bucket(bucket: Bucket) -> str:
    """The key-safe, injective text for a bucket name."""
    if bucket is None:
        return DEFAULT_BUCKET_CODE
    try:
        return _STR_BUCKET_MARK + quote(bucket, safe="", errors="strict")
    except UnicodeEncodeError as exc:
        raise ValueError(f"bucket name {bucket!r} is not valid unicode text") from exc


def decode_bucket(code: str) -> Bucket:
    """Inverse of :func:`encode_bucket`."""
    if code == DEFAULT_BUCKET_CODE:
        return None
    if not code.startswith(_STR_BUCKET_MARK):
        raise ValueError(f"not a bucket encoding: {code!r}")
    return unquote(code[len(_STR_BUCKET_MARK) :], errors="strict")


def bucket_order(bucket: Bucket) -> tuple[bool, str]:
    """Sort key putting the default bucket first, then names in text order."""
    return (bucket is not None, bucket or "")


def check_prefix(prefix: object) -> str:
    """Return ``prefix`` if it can start our keys, else raise."""
    if not isinstance(prefix, str):
        raise TypeError(f"prefix must be a str, not {type(prefix).__name__}")
    if not prefix:
        raise ValueError("prefix must not be empty")
    if "{" in prefix or "}" in prefix:
        raise ValueError("prefix must not contain '{' or '}': the period is the cluster hash tag")
    return prefix


def id_hash(id: str) -> bytes:
    """The 8-byte hash an id is recorded by in the change records (every backend uses it).

    Two distinct ids changed in one period share a hash with probability about n²/2^65 for
    n such ids (2.7e-8 at a million)."""
    return hashlib.blake2b(id.encode("utf-8"), digest_size=HASH_SIZE).digest()


def shard_of(hash: bytes) -> int:
    """The ``chg`` field holding the records of an id hash (track.lua computes it the same)."""
    return (hash[0] * 256 + hash[1]) % SHARDS


def encode_record(hash: bytes, index: int, flag: int) -> bytes:
    """One change record: the id hash, then ``index * 2 + flag`` as a big-endian uint16."""
    return hash + (index * 2 + flag).to_bytes(2, "big")


def decode_records(blob: bytes) -> Iterator[tuple[bytes, int, int]]:
    """``(hash, index, flag)`` for each record of a ``chg`` value."""
    for at in range(0, len(blob) - RECORD_SIZE + 1, RECORD_SIZE):
        value = blob[at + HASH_SIZE] * 256 + blob[at + HASH_SIZE + 1]
        yield blob[at : at + HASH_SIZE], value // 2, value % 2


def is_bucket_field(field: str) -> bool:
    """Whether a ``reg`` or ``counts`` field is a bucket's code (the others start with
    ``@``)."""
    return not field.startswith(_META_MARK)


def rolling_prefix(days: int) -> str:
    """What the ``counts`` fields of a day's rolling windows of ``days`` days start with."""
    return f"{ROLLING_FIELD_MARK}{days}:"


def rolling_field(days: int, code: str) -> str:
    """The ``counts`` field of a day holding the window of ``days`` days ending that day,
    for the bucket (or aggregate) of code ``code``: ``@rolling:7:b:web``."""
    return rolling_prefix(days) + code


def deadline(period_end: float, now: float, retention: int) -> int:
    """D, the moment every raw key of a period expires, as a period's first write proposes
    it: ``retention`` seconds after the later of the period's end and now (so live tracking
    gives a period's keys period_end + retention, and a backfill ``retention`` from now)."""
    return math.ceil(max(period_end, now) + retention)


class KeySchema:
    """Names the keys of one tracker (one prefix)."""

    def __init__(self, prefix: str) -> None:
        self.prefix = check_prefix(prefix)

    def _period_key(self, period: Period, name: str) -> str:
        return f"{self.prefix}:{{{period.tag}}}:{name}"

    def reg(self, period: Period) -> str:
        """The period's registry (hash)."""
        return self._period_key(period, REG)

    def chg(self, period: Period) -> str:
        """The period's change records (hash)."""
        return self._period_key(period, CHG)

    def hll_prefix(self, period: Period) -> str:
        """What the sketch keys of a period start with: collapse.lua names the sketches of
        the buckets it finds in the registry by appending their codes to it."""
        return self._period_key(period, HLL + ":")

    def hll(self, period: Period, bucket_code: str) -> str:
        """The sketch of the bucket (or aggregate) of code ``bucket_code`` in the period."""
        return self.hll_prefix(period) + bucket_code

    def counts(self, period: Period) -> str:
        """The period's collapsed counts (hash, kept for good)."""
        return self._period_key(period, COUNTS)

    def batch_scratch(self, period: Period) -> str:
        """The scratch sketch of a batch: ``track_many.lua`` adds a long run of ids to it once
        and merges it into each of the run's sketches, then deletes it."""
        return self._period_key(period, SCRATCH)

    def scratch(self, token: str, number: int) -> str:
        """A scratch copy of a sketch (cluster unions): ``token`` names one round trip (its
        copies share a slot, the tag ``u<token>``, which no period tag starts with)."""
        return f"{self.prefix}:{{u{token}}}:{number}"

    def part(self, key: str) -> str | None:
        """Which of a period's keys of this tracker ``key`` is: :data:`REG`, :data:`CHG`,
        :data:`HLL` (a bucket's sketch), :data:`COUNTS` or :data:`SCRATCH`; None for any
        other key (another prefix's, a scratch copy of a cluster union)."""
        head = f"{self.prefix}:{{"
        if not key.startswith(head):
            return None
        name = key[len(head) :].partition("}:")[2]
        if name.startswith(HLL + ":"):
            return HLL
        return name if name in (REG, CHG, COUNTS, SCRATCH) else None

    def pattern(self) -> str:
        """A SCAN pattern matching every key of this tracker."""
        escaped = "".join("\\" + c if c in "*?[]\\" else c for c in self.prefix)
        return escaped + ":*"

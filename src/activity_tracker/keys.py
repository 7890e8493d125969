"""The Redis key schema: every key this library reads or writes is named here.

Per period (``P`` is its tag, e.g. ``d2024-01-31``) and bucket (``B`` is its encoding)::

    {prefix}:{P}:hll:B      HyperLogLog of every id added to bucket B in period P
    {prefix}:{P}:out:B      set: ids moved out of B (in the HLL, not in the bucket)
    {prefix}:{P}:back:B     set: ids tracked in B after they were first moved in P
    {prefix}:{P}:moved      set: every id moved out of any bucket in P
    {prefix}:{P}:buckets    set: encodings of the buckets tracked in P
    {prefix}:{P}:left       set: encodings of the buckets ids were moved out of in P
    {prefix}:{P}:counts     hash: bucket encoding -> collapsed count (kept for good)

``{P}`` is a Redis Cluster hash tag: all keys of one period live in one slot, so the scripts
and multi-key commands of one period work on a cluster.

Bucket names are encoded injectively: the default bucket ``None`` is ``default`` and a str
bucket ``b`` is ``b:`` followed by ``b`` percent-encoded as UTF-8 with every byte outside
``[A-Za-z0-9_.~-]`` escaped. So ``:``, ``{``, ``}``, spaces and unicode never reach a key
name, and no two (period, bucket) pairs share a key.
"""

from __future__ import annotations

from urllib.parse import quote, unquote

from .periods import Period

Bucket = str | None

DEFAULT_BUCKET_CODE = "default"
_STR_BUCKET_MARK = "b:"
# A counts-hash field no bucket encoding can produce: when the raw sketches expire.
# track.lua and track_many.lua read it by this name (passing it would cost every track()).
SKETCHES_EXPIRE_FIELD = "@expires"


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


class KeySchema:
    """Names the keys of one tracker (one prefix)."""

    def __init__(self, prefix: str) -> None:
        self.prefix = check_prefix(prefix)

    def _period_key(self, period: Period, name: str) -> str:
        return f"{self.prefix}:{{{period.tag}}}:{name}"

    def hll(self, period: Period, bucket_code: str) -> str:
        return self._period_key(period, "hll:" + bucket_code)

    def moved_out(self, period: Period, bucket_code: str) -> str:
        return self._period_key(period, "out:" + bucket_code)

    def tracked_back(self, period: Period, bucket_code: str) -> str:
        return self._period_key(period, "back:" + bucket_code)

    def bucket_keys(self, period: Period, bucket_code: str) -> tuple[str, str, str]:
        """The HLL and the two correction sets of one bucket: what a bucket is made of."""
        return (
            self.hll(period, bucket_code),
            self.moved_out(period, bucket_code),
            self.tracked_back(period, bucket_code),
        )

    def moved(self, period: Period) -> str:
        return self._period_key(period, "moved")

    def buckets(self, period: Period) -> str:
        return self._period_key(period, "buckets")

    def left(self, period: Period) -> str:
        return self._period_key(period, "left")

    def counts(self, period: Period) -> str:
        return self._period_key(period, "counts")

    def pattern(self) -> str:
        """A SCAN pattern matching every key of this tracker."""
        escaped = "".join("\\" + c if c in "*?[]\\" else c for c in self.prefix)
        return escaped + ":*"

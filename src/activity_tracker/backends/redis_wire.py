"""Requests as RESP bytes (the Redis protocol), for a connection's ``send_packed_command``:
the per-event request, its repeating part encoded once, and a batch's, its ids encoded once.
No I/O here.

``track()`` runs once per event, and redis-py spends longer encoding a ``track.lua`` call (a
dozen keys and arguments) than the rest of the call's Python. Successive calls mostly repeat
the keys, bucket codes and deadlines of earlier ones, which ``track.lua`` takes first: this
module encodes that prefix once per (periods, buckets, mode) and appends the id-dependent
arguments to it. The bytes are those redis-py would send for the same ``EVALSHA``.
"""

from __future__ import annotations

import math
from typing import Any

from ..arguments import Activity
from ..keys import KeySchema, id_hash
from .redis_plan import TRACK_TAIL_LENGTH, ScriptCall, Spread, track_fixed, track_tail

# Prefixes kept; the oldest are forgotten all at once when there are more (a race only
# encodes one again).
_CACHE_LIMIT = 4096


def bulk(value: str | bytes | int) -> bytes:
    """One argument as a RESP bulk string (text as UTF-8, an int in decimal, as redis-py)."""
    data = value if isinstance(value, bytes) else str(value).encode("utf-8")
    return b"$%d\r\n%s\r\n" % (len(data), data)


def command(*args: str | bytes | int) -> list[bytes]:
    """Any command, for a connection's ``send_packed_command``."""
    return [b"*%d\r\n" % len(args) + b"".join(bulk(arg) for arg in args)]


def script_call(call: ScriptCall, sha: str) -> list[bytes]:
    """The ``EVALSHA`` of ``call`` (a batch's: ``track_many.lua``), each :class:`.Spread` of
    its arguments as the ids of its run, which encodes them once for every call taking them."""
    parts = [b"", bulk("EVALSHA"), bulk(sha), bulk(len(call.keys))]
    parts += map(bulk, call.keys)
    count = 3 + len(call.keys)
    for arg in call.args:
        if isinstance(arg, Spread):
            parts.append(arg.run.encoded())
            count += len(arg.run)
        else:
            parts.append(bulk(arg))
            count += 1
    parts[0] = b"*%d\r\n" % count
    return [b"".join(parts)]


class TrackWire:
    """``track.lua`` calls of one tracker (key schema, retention), by the SHA of ``script``
    (its source and SHA).

    A prefix holds the deadlines proposed for the periods' first writes, ``retention`` after
    the later of each period's end and now (rounded up to a second): it is reused from the
    time it was encoded for as long as they stay the same, until the first of its periods
    ends, or for up to a second when one has ended (a backfill), since that period's proposal
    moves with the clock."""

    def __init__(self, schema: KeySchema, retention: int, script: tuple[str, str]) -> None:
        self.schema, self.retention = schema, retention
        source, self.sha = script
        #: The ``SCRIPT LOAD`` of ``track.lua``, for a server that does not know it yet.
        self.load = command("SCRIPT", "LOAD", source)
        # (periods, bucket, old bucket, id given, old id given) -> (prefix, reusable from,
        # reusable until)
        self._prefixes: dict[tuple[Any, ...], tuple[bytes, float, float]] = {}

    def packed(self, activity: Activity, now: float) -> list[bytes]:
        """The ``EVALSHA`` recording ``activity`` in all its periods, for a connection's
        ``send_packed_command``."""
        new_id, old_id = activity.id, activity.old_id
        key = (
            activity.periods,
            activity.bucket,
            activity.old_bucket,
            new_id is None,
            old_id is None,
        )
        found = self._prefixes.get(key)
        if found is None or not found[1] <= now < found[2]:
            found = self._prefix(key, activity, now)
        if new_id is not None and old_id is None:  # the common call: track_tail's 4 arguments
            data = new_id.encode("utf-8")
            return [
                b"%s$%d\r\n%s\r\n$8\r\n%s\r\n$0\r\n\r\n$0\r\n\r\n"
                % (found[0], len(data), data, id_hash(new_id))
            ]
        return [found[0] + b"".join(bulk(arg) for arg in track_tail(activity))]

    def _prefix(
        self, key: tuple[Any, ...], activity: Activity, now: float
    ) -> tuple[bytes, float, float]:
        keys, fixed = track_fixed(
            self.schema, activity, activity.periods, activity.ends, self.retention, now
        )
        count = 3 + len(keys) + len(fixed) + TRACK_TAIL_LENGTH
        args = ("EVALSHA", self.sha, len(keys), *keys, *fixed)
        prefix = b"*%d\r\n" % count + b"".join(bulk(arg) for arg in args)
        retention = self.retention
        # Until now reaches an end not reached yet, or changes ceil(now + retention).
        valid_until = min(
            end if now < end else math.ceil(now + retention) - retention for end in activity.ends
        )
        found = prefix, now, valid_until
        if len(self._prefixes) >= _CACHE_LIMIT:
            self._prefixes.clear()
        self._prefixes[key] = found
        return found

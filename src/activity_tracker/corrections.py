"""The correction arithmetic: how a sketch's estimate and the exact change records make a count.

A bucket's HyperLogLog holds every id ever added to it in the period, and every id moved out
of it (an HLL cannot forget; adding a moved id keeps every corrected id inside its sketch).
The change records say, for each id moved in the period and each bucket it touched since its
first move, whether its last operation there is a move out (``OUT``) or an add (``BACK``).

- A bucket's count is its sketch's estimate minus the ids whose record for it is ``OUT``.
- A union of buckets, over one period or several (an aggregate, a rolling window, a
  ``count()`` range, the union of two periods behind a retention figure), is the estimate of
  the union of their sketches minus :func:`union_subtracted`.
- An intersection (retention) is :func:`intersection`: inclusion-exclusion over a union.

The standard error of a count is that of the sketch (or union) it came from, not of the
corrected count: a bucket whose ids mostly moved out has the error of everything it holds.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Mapping
from typing import NamedTuple, TypeVar

from .keys import BACK, OUT

#: The relative standard error of a Redis HyperLogLog (16,384 registers): 1.04/sqrt(16384).
RELATIVE_STANDARD_ERROR = 1.04 / math.sqrt(16384)

K = TypeVar("K", bound=Hashable)


class Estimate(NamedTuple):
    """A count and its standard error (that of the sketch or union it was read from, about
    0.81% of what that sketch holds); ``count ± 2 * stderr`` holds the exact count about 95%
    of the time."""

    count: int  # type: ignore[assignment]  # the field DESIGN names, over tuple.count()
    stderr: float


def estimate(count: int, sketch_estimate: float) -> Estimate:
    """The :class:`Estimate` of a count read from a sketch estimating ``sketch_estimate``."""
    return Estimate(count, RELATIVE_STANDARD_ERROR * sketch_estimate)


def sketch_size(found: Estimate) -> int:
    """The estimate of the sketch an :class:`Estimate` was read from (its stderr over the
    relative standard error)."""
    return round(found.stderr / RELATIVE_STANDARD_ERROR)


def corrected_count(sketch_estimate: int, subtracted: int) -> int:
    """A count from its sketch's estimate and the exact corrections to subtract.

    Never negative: HLL error can make the estimate smaller than the exact corrections.
    """
    return max(0, sketch_estimate - subtracted)


def union_subtracted(
    periods: Iterable[Mapping[bytes, Mapping[K, int]]], separate: bool = False
) -> int:
    """How many ids to subtract from the estimate of a union of buckets' sketches.

    ``periods``: the union's periods in time order, each with its change records restricted
    to the union's buckets (id hash -> {bucket: OUT or BACK}). An id "left" a period when its
    records there hold an ``OUT`` and no ``BACK``.

    By default the periods are one period of the exact-set model, all their events in order
    (an aggregate, a rolling window, a ``count()`` range): an id hash is subtracted iff it
    left the last period where it has any such record. For one period, that is "moved out of
    one of the buckets, and not added to any of them since its first move".

    ``separate=True``: the union of each period's own set (the ``A ∪ B`` behind an
    intersection): an id hash is subtracted iff it left every period where it has records
    (where it has none, it is taken to be in no set).

    This departs from the exact-set model in the cases the README lists under "Accuracy",
    always by undercounting the union: an id that some bucket holds in the model through an
    add before its first move in the period deciding it, where its records are all moves out
    (an add earlier in that period, in an earlier period, or in a later one without an id
    change of its own); with ``separate``, an id in one period's set without an id change
    there that left the other period.
    """
    left: dict[bytes, bool] = {}
    for records in periods:
        for hash, flags in records.items():
            if not flags:
                continue
            found = set(flags.values())
            here = OUT in found and BACK not in found
            # In time order: the last period decides, or (separate) every period must agree.
            left[hash] = (here and left.get(hash, True)) if separate else here
    return sum(left.values())


def intersection(first: Estimate, second: Estimate, union: Estimate) -> Estimate:
    """|A ∩ B| by inclusion-exclusion, ``|A| + |B| - |A ∪ B|``, clamped to
    ``[0, min(|A|, |B|)]``, with the standard error of the union (DESIGN §7).

    The three estimates share most of their error, but not all: the intersection's absolute
    error is about that of the union, so its relative error is large when the intersection
    is a small part of the union (a low retention rate)."""
    count = first.count + second.count - union.count
    return Estimate(max(0, min(count, first.count, second.count)), union.stderr)

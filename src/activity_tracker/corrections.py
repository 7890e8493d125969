"""The correction arithmetic: how a sketch's estimate and the exact change records make a count.

A bucket's HyperLogLog holds every id ever added to it in the period, and every id moved out
of it (an HLL cannot forget; adding a moved id keeps every corrected id inside its sketch).
The change records say, for each id moved in the period and each bucket it touched since its
first move, whether its last operation there is a move out (``OUT``) or an add (``BACK``).

- A bucket's count is its sketch's estimate minus the ids whose record for it is ``OUT``.
- A union of buckets (an aggregate; later rolling windows, ``count()``, retention) is the
  estimate of the union of their sketches minus :func:`union_subtracted`.

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


def corrected_count(sketch_estimate: int, subtracted: int) -> int:
    """A count from its sketch's estimate and the exact corrections to subtract.

    Never negative: HLL error can make the estimate smaller than the exact corrections.
    """
    return max(0, sketch_estimate - subtracted)


def union_subtracted(periods: Iterable[Mapping[bytes, Mapping[K, int]]]) -> int:
    """How many ids to subtract from the estimate of a union of buckets' sketches.

    ``periods``: the union's periods in time order, each with its change records restricted
    to the union's buckets (id hash -> {bucket: OUT or BACK}). An id hash is subtracted iff,
    in the last period where it has any such record, it has an ``OUT`` record and no
    ``BACK`` record. For one period, that is "moved out of one of the buckets, and not added
    to any of them since its first move".

    This departs from the exact-set model in the cases the README lists under "Accuracy" (an
    id added to one bucket before its first move in a period, then moved out of another; for
    several periods, an id moved out on one day and added again on a later day before any
    move of its own that day), always by undercounting.
    """
    decided: set[bytes] = set()
    subtracted = 0
    for records in reversed(list(periods)):
        for hash, flags in records.items():
            if hash in decided or not flags:
                continue
            decided.add(hash)
            found = set(flags.values())
            subtracted += OUT in found and BACK not in found
    return subtracted

"""The correction arithmetic: how an HLL estimate and the exact side-sets make a count.

A bucket's HyperLogLog holds every id ever added to it in the period, including ids that were
later moved out (an HLL cannot forget). Moving an id out also adds it to the HLL, so that the
exact set of moved-out ids is always a subset of what the HLL counts, whether or not the id had
been tracked. The bucket's count is therefore the estimate minus the moved-out ids that were not
tracked back since.

An aggregate is the union of its buckets' HLLs; its moved-out set is the union of theirs minus
every id tracked back into any of them after its move. An id that was tracked in one bucket
*before* being moved out of another bucket of the same aggregate, and not tracked again after
the move, is missing from the aggregate: that is the one imprecision beyond HLL error, because
knowing it exactly would mean storing every id.
"""

from __future__ import annotations


def corrected_count(estimate: int, moved_out: int) -> int:
    """The count of a bucket (or aggregate) from its HLL estimate and its moved-out set size.

    Never negative: HLL error can make the estimate smaller than the exact corrections.
    """
    return max(0, estimate - moved_out)

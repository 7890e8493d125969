"""Memory per bucket-period: this library against exact Redis sets and Redis bitmaps.

For N distinct users active in one bucket on one day, the bytes Redis holds for that
bucket-period (``MEMORY USAGE key SAMPLES 0``, so sets are measured in full):

- this library: the bucket's HyperLogLog, plus its correction sets when 1% of the users
  were moved out (logins), tracked through ``track_many()``;
- exact sets, what the original library stored: one Redis set of the id strings;
- a Redis bitmap of integer user ids, for apps whose ids are dense integers: N ids drawn
  from a population of 10 million, so the bitmap spans up to 10 million bits.
"""

from __future__ import annotations

import random
import sys
from collections.abc import Sequence
from pathlib import Path

import redis

import _common
from _common import fmt, table
from activity_tracker import ActivityTracker
from activity_tracker.keys import KeySchema, encode_bucket
from activity_tracker.periods import Period

KIB = 1024
TARGET_BYTES = 14_745  # "14.4 KB" read as KiB: 14.4 * 1024 = 14,745.6, rounded down
POPULATION = 10_000_000
DAY = _common.FIRST_DAY


def usage(client: redis.Redis, key: str) -> int:
    return int(client.memory_usage(key, samples=0) or 0)


def measure(url: str, n: int, seed: int) -> dict[str, int]:
    client = redis.Redis.from_url(url)
    prefix = _common.unique_prefix(f"mem{n}")
    try:
        rng = random.Random(seed + n)
        ids = _common.uuid_ids(rng, n)
        tracker = ActivityTracker(client=client, prefix=f"{prefix}:lib")
        tracker.track_many((id, "web", None, None, DAY) for id in ids)
        schema, period = KeySchema(f"{prefix}:lib"), Period("daily", DAY)
        hll, out, back = schema.bucket_keys(period, encode_bucket("web"))
        plain = usage(client, hll)
        # 1% of the users log in: moved out of "web" into "auth".
        moved = ids[: max(1, n // 100)]
        tracker.track_many((f"member-{m}", "auth", id, "web", DAY) for m, id in enumerate(moved))
        with_moves = usage(client, hll) + usage(client, out) + usage(client, back)

        exact_key = f"{prefix}:exact"
        for start in range(0, n, 10_000):
            client.sadd(exact_key, *ids[start : start + 10_000])
        exact = usage(client, exact_key)

        bitmap_key = f"{prefix}:bitmap"
        pipe = client.pipeline(transaction=False)
        for user in rng.sample(range(POPULATION), n):
            pipe.setbit(bitmap_key, user, 1)
            if len(pipe) >= 10_000:
                pipe.execute()
        pipe.execute()
        bitmap = usage(client, bitmap_key)
        return {"hll": plain, "hll+moves": with_moves, "exact": exact, "bitmap": bitmap}
    finally:
        _common.delete_prefix(client, prefix)
        client.close()


def plot(sizes: list[int], results: list[dict[str, int]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(8, 4.5))
    series = [
        ("exact", "exact Redis set (original library)", "#999999"),
        ("bitmap", "Redis bitmap, integer ids of 10M users", "#6baed6"),
        ("hll+moves", "activity-tracker, with 1% id changes", "#fd8d3c"),
        ("hll", "activity-tracker", "#d94801"),
    ]
    for key, label, color in series:
        axes.plot(sizes, [r[key] for r in results], marker="o", label=label, color=color)
    axes.axhline(TARGET_BYTES, linestyle="--", color="black", linewidth=0.8)
    axes.text(sizes[0], TARGET_BYTES * 1.15, "14.4 KiB", fontsize=8)
    axes.set_xscale("log")
    axes.set_yscale("log")
    axes.set_xlabel("distinct users in the bucket-period (N)")
    axes.set_ylabel("bytes (MEMORY USAGE)")
    axes.set_title("Memory per bucket-period")
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main(argv: Sequence[str] | None = None, command: str | None = None) -> list[list[str]]:
    """Run, print and save the report; return its headline rows for ``run.py``."""
    args = _common.arguments(__doc__.splitlines()[0], argv)
    sizes = [100, 1_000, 10_000, 100_000, 1_000_000]
    with _common.redis_url(args.url) as url:
        results = [measure(url, n, args.seed) for n in sizes]
        rows = [
            (
                fmt(n),
                fmt(r["hll"]),
                fmt(r["hll+moves"]),
                fmt(r["exact"]),
                fmt(r["bitmap"]),
                fmt(r["exact"] / r["hll"], 1),
                "yes" if r["hll"] <= TARGET_BYTES else "NO",
            )
            for n, r in zip(sizes, results, strict=True)
        ]
        body = (
            "Bytes per bucket-period (one bucket, one day), uuid-like string ids.\n\n"
            + table(
                [
                    "N users",
                    "activity-tracker",
                    "with 1% id changes",
                    "exact set",
                    "bitmap (int ids)",
                    "exact / activity-tracker",
                    "<= 14.4 KiB",
                ],
                rows,
            )
            + f"\n\nTargets: at most 14.4 KB per bucket-period at any N, read as KiB "
            f"({TARGET_BYTES:,.0f} bytes): "
            + ("met" if all(r[-1] == "yes" for r in rows) else "NOT met")
            + " (the sketch; the id-change column adds the exact correction sets of the 1% "
            "moved users, which grow with id changes, not with users); "
            "at least 5,000x less than exact sets at "
            f"10^6: {results[-1]['exact'] / results[-1]['hll']:,.0f}x, "
            + ("met" if results[-1]["exact"] >= 5_000 * results[-1]["hll"] else "NOT met")
            + ".\n"
        )
        png = args.out / "memory.png"
        args.out.mkdir(parents=True, exist_ok=True)
        plot(sizes, results, png)
        _common.report(
            "memory",
            "Memory",
            command or _common.command_line("memory.py", argv),
            url,
            body,
            args.out,
            png.name,
        )
    largest = max(r["hll"] for r in results)
    ratio = results[-1]["exact"] / results[-1]["hll"]
    return [
        [
            "memory per bucket-period, N = 10^2..10^6",
            f"at most {largest:,} bytes",
            "<= 14.4 KiB (14,745 bytes)",
            "yes" if largest <= TARGET_BYTES else "NO",
        ],
        [
            "memory vs exact Redis set at N = 10^6",
            f"{ratio:,.0f}x less ({results[-1]['exact']:,} vs {results[-1]['hll']:,} bytes)",
            ">= 5,000x",
            "yes" if ratio >= 5_000 else "NO",
        ],
    ]


if __name__ == "__main__":
    main()
    sys.exit(0)

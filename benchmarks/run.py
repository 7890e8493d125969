"""Run every benchmark against one Redis and write the headline table.

``python benchmarks/run.py --quick`` takes two to three minutes on 2 cores; without
``--quick`` the full sizes (every event of the throughput workload through every writer,
memory at 10^6 ids and 10^6 id changes, accuracy up to 10^7 ids) take about 36 minutes.
Each benchmark writes ``<name>.md`` and ``<name>.png`` to ``--out`` (default
``benchmarks/results``); this script adds ``README.md`` there: every target of the issues with
its result and whether it is met, then the other figures.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence

import _common
import accuracy
import ingest
import memory
import throughput
import windows


def main(argv: Sequence[str] | None = None) -> int:
    args = _common.arguments(__doc__.splitlines()[0], argv)
    command = _common.command_line("run.py", argv)
    started = time.monotonic()
    passed = ["--seed", str(args.seed), "--out", str(args.out)]
    if args.quick:
        passed.append("--quick")
    headline: list[list[str]] = []
    with _common.redis_url(args.url) as url:
        for module in (throughput, ingest, memory, accuracy, windows):
            headline += module.main([*passed, "--url", url], command=command)
        env = _common.table(["", ""], _common.environment(url))
    elapsed = time.monotonic() - started
    targets = _common.table(
        ["measure", "result", "target", "met"], [row for row in headline if row[2]]
    )
    others = _common.table(["measure", "result"], [row[:2] for row in headline if not row[2]])
    text = (
        f"# Benchmark results\n\nCommand: `{command}` ({elapsed:.0f} s)\n\n{env}\n\n"
        f"## Targets\n\n{targets}\n\n## Other figures\n\n{others}\n\n"
        "Details: [throughput](throughput.md), [ingest](ingest.md), [memory](memory.md), "
        "[accuracy](accuracy.md), [windows](windows.md).\n"
    )
    (args.out / "README.md").write_text(text, encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

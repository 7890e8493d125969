"""Write ``examples/sample-events.csv``: a small synthetic event log for the README walk-through.

It is the ``activity-tracker demo`` generator, seeded, at a small size: 600 users over the 14
days from Monday 2024-04-01, with app and web users, anonymous web sessions that log in (an id
change: ``timestamp,user,web,session,anon``) and anonymous visitors. Run it from anywhere:

    python examples/make_sample_log.py
"""

from __future__ import annotations

import datetime
from pathlib import Path

from activity_tracker.cli.demo import synthetic_events
from activity_tracker.cli.events import format_csv_line

USERS = 600
DAYS = 14
START = datetime.date(2024, 4, 1)
SEED = 2024
OUTPUT = Path(__file__).with_name("sample-events.csv")


def main() -> None:
    lines = ["timestamp,id,bucket,old_id,old_bucket"]
    lines += (format_csv_line(e) for e in synthetic_events(USERS, DAYS, START, SEED))
    OUTPUT.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {len(lines) - 1} events to {OUTPUT}")


if __name__ == "__main__":
    main()

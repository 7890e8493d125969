"""Where the commands write what is not their result: progress, summaries, notices."""

from __future__ import annotations

from rich.console import Console


def stderr() -> Console:
    """A console on stderr that prints text as given (no highlighting, no wrapping)."""
    return Console(stderr=True, highlight=False, soft_wrap=True)

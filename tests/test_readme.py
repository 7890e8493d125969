"""The README's examples, run in order as one session against a real Redis.

Each ```python block runs; when a ```text block follows it, what the block prints must equal
that text. The examples use the default prefix, so its keys are cleared before and after.
"""

from __future__ import annotations

import contextlib
import io
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

README = Path(__file__).resolve().parent.parent / "README.md"
FENCE = re.compile(r"^```(\w*)\n(.*?)^```\n", re.S | re.M)


def examples() -> list[tuple[str, str | None]]:
    """(code, expected output or None) for every python block, in order."""
    blocks = [(m.group(1), m.group(2)) for m in FENCE.finditer(README.read_text())]
    found = []
    for index, (language, body) in enumerate(blocks):
        if language == "python":
            following = blocks[index + 1] if index + 1 < len(blocks) else None
            expected = following[1] if following and following[0] == "text" else None
            found.append((body, expected))
    return found


def clear_default_prefix(url: str) -> None:
    client = redis.Redis.from_url(url)
    for key in client.scan_iter(match="activity:*"):
        client.delete(key)
    client.close()


@pytest.fixture
def readme_redis(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("ACTIVITY_TRACKER_URL", redis_url)
    clear_default_prefix(redis_url)
    yield
    clear_default_prefix(redis_url)


def test_readme_has_examples_with_outputs():
    found = examples()
    assert len(found) >= 6
    assert sum(expected is not None for _, expected in found) >= 6


def test_readme_examples_run_and_print_what_the_readme_says(readme_redis):
    namespace: dict[str, object] = {"__name__": "readme"}
    for number, (code, expected) in enumerate(examples(), start=1):
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            exec(compile(code, f"README.md example {number}", "exec"), namespace)
        if expected is not None:
            assert printed.getvalue() == expected, f"README example {number}"

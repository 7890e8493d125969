"""Fixtures of the integration tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from helpers import UNREACHABLE, buffered_tracker

from activity_tracker import BufferedTracker


@pytest.fixture
def buffered(redis_url: str, prefix: str) -> Iterator[BufferedTracker]:
    """A BufferedTracker over a tracker (UTC days) on the test Redis under this test's prefix."""
    with buffered_tracker(redis_url, prefix) as value:
        yield value


@pytest.fixture
def unreachable() -> Iterator[BufferedTracker]:
    """A BufferedTracker over a tracker whose Redis is down: every send fails."""
    with buffered_tracker(UNREACHABLE, "unreachable") as value:
        yield value

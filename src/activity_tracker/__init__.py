"""Daily-, weekly- and monthly-active user counts in bounded memory, on Redis HyperLogLog.

>>> from activity_tracker import ActivityTracker
>>> tracker = ActivityTracker(url="redis://localhost:6379/0")   # doctest: +SKIP
"""

from importlib import metadata

from .backends.base import AsyncBackend, Backend
from .batch import AsyncBatch, Batch
from .buffer import BufferedTracker
from .corrections import Estimate
from .errors import (
    ActivityTrackerError,
    AggregateBucketError,
    BackendConnectionError,
    CollapseError,
    CollapseValueError,
    RawDataExpiredError,
    StorageError,
    WrongKeyTypeError,
)
from .tracker import ActivityTracker, AsyncActivityTracker

#: The installed distribution's version, which pyproject.toml sets (``activity-tracker
#: --version`` reads the same).
__version__ = metadata.version("activity-tracker")

__all__ = [
    "ActivityTracker",
    "ActivityTrackerError",
    "AggregateBucketError",
    "AsyncActivityTracker",
    "AsyncBackend",
    "AsyncBatch",
    "Backend",
    "BackendConnectionError",
    "Batch",
    "BufferedTracker",
    "CollapseError",
    "CollapseValueError",
    "Estimate",
    "RawDataExpiredError",
    "StorageError",
    "WrongKeyTypeError",
]

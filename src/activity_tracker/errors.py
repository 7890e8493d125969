"""The exceptions this library raises, to be caught by meaning.

Bad arguments raise plain :class:`ValueError` or :class:`TypeError` naming the argument, before
anything is written. Everything that goes wrong in the store derives from
:class:`ActivityTrackerError` and carries the underlying exception as ``__cause__``.
"""

from __future__ import annotations


class ActivityTrackerError(Exception):
    """Base class of the errors raised by the store behind a tracker."""


class BackendConnectionError(ActivityTrackerError, ConnectionError):
    """The store cannot be reached (refused, timed out, dropped); ``__cause__`` says why."""


class WrongKeyTypeError(ActivityTrackerError, TypeError):
    """A key under the tracker's prefix holds data of another kind; it was left untouched."""


class StorageError(ActivityTrackerError):
    """The store answered with an error this library did not expect."""

"""``ActivityMiddleware`` for Django, configured in ``settings.py``.

.. code-block:: python

    MIDDLEWARE = [..., "activity_tracker.integrations.django.ActivityMiddleware"]
    ACTIVITY_TRACKER = "myproject.activity.tracker"            # required
    ACTIVITY_TRACKER_IDENTIFY = "myproject.activity.identify"  # optional
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

from .recorder import DEFAULT_MAX_IDS, ActivityRecorder, check_identify


def authenticated_user(request: Any) -> object:
    """The default ``identify``: the signed-in user's primary key, in the default bucket;
    ``None`` (nobody) for anonymous requests."""
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return None
    return user.pk


def _setting(name: str, default: object) -> object:
    """A setting: a dotted path is imported, anything else taken as it is."""
    value = getattr(settings, name, default)
    if isinstance(value, str):
        try:
            return import_string(value)
        except ImportError as exc:
            raise ImproperlyConfigured(f"{name}: cannot import {value!r}: {exc}") from exc
    return value


class ActivityMiddleware:
    """Tracks who made each request, once per id, bucket and day.

    Settings: ``ACTIVITY_TRACKER`` (required): an :class:`~activity_tracker.ActivityTracker`
    (which the middleware buffers) or a :class:`~activity_tracker.BufferedTracker`, or the
    dotted path of one. Misconfiguration raises ``ImproperlyConfigured`` when Django loads
    the middleware. ``ACTIVITY_TRACKER_IDENTIFY``: a callable (or its dotted path) taking
    the request, called after the view has handled it, returning an id, an ``(id, bucket)``
    pair or ``None``; default :func:`authenticated_user`. ``ACTIVITY_TRACKER_MAX_IDS``: how
    many ``(id, bucket)`` pairs of the day each process remembers (default 50,000).

    Each id is tracked at most once per ``(id, bucket)`` and day in this process, through the
    buffer, so requests never wait on Redis. A failure in ``identify`` or in tracking is logged
    (logger ``activity_tracker``), never raised. Works in sync and async (ASGI) stacks.
    """

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[Any], Any]) -> None:
        self.get_response = get_response
        tracker = _setting("ACTIVITY_TRACKER", None)
        if tracker is None:
            raise ImproperlyConfigured(
                "ACTIVITY_TRACKER must name the ActivityTracker or BufferedTracker to use, "
                'e.g. ACTIVITY_TRACKER = "myproject.activity.tracker"'
            )
        identify = _setting("ACTIVITY_TRACKER_IDENTIFY", authenticated_user)
        try:
            self.identify = check_identify(identify)
            self.recorder = ActivityRecorder(
                tracker, getattr(settings, "ACTIVITY_TRACKER_MAX_IDS", DEFAULT_MAX_IDS)
            )
        except (TypeError, ValueError) as exc:
            raise ImproperlyConfigured(f"activity_tracker: {exc}") from exc
        if iscoroutinefunction(get_response):
            markcoroutinefunction(self)

    def __call__(self, request: Any) -> Any:
        if iscoroutinefunction(self):
            return self._acall(request)
        response = self.get_response(request)
        self.recorder.after_request(self.identify, request)
        return response

    async def _acall(self, request: Any) -> Any:
        response = await self.get_response(request)
        # In a thread: identify may use the ORM (request.user is loaded lazily). Tracking
        # itself only hands the event to the buffer.
        await sync_to_async(self.recorder.after_request)(self.identify, request)
        return response

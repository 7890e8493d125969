"""``ActivityTracking``: the Flask extension (``app.after_request``), with ``init_app`` for
application factories."""

from __future__ import annotations

from collections.abc import Callable

import flask

from .recorder import DEFAULT_MAX_IDS, ActivityRecorder, check_identify


class ActivityTracking:
    """Tracks who made each request, once per id, bucket and day.

    ``ActivityTracking(app=None, *, tracker, identify, max_ids=50_000)``: after each request
    the view handled (error pages included, not unhandled exceptions), ``identify(request)``
    gets :data:`flask.request` and returns an id, an ``(id, bucket)`` pair, or ``None``
    (``flask.g`` and Flask-Login's ``current_user`` are there too); that id is tracked at
    most once per ``(id, bucket)`` and day in this process, through a
    :class:`~activity_tracker.BufferedTracker` (``tracker`` is one, or an
    :class:`~activity_tracker.ActivityTracker` that the extension buffers), so requests never
    wait on Redis. A failure in ``identify`` or in tracking is logged (logger
    ``activity_tracker``), never raised. Without ``app``, call :meth:`init_app` later; the
    extension is in ``app.extensions["activity_tracker"]``.
    """

    def __init__(
        self,
        app: flask.Flask | None = None,
        *,
        tracker: object,
        identify: Callable[[flask.Request], object],
        max_ids: int = DEFAULT_MAX_IDS,
    ) -> None:
        self.identify = check_identify(identify)
        self.recorder = ActivityRecorder(tracker, max_ids)
        if app is not None:
            self.init_app(app)

    def init_app(self, app: flask.Flask) -> None:
        """Track the requests of ``app`` too."""
        app.extensions["activity_tracker"] = self
        app.after_request(self._after_request)

    def _after_request(self, response: flask.Response) -> flask.Response:
        self.recorder.after_request(self.identify, flask.request)
        return response

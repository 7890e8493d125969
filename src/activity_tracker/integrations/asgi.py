"""``ActivityMiddleware`` for ASGI applications (Starlette, FastAPI, Quart, Django's ASGI...).

Plain ASGI: no framework is imported.

>>> app.add_middleware(ActivityMiddleware, tracker=tracker, identify=identify)  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from .recorder import DEFAULT_MAX_IDS, ActivityRecorder, check_identify

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class ActivityMiddleware:
    """Tracks who made each HTTP request and WebSocket session, once per id, bucket and day.

    ``ActivityMiddleware(app, tracker, identify, max_ids=50_000)``: after ``app`` has handled
    the request (so authentication has run), ``identify(scope)`` returns an id, an
    ``(id, bucket)`` pair, or ``None``; that id is tracked at most once per ``(id, bucket)``
    and day in this process, through a :class:`~activity_tracker.BufferedTracker` (``tracker``
    is one, or an :class:`~activity_tracker.ActivityTracker` that the middleware buffers), so
    requests never wait on Redis. With Starlette's authentication, ``scope["user"]`` is the
    user; ``request.state.x`` set by an endpoint is ``scope["state"]["x"]``. A failure in
    ``identify`` or in tracking is logged (logger ``activity_tracker``), never raised. A
    request that raised is not tracked.
    """

    def __init__(
        self,
        app: ASGIApp,
        tracker: object,
        identify: Callable[[Scope], object],
        max_ids: int = DEFAULT_MAX_IDS,
    ) -> None:
        self.app = app
        self.identify = check_identify(identify)
        self.recorder = ActivityRecorder(tracker, max_ids)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)
        if scope["type"] in ("http", "websocket"):
            self.recorder.after_request(self.identify, scope)

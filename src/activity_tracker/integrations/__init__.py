"""Where applications already are: Prometheus metrics and web-framework middleware.

One small module per framework, each importing its framework itself (an extra), so the
library never imports one: :mod:`.prometheus` (``prometheus_client``), :mod:`.asgi`
(Starlette, FastAPI or any ASGI app; no import at all), :mod:`.flask` and :mod:`.django`.
The middleware share :class:`~.recorder.ActivityRecorder`, the throttle-and-buffer core.
"""

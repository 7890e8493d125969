"""The Flask extension, through Flask's test client, into a real Redis."""

from __future__ import annotations

import logging

import flask
import pytest
from helpers import SendSpy, counts_today, wait_for_a_failed_send

from activity_tracker import ActivityTracker
from activity_tracker.integrations.flask import ActivityTracking


def identify(request):
    user = flask.g.get("user")
    if user is None:
        return None
    return user, "app" if request.path.startswith("/app") else "web"


def make_app():
    app = flask.Flask(__name__)

    @app.before_request
    def sign_in():
        # What an authentication layer does: the user is known once the view runs.
        if "user" in flask.request.args:
            flask.g.user = flask.request.args["user"]

    @app.route("/")
    @app.route("/app/home")
    def home():
        return "home"

    @app.route("/missing")
    def missing():
        flask.abort(404)

    return app


def test_flask_tracks_each_user_and_bucket_once_per_day(buffered):
    app = make_app()
    ActivityTracking(app, tracker=buffered, identify=identify)
    spy = SendSpy(buffered)
    client = app.test_client()
    for path in ("/?user=ann", "/?user=ann", "/app/home?user=ann", "/?user=ben", "/", "/"):
        assert client.get(path).data == b"home"
    assert [(e["id"], e["bucket"]) for e in spy.events] == [
        ("ann", "web"),
        ("ann", "app"),
        ("ben", "web"),
    ]
    assert counts_today(buffered, ["web", "app"]) == {"web": 2, "app": 1}


def test_error_pages_are_tracked_too(buffered):
    app = make_app()
    ActivityTracking(app, tracker=buffered, identify=identify)
    assert app.test_client().get("/missing?user=cy").status_code == 404
    assert counts_today(buffered, ["web"]) == {"web": 1}


def test_init_app_for_an_application_factory_with_a_plain_tracker(redis_url, prefix):
    tracker = ActivityTracker(url=redis_url, prefix=prefix, timezone="UTC")
    tracking = ActivityTracking(tracker=tracker, identify=identify)
    app = make_app()
    tracking.init_app(app)
    assert app.extensions["activity_tracker"] is tracking
    assert app.test_client().get("/?user=dee").status_code == 200
    buffered = tracking.recorder.buffer  # the BufferedTracker the extension made
    try:
        assert buffered.tracker is tracker
        assert counts_today(buffered, ["web"]) == {"web": 1}
    finally:
        buffered.close()
        tracker.close()


def test_a_failing_identify_is_logged_and_the_response_stands(buffered, caplog):
    app = make_app()
    ActivityTracking(app, tracker=buffered, identify=lambda request: flask.g.nobody)
    with caplog.at_level(logging.ERROR, logger="activity_tracker"):
        response = app.test_client().get("/?user=eve")
    assert response.status_code == 200 and response.data == b"home"
    assert "tracking the request failed" in caplog.text and "AttributeError" in caplog.text


def test_with_redis_down_every_page_is_served_and_the_failure_logged(unreachable, caplog):
    app = make_app()
    ActivityTracking(app, tracker=unreachable, identify=identify)
    client = app.test_client()
    with caplog.at_level(logging.ERROR, logger="activity_tracker"):
        assert client.get("/?user=ann").data == b"home"  # kept; its send fails
        wait_for_a_failed_send(unreachable)
        # Tracking the next request raises the failed send's error: logged, not raised.
        assert client.get("/?user=ben").data == b"home"
    assert "sending 1 buffered events failed" in caplog.text
    assert "tracking the request failed" in caplog.text
    assert "BackendConnectionError" in caplog.text


def test_bad_arguments_are_refused(buffered):
    with pytest.raises(TypeError, match="identify must be a callable"):
        ActivityTracking(tracker=buffered, identify=None)
    with pytest.raises(TypeError, match="tracker must be an ActivityTracker or a Buffered"):
        ActivityTracking(tracker="redis://localhost", identify=identify)

"""The ASGI middleware in Starlette and FastAPI apps, through their own test clients, into a
real Redis."""

from __future__ import annotations

import logging

import pytest
from fastapi import FastAPI, Request
from helpers import SendSpy, counts_today, wait_for_a_failed_send
from starlette.applications import Starlette
from starlette.authentication import AuthCredentials, AuthenticationBackend, SimpleUser
from starlette.middleware import Middleware
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.requests import HTTPConnection
from starlette.responses import PlainTextResponse
from starlette.routing import Route, WebSocketRoute
from starlette.testclient import TestClient
from starlette.websockets import WebSocket

from activity_tracker import ActivityTracker
from activity_tracker.integrations.asgi import ActivityMiddleware


class HeaderAuth(AuthenticationBackend):
    """Signs in whoever names themselves in ``X-User``."""

    async def authenticate(self, conn: HTTPConnection) -> tuple[AuthCredentials, SimpleUser] | None:
        name = conn.headers.get("x-user")
        return (AuthCredentials(["authenticated"]), SimpleUser(name)) if name else None


def signed_in(scope):
    user = scope["user"]
    return (user.username, "web") if user.is_authenticated else None


async def hello(request):
    return PlainTextResponse("hello")


async def boom(request):
    raise RuntimeError("the view failed")


async def chat(websocket: WebSocket):
    await websocket.accept()
    await websocket.send_text("hi")
    await websocket.close()


def starlette_app(buffered, identify=signed_in):
    # ActivityMiddleware is outermost: it sees scope["user"] only because identify runs after
    # the inner authentication middleware and the endpoint have run.
    return Starlette(
        routes=[Route("/", hello), Route("/boom", boom), WebSocketRoute("/ws", chat)],
        middleware=[
            Middleware(ActivityMiddleware, tracker=buffered, identify=identify),
            Middleware(AuthenticationMiddleware, backend=HeaderAuth()),
        ],
    )


def test_starlette_tracks_signed_in_users_once_per_day(buffered):
    spy = SendSpy(buffered)
    client = TestClient(starlette_app(buffered))
    for user in ("alice", "alice", "bob", None, "alice"):
        headers = {"x-user": user} if user else {}
        assert client.get("/", headers=headers).text == "hello"
    assert [event["id"] for event in spy.events] == ["alice", "bob"]
    assert counts_today(buffered, ["web", None]) == {"web": 2, None: 0}


def test_websocket_sessions_are_tracked_when_they_end(buffered):
    client = TestClient(starlette_app(buffered))
    with client.websocket_connect("/ws", headers={"x-user": "carol"}) as websocket:
        assert websocket.receive_text() == "hi"
    assert counts_today(buffered, ["web"]) == {"web": 1}


def test_a_request_that_raised_is_not_tracked(buffered):
    client = TestClient(starlette_app(buffered), raise_server_exceptions=False)
    assert client.get("/boom", headers={"x-user": "dave"}).status_code == 500
    assert counts_today(buffered, ["web"]) == {"web": 0}


def test_a_failing_identify_is_logged_and_the_response_stands(buffered, caplog):
    def broken(scope):
        raise LookupError("no session store")

    client = TestClient(starlette_app(buffered, identify=broken))
    with caplog.at_level(logging.ERROR, logger="activity_tracker"):
        response = client.get("/", headers={"x-user": "erin"})
    assert response.status_code == 200 and response.text == "hello"
    assert "tracking the request failed" in caplog.text and "no session store" in caplog.text


def test_with_redis_down_every_request_is_served_and_the_failure_logged(unreachable, caplog):
    client = TestClient(starlette_app(unreachable))
    with caplog.at_level(logging.ERROR, logger="activity_tracker"):
        assert client.get("/", headers={"x-user": "fay"}).text == "hello"  # its send fails
        wait_for_a_failed_send(unreachable)
        # Tracking the next request raises the failed send's error: logged, not raised.
        assert client.get("/", headers={"x-user": "gus"}).text == "hello"
    assert "sending 1 buffered events failed" in caplog.text
    assert "tracking the request failed" in caplog.text
    assert "BackendConnectionError" in caplog.text


@pytest.mark.parametrize(
    ("identity", "message"),
    [(("u1", "web", "extra"), "not a tuple of 3"), (("u1", 5), "bucket must be a str or None")],
)
def test_an_identify_returning_something_untrackable_is_logged(buffered, caplog, identity, message):
    client = TestClient(starlette_app(buffered, identify=lambda scope: identity))
    with caplog.at_level(logging.ERROR, logger="activity_tracker"):
        assert client.get("/").status_code == 200
    assert message in caplog.text
    assert counts_today(buffered, ["web"]) == {"web": 0}


def test_fastapi_identify_reads_what_the_endpoint_left_in_request_state(redis_url, prefix):
    tracker = ActivityTracker(url=redis_url, prefix=prefix, timezone="UTC")
    app = FastAPI()

    @app.get("/items/{item}")
    async def item(item: int, request: Request) -> dict[str, int]:
        request.state.account = f"acct-{item % 2}"
        return {"item": item}

    # A plain ActivityTracker: the middleware makes its own BufferedTracker.
    app.add_middleware(
        ActivityMiddleware,
        tracker=tracker,
        identify=lambda scope: (scope["state"]["account"], "api"),
    )
    with TestClient(app) as client:
        for number in range(5):
            assert client.get(f"/items/{number}").json() == {"item": number}
    layer = app.middleware_stack
    while not isinstance(layer, ActivityMiddleware):
        layer = layer.app
    buffered = layer.recorder.buffer  # the BufferedTracker the middleware made
    assert buffered.tracker is tracker
    try:
        assert counts_today(buffered, ["api"]) == {"api": 2}
    finally:
        buffered.close()
        tracker.close()


def test_bad_arguments_are_refused_when_the_middleware_is_made(buffered):
    with pytest.raises(TypeError, match="identify must be a callable"):
        ActivityMiddleware(hello, buffered, identify="user")
    with pytest.raises(TypeError, match="tracker must be an ActivityTracker or a Buffered"):
        ActivityMiddleware(hello, object(), identify=signed_in)
    with pytest.raises(ValueError, match="max_ids must be at least 1"):
        ActivityMiddleware(hello, buffered, identify=signed_in, max_ids=0)

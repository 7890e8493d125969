"""The Django middleware, through Django's test clients (sync and async), into a real Redis;
and the README's Django example, run as the project it describes."""

from __future__ import annotations

import asyncio
import logging
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType, SimpleNamespace

import django
import pytest
import redis
from asgiref.sync import iscoroutinefunction
from django.conf import settings
from django.contrib.auth import BACKEND_SESSION_KEY, SESSION_KEY
from django.contrib.sessions.backends.signed_cookies import SessionStore
from django.core.exceptions import ImproperlyConfigured
from django.http import HttpResponse
from django.test import AsyncClient, Client, override_settings
from django.urls import path
from django.utils.decorators import sync_and_async_middleware
from helpers import UNREACHABLE, SendSpy, counts_today, wait_for_a_failed_send

from activity_tracker import BufferedTracker

if not settings.configured:
    settings.configure(
        DEBUG=False,
        ALLOWED_HOSTS=["testserver"],
        SECRET_KEY="not secret: tests only",
        ROOT_URLCONF=__name__,
        # django.contrib.auth's middleware, for the README's example: users come from
        # PlanUsers and sessions from signed cookies, so no database is needed.
        INSTALLED_APPS=["django.contrib.auth", "django.contrib.contenttypes"],
        AUTHENTICATION_BACKENDS=[f"{__name__}.PlanUsers"],
        SESSION_ENGINE="django.contrib.sessions.backends.signed_cookies",
        MIDDLEWARE=[],
        DATABASES={},
    )
    django.setup()


class SignedInUser:
    """What django.contrib.auth puts in request.user, without a database."""

    def __init__(self, pk: int | None) -> None:
        self.pk = pk
        self.is_authenticated = pk is not None


def _sign_in(request):
    user = request.GET.get("user")
    request.user = SignedInUser(int(user) if user else None)


@sync_and_async_middleware
def sign_in(get_response):
    """Stands for AuthenticationMiddleware: ``?user=7`` signs in user 7. Sync and async, so
    an async stack stays async all through and the tracker's async path runs."""
    if iscoroutinefunction(get_response):

        async def async_middleware(request):
            _sign_in(request)
            return await get_response(request)

        return async_middleware

    def middleware(request):
        _sign_in(request)
        return get_response(request)

    return middleware


def page(request):
    return HttpResponse("page")


async def async_page(request):
    return HttpResponse("async page")


urlpatterns = [path("", page), path("async", async_page)]

TRACKER = "activity_tracker.integrations.django.ActivityMiddleware"
SIGN_IN = f"{__name__}.sign_in"
# The settings name the tracker by its dotted path: this module holds it during a test.
this_module = sys.modules[__name__]


@pytest.fixture(autouse=True)
def published(buffered):
    this_module.tracker = buffered
    yield
    del this_module.tracker


def settings_for(**extra):
    return override_settings(
        **{"MIDDLEWARE": [TRACKER, SIGN_IN], "ACTIVITY_TRACKER": f"{__name__}.tracker", **extra}
    )


def test_default_identify_tracks_signed_in_users_once_per_day(buffered):
    spy = SendSpy(buffered)
    with settings_for():
        client = Client()
        for query in ("?user=1", "?user=1", "?user=2", "", "?user=1"):
            assert client.get(f"/{query}").content == b"page"
    assert [(e["id"], e["bucket"]) for e in spy.events] == [(1, None), (2, None)]
    assert counts_today(buffered, [None]) == {None: 2}


def test_identify_setting_with_buckets(buffered):
    def by_plan(request):
        return (request.user.pk, "paid" if request.user.pk > 10 else "free")

    this_module.by_plan = by_plan
    with settings_for(ACTIVITY_TRACKER_IDENTIFY=f"{__name__}.by_plan"):
        client = Client()
        for user in (3, 11, 12, 3):
            assert client.get(f"/?user={user}").status_code == 200
    assert counts_today(buffered, ["free", "paid"]) == {"free": 1, "paid": 2}


def test_async_stack(buffered):
    async def visit():
        client = AsyncClient()
        for user in (4, 5, 4):
            response = await client.get(f"/async?user={user}")
            assert response.content == b"async page"

    with settings_for():
        asyncio.run(visit())
    assert counts_today(buffered, [None]) == {None: 2}


def test_a_failing_identify_is_logged_and_the_response_stands(buffered, caplog):
    this_module.broken = lambda request: request.user.username
    with (
        settings_for(ACTIVITY_TRACKER_IDENTIFY=f"{__name__}.broken"),
        caplog.at_level(logging.ERROR, logger="activity_tracker"),
    ):
        response = Client().get("/?user=6")
    assert response.status_code == 200
    assert "tracking the request failed" in caplog.text and "username" in caplog.text


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"ACTIVITY_TRACKER": None}, "ACTIVITY_TRACKER must name"),
        ({"ACTIVITY_TRACKER": "no.such.module.tracker"}, "cannot import 'no.such.module"),
        ({"ACTIVITY_TRACKER": SimpleNamespace()}, "tracker must be an ActivityTracker"),
        ({"ACTIVITY_TRACKER_IDENTIFY": 42}, "identify must be a callable"),
        ({"ACTIVITY_TRACKER_MAX_IDS": 0}, "max_ids must be at least 1"),
    ],
)
def test_misconfiguration_is_improperly_configured(buffered, extra, message):
    with settings_for(**extra), pytest.raises(ImproperlyConfigured, match=message):
        Client().get("/")


# The README's Django example, run as the project it describes: its myproject/activity.py is
# the module myproject.activity and its settings are in force, "..." in MIDDLEWARE standing for
# the session middleware that django.contrib.auth's needs. Signed-in users, with a plan, come
# from PlanUsers through a signed session cookie.

README = Path(__file__).resolve().parents[2] / "README.md"
SESSION_MIDDLEWARE = "django.contrib.sessions.middleware.SessionMiddleware"


class Member:
    """A signed-in user, with what the README's identify reads: ``pk`` and ``plan``."""

    is_authenticated = True

    def __init__(self, pk: int, plan: str) -> None:
        self.pk, self.plan = pk, plan


MEMBERS = {7: Member(7, "pro"), 8: Member(8, "free"), 9: Member(9, "pro")}


class PlanUsers:
    """An authentication backend holding MEMBERS (Django asks it for the session's user)."""

    def get_user(self, user_id: int) -> Member | None:
        return MEMBERS.get(user_id)


def readme_django_example() -> tuple[str, str]:
    """The README's Django block: (myproject/activity.py, myproject/settings.py)."""
    [block] = [
        body
        for body in re.findall(r"^```python\n(.*?)^```\n", README.read_text(), re.S | re.M)
        if body.startswith("# myproject/activity.py\n")
    ]
    activity, settings_code = block.split("# myproject/settings.py\n")
    return activity, settings_code


@contextmanager
def readme_project(url: str) -> Iterator[BufferedTracker]:
    """The README's example with its tracker on ``url``: yields its ``activity`` while its
    settings are in force, and closes it afterwards."""
    activity_code, settings_code = readme_django_example()
    package, module = ModuleType("myproject"), ModuleType("myproject.activity")
    package.__path__ = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ACTIVITY_TRACKER_URL", url)
        exec(compile(activity_code, "README.md: myproject/activity.py", "exec"), vars(module))
        patch.setitem(sys.modules, "myproject", package)
        patch.setitem(sys.modules, "myproject.activity", module)
        names: dict[str, object] = {}
        exec(compile(settings_code, "README.md: myproject/settings.py", "exec"), names)
        middleware = names["MIDDLEWARE"]
        assert isinstance(middleware, list) and Ellipsis in middleware
        names["MIDDLEWARE"] = [SESSION_MIDDLEWARE if m is Ellipsis else m for m in middleware]
        activity = module.activity
        try:
            with override_settings(**{k: v for k, v in names.items() if k.isupper()}):
                yield activity
        finally:
            activity.close()
            activity.tracker.close()


@pytest.fixture
def default_prefix(redis_url: str) -> Iterator[None]:
    """The README's tracker writes under the default prefix: its keys are cleared before and
    after (as tests/test_readme.py does)."""

    def clear() -> None:
        client = redis.Redis.from_url(redis_url)
        try:
            for key in client.scan_iter(match="activity:*"):
                client.delete(key)
        finally:
            client.close()

    clear()
    yield
    clear()


def as_user(client: Client | AsyncClient, pk: int | None) -> Client | AsyncClient:
    """``client`` with the session cookie of user ``pk`` signed in (None: signed out)."""
    if pk is None:
        client.cookies.pop(settings.SESSION_COOKIE_NAME, None)
        return client
    session = SessionStore()
    session[SESSION_KEY] = str(pk)
    session[BACKEND_SESSION_KEY] = f"{__name__}.PlanUsers"
    session.save()  # signed cookies: the key is the signed session itself
    client.cookies[settings.SESSION_COOKIE_NAME] = session.session_key
    return client


def visit(stack: str, users: list[int | None]) -> list[bytes]:
    """GET / as each user in turn, through Django's test client of the sync or async stack;
    the pages served."""
    if stack == "sync":
        client = Client()
        return [as_user(client, pk).get("/").content for pk in users]

    async def visit_async() -> list[bytes]:
        client = AsyncClient()
        return [(await as_user(client, pk).get("/")).content for pk in users]

    return asyncio.run(visit_async())


@pytest.mark.parametrize("stack", ["sync", "async"])
def test_readme_example_counts_signed_in_users_in_their_plans_bucket(
    redis_url, default_prefix, stack
):
    with readme_project(redis_url) as activity:
        spy = SendSpy(activity)
        assert visit(stack, [7, 8, 7, None, 9]) == [b"page"] * 5
        # Each user once, in the bucket of their plan; the signed-out request records nothing.
        assert [(e["id"], e["bucket"]) for e in spy.events] == [(7, "pro"), (8, "free"), (9, "pro")]
        assert counts_today(activity, ["pro", "free", None]) == {"pro": 2, "free": 1, None: 0}


def test_readme_example_serves_every_request_while_redis_is_down(caplog):
    with (
        readme_project(UNREACHABLE) as activity,
        caplog.at_level(logging.ERROR, logger="activity_tracker"),
    ):
        client = Client()
        assert as_user(client, 7).get("/").content == b"page"  # kept; its send fails
        wait_for_a_failed_send(activity)
        # Tracking the next request raises the failed send's error: logged, not raised.
        assert as_user(client, 8).get("/").content == b"page"
    assert "sending 1 buffered events failed" in caplog.text
    assert "tracking the request failed" in caplog.text
    assert "BackendConnectionError" in caplog.text

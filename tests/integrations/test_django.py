"""The Django middleware, through Django's test clients (sync and async), into a real Redis."""

from __future__ import annotations

import asyncio
import logging
import sys
from types import SimpleNamespace

import django
import pytest
from asgiref.sync import iscoroutinefunction
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.http import HttpResponse
from django.test import AsyncClient, Client, override_settings
from django.urls import path
from django.utils.decorators import sync_and_async_middleware
from helpers import SendSpy, counts_today

if not settings.configured:
    settings.configure(
        DEBUG=False,
        ALLOWED_HOSTS=["testserver"],
        SECRET_KEY="not secret: tests only",
        ROOT_URLCONF=__name__,
        INSTALLED_APPS=[],
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

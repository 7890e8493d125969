"""The global options (:class:`Settings`) and the tracker they open."""

from __future__ import annotations

import shlex
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import click

from .. import periods as _periods
from ..embedded import (
    default_store_path,
    is_embedded_url,
    path_from_url,
    store_exists,
    url_for_path,
)
from ..tracker import ActivityTracker
from . import windows as _windows
from .options import DEFAULT_PERIODS

URL_ENVIRONMENT_VARIABLE = "ACTIVITY_TRACKER_URL"
DEFAULT_PREFIX = "activity"


@dataclass
class Settings:
    """The global options, shared by every command."""

    url: str | None
    prefix: str
    timezone: str | None
    debug: bool

    @property
    def store_url(self) -> str:
        return self.url or url_for_path(default_store_path())

    def describe(self) -> str:
        url = self.store_url
        if is_embedded_url(url):
            return f"embedded store {path_from_url(url)}"
        return f"Redis at {redacted(url)}"

    def arguments(self) -> list[str]:
        """The global options that differ from their defaults, quoted for a shell (the URL
        without its password)."""
        args = []
        if self.url:
            args += ["--url", shlex.quote(redacted(self.url))]
        if self.prefix != DEFAULT_PREFIX:
            args += ["--prefix", shlex.quote(self.prefix)]
        if self.timezone:
            args += ["--timezone", shlex.quote(self.timezone)]
        return args


def redacted(url: str) -> str:
    """``url`` without its password."""
    scheme, sep, rest = url.partition("://")
    if sep and "@" in rest.split("/", 1)[0]:
        credentials, _, host = rest.partition("@")
        user = credentials.split(":", 1)[0]
        return f"{scheme}://{user + ':***' if user else '***'}@{host}"
    return url


@contextmanager
def open_tracker(
    settings: Settings,
    periods: Sequence[str] = DEFAULT_PERIODS,
    *,
    existing: bool = False,
    rolling: Sequence[int] = _windows.ROLLING,
) -> Iterator[Any]:
    """An :class:`ActivityTracker` on the store of ``settings``, closed afterwards.
    ``existing``: an embedded store must exist already (commands with nothing to do on an
    empty store refuse to create one, so a mistyped path is an error, not an empty report).
    ``rolling``: the windows a collapse of days stores (and lookups read) when the daily
    period is among ``periods``."""
    if existing:
        refuse_missing_store(settings)
    tracker = ActivityTracker(
        periods=list(periods),
        url=settings.store_url,
        prefix=settings.prefix,
        timezone=settings.timezone,
        rolling=rolling if _periods.DAILY in periods else (),
    )
    try:
        yield tracker
    finally:
        tracker.close()


def refuse_missing_store(settings: Settings) -> None:
    """Raise a one-line error if ``settings`` name an embedded store that does not exist."""
    url = settings.store_url
    if not is_embedded_url(url):
        return
    path = path_from_url(url)
    if store_exists(path):
        return
    if not path.parent.is_dir():
        raise click.ClickException(
            f"no store at {path}: the directory {path.parent} does not exist (check --url)"
        )
    raise click.ClickException(
        f"no store at {path} yet (check --url): `activity-tracker ingest` creates it"
    )

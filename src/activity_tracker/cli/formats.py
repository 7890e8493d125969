"""``ingest``'s format options: which layout the logs have (:class:`~.events.Layout`), and how
keys that no option reads are reported."""

from __future__ import annotations

import dataclasses
import functools
import shlex
from collections import Counter
from collections.abc import Callable
from typing import Any

import click

from .events import FORMATS, SEGMENT, Layout

_SHOWN_KEYS = 10
_DEFAULTS = Layout()
# (option, Layout attribute, help)
_FIELDS = (
    ("--time-field", "time_field", "the event's time"),
    ("--id-field", "id_field", "the id"),
    ("--bucket-field", "bucket_field", "the bucket"),
    ("--old-id-field", "old_id_field", "the old id of an id change"),
    ("--old-bucket-field", "old_bucket_field", "the old bucket of an id change"),
)
_SEGMENT_BUCKETS = (
    ("--user-bucket", "user_bucket", "userId"),
    ("--anonymous-bucket", "anonymous_bucket", "anonymousId"),
)


def _bucket_or_default(value: str) -> str | None:
    return value or None


def layout_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Add the format options to a click command, which receives them as ``layout``."""

    @functools.wraps(command)
    def with_layout(*args: Any, **options: Any) -> Any:
        values = {name: options.pop(name) for name in _option_names()}
        options["layout"] = _layout(values)
        return command(*args, **options)

    decorators = [
        click.option(
            "--format",
            "format",
            type=click.Choice(FORMATS),
            default=_DEFAULTS.format,
            show_default=True,
            help="auto: CSV or JSON lines, told apart by the first line. segment: a Segment "
            "or RudderStack export (JSON lines): userId joins --user-bucket, anonymousId "
            "--anonymous-bucket, and an event with both is the anonymous session logging "
            "in (an id change).",
        ),
        *(
            click.option(
                option,
                attribute,
                metavar="NAME",
                help=f"Column or key of {what} (default: {getattr(_DEFAULTS, attribute)}).",
            )
            for option, attribute, what in _FIELDS
        ),
        *(
            click.option(
                option,
                attribute,
                metavar="NAME",
                help=f"--format segment: the bucket of {field} "
                f"(default {getattr(_DEFAULTS, attribute)}; '' is the default bucket).",
            )
            for option, attribute, field in _SEGMENT_BUCKETS
        ),
    ]
    for decorate in reversed(decorators):
        with_layout = decorate(with_layout)
    return with_layout


def _option_names() -> list[str]:
    return ["format", *(a for _, a, _ in _FIELDS), *(a for _, a, _ in _SEGMENT_BUCKETS)]


def _layout(values: dict[str, Any]) -> Layout:
    chosen = {name: value for name, value in values.items() if value is not None}
    segment = chosen.get("format") == SEGMENT
    for option, attribute, _ in _FIELDS:
        if segment and attribute in chosen and attribute != "time_field":
            raise click.UsageError(f"{option} does not apply to --format segment")
    for option, attribute, _ in _SEGMENT_BUCKETS:
        if attribute in chosen:
            if not segment:
                raise click.UsageError(f"{option} applies to --format segment only")
            chosen[attribute] = _bucket_or_default(chosen[attribute])
    try:
        return Layout(**chosen)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None


def layout_arguments(layout: Layout) -> list[str]:
    """The options that give ``layout`` again (for the command that resumes a run)."""
    arguments: list[str] = []
    options = {"format": "--format", **{a: o for o, a, _ in (*_FIELDS, *_SEGMENT_BUCKETS)}}
    for field in dataclasses.fields(Layout):
        value = getattr(layout, field.name)
        if value != getattr(_DEFAULTS, field.name):
            arguments += [options[field.name], shlex.quote(value or "")]
    return arguments


def unknown_keys_message(unknown: Counter[str]) -> str | None:
    """One line naming the keys no option reads, with how many records had a value in each."""
    if not unknown:
        return None
    shown = ", ".join(f"{key} ({count:,})" for key, count in unknown.most_common(_SHOWN_KEYS))
    more = len(unknown) - _SHOWN_KEYS
    if more > 0:
        shown += f", and {more:,} more"
    noun = "key" if len(unknown) == 1 else "keys"
    return f"ignored {len(unknown):,} unknown {noun} (records with a value in each): {shown}"

"""The README's examples, run in order as one session against a real Redis.

Each ```python block runs; when a ```text block follows it, what the block prints must equal
that text. Each ```console block is a command-line session: every ``$ activity-tracker ...``
line runs, from the repository's root, and must print the lines below it (as in doctest,
``...`` matches anything and runs of whitespace are equal). The examples use the default
prefix, so its keys are cleared before and after.
"""

from __future__ import annotations

import contextlib
import doctest
import io
import logging
import re
import shlex
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from click.testing import CliRunner

from activity_tracker.cli import cli

README = Path(__file__).resolve().parent.parent / "README.md"
FENCE = re.compile(r"^```(\w*)\n(.*?)^```\n", re.S | re.M)
OPTIONS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def examples() -> list[tuple[str, str | None]]:
    """(code, expected output or None) for every python block, in order."""
    blocks = [(m.group(1), m.group(2)) for m in FENCE.finditer(README.read_text())]
    found = []
    for index, (language, body) in enumerate(blocks):
        if language == "python":
            following = blocks[index + 1] if index + 1 < len(blocks) else None
            expected = following[1] if following and following[0] == "text" else None
            found.append((body, expected))
    return found


def console_commands() -> list[tuple[str, str]]:
    """(command line, expected output) for every ``$`` line of the ```console blocks."""
    found: list[tuple[str, str]] = []
    for language, body in FENCE.findall(README.read_text()):
        if language != "console":
            continue
        for line in body.splitlines(keepends=True):
            if line.startswith("$ "):
                found.append((line[2:].strip(), ""))
            else:
                command, expected = found[-1]
                found[-1] = (command, expected + line)
    return found


def clear_default_prefix(url: str) -> None:
    client = redis.Redis.from_url(url)
    for key in client.scan_iter(match="activity:*"):
        client.delete(key)
    client.close()


@pytest.fixture
def readme_redis(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("ACTIVITY_TRACKER_URL", redis_url)
    monkeypatch.chdir(README.parent)
    clear_default_prefix(redis_url)
    yield
    clear_default_prefix(redis_url)


def test_readme_has_examples_with_outputs():
    found = examples()
    assert len(found) >= 6
    assert sum(expected is not None for _, expected in found) >= 6


def test_readme_examples_run_and_print_what_the_readme_says(readme_redis, caplog):
    namespace: dict[str, object] = {"__name__": "readme"}
    for number, (code, expected) in enumerate(examples(), start=1):
        printed = io.StringIO()
        with (
            contextlib.redirect_stdout(printed),
            caplog.at_level(logging.WARNING, logger="activity_tracker"),
        ):
            exec(compile(code, f"README.md example {number}", "exec"), namespace)
        if expected is not None:
            assert printed.getvalue() == expected, f"README example {number}"
        # A middleware or buffer logs what it cannot track or send rather than raising it:
        # an example doing that prints the right counts and still shows wrong code.
        assert not caplog.records, f"README example {number} logged:\n{caplog.text}"


def test_readme_command_line_session_prints_what_the_readme_says(readme_redis):
    commands = console_commands()
    assert len(commands) >= 4
    checker = doctest.OutputChecker()
    for command, expected in commands:
        program, *args = shlex.split(command, comments=True)
        assert program == "activity-tracker", command
        result = CliRunner().invoke(cli, args, catch_exceptions=False)
        assert result.exit_code == 0, f"{command}\n{result.output}"
        assert checker.check_output(expected, result.output, OPTIONS), (
            f"{command}\nREADME:\n{expected}\nprinted:\n{result.output}"
        )

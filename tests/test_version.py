"""One version: pyproject.toml's, as installed, which the package and the command line report."""

from __future__ import annotations

from click.testing import CliRunner

import activity_tracker
from activity_tracker.cli import cli


def test_the_command_line_reports_the_package_version():
    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0
    assert result.output == f"activity-tracker, version {activity_tracker.__version__}\n"

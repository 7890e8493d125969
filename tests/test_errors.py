"""The library's exception classes: one base catches them all, each is importable from the
package and named in the README's Errors section, which names no other."""

from __future__ import annotations

import importlib
import inspect
import re
from pathlib import Path

import activity_tracker
from activity_tracker import ActivityTrackerError, errors

README = Path(__file__).resolve().parent.parent / "README.md"


def classes_of_errors_module() -> dict[str, type[BaseException]]:
    return {
        name: value
        for name, value in vars(errors).items()
        if inspect.isclass(value)
        and issubclass(value, BaseException)
        and value.__module__ == errors.__name__
    }


def errors_section() -> str:
    after = README.read_text().split("\n## Errors\n", 1)[1]
    return after.split("\n## ", 1)[0]


def test_every_error_class_is_an_activity_tracker_error_exported_by_the_package():
    defined = classes_of_errors_module()
    assert len(defined) >= 8
    for name, error in defined.items():
        assert issubclass(error, ActivityTrackerError), name
        assert name in activity_tracker.__all__, name
        assert getattr(activity_tracker, name) is error


def test_the_readme_names_every_error_class_and_each_one_it_names_is_one():
    named = re.findall(r"`(activity_tracker(?:\.\w+)*)\.(\w+)`", errors_section())
    documented = {}
    for module, name in named:
        value = getattr(importlib.import_module(module), name, None)
        if inspect.isclass(value) and issubclass(value, BaseException):
            documented[name] = value
    named_errors = {name for _, name in named if name.endswith("Error")}
    assert named_errors == set(documented), "named in the README but not an exception class"
    assert set(classes_of_errors_module()) <= set(documented)
    for name, error in documented.items():
        assert issubclass(error, ActivityTrackerError), name

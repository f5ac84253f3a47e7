"""Checks of an option's kind for the Python API, which hands values over unparsed: each
wrong value is one :class:`ZooError` naming the option and the value received."""

from __future__ import annotations

import numbers
import os
from collections.abc import Mapping

from zoo.errors import ZooError


def fail(what: str, name: str, expected: str, value) -> None:
    raise ZooError(f"{what} option {name} must be {expected}; got {value!r}.")


def is_whole(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_whole(what: str, name: str, value, low: int, high: int, *, optional=False) -> None:
    if not (value is None and optional) and not (is_whole(value) and low <= value <= high):
        fail(what, name, f"a whole number from {low} to {high}", value)


def check_flag(what: str, name: str, value, *, optional=False) -> None:
    if not (value is None and optional) and not isinstance(value, bool):
        fail(what, name, "True or False" + (" (or None)" if optional else ""), value)


def check_text(what: str, name: str, value, *, optional=False) -> None:
    if not (value is None and optional) and not (isinstance(value, str) and value):
        fail(what, name, "a non-empty string", value)


def check_choice(what: str, name: str, value, choices) -> None:
    if value not in choices:
        fail(what, name, f"one of {', '.join(map(str, choices))}", value)


def check_texts(what: str, name: str, value) -> None:
    """A list or tuple of strings (a lone string is refused: it is not a list of one)."""
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        fail(what, name, "a list of strings", value)


def check_mapping(what: str, name: str, value, *, optional=False) -> None:
    if not (value is None and optional) and not isinstance(value, Mapping):
        fail(what, name, "a dict", value)


def check_path(what: str, name: str, value, *, optional=False) -> None:
    if not (value is None and optional) and not isinstance(value, (str, os.PathLike)):
        fail(what, name, "a path", value)

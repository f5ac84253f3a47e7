"""The one rule for names that become file or directory names: members, recipes, ensembles."""

from __future__ import annotations

import re

from zoo.errors import ZooError

NAME_RULE = "letters, digits, '.', '_' or '-', starting with a letter or digit"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def is_valid_name(name: object) -> bool:
    """True when ``name`` can be used as one directory name inside the workspace."""
    return isinstance(name, str) and len(name) <= 200 and bool(_NAME.fullmatch(name))


def check_name(name: object, *, what: str) -> str:
    """``name`` unchanged when valid; else a :class:`ZooError` naming ``what`` and the value."""
    if not is_valid_name(name):
        raise ZooError(
            f"{what} must be {NAME_RULE} (at most 200 characters; it becomes a directory "
            f"name); got {name!r}."
        )
    return name

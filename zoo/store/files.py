"""The one guarded loader for every JSON file zoo writes, and versioned writing.

A file that is missing, unreadable, not JSON, not an object, damaged (a required entry is
missing or of the wrong type) or written by a newer zoo (``format_version`` above what this
zoo reads) becomes a one-line :class:`ZooError` naming the file and what to do. Files written
before ``format_version`` existed have none: they are version 1.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from zoo.errors import ZooError

FIRST_VERSION = 1  # the version of a file without ``format_version``


def first_line(exc: BaseException) -> str:
    """An exception as one short line (its first line, else its class name)."""
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else exc.__class__.__name__


def damaged(file: Path, reason: str, remedy: str) -> ZooError:
    """The one-line error for a damaged file."""
    return ZooError(f"{file} is damaged ({reason}); {remedy}")


def read_json_object(file: Path, *, remedy: str) -> dict[str, Any]:
    """``file`` parsed as a JSON object; anything else is a one-line :class:`ZooError`."""
    file = Path(file)
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:  # ValueError: bad JSON or not UTF-8
        raise ZooError(f"{file} is missing or unreadable ({first_line(exc)}); {remedy}") from None
    if not isinstance(data, dict):
        raise damaged(file, f"a JSON {type(data).__name__}, not an object", remedy)
    return data


def format_version(data: dict[str, Any], file: Path, *, latest: int, remedy: str) -> int:
    """The file's ``format_version`` (absent: 1); a too-new or invalid one is a ZooError."""
    version = data.get("format_version", FIRST_VERSION)
    if isinstance(version, bool) or not isinstance(version, int) or version < FIRST_VERSION:
        raise damaged(file, f"format_version must be a whole number >= 1; got {version!r}", remedy)
    if version > latest:
        raise ZooError(
            f"{file} has format_version {version}, newer than this zoo reads (up to {latest}); "
            "upgrade zoo to read it."
        )
    return version

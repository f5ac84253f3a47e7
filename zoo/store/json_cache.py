"""Small JSON caches (``{"format_version": 1, "entries": {key: value}}``): a digest per file
(``.sha256-cache.json``), a parameter count per recipe (``cache/parameters.json``).

A cache only saves work, so reading one never fails: a file that is missing, damaged, of
another ``format_version`` or from before it had one gives no entries, and each entry is
checked with the caller's ``valid`` before it is used, so a wrong value is computed again
instead of trusted. Writing is atomic (temporary name, then rename) and best effort: a
read-only folder simply goes without its cache.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from zoo.store.workspace import atomic_write_json

FORMAT_VERSION = 1


def read_cache(file: Path, valid: Callable[[Any], bool]) -> dict[str, Any]:
    """The valid entries of the cache ``file`` (none when it cannot be read or trusted)."""
    try:
        data = json.loads(Path(file).read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return {}
    if not isinstance(data, dict) or data.get("format_version") != FORMAT_VERSION:
        return {}
    entries = data.get("entries")
    if not isinstance(entries, dict):
        return {}
    return {key: value for key, value in entries.items() if valid(value)}


def write_cache(file: Path, entries: dict[str, Any]) -> None:
    """Replace the cache ``file`` with ``entries``; a folder zoo cannot write goes without."""
    with contextlib.suppress(OSError):
        atomic_write_json(Path(file), {"format_version": FORMAT_VERSION, "entries": entries})

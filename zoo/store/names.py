"""Names that become paths or that zoo's files record, checked in one place.

The one rule for names that become file or directory names (members, recipes, ensembles):
:func:`check_name`. And the names readers of zoo's files must agree on: TTA scheme names and
cache keys. ``tta_scheme("Rotations:08")`` → ``("rotations", 8)``; :func:`tta_name` gives the
canonical, file-name-safe form (``none``, ``steppan``, ``dihedral``, ``rotations-8``) that
cache keys, sidecars and ``ensemble.json`` record. :mod:`zoo.inference.tta` builds its Keras
schemes from the same parse, so both sides always agree without importing Keras here.
"""

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


MAX_ROTATIONS = 64
TTA_KINDS = ("none", "steppan", "dihedral", "rotations")  # each has its views in zoo.inference.tta
TTA_ALLOWED = "none, steppan, dihedral, rotations:N (N = 1..64)"
_ROTATIONS = re.compile(r"rotations?\s*[:\-]\s*(\d+)")


def tta_scheme(spec: str) -> tuple[str, int]:
    """``(kind, n_rotations)`` of a TTA spec (``none``, ``steppan``, ``dihedral``,
    ``rotations:N`` or the canonical ``rotations-N``); anything else is a ZooError."""
    text = str(spec).strip().lower()
    if text in TTA_KINDS and text != "rotations":
        return text, 0
    match = _ROTATIONS.fullmatch(text)
    if match:
        n = int(match.group(1))
        if 1 <= n <= MAX_ROTATIONS:
            return "rotations", n
        raise ZooError(
            f"TTA rotations:N needs 1 <= N <= {MAX_ROTATIONS}; got {spec!r}. "
            "Use for example rotations:8."
        )
    raise ZooError(f"unknown TTA scheme {spec!r}; allowed: {TTA_ALLOWED}. Pick one of those.")


def tta_name(spec: str) -> str:
    """Canonical, file-name-safe TTA name: ``none``, ``steppan``, ``dihedral``, ``rotations-8``."""
    kind, n = tta_scheme(spec)
    return f"rotations-{n}" if kind == "rotations" else kind


def prediction_key(part: str, tta: str) -> str:
    """Cache key of predictions on ``part``: ``test``, ``test.steppan``, ``val.rotations-8``."""
    name = tta_name(tta)
    return part if name == "none" else f"{part}.{name}"

"""Checks of the values zoo reads back from its own files, before anything uses them.

Each check returns the value when it is what the field holds and otherwise raises a
``ValueError`` naming the field (a dotted path such as ``input.size`` or
``operating_points[0].threshold``), what it must be and the value received. The records of
:mod:`zoo.store.records` call them from their ``check``; :meth:`zoo.store.records.Record.load`
turns the ``ValueError`` into the one-line error that names the file.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from zoo.errors import ZooError
from zoo.store.names import NAME_RULE, TTA_ALLOWED, is_valid_name, tta_scheme

MAX_IMAGE_SIZE = 8192  # input sizes above this are a damaged record, not a model


def short(value: Any) -> str:
    """``value`` as the error shows it (at most 60 characters)."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def fail(field: str, what: str, value: Any) -> ValueError:
    return ValueError(f"{field!r} must be {what}; got {short(value)}")


def is_number(value: Any) -> bool:
    """A finite JSON number (not true/false, not NaN or infinite)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def number(
    value: Any,
    field: str,
    *,
    low: float | None = None,
    high: float | None = None,
    whole: bool = False,
    null: bool = False,
) -> Any:
    """A finite number (``whole``: an integer) in ``[low, high]``; ``null``: or ``None``."""
    if value is None and null:
        return value
    kind = "a whole number" if whole else "a finite number"
    if low is not None and high is not None:
        kind += f" from {_bound(low)} to {_bound(high)}"
    elif low is not None:
        kind += f" >= {_bound(low)}"
    elif high is not None:
        kind += f" <= {_bound(high)}"
    kind += " or null" if null else ""
    ok = is_number(value) and (not whole or isinstance(value, int))
    slack = 0 if whole else ROUND_OFF  # float sums may pass a bound by the last digit
    if (
        not ok
        or (low is not None and value < low - slack)
        or (high is not None and value > high + slack)
    ):
        raise fail(field, kind, value)
    return value


ROUND_OFF = 1e-9


def _bound(value: float) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def probability(value: Any, field: str, *, null: bool = False) -> Any:
    return number(value, field, low=0, high=1, null=null)


def count(value: Any, field: str, *, null: bool = False, low: int = 0) -> Any:
    return number(value, field, low=low, whole=True, null=null)


def text(value: Any, field: str, *, null: bool = False) -> Any:
    """A non-empty string (``null``: or ``None``)."""
    if (value is None and null) or (isinstance(value, str) and value):
        return value
    raise fail(field, "a non-empty string" + (" or null" if null else ""), value)


def flag(value: Any, field: str, *, null: bool = False) -> Any:
    if (value is None and null) or isinstance(value, bool):
        return value
    raise fail(field, "true or false" + (" or null" if null else ""), value)


def mapping(value: Any, field: str, *, null: bool = False) -> dict | None:
    if (value is None and null) or isinstance(value, dict):
        return value
    raise fail(field, "an object" + (" or null" if null else ""), value)


def items(value: Any, field: str, *, length: int | None = None, null: bool = False) -> list | None:
    """A list (of ``length`` entries when given)."""
    if value is None and null:
        return value
    if not isinstance(value, list):
        raise fail(field, "a list" + (" or null" if null else ""), value)
    if length is not None and len(value) != length:
        raise ValueError(
            f"{field!r} must hold {length} entries, one per class; got {len(value)}: {short(value)}"
        )
    return value


def name(value: Any, field: str) -> str:
    """A name that may become a file or folder name (:func:`zoo.store.names.check_name`'s rule)."""
    if not is_valid_name(value):
        raise fail(field, f"{NAME_RULE} (at most 200 characters)", value)
    return value


def class_names(value: Any, field: str = "classes") -> list[str]:
    """At least two distinct, non-empty class names."""
    if not (isinstance(value, list) and all(isinstance(c, str) and c for c in value)):
        raise fail(field, "a list of class names", value)
    if len(value) < 2:
        raise fail(field, "at least two class names", value)
    if len(set(value)) != len(value):
        raise fail(field, "distinct class names", value)
    return value


def numbers(value: Any, field: str, *, length: int | None = None, low: float | None = None) -> list:
    """A list of finite numbers (``>= low``), ``length`` long when given."""
    items(value, field, length=length)
    for i, v in enumerate(value):
        number(v, f"{field}[{i}]", low=low)
    return value


def interval(value: Any, field: str, *, low: float = 0, high: float = 1) -> list | None:
    """``null`` or ``[low, high]`` within the bounds."""
    if value is None:
        return value
    if not (isinstance(value, list) and len(value) == 2):
        raise fail(field, "a pair (low, high) or null", value)
    for i, v in enumerate(value):
        number(v, f"{field}[{i}]", low=low, high=high, null=True)
    return value


def per_class(
    value: Any,
    field: str,
    classes: Sequence[str],
    check: Callable[[Any, str], Any],
    *,
    every: bool = False,
) -> dict | None:
    """An object keyed by class name (``every``: holding each of ``classes``) whose values
    pass ``check(value, field)``."""
    mapping(value, field)
    unknown = [k for k in value if k not in classes]
    if unknown:
        raise fail(f"{field}.{unknown[0]}", f"a class ({', '.join(classes)})", unknown[0])
    if every:
        missing = [c for c in classes if c not in value]
        if missing:
            raise ValueError(f"{field!r} has no entry for class {missing[0]!r}")
    for key, v in value.items():
        check(v, f"{field}.{key}")
    return value


def sha256_map(value: Any, field: str) -> dict:
    """``{file name: sha256 hex}``."""
    mapping(value, field)
    for file, digest in value.items():
        if not (isinstance(digest, str) and len(digest) == 64):
            raise fail(f"{field}.{file}", "a sha256 (64 hex digits)", digest)
        try:
            int(digest, 16)
        except ValueError:
            raise fail(f"{field}.{file}", "a sha256 (64 hex digits)", digest) from None
    return value


def tta(value: Any, field: str) -> str:
    """A TTA scheme zoo knows (``none``, ``dihedral``, ``rotations-8``, …)."""
    text(value, field)
    try:
        tta_scheme(value)
    except ZooError:
        raise fail(field, f"a TTA scheme ({TTA_ALLOWED})", value) from None
    return value


def one_of(value: Any, field: str, allowed: Sequence) -> Any:
    if value not in allowed:
        raise fail(field, "one of " + ", ".join(map(str, allowed)), value)
    return value

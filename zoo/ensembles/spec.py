"""Ensemble definition files, ``ensembles/<name>.toml``.

Keys::

    name = "steppan2020"          # optional, defaults to the file stem
    description = "…"             # optional
    members = ["*.ham10000.*"]    # member names or fnmatch patterns, required
    combine = "mean"              # mean | rank | weighted | greedy, required
    prior_correction = true       # optional, default true
    tta = "steppan"               # optional, default "none"

    [options]                     # optional, passed to the combiner
    max_rounds = 50
"""

from __future__ import annotations

import fnmatch
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zoo.ensembles.combine import COMBINE_RULES, Combiner, make_combiner
from zoo.errors import ZooError, close_matches
from zoo.names import NAME_RULE, is_valid_name

__all__ = ["ALLOWED_KEYS", "EnsembleSpec", "load_spec", "resolve_members"]

ALLOWED_KEYS = ("name", "description", "members", "combine", "prior_correction", "tta", "options")
_GLOB_CHARS = set("*?[")


@dataclass(frozen=True)
class EnsembleSpec:
    """One ensemble definition, as read from its TOML file."""

    name: str
    members: tuple[str, ...]
    combine: str
    description: str = ""
    prior_correction: bool = True
    tta: str = "none"
    options: dict[str, Any] = field(default_factory=dict, hash=False)
    path: Path | None = field(default=None, compare=False)

    def make_combiner(self) -> Combiner:
        """A fresh, unfitted combiner for this definition's rule and options."""
        return make_combiner(self.combine, **self.options)


def _type_name(value: Any) -> str:
    return {
        bool: "boolean",
        str: "string",
        int: "integer",
        float: "float",
        list: "array",
        dict: "table",
    }.get(type(value), type(value).__name__)


def load_spec(path: str | Path) -> EnsembleSpec:
    """Read and check one ensemble definition; every problem is a ZooError naming file and key."""
    path = Path(path)
    if not path.is_file():
        siblings = (
            sorted(p.name for p in path.parent.glob("*.toml")) if path.parent.is_dir() else []
        )
        what = "is a directory, not a file" if path.is_dir() else "not found"
        hint = close_matches(path.name, siblings) if siblings else ""
        raise ZooError(f"ensemble definition {path} {what}; pass a .toml file.{hint}")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ZooError(f"{path}: invalid TOML: {exc}; fix the syntax there") from None
    except UnicodeDecodeError as exc:
        raise ZooError(f"{path}: not UTF-8 text ({exc.reason}); save it as UTF-8") from None

    unknown = [k for k in data if k not in ALLOWED_KEYS]
    if unknown:
        raise ZooError(
            f"{path}: unknown key {unknown[0]!r}; allowed keys: {', '.join(ALLOWED_KEYS)}."
            f"{close_matches(unknown[0], list(ALLOWED_KEYS))}"
        )

    def need(key: str, kind: type, what: str) -> Any:
        value = data[key]
        if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
            raise ZooError(
                f"{path}: key {key!r} must be {what}; got {value!r} ({_type_name(value)})"
            )
        return value

    for key in ("members", "combine"):
        if key not in data:
            raise ZooError(f"{path}: missing required key {key!r}; add it (see ensembles/*.toml)")

    name = need("name", str, "a string") if "name" in data else path.stem
    if not is_valid_name(name):
        raise ZooError(
            f"{path}: key 'name' must be {NAME_RULE} (used as a directory name); got {name!r}"
        )
    members = need("members", list, "an array of member names or glob patterns")
    if not members:
        raise ZooError(
            f"{path}: key 'members' is empty; list member names or patterns such as \"*\""
        )
    for entry in members:
        if not isinstance(entry, str) or not entry.strip():
            raise ZooError(
                f"{path}: key 'members' must hold non-empty strings; got {entry!r} ({_type_name(entry)})"
            )
    combine = need("combine", str, f"one of {', '.join(COMBINE_RULES)}")
    if combine not in COMBINE_RULES:
        raise ZooError(
            f"{path}: key 'combine' must be one of {', '.join(COMBINE_RULES)}; got {combine!r}."
            f"{close_matches(combine, list(COMBINE_RULES))}"
        )
    options = dict(need("options", dict, "a table")) if "options" in data else {}
    for key, value in options.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise ZooError(f"{path}: options.{key} must be a finite number; got {value!r}")
    try:
        make_combiner(combine, **options)
    except ZooError as exc:
        raise ZooError(f"{path}: [options]: {exc}") from None

    return EnsembleSpec(
        name=name,
        members=tuple(members),
        combine=combine,
        description=need("description", str, "a string") if "description" in data else "",
        prior_correction=(
            need("prior_correction", bool, "true or false") if "prior_correction" in data else True
        ),
        tta=need("tta", str, "a string naming a TTA scheme") if "tta" in data else "none",
        options=options,
        path=path,
    )


def resolve_members(spec: EnsembleSpec, available: list[str]) -> list[str]:
    """Expand names and glob patterns against the saved members.

    Patterns are matched case-sensitively with :func:`fnmatch.fnmatchcase`; each
    pattern's matches come in sorted order, patterns in the order written, and a
    member matched twice is kept once, at its first place. A pattern or name that
    matches nothing is an error.
    """
    names = sorted(set(available))
    resolved: dict[str, None] = {}
    for pattern in spec.members:
        if _GLOB_CHARS & set(pattern):
            matches = [n for n in names if fnmatch.fnmatchcase(n, pattern)]
        else:
            matches = [pattern] if pattern in names else []
        if not matches:
            if not names:
                raise ZooError(
                    f"ensemble {spec.name!r}: no saved members to match {pattern!r}; "
                    "train members first with `zoo train`"
                )
            shown = ", ".join(names[:10]) + (
                f", … ({len(names)} in all)" if len(names) > 10 else ""
            )
            hint = close_matches(pattern, names) if not (_GLOB_CHARS & set(pattern)) else ""
            raise ZooError(
                f"ensemble {spec.name!r}: member pattern {pattern!r} matched no saved member; "
                f"saved members: {shown}.{hint}"
            )
        resolved.update(dict.fromkeys(matches))
    return list(resolved)

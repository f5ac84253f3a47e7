"""Ensemble definition files, ``ensembles/<name>.toml``.

Keys::

    name = "steppan2020"          # optional, defaults to the file stem
    description = "…"             # optional
    members = ["*.ham10000.*"]    # member names or fnmatch patterns, required …
    combine = "mean"              # mean | rank | weighted | greedy, required
    prior_correction = true       # optional, default true
    tta = "steppan"               # optional, default "none"

    [members]                     # … or a selection by what the members are (all optional)
    names = ["*"]                 # names or patterns (default: every member)
    recipes = ["small_cnn*"]      # recipe names or patterns
    data = "ham10000"             # data set name (or source) or pattern, or an array of them
    image_size = 192              # input size in pixels, or an array of sizes
    seeds = [0, 1]                # training seeds

    [options]                     # optional, passed to the combiner
    max_rounds = 50               # greedy: max_rounds, metric, init_members, tie_break,
                                  #   early_stop; weighted: l2; rank: normalize

Definitions are found by name like recipes (:func:`find_spec`): the built-in ``ensembles/``
folder, ``<workspace>/ensemble-specs/`` (built ensembles live in ``<workspace>/ensembles/``)
and every folder of ``$ZOO_ENSEMBLE_PATH``; or read from a path.
"""

from __future__ import annotations

import fnmatch
import math
import tomllib
from dataclasses import asdict, astuple, dataclass, field, fields
from pathlib import Path
from typing import Any

from zoo.ensembles.combine import COMBINE_RULES, Combiner, make_combiner
from zoo.errors import ZooError, close_matches
from zoo.store.names import NAME_RULE, is_valid_name

__all__ = [
    "ALLOWED_KEYS",
    "EnsembleSpec",
    "Selection",
    "ensemble_dirs",
    "find_spec",
    "load_spec",
    "resolve_members",
]

ALLOWED_KEYS = ("name", "description", "members", "combine", "prior_correction", "tta", "options")
_GLOB_CHARS = set("*?[")


@dataclass(frozen=True)
class Selection:
    """``[members]`` criteria beyond names: a member is selected when it meets every one given."""

    recipes: tuple[str, ...] = ()
    data: tuple[str, ...] = ()
    image_size: tuple[int, ...] = ()
    seeds: tuple[int, ...] = ()

    def matches(self, info: dict) -> bool:
        """Whether a member (its ``member.json``) meets every criterion."""
        return all(
            not wanted or any(value in wanted or _glob(value, wanted) for value in values)
            for wanted, values in zip(astuple(self), _facts(info), strict=True)
        )

    def describe(self) -> str:
        return ", ".join(f"{k} = {list(v)}" for k, v in asdict(self).items() if v)


def _glob(value: Any, patterns: tuple) -> bool:
    return isinstance(value, str) and any(
        isinstance(p, str) and fnmatch.fnmatchcase(value, p) for p in patterns
    )


def _facts(info: dict) -> tuple[tuple, ...]:
    """A member's recipe, data (name and source), input size and seed, as :class:`Selection`
    compares them."""
    data = info.get("data") or {}
    options = (info.get("config") or {}).get("options") or {}
    return (
        (info.get("recipe"),),
        (data.get("name"), data.get("source")),
        ((info.get("input") or {}).get("size"),),
        (options.get("seed"),),
    )


def _described(name: str, info: dict) -> str:
    recipe, data, size, seed = (values[0] for values in _facts(info))
    return f"{name} ({recipe}, {data}, {size} px, seed {seed})" if info else name


@dataclass(frozen=True)
class EnsembleSpec:
    """One ensemble definition, as read from its TOML file."""

    name: str
    members: tuple[str, ...]
    combine: str
    select: Selection = Selection()
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
    select = Selection()
    if isinstance(data["members"], dict):
        members, select = _selection(data["members"], path)
    else:
        members = need("members", list, "an array of member names or glob patterns, or a table")
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
        select=select,
        description=need("description", str, "a string") if "description" in data else "",
        prior_correction=(
            need("prior_correction", bool, "true or false") if "prior_correction" in data else True
        ),
        tta=need("tta", str, "a string naming a TTA scheme") if "tta" in data else "none",
        options=options,
        path=path,
    )


def _selection(table: dict, path: Path) -> tuple[list, Selection]:
    """``[members]``: names (default every member) and the :class:`Selection` criteria."""
    allowed = ("names", *(f.name for f in fields(Selection)))
    for key in table:
        if key not in allowed:
            raise ZooError(
                f"{path}: unknown key 'members.{key}'; allowed: {', '.join(allowed)}."
                f"{close_matches(key, list(allowed))}"
            )
    criteria = {}
    for key, kind in zip(allowed, (str, str, str, int, int), strict=True):
        value = table.get(key, ["*"] if key == "names" else [])
        values = value if isinstance(value, list) else [value]
        for item in values:
            if not isinstance(item, kind) or isinstance(item, bool):
                what = "a string" if kind is str else "an integer"
                raise ZooError(
                    f"{path}: members.{key} must be {what} or an array of {what[what.index(' ') + 1 :]}s; "
                    f"got {item!r} ({_type_name(item)})"
                )
        criteria[key] = tuple(values)
    names = list(criteria.pop("names"))
    return names, Selection(**criteria)


def ensemble_dirs(workspace: Path | None = None) -> list[Path]:
    """Folders searched for ensemble definitions, built-in first."""
    from zoo.recipes.recipe import builtin_folder, search_dirs

    return search_dirs(
        builtin_folder("ensembles"), workspace, "ensemble-specs", "ZOO_ENSEMBLE_PATH"
    )


def find_spec(name: str, *, workspace: Path | None = None) -> EnsembleSpec:
    """The definition called ``name`` in :func:`ensemble_dirs`, or read from ``name`` as a path."""
    from zoo.recipes.recipe import is_path, load_registry

    if is_path(name):
        return load_spec(name)
    return load_registry(ensemble_dirs(workspace), parse=load_spec, kind="ensemble").get(name)


def resolve_members(spec: EnsembleSpec, available: list[str] | dict[str, dict]) -> list[str]:
    """Expand names and glob patterns against the saved members, keeping those that meet the
    definition's :class:`Selection` (``available``: name → ``member.json``, or just names).

    Patterns are matched case-sensitively with :func:`fnmatch.fnmatchcase`; each
    pattern's matches come in sorted order, patterns in the order written, and a
    member matched twice is kept once, at its first place. A pattern or name that
    matches nothing is an error.
    """
    infos = available if isinstance(available, dict) else dict.fromkeys(available, {})
    every = sorted(infos)
    names = [n for n in every if spec.select.matches(infos[n])]
    if not names and every:
        shown = "; ".join(_described(n, infos[n]) for n in every[:10])
        more = f"; … ({len(every)} in all)" if len(every) > 10 else ""
        raise ZooError(
            f"ensemble {spec.name!r}: [members] {spec.select.describe()} matched no saved "
            f"member; saved members: {shown}{more}."
        )
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

"""Versioned schemas of the JSON records zoo writes: ``member.json``, ``ensemble.json``,
``metrics.json`` and the prediction-cache sidecar ``predictions/<key>.json``.

Each record is a dataclass: the entries zoo relies on are typed fields (checked on load),
every other entry — one a newer zoo or another part of zoo added — is kept in ``extra`` and
written back unchanged. ``format_version`` is written with every record; a file without it
was written before it existed and is version 1. A file with a higher version than
:attr:`Record.LATEST` is refused, not misread.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from zoo.errors import ZooError
from zoo.store.files import FIRST_VERSION, damaged, format_version, read_json_object

R = TypeVar("R", bound="Record")
_BOOKKEEPING = ("format_version", "extra", "versioned", "absent")


@dataclass(kw_only=True)
class Record:
    """Base of every record: its version, unknown entries, and how it was read."""

    LATEST: ClassVar[int] = 1
    REMEDY: ClassVar[str] = "delete it so that it is written again."

    format_version: int = FIRST_VERSION
    extra: dict[str, Any] = field(default_factory=dict, repr=False)
    # False when read from a file written before format_version existed
    versioned: bool = field(default=True, repr=False, compare=False)
    # known keys the file did not hold: not written back
    absent: frozenset[str] = field(default=frozenset(), repr=False, compare=False)

    @classmethod
    def remedy(cls, file: Path) -> str:
        return cls.REMEDY

    @classmethod
    def load(cls: type[R], file: str | Path) -> R:
        """The record in ``file``; a damaged, unreadable or too-new file is a one-line error."""
        file = Path(file)
        remedy = cls.remedy(file)
        data = read_json_object(file, remedy=remedy)
        version = format_version(data, file, latest=cls.LATEST, remedy=remedy)
        try:
            record = cls.from_dict(data)
        except ValueError as exc:
            raise damaged(file, str(exc), remedy) from None
        record.format_version, record.versioned = version, "format_version" in data
        return record

    @classmethod
    def from_dict(cls: type[R], data: dict[str, Any]) -> R:
        """The record of ``data``; a missing or mistyped entry is a ``ValueError`` naming it."""
        known, absent = {}, set()
        hints = typing.get_type_hints(cls)
        for f in _fields(cls):
            if f.name not in data:
                if _required(f):
                    raise ValueError(f"no {f.name!r} entry")
                absent.add(f.name)
                continue
            value = data[f.name]
            if not _matches(value, hints[f.name]):
                raise ValueError(
                    f"{f.name!r} must be {_describe(hints[f.name])}; got {_short(value)}"
                )
            known[f.name] = value
        names = {f.name for f in _fields(cls)} | {"format_version"}
        extra = {k: v for k, v in data.items() if k not in names}
        record = cls(**known, extra=extra, absent=frozenset(absent))
        record.check()
        return record

    def check(self) -> None:
        """Checks beyond the field types (nested entries); raise ``ValueError`` naming them."""

    def to_dict(self) -> dict[str, Any]:
        """The JSON object: ``format_version``, the known entries, then the extra ones."""
        out: dict[str, Any] = {"format_version": self.format_version}
        for f in _fields(type(self)):
            if f.name not in self.absent:
                out[f.name] = getattr(self, f.name)
        out.update(self.extra)
        return out

    def write(self, file: str | Path) -> Path:
        """Write atomically (temporary name, then rename)."""
        from zoo.store.workspace import atomic_write_json

        return atomic_write_json(Path(file), self.to_dict())


def _fields(cls) -> list[dataclasses.Field]:
    return [f for f in dataclasses.fields(cls) if f.name not in _BOOKKEEPING]


def _required(f: dataclasses.Field) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING


def _matches(value: Any, hint: Any) -> bool:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, h) for h in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is Any:
        return True
    kind = origin or hint
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind)


def _describe(hint: Any) -> str:
    names = {str: "a string", int: "a whole number", float: "a number", bool: "true or false"}
    names.update({list: "a list", dict: "an object", type(None): "null"})
    args = (
        typing.get_args(hint)
        if typing.get_origin(hint) in (typing.Union, types.UnionType)
        else (hint,)
    )
    return " or ".join(names.get(typing.get_origin(a) or a, str(a)) for a in args)


def _short(value: Any) -> str:
    return repr(value)[:60]


def _need(container: Any, path: str, kind: type, what: str) -> Any:
    """``container``'s dotted ``path`` of type ``kind``; else a ValueError naming it."""
    value = container
    for key in path.split("."):
        value = value.get(key) if isinstance(value, dict) else None
    if not isinstance(value, kind):
        raise ValueError(f"{path!r} must be {what}")
    return value


# --- member.json ---------------------------------------------------------------------------


@dataclass(kw_only=True)
class MemberRecord(Record):
    """``members/<name>/member.json`` (keys in ``docs/formats.md``)."""

    name: str
    recipe: str | None = None
    config: dict | None = None
    classes: list
    weights: str | None = None
    weights_provenance: dict | None = None
    priors: dict | None = None
    input: dict | None = None
    data: dict | None = None
    split: dict
    versions: dict | None = None
    training: dict | None = None
    metrics: dict | None = None
    created: str | None = None

    @classmethod
    def remedy(cls, file: Path) -> str:
        return f"retrain the member or delete {Path(file).parent}."

    def check(self) -> None:
        _need({"split": self.split}, "split.ids", dict, "an object of id lists")

    def split_ids(self, part: str) -> list[str]:
        ids = self.split["ids"].get(part)
        if not isinstance(ids, list):
            raise ValueError(f"no 'split.ids.{part}' entry")
        return [str(i) for i in ids]


# --- ensemble.json -------------------------------------------------------------------------


@dataclass(kw_only=True)
class EnsembleRecord(Record):
    """``ensembles/<name>/ensemble.json``: what running the ensemble needs, checked."""

    REMEDY: ClassVar[str] = "rebuild the ensemble with `zoo ensemble build FILE.toml`."

    name: str
    kind: str = "ensemble"
    description: str | None = None
    spec: dict | None = None
    rule: str
    options: dict = field(default_factory=dict)
    prior_correction: bool
    tta: str
    members: list
    weights: dict
    combiner: dict
    classes: list
    data: dict
    split: dict
    metrics: dict | None = None
    operating_point: dict | None = None  # chosen on validation by --operating-point
    versions: dict | None = None
    created: str | None = None
    build_seconds: float | None = None

    def check(self) -> None:
        if not self.members:
            raise ValueError("'members' is empty")
        for i, member in enumerate(self.members):
            ok = isinstance(member, dict) and isinstance(member.get("name"), str)
            if not ok or not isinstance(member.get("sha256"), dict):
                raise ValueError(f"members[{i}] must be an object with 'name' and 'sha256'")
        ids = self.split.get("ids")
        if not isinstance(ids, dict) or not all(
            isinstance(ids.get(p), list) for p in ("val", "test")
        ):
            raise ValueError("'split.ids' must hold 'val' and 'test' lists")

    @property
    def member_names(self) -> list[str]:
        return [str(m["name"]) for m in self.members]

    @property
    def spec_hint(self) -> str:
        """The definition file to rebuild from, as the user gave it (or its usual place)."""
        return str((self.spec or {}).get("file") or f"ensembles/{self.name}.toml")


# --- metrics.json --------------------------------------------------------------------------


@dataclass(kw_only=True)
class EvaluationRecord(Record):
    """``evaluations/<name>/metrics.json``: the scores and the settings that produced them."""

    REMEDY: ClassVar[str] = "run zoo evaluate again."

    target: dict
    data: dict
    split: str
    classes: list
    aggregate: dict
    per_category: dict
    macro_average: dict
    tta: str
    prior_correction: bool
    n_images: int

    def check(self) -> None:
        for path in ("target.path", "target.name", "target.kind", "data.name", "data.fingerprint"):
            _need({"target": self.target, "data": self.data}, path, str, "a string")

    @property
    def is_plain(self) -> bool:
        """Scored on the classes themselves (no binary task, no label map)."""
        return not (self.extra.get("task") or self.extra.get("label_map"))


# --- predictions/<key>.json ----------------------------------------------------------------


@dataclass(kw_only=True)
class CacheRecord(Record):
    """The sidecar of a cached prediction CSV: what the probabilities were computed from."""

    key: str
    model_sha256: str
    ids_sha256: str
    tta: str
    n_images: int | None = None
    seconds: float | None = None
    images_per_second: float | None = None
    origin: str | None = None
    created: str | None = None


def try_load(cls: type[R], file: str | Path) -> tuple[R | None, str | None]:
    """``(record, None)``, or ``(None, one-line reason)`` for a damaged or unreadable file."""
    try:
        return cls.load(file), None
    except ZooError as exc:
        return None, str(exc)

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

import zoo.store.checks as checks
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
    metadata_inputs: dict | None = None  # checked whole by zoo.data.metadata when read

    @classmethod
    def remedy(cls, file: Path) -> str:
        return f"retrain the member or delete {Path(file).parent}."

    def check(self) -> None:
        checks.name(self.name, "name")
        _need({"split": self.split}, "split.ids", dict, "an object of id lists")
        _check_split(self.split, "split")
        classes = checks.class_names(self.classes)
        if self.input is not None:
            _check_input(self.input)
        if self.priors is not None:
            _check_priors(self.priors, len(classes))
        for key, value in (self.training or {}).items():
            if key in ("parameters", "epochs_run", "best_epoch", "replicas"):
                checks.count(value, f"training.{key}", null=True)
            elif key in ("seconds", "images_per_second", "inference_images_per_second"):
                checks.number(value, f"training.{key}", low=0, null=True)
            elif key in ("machine", "commit", "backend", "precision"):
                checks.text(value, f"training.{key}", null=True)
        for part, scores in (self.metrics or {}).items():
            if part in ("val", "test"):
                _check_headline(scores, f"metrics.{part}")
        for key in ("name", "fingerprint", "source"):
            if key in (self.data or {}):
                checks.text(self.data[key], f"data.{key}")

    def split_ids(self, part: str) -> list[str]:
        ids = self.split["ids"].get(part)
        if not isinstance(ids, list):
            raise ValueError(f"no 'split.ids.{part}' entry")
        return [str(i) for i in ids]


def _check_split(split: dict, field: str) -> None:
    """``split.ids.<part>``: lists of image ids; ``seed``, ``fold``, ``folds``: numbers."""
    for part, ids in split["ids"].items():
        checks.items(ids, f"{field}.ids.{part}")
        bad = next((i for i in ids if not isinstance(i, str | int) or isinstance(i, bool)), None)
        if bad is not None:
            raise checks.fail(f"{field}.ids.{part}", "a list of image ids", bad)
    for key in ("seed", "fold", "folds"):
        if key in split:
            checks.count(split[key], f"{field}.{key}", null=True)


def _check_input(spec: dict) -> None:
    """``input``: the size the model takes and how images are prepared for it."""
    checks.number(spec.get("size"), "input.size", low=1, high=checks.MAX_IMAGE_SIZE, whole=True)
    if "min_size" in spec:
        checks.number(
            spec["min_size"], "input.min_size", low=1, high=checks.MAX_IMAGE_SIZE, whole=True
        )
    for key in ("preprocessing", "interpolation", "color_constancy"):
        if key in spec:
            checks.text(spec[key], f"input.{key}")
    if "crop_borders" in spec:
        checks.flag(spec["crop_borders"], "input.crop_borders", null=True)


def _check_priors(priors: dict, k: int) -> None:
    """``priors``: per-class counts, frequencies, weights and the effective priors."""
    for key in ("effective", "train_frequency", "class_weights", "train_counts"):
        if key in priors:
            checks.numbers(priors[key], f"priors.{key}", length=k, low=0)
    if "effective" in priors and not sum(priors["effective"]) > 0:
        raise checks.fail("priors.effective", "priors with a positive sum", priors["effective"])


def _check_headline(scores: Any, field: str) -> None:
    """``metrics.val`` / ``metrics.test``: the headline scores of a member or ensemble."""
    checks.mapping(scores, field)
    for key in ("balanced_accuracy", "accuracy", "macro_auc"):
        if key in scores:
            checks.probability(scores[key], f"{field}.{key}", null=True)
    if "n_images" in scores:
        checks.count(scores["n_images"], f"{field}.n_images")


def _check_point(point: Any, field: str, classes: list) -> None:
    """A stored operating point: a class, its criterion and value, and a threshold in [0, 1]."""
    checks.mapping(point, field)
    checks.one_of(point.get("class"), f"{field}.class", classes)
    checks.probability(point.get("threshold"), f"{field}.threshold")
    if "value" in point:
        checks.probability(point["value"], f"{field}.value")
    if "criterion" in point:
        checks.text(point["criterion"], f"{field}.criterion")


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
        checks.name(self.name, "name")
        if not self.members:
            raise ValueError("'members' is empty")
        for i, member in enumerate(self.members):
            ok = isinstance(member, dict) and isinstance(member.get("name"), str)
            if not ok or not isinstance(member.get("sha256"), dict):
                raise ValueError(f"members[{i}] must be an object with 'name' and 'sha256'")
            checks.name(member["name"], f"members[{i}].name")
            checks.sha256_map(member["sha256"], f"members[{i}].sha256")
        names = self.member_names
        if len(set(names)) != len(names):
            raise checks.fail("members", "distinct member names", names)
        ids = self.split.get("ids")
        if not isinstance(ids, dict) or not all(
            isinstance(ids.get(p), list) for p in ("val", "test")
        ):
            raise ValueError("'split.ids' must hold 'val' and 'test' lists")
        _check_split(self.split, "split")
        classes = checks.class_names(self.classes)
        checks.tta(self.tta, "tta")
        checks.text(self.rule, "rule")
        for member, weight in self.weights.items():
            checks.one_of(member, "weights", names)
            checks.number(weight, f"weights.{member}", low=0)
        if self.operating_point is not None:
            _check_point(self.operating_point, "operating_point", classes)
        for part, scores in (self.metrics or {}).items():
            if part in ("val", "test"):
                _check_headline(scores, f"metrics.{part}")

    @property
    def member_names(self) -> list[str]:
        return [str(m["name"]) for m in self.members]

    @property
    def used_member_names(self) -> list[str]:
        """The members that contribute: all but those of weight 0 (``greedy`` and ``weighted``
        list every candidate, the dropped ones with weight 0; they are not run). An ensemble's
        cost and member count are over these."""
        return [name for name in self.member_names if self.weights.get(name) != 0]

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
        checks.name(self.target["name"], "target.name")
        checks.one_of(self.target["kind"], "target.kind", ("member", "ensemble"))
        checks.one_of(self.split, "split", ("test", "val", "all"))
        classes = checks.class_names(self.classes)
        checks.tta(self.tta, "tta")
        checks.count(self.n_images, "n_images")
        checks.probability(self.aggregate.get("balanced_accuracy"), "aggregate.balanced_accuracy")
        for metric, values in self.per_category.items():
            checks.per_class(values, f"per_category.{metric}", classes, _score)
        for metric, value in self.macro_average.items():
            _score(value, f"macro_average.{metric}")
        extra = self.extra
        if "class_counts" in extra:
            checks.per_class(
                extra["class_counts"], "class_counts", classes, checks.count, every=True
            )
        if extra.get("ci95") is not None:
            _check_ci95(extra["ci95"], classes)
        if extra.get("argmax") is not None:
            _check_argmax(extra["argmax"], classes)
        for i, point in enumerate(
            checks.items(extra.get("operating_points"), "operating_points", null=True) or []
        ):
            _check_evaluated_point(point, f"operating_points[{i}]", classes)
        for key in ("calibration", "ood", "inference", "task", "embedding"):
            checks.mapping(extra.get(key), key, null=True)
        if extra.get("calibration") is not None:
            _check_calibration(extra["calibration"])
        if extra.get("ood") is not None:
            _check_ood(extra["ood"])
        for key, value in (extra.get("inference") or {}).items():
            if key != "cached":
                checks.number(value, f"inference.{key}", low=0, null=True)

    @property
    def is_plain(self) -> bool:
        """Scored on the classes themselves (no binary task, no label map)."""
        return not (self.extra.get("task") or self.extra.get("label_map"))


def _score(value: Any, field: str) -> Any:
    """A score in [0, 1], or null where it is undefined (a class without positives)."""
    return checks.probability(value, field, null=True)


def _check_argmax(rates: Any, classes: list) -> None:
    """``argmax``: per class, the argmax decision's sensitivity and specificity and intervals."""
    checks.mapping(rates, "argmax")
    for metric in ("sensitivity", "specificity"):
        checks.per_class(rates.get(metric), f"argmax.{metric}", classes, _score, every=True)
        checks.per_class(
            rates.get(f"{metric}_ci95"),
            f"argmax.{metric}_ci95",
            classes,
            checks.interval,
        )


def _check_ci95(ci: Any, classes: list) -> None:
    checks.mapping(ci, "ci95")
    for key in ("balanced_accuracy", "macro_auc", "macro_auc_sens_80", "task_auc"):
        checks.interval(ci.get(key), f"ci95.{key}")
    for key in ("auc", "auc_sens_80"):
        if ci.get(key) is not None:
            checks.per_class(ci[key], f"ci95.{key}", classes, checks.interval)
    if ci.get("n_valid") is not None:
        checks.per_class(ci["n_valid"], "ci95.n_valid", classes, checks.count)
    if "n_resamples" in ci:
        checks.count(ci["n_resamples"], "ci95.n_resamples", null=True)


def _check_evaluated_point(point: Any, field: str, classes: list) -> None:
    """An entry of ``operating_points``: chosen on validation, measured on the evaluated data."""
    checks.mapping(point, field)
    checks.one_of(point.get("class"), f"{field}.class", classes)
    checks.text(point.get("metric"), f"{field}.metric")
    checks.probability(point.get("target"), f"{field}.target")
    checks.probability(point.get("threshold"), f"{field}.threshold", null=True)
    if "at_least" in point:
        checks.flag(point["at_least"], f"{field}.at_least")
    for key in ("sensitivity", "specificity"):
        _score(point.get(key), f"{field}.{key}")
        checks.interval(point.get(f"{key}_ci95"), f"{field}.{key}_ci95")


def _check_calibration(cal: dict) -> None:
    """``calibration``: whether it was applied, the temperature and the figures before/after."""
    if "applied" in cal:
        checks.flag(cal["applied"], "calibration.applied", null=True)
    if "temperature" in cal:
        checks.number(cal["temperature"], "calibration.temperature", low=0, null=True)
    for side in ("before", "after"):
        figures = checks.mapping(cal.get(side), f"calibration.{side}", null=True) or {}
        for key in ("ece", "mce", "brier", "nll"):
            if key in figures:
                checks.number(figures[key], f"calibration.{side}.{key}", low=0, null=True)
        ci = checks.mapping(figures.get("ci95"), f"calibration.{side}.ci95", null=True) or {}
        for key, value in ci.items():
            checks.interval(value, f"calibration.{side}.ci95.{key}", high=float("inf"))


def _check_ood(ood: dict) -> None:
    """``ood``: each score's AUROC and the shares flagged at the validation threshold."""
    scores = checks.mapping(ood.get("scores"), "ood.scores", null=True) or {}
    for score, figures in scores.items():
        checks.mapping(figures, f"ood.scores.{score}", null=True)
        for key, value in (figures or {}).items():
            _score(value, f"ood.scores.{score}.{key}")
    flag = checks.mapping(ood.get("flag"), "ood.flag", null=True) or {}
    for key in ("in_flagged", "ood_flagged"):
        if key in flag:
            _score(flag[key], f"ood.flag.{key}")
    if "threshold" in flag:
        checks.number(flag["threshold"], "ood.flag.threshold", null=True)


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

    def check(self) -> None:
        checks.name(self.key, "key")
        checks.text(self.model_sha256, "model_sha256")
        checks.text(self.ids_sha256, "ids_sha256")
        checks.tta(self.tta, "tta")
        checks.count(self.n_images, "n_images", null=True)
        checks.number(self.seconds, "seconds", low=0, null=True)
        checks.number(self.images_per_second, "images_per_second", low=0, null=True)


# --- runs/<name>/state.json ----------------------------------------------------------------


@dataclass(kw_only=True)
class RunStateRecord(Record):
    """``runs/<name>/state.json``: where an interrupted training run stands (``--resume``).

    The recipe and the split are checked by their own readers (``Recipe.from_dict``,
    ``Split.from_dict``); here their shape and every number the trainer goes on from."""

    REMEDY: ClassVar[str] = "the run cannot be resumed: delete its folder and train again."

    name: str | None = None
    options: dict | None = None
    recipe: dict
    split: dict
    weights: str | None
    fingerprint: str
    epochs_done: int
    best_epoch: int
    best_score: float
    epochs_since_best: int
    history: list
    seconds: float
    extras: dict | None = None

    @classmethod
    def remedy(cls, file: Path) -> str:
        return f"the run cannot be resumed: delete {Path(file).parent} and train again without --resume."

    def check(self) -> None:
        if self.name is not None:
            checks.name(self.name, "name")
        checks.text(self.fingerprint, "fingerprint")
        for key in ("epochs_done", "best_epoch", "epochs_since_best"):
            checks.count(getattr(self, key), key)
        checks.number(self.best_score, "best_score")
        checks.number(self.seconds, "seconds", low=0)
        for i, row in enumerate(self.history):
            checks.mapping(row, f"history[{i}]")


# --- .<folder>.lock ------------------------------------------------------------------------


@dataclass(kw_only=True)
class LockRecord(Record):
    """A lock file beside a folder (:mod:`zoo.store.locks`): the process that holds it."""

    REMEDY: ClassVar[str] = (
        "wait for the zoo command that holds it to finish, or delete it if none is running."
    )
    MAX_PID: ClassVar[int] = 2**31 - 1  # what the operating system can signal

    pid: int
    host: str
    started: str | None = None
    what: str | None = None

    def check(self) -> None:
        checks.number(self.pid, "pid", low=1, high=self.MAX_PID, whole=True)
        checks.text(self.host, "host")


# --- the marker of an output folder: .zoo-output.json ---------------------------------------


@dataclass(kw_only=True)
class OutputMarker(Record):
    """``.zoo-output.json``: the record zoo writes into every output folder it fills
    (evaluation, explain, export, leaderboard), so that it replaces only folders it wrote."""

    REMEDY: ClassVar[str] = "delete the folder if zoo wrote it, or give a new or empty folder."
    KINDS: ClassVar[tuple[str, ...]] = ("evaluation", "explain", "export", "leaderboard")

    kind: str
    written_by: str
    files: list
    zoo_version: str | None = None
    created: str | None = None

    def check(self) -> None:
        checks.one_of(self.kind, "kind", self.KINDS)
        checks.text(self.written_by, "written_by")
        for i, file in enumerate(self.files):
            if not (isinstance(file, str) and file and "/" not in file and file not in (".", "..")):
                raise checks.fail(f"files[{i}]", "a file name", file)


# --- FILE.csv.json beside zoo predict --out FILE.csv -----------------------------------------


@dataclass(kw_only=True)
class PredictionsRecord(Record):
    """The sidecar of ``zoo predict --out FILE.csv``: how the CSV was made (docs/formats.md)."""

    REMEDY: ClassVar[str] = "delete it and the CSV beside it, or give another --out."

    predictions: str
    sha256: str
    target: dict
    classes: list
    n_images: int

    def check(self) -> None:
        if "/" in self.predictions or self.predictions in ("", ".", ".."):
            raise checks.fail("predictions", "the CSV's file name", self.predictions)
        checks.text(self.sha256, "sha256")
        checks.name(self.target.get("name"), "target.name")
        checks.class_names(self.classes)
        checks.count(self.n_images, "n_images")


def try_load(cls: type[R], file: str | Path) -> tuple[R | None, str | None]:
    """``(record, None)``, or ``(None, one-line reason)`` for a damaged or unreadable file."""
    try:
        return cls.load(file), None
    except ZooError as exc:
        return None, str(exc)

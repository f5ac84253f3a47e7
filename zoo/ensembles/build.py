"""``zoo ensemble build FILE.toml``: combine saved members into a built ensemble.

The builder works on the members' cached predictions (``predictions/<split>[.<tta>].csv``);
only a missing TTA variant is computed, through :func:`zoo.inference.member_probabilities`.
With every prediction cached, nothing imports TensorFlow or Keras.

Steps: resolve the member names and patterns against ``<workspace>/members``; check that
the members share class list, training data and test split (and validation split for the
rules that learn from it); load each member's raw validation and test probabilities for
the definition's TTA; prior-correct each member (if asked); fit the combiner on the
validation split — never on the test split — and predict both splits. Labels come from
the members' data set (file list and labels only, no pixels; cached by its fingerprint in
``<workspace>/cache/labels/``), and only validation labels are used.

A built ensemble is written atomically to ``<workspace>/ensembles/<name>/``:
``ensemble.json`` (definition, members with file hashes and weights, fitted combiner,
classes, data, split ids, validation metrics, build time), ``predictions/val.csv`` and
``predictions/test.csv`` (ISIC format) and ``card.md``.
"""

from __future__ import annotations

import hashlib
import json
import platform
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import rankdata

from zoo.ensembles.combine import PredictionSet
from zoo.ensembles.spec import EnsembleSpec, load_spec, resolve_members
from zoo.errors import ZooError
from zoo.hashing import file_sha256
from zoo.members import Member, list_members, members_dir, predictions_frame, write_predictions
from zoo.priors import PriorCorrection

__all__ = [
    "ENSEMBLE_FILE",
    "HASHED_FILES",
    "build_command",
    "build_ensemble",
    "check_compatible",
    "correct_priors",
    "ensembles_dir",
    "headline_metrics",
    "member_hashes",
    "prediction_key",
    "tta_name",
]

ENSEMBLE_FILE = "ensemble.json"
HASHED_FILES = ("model.keras", "member.json")
# Rules whose fit learns nothing from the data (uniform weights); they need no shared val split.
_DATA_FREE_RULES = ("mean", "rank")
_TTA_ALLOWED = "none, steppan, dihedral, rotations:N (N = 1..64)"


# --- names and files -------------------------------------------------------------------------


def tta_name(spec: str) -> str:
    """Canonical, file-name-safe TTA name (``none``, ``steppan``, ``dihedral``, ``rotations-8``).

    The same names as :attr:`zoo.tta.TTAScheme.name`, without importing Keras.
    """
    text = str(spec).strip().lower()
    if text in ("none", "steppan", "dihedral"):
        return text
    match = re.fullmatch(r"rotations?\s*[:\-]\s*(\d+)", text)
    if match and 1 <= int(match.group(1)) <= 64:
        return f"rotations-{int(match.group(1))}"
    raise ZooError(
        f"unknown TTA scheme {spec!r}; allowed: {_TTA_ALLOWED}. Set tta to one of those."
    )


def prediction_key(part: str, tta: str) -> str:
    """Cache key of a member's predictions: ``test``, ``test.steppan``, ``val.rotations-8``."""
    name = tta_name(tta)
    return part if name == "none" else f"{part}.{name}"


def ensembles_dir(workspace: Path) -> Path:
    return Path(workspace) / "ensembles"


def member_hashes(path: Path) -> dict[str, str]:
    """sha256 of the bytes of a member's ``model.keras`` and ``member.json``."""
    path = Path(path)
    hashes = {}
    for file in HASHED_FILES:
        if not (path / file).is_file():
            raise ZooError(
                f"member {path.name} has no {file} in {path}; the member is incomplete — retrain it"
            )
        hashes[file] = file_sha256(path / file)
    return hashes


# --- checks ----------------------------------------------------------------------------------


def _ids_difference(first: str, other: str, a: list[str], b: list[str]) -> str:
    only_a, only_b = sorted(set(a) - set(b)), sorted(set(b) - set(a))
    shown = ", ".join((only_a + only_b)[:3])
    return (
        f"{len(a)} vs {len(b)} images, {len(only_a)} only in {first}, "
        f"{len(only_b)} only in {other}" + (f" (e.g. {shown})" if shown else "")
    )


def check_compatible(members: list[Member], *, shared_val: bool) -> None:
    """Members must share classes (same order), training data and test split ids.

    With ``shared_val`` they must also share the validation split ids. A mismatch is a
    ZooError naming both members and what differs.
    """
    first = members[0]
    ref = first.info
    what_to_do = "an ensemble needs members trained on one class list and one data split"
    for member in members[1:]:
        info = member.info
        a, b = first.path.name, member.path.name
        if list(info["classes"]) != list(ref["classes"]):
            order = (
                "the same classes in a different order"
                if set(info["classes"]) == set(ref["classes"])
                else "different classes"
            )
            raise ZooError(
                f"members {a} and {b} have {order}: {a} has {list(ref['classes'])}, "
                f"{b} has {list(info['classes'])}; {what_to_do}"
            )
        fa, fb = ref["data"]["fingerprint"], info["data"]["fingerprint"]
        if fa != fb:
            raise ZooError(
                f"members {a} and {b} were trained on different data: {a} on "
                f"{ref['data'].get('source')} (fingerprint {fa}), {b} on "
                f"{info['data'].get('source')} (fingerprint {fb}); {what_to_do}"
            )
        parts = ("test", "val") if shared_val else ("test",)
        for part in parts:
            ids_a, ids_b = first.split_ids(part), member.split_ids(part)
            if ids_a != ids_b and (len(ids_a) != len(ids_b) or set(ids_a) != set(ids_b)):
                why = (
                    " (the combine rule fits on the validation split, so members must share it)"
                    if part == "val"
                    else ""
                )
                raise ZooError(
                    f"members {a} and {b} have different {part} splits: "
                    f"{_ids_difference(a, b, ids_a, ids_b)}{why}; {what_to_do}"
                )


# --- probabilities ---------------------------------------------------------------------------


class _DatasetLoader:
    """The members' data set, read once (file list and labels only) and checked.

    ``labels()`` gives every image's label; they are cached in
    ``<workspace>/cache/labels/<fingerprint>.csv`` (checked against the fingerprint on
    every read), so a rebuild needs no data set listing at all.
    """

    def __init__(self, data: dict, workspace: Path):
        self.data, self.workspace, self._dataset = data, Path(workspace), None

    def __call__(self):
        if self._dataset is None:
            from zoo.data import load_dataset

            dataset = load_dataset(self.data["source"], workspace=self.workspace)
            if dataset.fingerprint != self.data["fingerprint"]:
                raise ZooError(
                    f"data set {self.data['source']} has changed since the members were trained "
                    f"(fingerprint {dataset.fingerprint}, members recorded "
                    f"{self.data['fingerprint']}); restore that data or retrain the members"
                )
            self._dataset = dataset
        return self._dataset

    def labels(self) -> pd.Series:
        """Label (class name) of every image of the members' data, indexed by image id."""
        fingerprint = str(self.data["fingerprint"])
        cache = self.workspace / "cache" / "labels" / f"{fingerprint}.csv"
        if cache.is_file():
            try:
                frame = pd.read_csv(cache, dtype=str, keep_default_na=False)
                labels = pd.Series(frame["label"].to_numpy(), index=frame["image"].to_numpy())
            except (OSError, KeyError, ValueError, pd.errors.ParserError):
                labels = None
            if labels is not None and _fingerprint(labels) == fingerprint:
                return labels
        records = self().records
        labels = pd.Series(records["label"].astype(str).to_numpy(), index=records.index)
        from zoo.workspace import atomic_write_csv

        cache.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_csv(
            cache, pd.DataFrame({"image": labels.index, "label": labels.to_numpy()}), index=False
        )
        return labels


def _fingerprint(labels: pd.Series) -> str:
    """:attr:`zoo.data.Dataset.fingerprint` of (image id, label) pairs."""
    lines = sorted(f"{i}\t{lab}" for i, lab in zip(labels.index, labels, strict=True))
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()[:16]


def _aligned(frame: pd.DataFrame, ids: list[str], classes: list[str], *, what: str) -> np.ndarray:
    """The frame's values in ``ids`` row order; a mismatch is a ZooError naming ``what``."""
    columns = [str(c) for c in frame.columns]
    if columns != classes:
        raise ZooError(
            f"{what} has columns {columns} but the member's classes are {classes}; "
            "delete the file so that it is recomputed"
        )
    if frame.index.tolist() == ids:
        return frame.to_numpy(dtype=np.float64)
    index = frame.index.astype(str)
    missing = pd.Index(ids).difference(index)
    if len(missing):
        raise ZooError(
            f"{what} lacks {len(missing)} of the {len(ids)} requested images "
            f"(e.g. {', '.join(map(str, missing[:3]))}); delete the file so that it is recomputed"
        )
    frame = frame.set_axis(index)
    if not frame.index.is_unique:
        frame = frame[~frame.index.duplicated()]
    return frame.loc[ids].to_numpy(dtype=np.float64)


def _read_predictions(file: Path) -> pd.DataFrame:
    """:func:`zoo.members.read_predictions`, a third faster (no missing-value scan)."""
    try:
        frame = pd.read_csv(file, dtype={"image": str}, na_filter=False).set_index("image")
        return frame.astype(np.float64)
    except (KeyError, ValueError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise ZooError(
            f"{file} is not a predictions file (image + one number per class): "
            f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}; "
            "delete it so that it is recomputed"
        ) from None


def _ids_sha256(ids: list[str]) -> str:
    """:func:`zoo.inference.ids_sha256`: sha256 of the sorted ids, one per line."""
    return hashlib.sha256("\n".join(sorted(map(str, ids))).encode()).hexdigest()


def _cache_is_current(
    member: Member, key: str, file: Path, ids: list[str], *, tta: str, model_sha256: str
) -> bool:
    """The validity rule of :func:`zoo.inference.cached_probabilities`, without Keras.

    With a sidecar ``<key>.json``: its model sha256, ids sha256 and TTA must match. Without
    one, only the trainer's ``val.csv``/``test.csv`` count, and only if ``model.keras`` is
    not newer than them.
    """
    sidecar = file.with_suffix(".json")
    if sidecar.exists():
        try:
            meta = json.loads(sidecar.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            return False
        return (
            meta.get("model_sha256") == model_sha256
            and meta.get("tta") == tta_name(tta)
            and meta.get("ids_sha256") == _ids_sha256(ids)
        )
    if key not in ("val", "test"):
        return False
    return (member.path / "model.keras").stat().st_mtime_ns <= file.stat().st_mtime_ns


def member_split_probabilities(
    member: Member, part: str, *, tta: str, dataset, workspace: Path, model_sha256: str
) -> np.ndarray:
    """A member's raw probabilities on its own ``part`` split, rows in ``split_ids(part)`` order.

    Read from ``predictions/<part>[.<tta>].csv`` when that cache entry is current (see
    :func:`_cache_is_current`); otherwise computed and cached by
    :func:`zoo.inference.member_probabilities`, which needs the model and ``dataset()``
    (a callable returning the members' data set).
    """
    ids = member.split_ids(part)
    key = prediction_key(part, tta)
    file = member.predictions_file(key)
    if file.exists() and _cache_is_current(
        member, key, file, ids, tta=tta, model_sha256=model_sha256
    ):
        frame = _read_predictions(file)
        what = str(file)
    else:
        from zoo.inference import member_probabilities

        frame = member_probabilities(member, dataset(), ids, tta=tta, workspace=workspace)
        what = f"member {member.path.name}'s {key} predictions"
    return _aligned(frame, ids, member.classes, what=what)


def correct_priors(member: Member, probabilities: np.ndarray) -> np.ndarray:
    """Prior correction to uniform priors from the member's effective training priors."""
    return PriorCorrection().fit(member.effective_priors).transform(probabilities)


# --- metrics ---------------------------------------------------------------------------------


def headline_metrics(labels: np.ndarray, probabilities: np.ndarray) -> dict[str, Any]:
    """Balanced accuracy (argmax), accuracy and macro one-vs-rest AUC over the classes present.

    The same numbers as the trainer's ``member.json`` metrics (scikit-learn's), computed
    from ranks: AUC = (Σ ranks of positives − n₊(n₊+1)/2) / (n₊ n₋), ties sharing their
    average rank.
    """
    n = len(labels)
    if n == 0:
        return {"balanced_accuracy": None, "accuracy": None, "macro_auc": None, "n_images": 0}
    predicted = probabilities.argmax(axis=1)
    present = np.unique(labels)
    recalls = [float(np.mean(predicted[labels == c] == c)) for c in present]
    macro_auc = None
    if len(present) > 1:
        ranks = _ranks(probabilities[:, present])
        aucs = []
        for j, c in enumerate(present):
            positive = labels == c
            n_pos = int(positive.sum())
            n_neg = n - n_pos
            aucs.append((ranks[positive, j].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))
        macro_auc = float(np.mean(aucs))
    return {
        "balanced_accuracy": float(np.mean(recalls)),
        "accuracy": float(np.mean(predicted == labels)),
        "macro_auc": macro_auc,
        "n_images": int(n),
    }


def _ranks(scores: np.ndarray) -> np.ndarray:
    """1-based ranks down each column, ties sharing their average rank.

    One quicksort per column; scipy's tie-aware ranking only for columns that have ties
    (three times faster on untied probabilities).
    """
    order = np.argsort(scores, axis=0)
    ranks = np.empty(scores.shape, dtype=np.float64)
    steps = np.arange(1, len(scores) + 1, dtype=np.float64)
    for j in range(scores.shape[1]):
        column = scores[order[:, j], j]
        if (column[1:] == column[:-1]).any():
            ranks[:, j] = rankdata(scores[:, j])
        else:
            ranks[order[:, j], j] = steps
    return ranks


def _label_indices(
    labels: pd.Series, ids: list[str], classes: list[str], *, member: str, source: str
) -> np.ndarray:
    """Class index (in ``classes``) of each of ``ids``; ``labels`` maps image id → class name."""
    missing = pd.Index(ids).difference(labels.index)
    if len(missing):
        raise ZooError(
            f"data set {source} lacks {len(missing)} validation image(s) of member {member} "
            f"(e.g. {', '.join(map(str, missing[:3]))}); restore that data or retrain the member"
        )
    named = labels.loc[ids]
    indices = named.map({c: k for k, c in enumerate(classes)})
    if indices.isna().any():
        unknown = sorted(set(named[indices.isna()]))
        raise ZooError(
            f"validation label(s) {unknown[:5]} of data set {source} are not among member "
            f"{member}'s classes {classes}; retrain the member on this data"
        )
    return indices.to_numpy(dtype=np.intp)


# --- building --------------------------------------------------------------------------------


@dataclass
class _MemberInputs:
    member: Member
    val: np.ndarray  # (own val images, classes), after TTA and prior correction
    test: np.ndarray  # (test images, classes), in the first member's test order
    val_labels: np.ndarray


def _spec_text(spec: EnsembleSpec) -> str:
    if spec.path is not None and Path(spec.path).is_file():
        return Path(spec.path).read_text(encoding="utf-8")

    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (list, tuple)):
            return "[" + ", ".join(value(x) for x in v) + "]"
        return json.dumps(v)

    lines = [f"name = {value(spec.name)}"]
    if spec.description:
        lines.append(f"description = {value(spec.description)}")
    lines += [
        f"members = {value(list(spec.members))}",
        f"combine = {value(spec.combine)}",
        f"prior_correction = {value(spec.prior_correction)}",
        f"tta = {value(spec.tta)}",
    ]
    if spec.options:
        lines += ["", "[options]"] + [f"{k} = {value(v)}" for k, v in spec.options.items()]
    return "\n".join(lines) + "\n"


def _fit_without_data(combiner, members: tuple[str, ...], classes: tuple[str, ...]):
    """State of a rule that learns nothing (mean, rank) when members share no val images."""
    combiner.members_, combiner.classes_ = members, classes
    combiner.weights_ = np.full(len(members), 1.0 / len(members))
    return combiner


def build_ensemble(
    spec: str | Path | EnsembleSpec, *, workspace: Path, operating_point: str | None = None
) -> Path:
    """Build the ensemble ``spec`` (a definition file or an :class:`EnsembleSpec`) and save it.

    Returns ``<workspace>/ensembles/<name>/``. Fits only on the validation split, and so
    chooses the threshold of ``operating_point`` (``CLASS:sensitivity=X|specificity=X``).
    """
    started = time.perf_counter()
    workspace = Path(workspace)
    spec = spec if isinstance(spec, EnsembleSpec) else load_spec(spec)
    tta = tta_name(spec.tta)
    if operating_point is not None:
        from zoo.operating_points import parse_operating_point

        parse_operating_point(operating_point)  # a malformed option fails before any work
    available = [m.path.name for m in list_members(workspace)]
    names = resolve_members(spec, available)
    members = [Member(members_dir(workspace) / name) for name in names]
    combiner = spec.make_combiner()
    needs_val = spec.combine not in _DATA_FREE_RULES
    check_compatible(members, shared_val=needs_val)

    first = members[0]
    classes = first.classes
    data = first.info["data"]
    dataset = _DatasetLoader(data, workspace)
    all_labels = dataset.labels()
    test_ids = first.split_ids("test")
    val_ids = first.split_ids("val")
    val_shared = all(set(m.split_ids("val")) == set(val_ids) for m in members[1:])
    if not val_shared:
        # members of a mean/rank ensemble may hold different val splits (cross-validation
        # folds): the ensemble is scored on the val images they all share.
        shared = set(val_ids)
        for member in members[1:]:
            shared &= set(member.split_ids("val"))
        val_ids = [i for i in val_ids if i in shared]

    inputs: list[_MemberInputs] = []
    labels_of: dict[tuple[str, ...], np.ndarray] = {}
    hashes = {}
    for member in members:
        hashes[member.path.name] = member_hashes(member.path)
        probs = {}
        for part in ("val", "test"):
            p = member_split_probabilities(
                member,
                part,
                tta=spec.tta,
                dataset=dataset,
                workspace=workspace,
                model_sha256=hashes[member.path.name]["model.keras"],
            )
            if spec.prior_correction:
                p = correct_priors(member, p)
            probs[part] = p
        own_test = member.split_ids("test")
        if own_test != test_ids:
            probs["test"] = probs["test"][_positions(own_test, test_ids)]
        own_val = tuple(member.split_ids("val"))
        if own_val not in labels_of:
            labels_of[own_val] = _label_indices(
                all_labels, list(own_val), classes, member=member.path.name, source=data["source"]
            )
        labels = labels_of[own_val]
        inputs.append(_MemberInputs(member, probs["val"], probs["test"], labels))

    member_names = tuple(names)
    val_set = None
    if val_ids:
        val_probs = []
        for item in inputs:
            own = item.member.split_ids("val")
            val_probs.append(item.val if own == val_ids else item.val[_positions(own, val_ids)])
        own_first = first.split_ids("val")
        val_labels = (
            inputs[0].val_labels
            if own_first == val_ids
            else inputs[0].val_labels[_positions(own_first, val_ids)]
        )
        val_set = PredictionSet(
            split="val",
            ids=tuple(val_ids),
            classes=tuple(classes),
            members=member_names,
            probabilities=np.stack(val_probs),
            labels=val_labels,
        )
        combiner.fit(val_set)
    elif needs_val:
        raise ZooError(
            f"ensemble {spec.name!r}: members {', '.join(names)} have no validation images, "
            f'and combine = {spec.combine!r} fits on them; use combine = "mean" or train '
            "the members with a validation split"
        )
    else:
        _fit_without_data(combiner, member_names, tuple(classes))

    test_set = PredictionSet(
        split="test",
        ids=tuple(test_ids),
        classes=tuple(classes),
        members=member_names,
        probabilities=np.stack([item.test for item in inputs]),
    )
    test_out = combiner.predict(test_set)
    val_out = combiner.predict(val_set) if val_set is not None else None
    weights = np.asarray(combiner.weights_, dtype=float)

    member_records = []
    for item, weight in zip(inputs, weights, strict=True):
        member = item.member
        member_records.append(
            {
                "name": member.path.name,
                "recipe": member.info.get("recipe"),
                "path": f"members/{member.path.name}",
                "sha256": hashes[member.path.name],
                "weight": float(weight),
                "metrics": {"val": headline_metrics(item.val_labels, item.val)},
            }
        )
    ensemble_val = (
        headline_metrics(val_set.labels, val_out)
        if val_set is not None
        else headline_metrics(np.zeros(0, dtype=np.intp), np.zeros((0, len(classes))))
    )
    point = None
    if operating_point is not None:
        from zoo.operating_points import choose_operating_point

        if val_set is None:
            raise ZooError(
                f"--operating-point {operating_point}: ensemble {spec.name!r} has no validation "
                "images to choose the threshold on; train the members with a validation split"
            )
        point = choose_operating_point(
            operating_point, classes=classes, labels=val_set.labels, probabilities=val_out
        ).to_dict()
    info = {
        "name": spec.name,
        "kind": "ensemble",
        "description": spec.description,
        "spec": {
            "file": None if spec.path is None else str(Path(spec.path).resolve()),
            "text": _spec_text(spec),
        },
        "rule": spec.combine,
        "options": dict(spec.options),
        "prior_correction": bool(spec.prior_correction),
        "tta": tta,
        "members": member_records,
        "weights": {r["name"]: r["weight"] for r in member_records},
        "combiner": combiner.to_dict(),
        "classes": list(classes),
        "data": data,
        "split": {
            "val_shared": val_shared,
            "ids": {"val": list(val_ids), "test": list(test_ids)},
        },
        "metrics": {"val": ensemble_val},
        "operating_point": point,
        "versions": {
            "zoo": _zoo_version(),
            "numpy": np.__version__,
            "pandas": pd.__version__,
            "python": platform.python_version(),
        },
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    final = ensembles_dir(workspace) / spec.name
    from zoo.workspace import atomic_directory, atomic_write_json, atomic_write_text

    with atomic_directory(final) as tmp:
        if val_out is not None:
            _write_predictions(tmp / "predictions" / "val.csv", val_ids, val_out, classes)
        _write_predictions(tmp / "predictions" / "test.csv", test_ids, test_out, classes)
        atomic_write_text(tmp / "card.md", ensemble_card(info))
        info["build_seconds"] = time.perf_counter() - started
        atomic_write_json(tmp / ENSEMBLE_FILE, info)
    return final


_CSV_SPECIAL = re.compile(r'[,"\r\n]')


def _write_predictions(path: Path, ids: list[str], values: np.ndarray, classes: list[str]) -> None:
    """The bytes of :func:`zoo.members.write_predictions` (``%.8g``), formatted 7× faster.

    pandas formats every float through Python-level callbacks (~0.2 s for 10,000 × 7);
    one ``%`` per row gives the same text. Names that would need CSV quoting go through
    pandas.
    """
    names = [str(c) for c in classes]
    if _CSV_SPECIAL.search("".join(names)) or _CSV_SPECIAL.search("".join(map(str, ids))):
        write_predictions(path, predictions_frame(ids, values, classes))
        return
    from zoo.workspace import atomic_write_text

    row = "%s" + ",%.8g" * len(names)
    lines = ["image," + ",".join(names)]
    lines += [row % (image, *probs) for image, probs in zip(ids, values.tolist(), strict=True)]
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, "\n".join(lines) + "\n")


def _positions(index: list[str], ids: list[str]) -> np.ndarray:
    where = {image: k for k, image in enumerate(index)}
    return np.fromiter((where[i] for i in ids), dtype=np.intp, count=len(ids))


def _zoo_version() -> str:
    import zoo

    return zoo.__version__


# --- card and summary ------------------------------------------------------------------------


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def ensemble_card(info: dict) -> str:
    """``card.md``: what the ensemble combines, how, how it scores, what it is for."""
    val = info["metrics"]["val"]
    data = info["data"]
    lines = [
        f"# {info['name']}",
        "",
        info.get("description") or f"A {info['rule']} ensemble of {len(info['members'])} members.",
        "",
        "## Intended use",
        "Research on skin-lesion classification and ensembling. **Not for diagnosis**: it has not "
        "been validated clinically, and its scores on one data set do not carry over to other "
        "populations, devices or clinics.",
        "",
        "## Combination",
        f"- Rule `{info['rule']}`"
        + (f" with options {info['options']}" if info["options"] else "")
        + ", fitted on the validation split only (never on the test split)",
        f"- Test-time augmentation `{info['tta']}`; prior correction "
        + ("per member, to uniform priors" if info["prior_correction"] else "off"),
        f"- Data: `{data.get('source')}`, fingerprint `{data.get('fingerprint')}`; "
        f"validation {len(info['split']['ids']['val'])} images, test "
        f"{len(info['split']['ids']['test'])} images",
        "",
        "## Members (validation, after TTA and prior correction)",
        "| member | weight | balanced accuracy | macro AUC |",
        "|---|---|---|---|",
    ]
    for m in info["members"]:
        mv = m["metrics"]["val"]
        lines.append(
            f"| {m['name']} | {m['weight']:.3f} | {_fmt(mv['balanced_accuracy'])} | "
            f"{_fmt(mv['macro_auc'])} |"
        )
    lines.append(
        f"| **ensemble** | 1.000 | {_fmt(val['balanced_accuracy'])} | {_fmt(val['macro_auc'])} |"
    )
    lines += [
        "",
        "Member files are recorded by sha256; the ensemble refuses to run when a member changes. "
        "Rebuild it with `zoo ensemble build` after retraining a member.",
        "",
    ]
    return "\n".join(lines)


def print_summary(info: dict, path: Path) -> None:
    """A table of the members (weight, val balanced accuracy, val AUC), then the ensemble."""
    from rich.table import Table

    from zoo import console

    if console.is_quiet():
        return
    table = Table(
        title=f"ensemble {info['name']}: {info['rule']}, tta {info['tta']}, prior correction "
        + ("on" if info["prior_correction"] else "off")
    )
    for column in ("member", "weight", "val bal. acc.", "val AUC"):
        table.add_column(column, justify="left" if column == "member" else "right")
    for m in info["members"]:
        mv = m["metrics"]["val"]
        table.add_row(
            m["name"], f"{m['weight']:.3f}", _fmt(mv["balanced_accuracy"]), _fmt(mv["macro_auc"])
        )
    val = info["metrics"]["val"]
    table.add_section()
    table.add_row(
        f"[bold]{info['name']}[/bold] (ensemble)",
        "",
        f"[bold]{_fmt(val['balanced_accuracy'])}[/bold]",
        f"[bold]{_fmt(val['macro_auc'])}[/bold]",
    )
    console.console.print(table)
    console.info(f"saved to {path} in {info['build_seconds']:.2f} s")


def build_command(args, workspace: Path) -> int:
    """``zoo ensemble build FILE.toml``."""
    if getattr(args, "ensemble_command", "build") != "build":
        raise ZooError(f"unknown ensemble action {args.ensemble_command!r}; use build")
    from zoo.locks import hold

    spec = load_spec(args.spec)
    with hold(ensembles_dir(workspace) / spec.name, what=f"zoo ensemble build {spec.name}"):
        path = build_ensemble(
            spec, workspace=workspace, operating_point=getattr(args, "operating_point", None)
        )
    info = json.loads((path / ENSEMBLE_FILE).read_text(encoding="utf-8"))
    print_summary(info, path)
    return 0

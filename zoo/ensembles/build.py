"""``zoo ensemble build FILE.toml``: combine saved members into a built ensemble.

The builder works on the members' cached predictions (``predictions/<split>[.<tta>].csv``);
only a missing TTA variant is computed, through :func:`zoo.inference.target.member_probabilities`.
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
classes, data, split ids, validation metrics, build time, and ``reduces_to``: the member
that gets all the weight, if one does), ``predictions/val.csv`` and
``predictions/test.csv`` (ISIC format) and ``card.md``.
"""

from __future__ import annotations

import json
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from zoo.ensembles.card import ensemble_card, fmt_score, reduction_note
from zoo.ensembles.combine import PredictionSet, combiner_class
from zoo.ensembles.spec import EnsembleSpec, Selection, find_spec, load_spec, resolve_members
from zoo.errors import ZooError
from zoo.inference.members import Member, list_members
from zoo.scoring.headline import headline_metrics
from zoo.scoring.priors import PriorCorrection
from zoo.store import (
    ENSEMBLE_FILE,
    MODEL_FILE,
    EnsembleRecord,
    Layout,
    labels_fingerprint,
    member_hashes,
    positions,
    prediction_key,
    predictions_file,
    predictions_frame,
    rows_for,
    tta_name,
    write_predictions,
)

__all__ = ["build_command", "build_ensemble", "check_compatible", "correct_priors"]

# Rules whose fit learns nothing from the data (uniform weights); they need no shared val split.


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
        cache = Layout(self.workspace).labels_cache(fingerprint)
        if cache.is_file():
            try:
                frame = pd.read_csv(cache, dtype=str, keep_default_na=False)
                labels = pd.Series(frame["label"].to_numpy(), index=frame["image"].to_numpy())
            except (OSError, KeyError, ValueError, pd.errors.ParserError):
                labels = None
            if labels is not None and labels_fingerprint(labels.index, labels) == fingerprint:
                return labels
        records = self().records
        labels = pd.Series(records["label"].astype(str).to_numpy(), index=records.index)
        from zoo.store.workspace import atomic_write_csv

        cache.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_csv(
            cache, pd.DataFrame({"image": labels.index, "label": labels.to_numpy()}), index=False
        )
        return labels


def member_split_probabilities(
    member: Member, part: str, *, tta: str, dataset, workspace: Path, model_sha256: str
) -> np.ndarray:
    """A member's raw probabilities on its own ``part`` split, rows in ``split_ids(part)`` order.

    Read from the member's prediction cache (:class:`zoo.store.PredictionCache`) when the
    entry is current; otherwise computed and cached by
    :func:`zoo.inference.target.member_probabilities`, which needs the model and ``dataset()``
    (a callable returning the members' data set).
    """
    ids = member.split_ids(part)
    key = prediction_key(part, tta)
    frame = member.cache.read(key, ids, tta=tta, model_sha256=model_sha256)
    what = str(member.predictions_file(key))
    if frame is None:
        from zoo.inference.target import member_probabilities

        frame = member_probabilities(member, dataset(), ids, tta=tta, workspace=workspace)
        what = f"member {member.path.name}'s {key} predictions"
    return rows_for(frame, ids, member.classes, what=what)


def correct_priors(member: Member, probabilities: np.ndarray) -> np.ndarray:
    """Prior correction to uniform priors from the member's effective training priors."""
    return PriorCorrection().fit(member.effective_priors).transform(probabilities)


# --- labels ---------------------------------------------------------------------------------


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
    sha256: dict[str, str]  # of model.keras and member.json, as loaded
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
        f"combine = {value(spec.combine)}",
        f"prior_correction = {value(spec.prior_correction)}",
        f"tta = {value(spec.tta)}",
    ]
    lines += ["", "[members]", f"names = {value(list(spec.members))}"]
    lines += [f"{k} = {value(v)}" for k, v in asdict(spec.select).items() if v]
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
    """Build the ensemble ``spec`` (a definition's name or file, or an :class:`EnsembleSpec`)
    and save it.

    Returns ``<workspace>/ensembles/<name>/``. Fits only on the validation split, and so
    chooses the threshold of ``operating_point`` (``CLASS:sensitivity=X|specificity=X``).
    """
    started = time.perf_counter()
    workspace = Path(workspace)
    if not isinstance(spec, EnsembleSpec):
        spec = load_spec(spec) if isinstance(spec, Path) else find_spec(spec, workspace=workspace)
    tta_name(spec.tta)  # an unknown scheme is refused before any work
    if operating_point is not None:
        from zoo.scoring.operating_points import parse_operating_point

        parse_operating_point(operating_point)  # a malformed option fails before any work
    saved = list_members(workspace)
    # member.json is read only to select by recipe, data, image size or seed
    available = {m.path.name: m.info for m in saved} if spec.select != Selection() else None
    names = resolve_members(spec, available or [m.path.name for m in saved])
    members = [Member(Layout(workspace).member(name)) for name in names]
    check_compatible(members, shared_val=combiner_class(spec.combine).fits_on_validation)
    first = members[0]
    dataset = _DatasetLoader(first.info["data"], workspace)
    labels = _LabelsBySplit(dataset.labels(), first.classes, source=first.info["data"]["source"])
    test_ids = first.split_ids("test")
    inputs = [
        _member_inputs(m, spec, dataset, labels, test_ids=test_ids, workspace=workspace)
        for m in members
    ]
    val_ids, val_shared = _shared_val_ids(members)
    combiner = spec.make_combiner()
    val_set = _fit(combiner, spec, inputs, val_ids)
    test_set = _prediction_set("test", test_ids, inputs, [item.test for item in inputs])
    outputs = {"test": (test_ids, combiner.predict(test_set))}
    if val_set is not None:
        outputs["val"] = (val_ids, combiner.predict(val_set))
    record = _ensemble_record(spec, combiner, inputs, workspace=workspace)
    record.split = {"val_shared": val_shared, "ids": {"val": list(val_ids), "test": test_ids}}
    no_val = (np.zeros(0, dtype=np.intp), np.zeros((0, len(first.classes))))
    val_scored = (val_set.labels, outputs["val"][1]) if val_set is not None else no_val
    record.metrics = {"val": headline_metrics(*val_scored)}
    if operating_point is not None:
        record.operating_point = _choose_operating_point(operating_point, spec, val_set, val_scored)
    final = Layout(workspace).ensemble(spec.name)
    served = _served_outputs(spec, dataset, val_ids, val_scored) if val_set is not None else None
    if served is not None:
        served = (*served, operating_point)
    return _save(record, outputs, final, started=started, served=served)


def _served_outputs(spec: EnsembleSpec, dataset, val_ids, val_scored):
    """What ``calibration.json`` is fitted on: the ensemble's default validation outputs, their
    labels and lesions; None for a rank blend, whose scores are not probabilities."""
    if spec.combine == "rank":
        return None
    labels, probabilities = val_scored
    try:  # the lesions, for a grouped cross-validation; else each image its own lesion
        groups = dataset().lesion_groups(list(val_ids))
    except (ZooError, OSError, KeyError):
        groups = None
    settings = {"tta": spec.tta, "prior_correction": spec.prior_correction}
    return settings, probabilities, labels, None if groups is None else groups.to_numpy()


def _choose_operating_point(option: str, spec: EnsembleSpec, val_set, val_scored) -> dict:
    """The threshold of ``option`` chosen on the ensemble's validation output."""
    from zoo.scoring.operating_points import choose_operating_point

    if val_set is None:
        raise ZooError(
            f"--operating-point {option}: ensemble {spec.name!r} has no validation images to "
            "choose the threshold on; train the members with a validation split"
        )
    labels, probabilities = val_scored
    return choose_operating_point(
        option, classes=list(val_set.classes), labels=labels, probabilities=probabilities
    ).to_dict()


class _LabelsBySplit:
    """Class indices of each member's validation ids, looked up once per distinct split."""

    def __init__(self, labels: pd.Series, classes: list[str], *, source: str):
        self.labels, self.classes, self.source = labels, classes, source
        self._seen: dict[tuple[str, ...], np.ndarray] = {}

    def __call__(self, member: Member) -> np.ndarray:
        ids = tuple(member.split_ids("val"))
        if ids not in self._seen:
            self._seen[ids] = _label_indices(
                self.labels, list(ids), self.classes, member=member.path.name, source=self.source
            )
        return self._seen[ids]


def _member_inputs(member, spec, dataset, labels, *, test_ids, workspace) -> _MemberInputs:
    """One member's validation and test probabilities (TTA, then prior correction if asked)."""
    sha256 = member_hashes(member.path)
    probs = {}
    for part in ("val", "test"):
        p = member_split_probabilities(
            member,
            part,
            tta=spec.tta,
            dataset=dataset,
            workspace=workspace,
            model_sha256=sha256[MODEL_FILE],
        )
        probs[part] = correct_priors(member, p) if spec.prior_correction else p
    own_test = member.split_ids("test")
    if own_test != test_ids:
        probs["test"] = probs["test"][positions(own_test, test_ids)]
    return _MemberInputs(member, sha256, probs["val"], probs["test"], labels(member))


def _shared_val_ids(members: list[Member]) -> tuple[list[str], bool]:
    """The first member's val ids that every member holds, and whether all hold the same.

    Members of a mean/rank ensemble may hold different val splits (cross-validation folds):
    the ensemble is scored on the val images they all share."""
    val_ids = members[0].split_ids("val")
    own = [set(m.split_ids("val")) for m in members[1:]]
    if all(ids == set(val_ids) for ids in own):
        return val_ids, True
    shared = set(val_ids).intersection(*own)
    return [i for i in val_ids if i in shared], False


def _in_order(values: np.ndarray, own: list[str], ids: list[str]) -> np.ndarray:
    return values if own == ids else values[positions(own, ids)]


def _prediction_set(split, ids, inputs, values, labels=None) -> PredictionSet:
    first = inputs[0].member
    return PredictionSet(
        split=split,
        ids=tuple(ids),
        classes=tuple(first.classes),
        members=tuple(item.member.path.name for item in inputs),
        probabilities=np.stack(values),
        labels=labels,
    )


def _fit(combiner, spec: EnsembleSpec, inputs: list[_MemberInputs], val_ids: list[str]):
    """Fit ``combiner`` on the shared validation images; return that set (None: none)."""
    names = tuple(item.member.path.name for item in inputs)
    if not val_ids:
        if combiner_class(spec.combine).fits_on_validation:
            raise ZooError(
                f"ensemble {spec.name!r}: members {', '.join(names)} have no validation images, "
                f'and combine = {spec.combine!r} fits on them; use combine = "mean" or train '
                "the members with a validation split"
            )
        _fit_without_data(combiner, names, tuple(inputs[0].member.classes))
        return None
    values = [_in_order(i.val, i.member.split_ids("val"), val_ids) for i in inputs]
    labels = _in_order(inputs[0].val_labels, inputs[0].member.split_ids("val"), val_ids)
    val_set = _prediction_set("val", val_ids, inputs, values, labels)
    combiner.fit(val_set)
    return val_set


def _ensemble_record(spec, combiner, inputs, *, workspace: Path) -> EnsembleRecord:
    """``ensemble.json`` but for ``split`` and ``metrics`` (filled in by the caller)."""
    members = []
    for item, weight in zip(inputs, np.asarray(combiner.weights_, dtype=float), strict=True):
        name = item.member.path.name
        members.append(
            {
                "name": name,
                "recipe": item.member.info.get("recipe"),
                "path": Layout(workspace).member(name).relative_to(workspace).as_posix(),
                "sha256": item.sha256,
                "weight": float(weight),
                "metrics": {"val": headline_metrics(item.val_labels, item.val)},
            }
        )
    first = inputs[0].member
    return EnsembleRecord(
        name=spec.name,
        description=spec.description,
        spec={
            "file": None if spec.path is None else str(Path(spec.path).resolve()),
            "text": _spec_text(spec),
            "resolved_members": [item.member.path.name for item in inputs],
        },
        rule=spec.combine,
        options=dict(spec.options),
        prior_correction=bool(spec.prior_correction),
        tta=tta_name(spec.tta),
        members=members,
        weights={m["name"]: m["weight"] for m in members},
        combiner=combiner.to_dict(),
        classes=list(first.classes),
        data=first.info["data"],
        split={},
        metrics={},
        versions={
            "zoo": _zoo_version(),
            "numpy": np.__version__,
            "pandas": pd.__version__,
            "python": platform.python_version(),
        },
        created=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        extra={"reduces_to": combiner.sole_member()},
    )


def _store_point(folder: Path, calibration, option: str, probabilities, labels) -> None:
    """Put ``--operating-point`` into ``calibration.json``, chosen on calibrated outputs."""
    from zoo.scoring.calibrators import calibrate, calibrator_from_dict
    from zoo.scoring.operating_points import choose_operating_point
    from zoo.store.calibration import CALIBRATION_FILE

    classes = calibration.classes
    calibrator = calibrator_from_dict(calibration.method, calibration.parameters, len(classes))
    calibrated = calibrate(calibrator, probabilities)
    point = choose_operating_point(option, classes=classes, labels=labels, probabilities=calibrated)
    calibration.operating_point = point.to_dict()
    calibration.write(folder / CALIBRATION_FILE)


def _save(
    record: EnsembleRecord, outputs: dict, final: Path, *, started: float, served=None
) -> Path:
    """Write the ensemble folder whole (predictions, calibration, card, ensemble.json), then
    swap it in."""
    from zoo.scoring.calibrators import write_served_outputs
    from zoo.store.workspace import atomic_directory, atomic_write_text

    with atomic_directory(final) as tmp:
        if served is not None:
            settings, probabilities, labels, groups, option = served
            calibration = write_served_outputs(
                tmp, classes=record.classes, probabilities=probabilities, labels=labels,
                groups=groups, **settings,
            )  # fmt: skip
            if option is not None:  # the asked-for point, chosen on the calibrated outputs
                _store_point(tmp, calibration, option, probabilities, labels)
        for part, (ids, values) in outputs.items():
            frame = predictions_frame(ids, values, record.classes)
            write_predictions(predictions_file(tmp, part), frame)
        atomic_write_text(tmp / "card.md", ensemble_card(record.to_dict()))
        record.build_seconds = time.perf_counter() - started
        record.write(tmp / ENSEMBLE_FILE)
    return final


def _zoo_version() -> str:
    import zoo

    return zoo.__version__


# --- card and summary ------------------------------------------------------------------------


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
            m["name"],
            f"{m['weight']:.3f}",
            fmt_score(mv["balanced_accuracy"]),
            fmt_score(mv["macro_auc"]),
        )
    val = info["metrics"]["val"]
    table.add_section()
    table.add_row(
        f"[bold]{info['name']}[/bold] (ensemble)",
        "",
        f"[bold]{fmt_score(val['balanced_accuracy'])}[/bold]",
        f"[bold]{fmt_score(val['macro_auc'])}[/bold]",
    )
    console.console.print(table)
    if info.get("reduces_to"):
        console.info(f"note: {reduction_note(info)}")
    console.info(f"saved to {path} in {info['build_seconds']:.2f} s")


def build_command(spec: str | Path, workspace: Path, *, operating_point: str | None = None) -> int:
    """``zoo ensemble build NAME|FILE.toml``: build under the ensemble's lock, print the table."""
    from zoo.store.locks import hold

    spec = find_spec(str(spec), workspace=workspace)
    folder = Layout(workspace).ensemble(spec.name)
    with hold(folder, what=f"zoo ensemble build {spec.name}"):
        path = build_ensemble(spec, workspace=workspace, operating_point=operating_point)
    print_summary(EnsembleRecord.load(path / ENSEMBLE_FILE).to_dict(), path)
    return 0

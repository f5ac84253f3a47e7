"""Label maps: ``{"source label": "model class"}`` JSON files that put a data set's labels
onto a model's (or a training run's) classes. ``zoo evaluate --label-map`` and the sources of a
data TOML (:mod:`zoo.data.combined`) use the same files and rules."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from pathlib import Path

from zoo.data.dataset import Dataset
from zoo.errors import ZooError


def read_label_map(path: str | Path, *, option: str = "--label-map") -> dict[str, str]:
    """A ``{"source label": "model class"}`` JSON file."""
    path = Path(path)
    try:
        mapping = json.loads(path.read_text())
    except OSError as exc:
        raise ZooError(f"{option} {path}: cannot read it ({exc.strerror or exc}).") from None
    except ValueError as exc:  # JSONDecodeError, or UnicodeDecodeError: not UTF-8 text
        raise ZooError(f"{option} {path}: not valid JSON text ({exc}).") from None
    return checked_mapping(mapping, where=f"{option} {path}")


def checked_mapping(mapping, *, where: str = "label_map") -> dict[str, str]:
    if not isinstance(mapping, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in mapping.items()
    ):
        raise ZooError(
            f'{where} must be a JSON object of strings {{"source label": "model class"}}; '
            f"got {mapping!r}."
        )
    return {k.strip(): v.strip() for k, v in mapping.items()}


def apply_label_map(
    dataset: Dataset,
    mapping: Mapping[str, str] | None,
    classes: Sequence[str],
    *,
    ignore_unmapped: bool = False,
) -> Dataset:
    """``dataset`` relabelled onto the model's ``classes``.

    A label is kept if it is a class (or one up to case), else translated by ``mapping``. Map
    targets must be classes. Images with other labels are an error that lists those labels,
    or are dropped with a note when ``ignore_unmapped``.
    """
    classes = [str(c) for c in classes]
    mapping = checked_mapping(mapping or {})
    bad = sorted({v for v in mapping.values() if v not in classes})
    if bad:
        raise ZooError(
            f"label map target(s) {', '.join(map(repr, bad))} are not classes of the model; "
            f"map onto one of {', '.join(classes)}."
        )
    labels = dataset.records["label"].astype(str)
    lookup, notes = _label_lookup(labels.unique(), mapping, classes)
    mapped = labels.map(lookup)
    unmapped = mapped.isna().to_numpy()
    if unmapped.any():
        counts = labels[unmapped].value_counts().sort_index()
        listed = ", ".join(f"{label!r} ({n} images)" for label, n in counts.items())
        if not ignore_unmapped:
            raise ZooError(
                f"label(s) {listed} of {dataset.spec} are not classes of the model "
                f"({', '.join(classes)}); map them with --label-map FILE "
                '(JSON {"source label": "model class"}) or drop them with --ignore-unmapped.'
            )
        notes.append(f"dropped {int(unmapped.sum())} image(s) with unmapped label(s) {listed}")
    keep = ~unmapped
    if not keep.any():
        raise ZooError(f"no image of {dataset.spec} is left after mapping its labels.")
    records = dataset.records.loc[keep].assign(label=mapped[keep].to_numpy())
    weights = None if dataset.weights is None else dataset.weights.loc[records.index]
    return dataclasses.replace(
        dataset,
        records=records,
        classes=tuple(classes),
        weights=weights,
        notes=[*dataset.notes, *notes],
    )


def _label_lookup(labels, mapping: dict[str, str], classes: list[str]):
    lower = {c.lower(): c for c in classes}
    lookup, notes = {}, []
    for label in sorted(labels):
        if label in mapping:
            lookup[label] = mapping[label]
        elif label in classes:
            lookup[label] = label
        elif label.lower() in lower:
            lookup[label] = lower[label.lower()]
            notes.append(f"label {label!r} taken as class {lookup[label]!r} (same up to case)")
    return lookup, notes

"""Several data sets as one: ``--data A --data B`` or a data TOML listing sources.

Each source is read by its own reader (:mod:`zoo.data.sources`), relabelled onto the run's
classes with its label map (:mod:`zoo.data.label_maps`), and namespaced: image ids and lesion
groups become ``<source>/<id>``, so two sources can never share a group by accident. A source
marked ``unknown = true`` gives every image the class ``UNK``. The combined set is an ordinary
:class:`Dataset` whose records carry a ``source`` column; its ``sources`` list is what
``member.json`` records about each source. See docs/formats.md for the TOML format.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from zoo.data.dataset import Dataset, safe_name
from zoo.data.label_maps import apply_label_map, checked_mapping, read_label_map
from zoo.data.sources import KINDS, load_source
from zoo.errors import ZooError

SEPARATOR = " + "  # joins the specs of repeated --data into one recorded spec
UNKNOWN_CLASS = "UNK"
SOURCE_KEYS = {"data", "name", "label_map", "weight", "unknown", "images", "ignore_unmapped"}


@dataclass(frozen=True)
class SourceSpec:
    """One entry of a data TOML (or one ``--data``)."""

    data: str
    name: str | None = None
    label_map: dict[str, str] | None = None
    label_map_file: str | None = None
    weight: float = 1.0
    unknown: bool = False
    images: str | None = None
    ignore_unmapped: bool = False


def is_combined(spec: str | None) -> bool:
    """True for a data TOML file or specs joined by :data:`SEPARATOR`."""
    return bool(spec) and (SEPARATOR in spec or spec.strip().lower().endswith(".toml"))


def join_specs(specs: list[str]) -> str | None:
    """The one ``--data`` value that repeated ``--data`` options stand for."""
    return None if not specs else specs[0] if len(specs) == 1 else SEPARATOR.join(specs)


def read_data_toml(path: Path) -> tuple[list[str] | None, list[SourceSpec]]:
    """``(classes or None, sources)`` of a data TOML; paths are relative to the file."""
    path = Path(path).expanduser()
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise ZooError(f"--data {path}: cannot read it ({exc.strerror or exc}).") from None
    except tomllib.TOMLDecodeError as exc:
        raise ZooError(f"--data {path}: not valid TOML ({exc}).") from None
    extra = sorted(set(data) - {"classes", "sources"})
    if extra:
        raise ZooError(
            f"{path}: unknown key(s) {', '.join(extra)}; a data TOML has classes and [[sources]]."
        )
    classes = data.get("classes")
    if classes is not None and (
        not isinstance(classes, list) or not all(isinstance(c, str) and c for c in classes)
    ):
        raise ZooError(f"{path}: classes must be a list of class names; got {classes!r}.")
    entries = data.get("sources")
    if not isinstance(entries, list) or not entries:
        raise ZooError(f"{path}: no [[sources]]; list at least one source with data = SPEC.")
    return classes, [_source(entry, k, path) for k, entry in enumerate(entries, start=1)]


def _source(entry, number: int, file: Path) -> SourceSpec:
    where = f"{file} source {number}"
    if not isinstance(entry, dict) or not isinstance(entry.get("data"), str):
        raise ZooError(f"{where}: needs data = SPEC (e.g. ham10000:DIR); got {entry!r}.")
    extra = sorted(set(entry) - SOURCE_KEYS)
    if extra:
        raise ZooError(
            f"{where}: unknown key(s) {', '.join(extra)}; expected {', '.join(sorted(SOURCE_KEYS))}."
        )
    weight = entry.get("weight", 1.0)
    if isinstance(weight, bool) or not isinstance(weight, int | float) or not weight > 0:
        raise ZooError(f"{where}: weight must be a number above 0; got {weight!r}.")
    for key in ("unknown", "ignore_unmapped"):
        if not isinstance(entry.get(key, False), bool):
            raise ZooError(f"{where}: {key} must be true or false; got {entry[key]!r}.")
    label_map, label_map_file = entry.get("label_map"), None
    if isinstance(label_map, str):
        label_map_file = str(_relative(label_map, file))
        label_map = read_label_map(label_map_file, option=f"{where} label_map")
    elif label_map is not None:
        label_map = checked_mapping(label_map, where=f"{where} label_map")
    return SourceSpec(
        data=_relative_spec(entry["data"], file),
        name=entry.get("name"),
        label_map=label_map,
        label_map_file=label_map_file,
        weight=float(weight),
        unknown=entry.get("unknown", False),
        images=str(_relative(entry["images"], file)) if entry.get("images") else None,
        ignore_unmapped=entry.get("ignore_unmapped", False),
    )


def _relative(text: str, file: Path) -> Path:
    path = Path(text).expanduser()
    return path if path.is_absolute() else file.parent / path


def _relative_spec(spec: str, file: Path) -> str:
    """A source spec with its path made relative to the TOML's folder."""
    kind, sep, rest = spec.partition(":")
    if spec in ("demo", "demo:"):
        return "demo"
    if sep and kind in KINDS:
        return f"{kind}:{_relative(rest, file)}"
    return str(_relative(spec, file))


def _unique_name(name: str, taken: set[str]) -> str:
    candidate, k = name, 2
    while candidate in taken:
        candidate, k = f"{name}-{k}", k + 1
    taken.add(candidate)
    return candidate


def load_combined(spec: str, *, workspace: Path, images: Path | None = None) -> Dataset:
    """The data set of a data TOML or of specs joined by :data:`SEPARATOR`."""
    if SEPARATOR in spec:
        classes = None
        sources = [SourceSpec(data=s.strip()) for s in spec.split(SEPARATOR)]
        name = None
    else:
        classes, sources = read_data_toml(Path(spec))
        name = safe_name(Path(spec).stem)
    read = []
    for source in sources:
        if is_combined(source.data):
            raise ZooError(
                f"--data {spec}: source {source.data} is itself combined; list its sources instead."
            )
        folder = Path(source.images) if source.images else images
        read.append((source, load_source(source.data, workspace=workspace, images=folder)))
    return combine(read, spec=spec, classes=classes, name=name)


def _run_classes(read: list[tuple[SourceSpec, Dataset]], classes: list[str] | None) -> list[str]:
    """The TOML's classes, else the first known source's; ``UNK`` last when a source is unknown."""
    known = [d for s, d in read if not s.unknown]
    if classes is None:
        if not known:
            raise ZooError("every source is unknown = true; at least one source must be labelled.")
        classes = list(known[0].classes)
    if any(s.unknown for s, _ in read) and UNKNOWN_CLASS not in classes:
        classes = [*classes, UNKNOWN_CLASS]
    return list(classes)


def combine(
    read: list[tuple[SourceSpec, Dataset]],
    *,
    spec: str,
    classes: list[str] | None = None,
    name: str | None = None,
) -> Dataset:
    """One :class:`Dataset` of ``(source spec, data set)`` pairs, relabelled and namespaced."""
    classes = _run_classes(read, classes)
    taken: set[str] = set()
    frames, weights, problems, notes, described = [], [], [], [], []
    for source, dataset in read:
        tag = _unique_name(safe_name(source.name or dataset.name), taken)
        raw = dataset
        if source.unknown:
            mapped = dataset.labelled()
            mapped = dataclasses.replace(
                mapped,
                records=mapped.records.assign(label=UNKNOWN_CLASS),
                classes=tuple(classes),
            )
        else:
            try:
                mapped = apply_label_map(
                    dataset,
                    source.label_map,
                    classes,
                    ignore_unmapped=source.ignore_unmapped,
                )
            except ZooError as exc:
                raise ZooError(
                    f"source {tag} ({source.data}): {exc} In a data TOML, give the source a "
                    "label_map (file or table) or ignore_unmapped = true."
                ) from None
        raw_labels = dataset.records["label"].astype(str)
        mapped_labels = mapped.records["label"].reindex(raw_labels.index)
        records = mapped.records.copy()
        records.index = pd.Index([f"{tag}/{i}" for i in records.index], name="image")
        records["group"] = [f"{tag}/{g}" for g in records["group"]]
        records["source"] = tag
        frames.append(records)
        if mapped.weights is not None:
            weights.append(pd.Series(mapped.weights.to_numpy(), index=records.index))
        problems += [f"[{tag}] {p}" for p in dataset.problems]
        notes += [f"[{tag}] {n}" for n in mapped.notes]
        described.append(
            {
                "name": tag,
                "source": raw.spec,
                "fingerprint": raw.fingerprint,
                "count": len(records),
                "class_counts": {c: int(v) for c, v in records["label"].value_counts().items()},
                "weight": source.weight,
                "unknown": source.unknown,
                "label_map": source.label_map_file or source.label_map,
                "ignore_unmapped": source.ignore_unmapped,
                "label_coverage": label_coverage(raw_labels, mapped_labels),
            }
        )
    records = pd.concat(frames)
    score_weights = None
    if weights:
        score_weights = pd.concat(weights).reindex(records.index).fillna(1.0)
    return Dataset(
        name=name or "-".join(d["name"] for d in described),
        spec=spec,
        records=records,
        classes=tuple(classes),
        problems=problems,
        notes=notes,
        weights=score_weights,
        is_demo=all(d.is_demo for _, d in read),
        defaults=dict(read[0][1].defaults) if all(d.is_demo for _, d in read) else {},
        sources=described,
    )


def label_coverage(raw: pd.Series, mapped: pd.Series) -> dict[str, dict]:
    """``{source label: {"class": run class or None (dropped), "images": n}}``."""
    table = pd.DataFrame({"raw": raw.to_numpy(), "mapped": mapped.to_numpy()})
    coverage = {}
    for label, rows in table.groupby("raw", sort=True):
        target = rows["mapped"].dropna().unique()
        coverage[str(label)] = {
            "class": str(target[0]) if len(target) else None,
            "images": int(len(rows)),
        }
    return coverage


def source_weights(dataset: Dataset) -> pd.Series | None:
    """Per-image training weight from each source's ``weight`` (None when all are 1)."""
    if not dataset.sources or all(s["weight"] == 1.0 for s in dataset.sources):
        return None
    by_source = {s["name"]: s["weight"] for s in dataset.sources}
    return dataset.records["source"].map(by_source).astype(float)


def split_counts(dataset: Dataset, split) -> dict[str, dict[str, int]]:
    """``{source: {part: images}}`` of a split of a combined data set."""
    result = {s["name"]: {} for s in dataset.sources or []}
    for part in ("train", "val", "test"):
        counts = dataset.records.loc[list(split.ids(part)), "source"].value_counts()
        for source in result:
            result[source][part] = int(counts.get(source, 0))
    return result

"""Readers for data sets in their published layouts, chosen by ``--data SPEC``.

Specs: ``ham10000:DIR``, ``isic:CSV``, ``folder:DIR``, ``csv:FILE``, ``demo``; without
a prefix the kind is detected from the path. A reader lists files and labels only; problems
it finds (missing image, unknown label, duplicate id) are collected, not raised, so that
every problem is reported at once before training.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import pandas as pd

import zoo.data.demo as demo
from zoo.data.dataset import Dataset, safe_name
from zoo.errors import ZooError, close_matches

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")
HAM10000_CLASSES = ("akiec", "bcc", "bkl", "df", "mel", "nv", "vasc")
KINDS = ("ham10000", "isic", "folder", "csv", "demo")
FOLDER_KINDS = {
    "ham10000": "DIR/HAM10000_metadata.csv and the images",
    "folder": "DIR/<class name>/<image>.jpg",
}
FILE_KINDS = {"isic": "ISIC ground truth", "csv": "columns image,label[,group]"}
# The source columns each of zoo.data.dataset.METADATA_COLUMNS is read from (the first present
# wins): zoo's own name, HAM10000's metadata, the ISIC archive's and challenges' metadata CSVs.
METADATA_ALIASES = {
    "sex": ("sex",),
    "age": ("age", "age_approx"),
    "site": ("site", "localization", "anatom_site_general", "anatom_site_general_challenge"),
    "confirmation": ("confirmation", "dx_type", "diagnosis_confirm_type"),
}


def _index_images(folders: list[Path]) -> dict[str, Path]:
    """Image stem → path for every image file directly inside ``folders`` (first wins)."""
    found: dict[str, Path] = {}
    for folder in folders:
        if not folder.is_dir():
            continue
        with os.scandir(folder) as entries:
            for entry in entries:
                stem, ext = os.path.splitext(entry.name)
                if ext.lower() in IMAGE_EXTENSIONS and stem not in found:
                    found[stem] = Path(entry.path)
    return found


def _read_csv(path: Path) -> pd.DataFrame:
    if path.is_dir():
        raise ZooError(f"cannot read {path}: it is a folder, not a CSV file; pass the CSV file.")
    try:
        return pd.read_csv(path, dtype=str, keep_default_na=False)
    except UnicodeDecodeError as exc:
        raise ZooError(
            f"cannot read {path}: it is not UTF-8 text (it holds byte "
            f"0x{exc.object[exc.start]:02x}); save it as UTF-8 and run again."
        ) from None
    except pd.errors.EmptyDataError:
        raise ZooError(
            f"cannot read {path}: the file is empty; expected a CSV with a header."
        ) from None
    except (OSError, pd.errors.ParserError) as exc:
        raise ZooError(f"cannot read {path}: {str(exc).splitlines()[0]}") from None


def _require_columns(frame: pd.DataFrame, path: Path, columns: tuple[str, ...]) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ZooError(
            f"{path} is missing column(s) {', '.join(missing)}; it has {', '.join(frame.columns) or 'none'}."
        )


def _metadata(frame: pd.DataFrame) -> dict[str, pd.Series]:
    """The metadata columns ``frame`` has (:data:`METADATA_ALIASES`), as stripped text."""
    found = {}
    for column, aliases in METADATA_ALIASES.items():
        alias = next((a for a in aliases if a in frame.columns), None)
        if alias is not None:
            found[column] = frame[alias].fillna("").astype(str).str.strip()
    return found


def _build(
    name, spec, frame, *, id_col, label_col, group_col, paths, classes, source, **extra
) -> Dataset:
    """Common tail of every reader: duplicates, unknown labels, missing files → problems."""
    problems = []
    ids = frame[id_col].astype(str).str.strip()
    for image_id, rows in ids[ids.duplicated(keep=False)].groupby(ids).groups.items():
        lines = ", ".join(str(r + 2) for r in rows)  # +2: header line, 1-based
        problems.append(f"{source}: duplicate image id {image_id!r} on lines {lines}")
    labels = frame[label_col].astype(str).str.strip()
    for row, image_id, label in zip(frame.index, ids, labels, strict=True):  # row: 0-based line
        if label not in classes:
            problems.append(
                f"{source} line {row + 2} (image {image_id}): unknown label {label!r}; expected one of {', '.join(classes)}"
            )
    resolved = []
    for row, image_id in zip(frame.index, ids, strict=True):
        path = paths(image_id)
        if path is None:
            problems.append(f"{source} line {row + 2}: image {image_id!r} not found")
        resolved.append(str(path) if path is not None else "")
    groups = frame[group_col].astype(str).str.strip() if group_col else ids
    groups = groups.where(groups != "", ids)
    columns = {"path": resolved, "label": labels.to_numpy(), "group": groups.to_numpy()}
    columns.update({c: v.to_numpy() for c, v in _metadata(frame).items()})
    records = pd.DataFrame(columns, index=pd.Index(ids.to_numpy(), name="image"))
    records = records[~records.index.duplicated(keep="first")]
    return Dataset(
        name=name, spec=spec, records=records, classes=tuple(classes), problems=problems, **extra
    )


def read_ham10000(folder: Path) -> Dataset:
    """``DIR/HAM10000_metadata.csv``; images in ``DIR/images``, ``DIR/HAM10000_images_part_{1,2}`` or ``DIR``."""
    folder = Path(folder)
    metadata = folder / "HAM10000_metadata.csv"
    if not metadata.is_file():
        raise ZooError(f"ham10000:{folder}: no HAM10000_metadata.csv in that folder.")
    frame = _read_csv(metadata)
    _require_columns(frame, metadata, ("lesion_id", "image_id", "dx"))
    index = _index_images(
        [
            folder / "images",
            folder / "HAM10000_images_part_1",
            folder / "HAM10000_images_part_2",
            folder,
        ]
    )
    return _build(
        "ham10000",
        f"ham10000:{folder}",
        frame,
        id_col="image_id",
        label_col="dx",
        group_col="lesion_id",
        paths=index.get,
        classes=HAM10000_CLASSES,
        source=str(metadata),
    )


def read_demo(workspace: Path) -> Dataset:
    """The generated demo set (see :mod:`zoo.data.demo`)."""
    dataset = read_ham10000(demo.demo_folder(workspace))
    dataset.name, dataset.spec, dataset.is_demo = "demo", "demo", True
    dataset.defaults = dict(demo.DEFAULTS)
    return dataset


def read_demo_fine(workspace: Path) -> Dataset:
    """The demo set's variant with fine labels (``demo:fine``, for ``--partition``)."""
    dataset = read_csv_list(demo.demo_folder(workspace, fine=True) / "labels.csv")
    dataset.name, dataset.spec, dataset.is_demo = "demo-fine", "demo:fine", True
    dataset.defaults = dict(demo.DEFAULTS)
    return dataset


def _isic_name(path: Path) -> str:
    stem = path.stem.lower()
    for year in ("2020", "2019", "2018", "2017"):
        if year in stem:
            return f"isic{year}"
    return safe_name(stem)


def read_isic(csv: Path, *, images: Path | None = None) -> Dataset:
    """ISIC 2018/2019 ground truth: ``image`` + one-hot class columns (+ ``score_weight``).

    Images are looked up beside the CSV, in its ``images/`` folder, in a folder named like the
    CSV without ``_GroundTruth``, or in ``images``. An ISIC metadata CSV beside it with a
    ``lesion_id`` column is used for grouping. Classes without any image (ISIC 2019's ``UNK``)
    are dropped with a note.
    """
    csv = Path(csv)
    frame = _read_csv(csv)
    _require_columns(frame, csv, ("image",))
    class_cols = [c for c in frame.columns if c not in ("image", "score_weight")]
    if not class_cols:
        raise ZooError(
            f"{csv} has no class columns besides 'image'; expected one-hot columns like MEL, NV, …"
        )
    problems, labels = [], []
    try:
        onehot = frame[class_cols].astype(float)
    except ValueError:
        raise ZooError(
            f"{csv}: class columns {', '.join(class_cols)} must hold numbers 0 or 1."
        ) from None
    for row, values in enumerate(onehot.to_numpy()):
        hits = [c for c, v in zip(class_cols, values, strict=True) if v >= 0.5]
        if len(hits) != 1:
            problems.append(
                f"{csv} line {row + 2} (image {frame['image'].iloc[row]}): expected exactly one class set to 1, got {len(hits)}"
            )
        labels.append(hits[0] if len(hits) == 1 else "")
    frame = frame.assign(label=labels)
    present = [c for c in class_cols if (onehot[c] >= 0.5).any()]
    notes = [
        f"dropped class {c}: no image of it in {csv.name}" for c in class_cols if c not in present
    ]
    frame = _with_metadata_beside(csv, frame, notes)
    stem = csv.stem.replace("_GroundTruth", "").replace("_groundtruth", "")
    folders = [images] if images else []
    folders += [csv.parent / stem, csv.parent / f"{stem}_Input", csv.parent / "images", csv.parent]
    index = _index_images([Path(f) for f in folders])
    labels_ok = frame["label"] != ""
    dataset = _build(
        _isic_name(csv),
        f"isic:{csv}",
        frame[labels_ok],  # keep the index: problems name the CSV's own line numbers
        id_col="image",
        label_col="label",
        group_col="group",
        paths=index.get,
        classes=tuple(present),
        source=str(csv),
        notes=notes,
    )
    dataset.problems[:0] = problems
    if "score_weight" in frame.columns:  # by image id: rows were set aside, duplicates dropped
        weights = pd.to_numeric(frame.loc[labels_ok, "score_weight"], errors="coerce").fillna(1.0)
        weights.index = frame.loc[labels_ok, "image"].astype(str).str.strip()
        dataset.weights = weights[~weights.index.duplicated()].reindex(dataset.records.index)
    return dataset


def _with_metadata_beside(csv: Path, frame: pd.DataFrame, notes: list[str]) -> pd.DataFrame:
    """``frame`` with ``group`` from the first ISIC metadata CSV beside ``csv`` that has a
    ``lesion_id`` ("" without one), and the metadata columns (sex, age, site, …) of the one
    that covers most of its images, matched by ``image``; a note names each file used."""
    files = [(meta, _read_csv(meta)) for meta in sorted(csv.parent.glob("*etadata*.csv"))]
    frame = frame.assign(group="")
    for meta, extra in files:
        if {"image", "lesion_id"} <= set(extra.columns):
            frame["group"] = frame["image"].map(extra.set_index("image")["lesion_id"]).fillna("")
            notes.append(f"grouped by lesion_id from {meta.name}")
            break
    images = frame["image"].astype(str).str.strip()
    best, covered = None, 0
    for meta, extra in files:
        if "image" not in extra.columns or not _metadata(extra):
            continue
        extra = extra.assign(image=extra["image"].str.strip()).drop_duplicates("image")
        overlap = int(images.isin(extra["image"]).sum())
        if overlap > covered:
            best, covered = (meta, _metadata(extra.set_index("image"))), overlap
    if best is None:
        return frame
    meta, columns = best
    notes.append(f"metadata ({', '.join(columns)}) from {meta.name}")
    return frame.assign(**{c: images.map(v).fillna("") for c, v in columns.items()})


def read_folder(folder: Path) -> Dataset:
    """``DIR/<class name>/*.{jpg,jpeg,png}``; image ids are ``<class>/<file stem>``."""
    folder = Path(folder)
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise ZooError(
            f"folder:{folder} has no class sub-folders; expected DIR/<class name>/<image>.jpg."
        )
    rows, paths = [], {}
    for label in classes:
        for file in sorted((folder / label).iterdir()):
            if file.suffix.lower() in IMAGE_EXTENSIONS:
                image_id = f"{label}/{file.stem}"
                rows.append({"image": image_id, "label": label})
                paths[image_id] = file
    if not rows:
        raise ZooError(
            f"folder:{folder}: no images ({', '.join(IMAGE_EXTENSIONS)}) in its class folders."
        )
    return _build(
        safe_name(folder.name),
        f"folder:{folder}",
        pd.DataFrame(rows),
        id_col="image",
        label_col="label",
        group_col=None,
        paths=paths.get,
        classes=tuple(classes),
        source=str(folder),
    )


def read_csv_list(csv: Path, *, images: Path | None = None) -> Dataset:
    """A generic list: columns ``image`` (path or id), ``label``, optional ``group``.

    Relative paths are resolved against the CSV's folder; bare ids are looked up in
    ``images``, the CSV's folder and its ``images/`` folder.
    """
    csv = Path(csv)
    frame = _read_csv(csv)
    _require_columns(frame, csv, ("image", "label"))
    index = _index_images([p for p in (images, csv.parent, csv.parent / "images") if p])

    def find(value: str) -> Path | None:
        candidate = (csv.parent / value) if not os.path.isabs(value) else Path(value)
        if Path(value).suffix.lower() in IMAGE_EXTENSIONS:
            return candidate if candidate.is_file() else None
        return index.get(value)

    labels = sorted({v.strip() for v in frame["label"] if v.strip()})
    return _build(
        safe_name(csv.stem),
        f"csv:{csv}",
        frame,
        id_col="image",
        label_col="label",
        group_col="group" if "group" in frame.columns else None,
        paths=find,
        classes=tuple(labels),
        source=str(csv),
    )


def detect_kind(path: Path) -> str:
    """Which reader fits an un-prefixed path."""
    if path.is_dir():
        if (path / "HAM10000_metadata.csv").is_file():
            return "ham10000"
        return "folder"
    if path.is_file() and path.suffix.lower() == ".csv":
        columns = set(_read_csv(path).columns)
        if {"image", "label"} <= columns:
            return "csv"
        if "image" in columns:
            return "isic"
    raise ZooError(
        f"--data {path}: cannot tell what kind of data set this is. Prefix it with one of "
        "ham10000:, isic:, folder:, csv: (or use demo)."
    )


def load_source(spec: str | None, *, workspace: Path, images: Path | None = None) -> Dataset:
    """Read the one data set named by a ``--data`` spec (``None`` means the demo set)."""
    if spec in (None, "", "demo", "demo:"):
        return read_demo(workspace)
    if spec == "demo:fine":
        return read_demo_fine(workspace)
    kind, sep, rest = spec.partition(":")
    if sep and kind in KINDS:
        path = Path(rest).expanduser()
    elif sep and len(kind) > 1 and kind.isidentifier() and not Path(spec).expanduser().exists():
        raise ZooError(
            f"--data {spec}: unknown data kind {kind!r}.{close_matches(kind, list(KINDS))} "
            "Use ham10000:DIR, isic:CSV, folder:DIR, csv:FILE or demo."
        )
    else:
        kind, path = None, Path(spec).expanduser()
    if not path.exists():
        raise ZooError(f"--data {spec}: {path} does not exist.")
    kind = kind or detect_kind(path)
    if kind in FOLDER_KINDS and not path.is_dir():
        raise ZooError(
            f"--data {spec}: {path} is a file, but {kind}: needs a folder ({FOLDER_KINDS[kind]}); "
            "pass its folder, or csv:FILE / isic:CSV for a CSV file."
        )
    if kind in FILE_KINDS and not path.is_file():
        raise ZooError(
            f"--data {spec}: {path} is a folder, but {kind}: needs a CSV file ({FILE_KINDS[kind]}); "
            "pass the CSV file, or folder:DIR / ham10000:DIR for a folder."
        )
    readers: dict[str, Callable[..., Dataset]] = {
        "ham10000": lambda: read_ham10000(path),
        "isic": lambda: read_isic(path, images=images),
        "folder": lambda: read_folder(path),
        "csv": lambda: read_csv_list(path, images=images),
        "demo": lambda: read_demo(workspace),
    }
    return readers[kind]()


def collect_images(paths: Sequence[str]) -> list[Path]:
    """Image files named directly, and the images (jpg, png, …) under folders, recursively."""
    files: list[Path] = []
    for text in paths:
        path = Path(text).expanduser()
        if path.is_dir():
            files += sorted(
                f
                for f in path.rglob("*")
                if f.suffix.lower() in IMAGE_EXTENSIONS
                and f.is_file()
                and not any(part.startswith(".") for part in f.relative_to(path).parts)
            )
        elif path.is_file():
            files.append(path)
        else:
            raise ZooError(
                f"{text}: no such file or folder; pass image files or folders of images."
            )
    unique = list(dict.fromkeys(f.resolve() for f in files))
    if not unique:
        raise ZooError(
            f"no images ({', '.join(IMAGE_EXTENSIONS)}) in {', '.join(paths)}; "
            "pass image files or folders that hold some."
        )
    return unique

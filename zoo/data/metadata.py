"""Per-image metadata (sex, age, anatomical site) read as text and as a model input.

The reading rules are defined once here: subgroup reports and the metadata input both use
them. :class:`MetadataEncoding` turns a table of metadata (the data set's columns, or a CSV
given to ``zoo predict``) into the float vector a member with metadata inputs reads beside
the image: for age, years / 100 and a missing flag; for sex, one column each for female and
male; for the site, one column per site seen in the training split. A missing or unknown
value sets no column (and age its missing flag), so the network learns what "not given"
means from the training images that lack it, and an image without metadata still gets an
answer. The encoding is fitted on the training split and stored in ``member.json``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd

from zoo.data.sources import IMAGE_EXTENSIONS, METADATA_ALIASES
from zoo.errors import ZooError

UNKNOWN = "unknown"
MISSING = frozenset({"", "unknown", "nan", "none", "na", "n/a", "null", "?"})
FIELDS = ("age", "sex", "site")  # what a recipe's ``metadata`` may list, in encoding order
SEXES = ("female", "male")
AGE_SCALE = 100.0  # years are fed as years / 100
MAX_AGE = 120.0
MAX_SITES = 64


def text_values(values: pd.Series) -> pd.Series:
    """Lower-case, stripped text; missing values read ``unknown``."""
    text = values.fillna("").astype(str).str.strip().str.lower()
    return text.where(~text.isin(MISSING), UNKNOWN)


def sex_values(values: pd.Series) -> pd.Series:
    """``female``, ``male`` (``f`` and ``m`` too) or ``unknown``."""
    return text_values(values).replace({"m": "male", "f": "female"})


def age_years(values: pd.Series) -> pd.Series:
    """Ages in years as numbers; NaN where missing, not a number, or outside 0–120."""
    years = pd.to_numeric(values, errors="coerce")
    return years.where((years >= 0) & (years <= MAX_AGE))


@dataclass(frozen=True)
class MetadataEncoding:
    """How ``fields`` of the metadata become the model's ``metadata`` input (module docstring)."""

    fields: tuple[str, ...]
    sites: tuple[str, ...] = ()

    @classmethod
    def fit(cls, fields, metadata: pd.DataFrame) -> MetadataEncoding:
        """The encoding of ``fields`` with the sites of ``metadata`` (the training split's)."""
        fields = check_fields(fields, "metadata")
        sites: tuple[str, ...] = ()
        if "site" in fields and "site" in metadata.columns:
            known = text_values(metadata["site"])
            sites = tuple(sorted(set(known[known != UNKNOWN])))[:MAX_SITES]
        return cls(fields, sites)

    @property
    def width(self) -> int:
        """The number of columns of the encoded vector."""
        sizes = {"age": 2, "sex": len(SEXES), "site": len(self.sites)}
        return sum(sizes[f] for f in self.fields)

    def column_names(self) -> list[str]:
        names = {
            "age": ["age/100", "age missing"],
            "sex": [f"sex={s}" for s in SEXES],
            "site": [f"site={s}" for s in self.sites],
        }
        return [n for f in self.fields for n in names[f]]

    def encode(self, metadata: pd.DataFrame) -> np.ndarray:
        """``(len(metadata), width)`` float32; a column ``metadata`` lacks reads as missing."""
        n = len(metadata)

        def column(name: str) -> pd.Series:
            if name in metadata.columns:
                return metadata[name].reset_index(drop=True)
            return pd.Series([""] * n, dtype=object)

        parts = []
        for field in self.fields:
            if field == "age":
                years = age_years(column("age"))
                missing = years.isna().to_numpy()
                scaled = np.where(missing, 0.0, years.fillna(0).to_numpy() / AGE_SCALE)
                parts.append(np.stack([scaled, missing.astype(float)], axis=1))
            elif field == "sex":
                parts.append(_one_hot(sex_values(column("sex")), SEXES))
            else:
                parts.append(_one_hot(text_values(column("site")), self.sites))
        return np.concatenate(parts, axis=1).astype(np.float32) if parts else np.zeros((n, 0))

    def unknown_sites(self, metadata: pd.DataFrame) -> list[str]:
        """Sites of ``metadata`` the training split did not have (encoded as missing)."""
        if "site" not in self.fields or "site" not in metadata.columns:
            return []
        text = text_values(metadata["site"])
        return sorted(set(text[(text != UNKNOWN) & ~text.isin(self.sites)]))

    def to_dict(self) -> dict:
        """``member.json``'s ``metadata_inputs``."""
        return {"fields": list(self.fields), "sites": list(self.sites), "width": self.width}

    @classmethod
    def from_dict(cls, record: dict, where: str = "metadata_inputs") -> MetadataEncoding:
        """The encoding ``member.json`` stores; a malformed one is a ``ValueError`` naming it."""
        if not isinstance(record, dict):
            raise ValueError(f"{where!r} must be an object; got {record!r:.60}")
        try:
            fields = check_fields(record.get("fields"), f"{where}.fields")
        except ZooError as exc:
            raise ValueError(str(exc)) from None
        sites = record.get("sites", [])
        if (
            not isinstance(sites, list)
            or len(sites) > MAX_SITES
            or not all(isinstance(s, str) and s and s == s.strip().lower() for s in sites)
            or len(set(sites)) != len(sites)
        ):
            raise ValueError(
                f"'{where}.sites' must be a list of up to {MAX_SITES} distinct lower-case site "
                f"names; got {sites!r:.60}"
            )
        encoding = cls(fields, tuple(sites))
        if encoding.width == 0:
            raise ValueError(
                f"'{where}.fields' must name at least one field that gives a column (site needs "
                f"sites); got {record.get('fields')!r:.60} with sites {sites!r:.60}"
            )
        if record.get("width") != encoding.width:
            raise ValueError(
                f"'{where}.width' must be {encoding.width} for those fields and sites; "
                f"got {record.get('width')!r:.60}"
            )
        return encoding


def _one_hot(values: pd.Series, names: tuple[str, ...]) -> np.ndarray:
    """One column per name; a value that is none of them (missing, unseen) sets none."""
    columns = [(values == n).to_numpy(dtype=float) for n in names]
    return np.stack(columns, axis=1) if columns else np.zeros((len(values), 0))


def are_fields(fields) -> bool:
    """Whether ``fields`` is a list of distinct names out of :data:`FIELDS`."""
    return (
        isinstance(fields, list | tuple)
        and all(isinstance(f, str) and f in FIELDS for f in fields)
        and len(set(fields)) == len(fields)
    )


def check_fields(fields, option: str) -> tuple[str, ...]:
    """A list of distinct :data:`FIELDS`, in the encoding order; else a one-line ZooError."""
    if not are_fields(fields):
        raise ZooError(
            f"{option}: expected a list of distinct names out of {', '.join(FIELDS)}; got "
            f"{fields!r:.60}."
        )
    return tuple(f for f in FIELDS if f in fields)


ID_COLUMNS = ("image", "image_id", "isic_id", "file")


def _without_extension(image_id) -> str:
    """An image id as rows are named: ``/`` between folders, no extension."""
    path = PurePosixPath(str(image_id).strip().replace("\\", "/"))
    return str(path.with_suffix("")) if path.suffix.lower() in IMAGE_EXTENSIONS else str(path)


def rows_for(table: pd.DataFrame, names) -> pd.DataFrame:
    """The rows of ``table`` (:func:`read_metadata_csv`) for the images ``names`` (as zoo
    names them: the file stem, or ``folder/stem`` where stems clash): the row of that name,
    else the one row whose id has that file stem; all-missing where there is none."""
    ids = [str(i) for i in table.index]
    stems = pd.Series([PurePosixPath(i).name for i in ids])
    unique = {stems[k]: ids[k] for k in np.flatnonzero(~stems.duplicated(keep=False).to_numpy())}
    known = set(ids)
    keys = [n if n in known else unique.get(PurePosixPath(n).name, n) for n in map(str, names)]
    rows = table.set_axis(ids).reindex(keys)
    return rows.set_axis([str(n) for n in names])


def read_metadata_csv(path: str | Path) -> pd.DataFrame:
    """A metadata CSV for ``zoo predict --metadata``: one row per image, an id column
    (``image``, ``image_id``, ``isic_id`` or ``file``: the image's file name, with or without
    its extension, or its path) and any of ``age``, ``sex``, ``site`` under the names the data
    readers take (:data:`zoo.data.sources.METADATA_ALIASES`: ``age_approx``, ``localization``,
    ``anatom_site_general``, …); indexed by the id without extension (a path
    keeps its folders: :func:`rows_for` finds a row by name, else by file stem)."""
    file = Path(path)
    try:
        frame = pd.read_csv(file, dtype=str, keep_default_na=False)
    except FileNotFoundError:
        raise ZooError(
            f"--metadata {path}: no such file; pass a CSV of image, age, sex, site."
        ) from None
    except (
        UnicodeDecodeError,
        pd.errors.ParserError,
        pd.errors.EmptyDataError,
        IsADirectoryError,
    ) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ZooError(f"--metadata {path}: cannot be read as CSV ({reason}).") from None
    id_column = next((c for c in ID_COLUMNS if c in frame.columns), None)
    if id_column is None:
        raise ZooError(
            f"--metadata {path}: no image id column (one of {', '.join(ID_COLUMNS)}); it has "
            f"{', '.join(map(str, frame.columns[:8])) or 'no columns'}."
        )
    out = pd.DataFrame(index=frame[id_column].map(_without_extension))
    for name in FIELDS:  # the columns the data readers take them from
        found = next((c for c in METADATA_ALIASES[name] if c in frame.columns), None)
        if found is not None:
            out[name] = frame[found].to_numpy()
    twice = out.index[out.index.duplicated()]
    if len(twice):
        raise ZooError(f"--metadata {path}: image {twice[0]!r} has more than one row; keep one.")
    return out

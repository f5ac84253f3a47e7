"""The in-memory description of a labelled image data set (no pixels are read here)."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from zoo.store.hashes import labels_fingerprint

# Per-image metadata a reader keeps when its source has it (docs/formats.md, *Per-image
# metadata*): the raw text of the source, under these names; "" where it is missing.
METADATA_COLUMNS = ("sex", "age", "site", "confirmation")


@dataclass
class Dataset:
    """Labelled images from one source.

    ``records`` is indexed by image id and has columns ``path``, ``label`` and ``group``
    (lesion id, else the image id), and those of :data:`METADATA_COLUMNS` the source has
    (not part of the fingerprint). ``problems`` holds what the reader found wrong; they are
    reported together with the image-level problems before training starts.
    """

    name: str
    spec: str
    records: pd.DataFrame
    classes: tuple[str, ...]
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    weights: pd.Series | None = None
    defaults: dict = field(default_factory=dict)
    is_demo: bool = False
    sources: list[dict] | None = None  # combined data: what member.json records of each source
    # the fingerprint of the data as read, kept when labels are mapped onto a model's classes
    # (a --partition member's fine labels): still the same images and the same data
    read_fingerprint: str | None = None

    def __len__(self) -> int:
        return len(self.records)

    @property
    def ids(self) -> list[str]:
        return self.records.index.tolist()

    @property
    def labels(self) -> np.ndarray:
        """Integer class index of each image, in ``classes`` order."""
        lookup = {c: i for i, c in enumerate(self.classes)}
        return self.records["label"].map(lookup).to_numpy(dtype=np.int64)

    @property
    def fingerprint(self) -> str:
        """A short hash of the sorted (image id, label) pairs: same data, same fingerprint."""
        if self.read_fingerprint is not None:
            return self.read_fingerprint
        return labels_fingerprint(self.records.index, self.records["label"])

    def class_counts(self) -> dict[str, int]:
        counts = self.records["label"].value_counts()
        return {c: int(counts.get(c, 0)) for c in self.classes}

    def metadata(self, ids=None) -> pd.DataFrame:
        """The metadata columns the records have (of :data:`METADATA_COLUMNS`), as text ("" where
        missing), for ``ids`` (default: every image)."""
        columns = [c for c in METADATA_COLUMNS if c in self.records.columns]
        frame = self.records[columns] if ids is None else self.records.loc[list(ids), columns]
        return frame.astype(object).where(frame.notna(), "").astype(str)

    def subset(self, ids) -> Dataset:
        """The same data set restricted to ``ids`` (in that order)."""
        records = self.records.loc[list(ids)]
        weights = None if self.weights is None else self.weights.loc[list(ids)]
        return dataclasses.replace(self, records=records, weights=weights)

    def lesion_groups(self, ids) -> pd.Series | None:
        """Lesion of each image of ``ids`` (a Series indexed by image id), or ``None`` when every
        image is its own lesion (then a bootstrap resamples images)."""
        ids = pd.Index(ids)
        groups = self.records.loc[ids, "group"].astype(str)
        return None if (groups.to_numpy() == ids.to_numpy().astype(str)).all() else groups

    def with_groups(self, groups) -> Dataset:
        """The same data set with new lesion groups (e.g. duplicates merged)."""
        return dataclasses.replace(self, records=self.records.assign(group=list(groups)))

    def labelled(self) -> Dataset:
        """The images whose label is one of ``classes`` (the reader reports the others)."""
        known = self.records["label"].isin(self.classes)
        return self if known.all() else self.subset(self.records.index[known])

    def truth(self) -> pd.DataFrame:
        """One-hot ground truth in ISIC format (index ``image``, one column per class)."""
        onehot = np.eye(len(self.classes), dtype=float)[self.labels]
        return pd.DataFrame(
            onehot, index=pd.Index(self.ids, name="image"), columns=list(self.classes)
        )

    def describe(self) -> dict:
        """Source, size and fingerprint, as recorded in member.json."""
        described = {
            "name": self.name,
            "source": self.spec,
            "count": len(self),
            "fingerprint": self.fingerprint,
            "classes": list(self.classes),
            "class_counts": self.class_counts(),
            "demo": self.is_demo,
        }
        if self.sources:
            described["sources"] = [dict(s) for s in self.sources]
        return described


def safe_name(text: str) -> str:
    """A lower-case tag for member names: letters, digits, '-' and '_' only."""
    return re.sub(r"[^a-z0-9_-]+", "-", text.lower()).strip("-") or "data"

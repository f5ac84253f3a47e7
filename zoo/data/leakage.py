"""Does evaluation data hold pictures a target was trained on? (``zoo evaluate --data``)

Members record the perceptual hashes of their training images (``train_hashes.npy``, see
:mod:`zoo.data.duplicates`); evaluated images within the duplicate distance of any of them are
counted and reported, since their scores would flatter the model.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from zoo.data.dataset import Dataset
from zoo.data.duplicates import (
    MAX_DISTANCE,
    ImageHashes,
    image_hashes,
    load_hashes,
    training_duplicates,
)

EXAMPLES = 20


def _members(target) -> list:
    member = getattr(target, "member", None)
    return [member] if member is not None else list(getattr(target, "members", None) or [])


def training_hashes(target) -> np.ndarray | None:
    """The training-image hashes of ``target`` (all its members'); None when a member has
    none recorded (trained before zoo recorded them)."""
    found = []
    for member in _members(target):
        record = (member.info.get("data") or {}).get("train_hashes") or {}
        file = Path(member.path) / str(record.get("file", ""))
        if not record or not file.is_file():
            return None
        found.append(load_hashes(file))
    return np.concatenate(found) if found else None


def training_overlap(target, dataset: Dataset, ids, *, workspace: Path) -> dict | None:
    """``{"images", "duplicates", "max_distance", "examples"}`` for ``ids`` of ``dataset``;
    None when the target recorded no training hashes."""
    train = training_hashes(target)
    if train is None:
        return None
    table = image_hashes(dataset, cache_dir=Path(workspace) / "cache" / "hashes")
    rows = [k for k, i in enumerate(table.ids) if i in set(ids)]
    subset = ImageHashes(
        ids=[table.ids[k] for k in rows], hashes=table.hashes[rows], sizes=table.sizes[rows]
    )
    found = training_duplicates(train, subset)
    return {
        "images": len(rows),
        "duplicates": len(found),
        "max_distance": MAX_DISTANCE,
        "examples": [{"image": i, "distance": d} for i, d in found[:EXAMPLES]],
    }

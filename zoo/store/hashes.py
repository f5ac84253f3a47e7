"""Content hashes recorded in zoo's files: image-id lists and member files.

File digests come from :mod:`zoo.hashing` (remembered by stat data, as git's index does).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

from zoo.errors import ZooError
from zoo.hashing import file_sha256, sha256_of
from zoo.store.layout import MEMBER_FILE, MODEL_FILE

HASHED_FILES = (MODEL_FILE, MEMBER_FILE)

__all__ = [
    "HASHED_FILES",
    "file_sha256",
    "ids_sha256",
    "labels_fingerprint",
    "member_hashes",
    "sha256_of",
]


def ids_sha256(ids: Sequence[str]) -> str:
    """sha256 of the sorted image ids, one per line."""
    return hashlib.sha256("\n".join(sorted(map(str, ids))).encode()).hexdigest()


def labels_fingerprint(ids: Sequence, labels: Sequence) -> str:
    """A data set's fingerprint: short hash of its sorted (image id, label) pairs."""
    lines = sorted(f"{i}\t{lab}" for i, lab in zip(ids, labels, strict=True))
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()[:16]


def member_hashes(folder: str | Path) -> dict[str, str]:
    """sha256 of the bytes of a member's ``model.keras`` and ``member.json``."""
    folder = Path(folder)
    hashes = {}
    for name in HASHED_FILES:
        if not (folder / name).is_file():
            raise ZooError(
                f"member {folder.name} has no {name} in {folder}; the member is incomplete — "
                "retrain it"
            )
        hashes[name] = file_sha256(folder / name)
    return hashes

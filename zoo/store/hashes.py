"""Content hashes recorded in zoo's files: file digests, image-id lists and member files.

sha256 of member files is remembered by their stat data the way git's index remembers it.
Ensembles record the sha256 of each member's ``model.keras`` and check it whenever they run;
prediction caches are keyed by it. Hashing a few hundred megabytes of weights on every
``zoo ensemble build`` would cost seconds, so a digest is kept — in this process and in a
``.sha256-cache.json`` beside the file — together with the file's size, modification and
change times and inode. Any write to the file changes those, and the digest is computed
again. As in git ("racy clean" entries), a digest is only remembered once the file is older
than the timestamp granularity, so a rewrite within the same clock tick cannot hide.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from collections.abc import Sequence
from pathlib import Path

from zoo.errors import ZooError
from zoo.store.json_cache import read_cache, write_cache
from zoo.store.layout import MEMBER_FILE, MODEL_FILE

CACHE_NAME = ".sha256-cache.json"
RACY_NS = 2_000_000_000  # files changed within the last 2 s are always hashed again

_HEX64 = re.compile(r"[0-9a-f]{64}")
_MEMORY: dict[str, tuple[list[int], str]] = {}


def _signature(stat: os.stat_result) -> list[int]:
    return [stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino]


def sha256_of(path: str | os.PathLike) -> str:
    """sha256 of the file's bytes, read now (no cache: for files outside zoo's folders)."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def _valid_entry(entry) -> bool:
    """``{"stat": [size, mtime_ns, ctime_ns, inode], "sha256": 64 hex digits}``."""
    if not isinstance(entry, dict) or set(entry) != {"stat", "sha256"}:
        return False
    stat, digest = entry["stat"], entry["sha256"]
    whole = isinstance(stat, list) and len(stat) == 4
    whole = whole and all(isinstance(v, int) and not isinstance(v, bool) for v in stat)
    return whole and isinstance(digest, str) and bool(_HEX64.fullmatch(digest))


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 of ``path``'s bytes, computed again only when its stat data changed."""
    path = Path(path).resolve()
    signature = _signature(path.stat())
    remembered = _MEMORY.get(str(path))
    if remembered and remembered[0] == signature:
        return remembered[1]
    cache_file = path.parent / CACHE_NAME
    cache = read_cache(cache_file, _valid_entry)
    entry = cache.get(path.name)
    if isinstance(entry, dict) and entry.get("stat") == signature:
        digest = entry["sha256"]
    else:
        digest = sha256_of(path)
    settled = time.time_ns() - max(signature[1], signature[2]) > RACY_NS
    if settled:
        _MEMORY[str(path)] = (signature, digest)
        if entry != {"stat": signature, "sha256": digest}:
            cache[path.name] = {"stat": signature, "sha256": digest}
            write_cache(cache_file, cache)
    return digest


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


def predictions_digest(model_sha256: str, metadata=None) -> str:
    """What cached predictions depend on: ``model.keras``'s SHA-256, and for a member that
    reads per-image metadata, the encoded metadata (a float32 array) it read too."""
    if metadata is None:
        return model_sha256
    import numpy as np

    data = np.ascontiguousarray(metadata, dtype=np.float32)
    shape = ",".join(map(str, data.shape)).encode()
    return hashlib.sha256(model_sha256.encode() + b"|" + shape + b"|" + data.tobytes()).hexdigest()

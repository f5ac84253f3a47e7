"""Find the same image twice: perceptual hashes, cached per data set, and near pairs.

Every image gets a 256-bit DCT hash (``imagehash.phash`` with ``hash_size=16``: grey,
64 × 64, the top-left 16 × 16 DCT coefficients against their median), which survives
resizing and JPEG re-encoding. Two images whose hashes differ in at most ``MAX_DISTANCE``
bits are taken as one picture. The
hashes (with each image's size) are cached in ``<workspace>/cache/hashes/`` keyed like the
pixel cache; an entry is recomputed only when its file's size or modification time changed.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from zoo.data.dataset import Dataset
from zoo.data.images import file_stats, for_each_file, open_rgb
from zoo.store.workspace import atomic_write_json

HASH_VERSION = 1
HASH_KIND = "phash256"
HASH_SIZE = 16  # 16 × 16 = 256 bits, stored as 4 uint64 words
WORDS = HASH_SIZE * HASH_SIZE // 64
# Hamming distance (of 256 bits) up to which two images are one picture. Measured on HAM10000
# (scripts/duplicates_ham10000.py): resized (0.5–0.8×) and re-encoded (JPEG q70–85) copies lie
# at most 18 bits from their original; images of different lesions almost never come closer
# than 24 (a 64-bit hash confused hundreds of such pairs at the distance its copies needed).
MAX_DISTANCE = 24


@dataclass
class ImageHashes:
    """Hash, width and height of each image of a data set, in ``ids`` order."""

    ids: list[str]
    hashes: np.ndarray  # (n, WORDS) uint64
    sizes: np.ndarray  # (n, 2) width, height; -1 where unreadable
    problems: dict[str, str] = field(default_factory=dict)  # id → why it could not be read

    @property
    def ok(self) -> np.ndarray:
        return self.sizes[:, 0] >= 0


def hash_image(path: str | os.PathLike) -> tuple[np.ndarray, int, int]:
    """(hash words, width, height) of one image file; raises :class:`ImageProblem` when
    unreadable."""
    import imagehash

    rgb = open_rgb(path)
    value = imagehash.phash(rgb, hash_size=HASH_SIZE)
    return np.packbits(value.hash.flatten()).view(">u8").astype(np.uint64), rgb.width, rgb.height


def to_hex(words: np.ndarray) -> str:
    return "".join(f"{int(w):016x}" for w in words)


def from_hex(text: str) -> np.ndarray:
    return np.array([int(text[k : k + 16], 16) for k in range(0, len(text), 16)], np.uint64)


def _hash_paths(paths: list[str], description: str) -> tuple[np.ndarray, np.ndarray, dict]:
    hashes = np.zeros((len(paths), WORDS), dtype=np.uint64)
    sizes = np.full((len(paths), 2), -1, dtype=np.int64)

    def read(i: int, path: str) -> None:
        hashes[i], width, height = hash_image(path)
        sizes[i] = (width, height)

    return hashes, sizes, for_each_file(paths, read, description=description)


def _cache_file(dataset: Dataset, cache_dir: Path) -> Path:
    key = "|".join([str(HASH_VERSION), HASH_KIND, dataset.spec, dataset.fingerprint])
    return Path(cache_dir) / f"{dataset.name}-{hashlib.sha256(key.encode()).hexdigest()[:12]}.json"


def image_hashes(dataset: Dataset, *, cache_dir: Path | None = None) -> ImageHashes:
    """Hashes of every image of ``dataset``; cached entries whose file is unchanged are reused."""
    ids = dataset.ids
    paths = [str(p) for p in dataset.records["path"]]
    stats = file_stats(paths)
    cached: dict[str, tuple[list[int], str, list[int]]] = {}
    file = _cache_file(dataset, cache_dir) if cache_dir is not None else None
    if file is not None and file.is_file():
        try:
            data = json.loads(file.read_text(encoding="utf-8"))
            cached = {i: (s, h, z) for i, s, h, z in data["entries"]}
        except (OSError, ValueError, KeyError, TypeError):
            cached = {}
    hashes = np.zeros((len(ids), WORDS), dtype=np.uint64)
    sizes = np.full((len(ids), 2), -1, dtype=np.int64)
    todo = []
    for k, (image_id, stat) in enumerate(zip(ids, stats, strict=True)):
        hit = cached.get(image_id)
        if hit is not None and hit[0] == stat and hit[2][0] >= 0:
            hashes[k], sizes[k] = from_hex(hit[1]), hit[2]
        else:
            todo.append(k)
    problems: dict[str, str] = {}
    if todo:
        new, new_sizes, bad = _hash_paths([paths[k] for k in todo], f"hashing {dataset.name}")
        hashes[todo], sizes[todo] = new, new_sizes
        problems = {ids[todo[j]]: why for j, why in bad.items()}
        if file is not None:
            entries = [
                [i, s, to_hex(h), [int(w), int(z)]]
                for i, s, h, (w, z) in zip(ids, stats, hashes, sizes, strict=True)
            ]
            atomic_write_json(
                file, {"version": HASH_VERSION, "kind": HASH_KIND, "entries": entries}
            )
    return ImageHashes(ids=list(ids), hashes=hashes, sizes=sizes, problems=problems)


def distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamming distances between every hash of ``a`` (rows) and of ``b`` (columns)."""
    a, b = np.asarray(a, np.uint64).reshape(-1, WORDS), np.asarray(b, np.uint64).reshape(-1, WORDS)
    total = np.zeros((len(a), len(b)), dtype=np.uint16)
    for k in range(WORDS):
        total += np.bitwise_count(a[:, None, k] ^ b[None, :, k])
    return total


def near_pairs(
    hashes: np.ndarray,
    other: np.ndarray | None = None,
    *,
    max_distance: int = MAX_DISTANCE,
    chunk: int = 512,
) -> np.ndarray:
    """``(i, j, distance)`` rows of hash pairs at most ``max_distance`` bits apart.

    Within ``hashes`` (``i < j``) when ``other`` is None, else between ``hashes[i]`` and
    ``other[j]``."""
    hashes = np.asarray(hashes, dtype=np.uint64).reshape(-1, WORDS)
    against = hashes if other is None else np.asarray(other, dtype=np.uint64).reshape(-1, WORDS)
    found = []
    for start in range(0, len(hashes), chunk):
        d = distances(hashes[start : start + chunk], against)
        i, j = np.nonzero(d <= max_distance)
        i = i + start
        if other is None:
            keep = i < j
            i, j = i[keep], j[keep]
        found.append(np.stack([i, j, d[i - start, j]], axis=1))
    return np.concatenate(found) if found else np.zeros((0, 3), dtype=np.int64)


def merged_groups(groups: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    """``groups`` with the groups of every pair ``(i, j, …)`` joined (union–find); a merged
    group takes the smallest name among its parts, so the result does not depend on order."""
    groups = np.asarray(groups).astype(str)
    parent = {g: g for g in np.unique(groups)}

    def root(g: str) -> str:
        while parent[g] != g:
            parent[g] = parent[parent[g]]
            g = parent[g]
        return g

    for i, j in np.asarray(pairs)[:, :2].astype(int):
        a, b = root(groups[i]), root(groups[j])
        if a != b:
            parent[max(a, b)] = min(a, b)
    return np.array([root(g) for g in groups], dtype=object)


def altered_copy(
    source: str | os.PathLike, target: str | os.PathLike, *, scale: float, quality: int
) -> Path:
    """``source`` resized by ``scale`` and saved as JPEG of ``quality``: the kind of copy
    duplicate detection must find (the measurement script and the tests make them)."""
    with Image.open(source) as image:
        rgb = image.convert("RGB")
    size = (max(8, round(rgb.width * scale)), max(8, round(rgb.height * scale)))
    Path(target).parent.mkdir(parents=True, exist_ok=True)
    rgb.resize(size, Image.Resampling.LANCZOS).save(target, "JPEG", quality=quality)
    return Path(target)


def save_hashes(file: Path, hashes: np.ndarray) -> None:
    """Hashes as a compact binary file (big-endian words, 32 bytes an image)."""
    from zoo.store.workspace import atomic_path

    with atomic_path(Path(file), suffix=".npy") as tmp:
        np.save(tmp, np.asarray(hashes, dtype=">u8").reshape(-1, WORDS))


def load_hashes(file: Path) -> np.ndarray:
    return np.load(Path(file)).astype(np.uint64).reshape(-1, WORDS)


def duplicate_report(dataset: Dataset, table: ImageHashes, *, examples: int = 20) -> dict:
    """Near-duplicate pairs of ``dataset`` (hashes in ``table``), as member.json and
    ``zoo data check`` record them: counts within and across sources, label conflicts, the
    first ``examples`` pairs, and the groups that must be merged (``pairs``: index pairs)."""
    ok = np.flatnonzero(table.ok)
    found = near_pairs(table.hashes[ok])
    pairs = (
        np.stack([ok[found[:, 0]], ok[found[:, 1]], found[:, 2]], axis=1) if len(found) else found
    )
    records = dataset.records
    source = records["source"].to_numpy() if "source" in records else None
    labels, groups, ids = records["label"].to_numpy(), records["group"].to_numpy(), dataset.ids
    i, j = pairs[:, 0].astype(int), pairs[:, 1].astype(int)
    across = (source[i] != source[j]) if source is not None else np.zeros(len(i), bool)
    listed = sorted(
        zip(pairs[:, 2].tolist(), [ids[a] for a in i], [ids[b] for b in j], strict=True)
    )[:examples]
    return {
        "kind": HASH_KIND,
        "max_distance": MAX_DISTANCE,
        "pairs": int(len(pairs)),
        "exact": int((pairs[:, 2] == 0).sum()),
        "within_sources": int((~across).sum()),
        "across_sources": int(across.sum()),
        "other_lesion": int((groups[i] != groups[j]).sum()),
        "label_conflicts": int((labels[i] != labels[j]).sum()),
        "examples": [{"a": a, "b": b, "distance": int(d)} for d, a, b in listed],
        "index_pairs": pairs,
    }


def merge_duplicates(dataset: Dataset, report: dict) -> Dataset:
    """``dataset`` with the lesion groups of every duplicate pair joined: a grouped split can
    then never put two copies of one picture in different parts."""
    pairs = report["index_pairs"]
    if not len(pairs):
        return dataset
    return dataset.with_groups(merged_groups(dataset.records["group"].to_numpy(), pairs))


def public(report: dict) -> dict:
    """The report without its index pairs (what is written to JSON)."""
    return {k: v for k, v in report.items() if k != "index_pairs"}


def training_duplicates(train_hashes: np.ndarray, table: ImageHashes) -> list[tuple[str, int]]:
    """(image id, distance) of each image in ``table`` that duplicates a training image."""
    if len(train_hashes) == 0:
        return []
    ok = np.flatnonzero(table.ok)
    found = []
    for start in range(0, len(ok), 512):
        rows = ok[start : start + 512]
        nearest = distances(table.hashes[rows], train_hashes).min(axis=1)
        found += [
            (table.ids[r], int(d)) for r, d in zip(rows, nearest, strict=True) if d <= MAX_DISTANCE
        ]
    return found

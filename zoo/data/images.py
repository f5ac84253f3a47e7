"""Decode, convert, border-crop and resize images once; cache the pixels per data set.

Any PIL-readable file is converted to RGB (grayscale, RGBA, CMYK, palette, 16-bit), so such
images are accepted, not rejected. Decoded arrays are kept in memory and on disk in
``<workspace>/cache/images/`` keyed by the data fingerprint and the input settings, so that
epochs after the first — and later runs — read no JPEG at all.
"""

from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from zoo.console import progress
from zoo.data.dataset import Dataset
from zoo.errors import DataProblems
from zoo.workspace import atomic_path, atomic_write_json

CACHE_VERSION = 1
RESAMPLING = {
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "nearest": Image.Resampling.NEAREST,
    "area": Image.Resampling.BOX,
    "lanczos": Image.Resampling.LANCZOS,
}


class ImageProblem(Exception):
    """An image that cannot be used, with the reason."""


def crop_black_border(pixels: np.ndarray, *, threshold: int = 25, keep: float = 0.5) -> np.ndarray:
    """Trim the dark frame of a dermoscope's field of view.

    Keeps the rows and columns in which at least half of the pixels are brighter than
    ``threshold``; leaves the image alone if that would keep less than ``keep`` of a side.
    """
    bright = pixels.max(axis=2) > threshold
    rows = np.flatnonzero(bright.mean(axis=1) >= 0.5)
    cols = np.flatnonzero(bright.mean(axis=0) >= 0.5)
    if len(rows) == 0 or len(cols) == 0:
        return pixels
    top, bottom, left, right = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    height, width = pixels.shape[:2]
    if bottom - top < keep * height or right - left < keep * width:
        return pixels
    return pixels[top:bottom, left:right]


def read_image(
    path: str | os.PathLike,
    *,
    size: int,
    crop_borders: bool = False,
    interpolation: str = "bilinear",
) -> np.ndarray:
    """One image as uint8 RGB ``size × size × 3``; raises :class:`ImageProblem`."""
    try:
        with Image.open(path) as image:
            if image.format == "JPEG" and crop_borders is False:
                image.draft("RGB", (size * 2, size * 2))  # let libjpeg decode at a reduced scale
            image.load()
            rgb = image.convert("RGB")
    except FileNotFoundError:
        raise ImageProblem("file not found") from None
    except (UnidentifiedImageError, Image.DecompressionBombError) as exc:
        raise ImageProblem(f"not a readable image ({exc.__class__.__name__})") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageProblem(f"unreadable or truncated image ({exc})") from None
    pixels = np.asarray(rgb)
    if crop_borders:
        pixels = crop_black_border(pixels)
    resized = Image.fromarray(pixels).resize((size, size), RESAMPLING[interpolation])
    return np.asarray(resized, dtype=np.uint8)


def decode_many(
    paths: list[str],
    *,
    size: int,
    crop_borders: bool = False,
    interpolation: str = "bilinear",
    description: str = "decoding images",
) -> tuple[np.ndarray, dict[int, str]]:
    """Decode ``paths`` in parallel threads; returns pixels and {position: problem}."""
    out = np.zeros((len(paths), size, size, 3), dtype=np.uint8)
    problems: dict[int, str] = {}

    def work(i: int) -> None:
        if not paths[i]:
            problems[i] = "file not found"
            return
        try:
            out[i] = read_image(
                paths[i], size=size, crop_borders=crop_borders, interpolation=interpolation
            )
        except ImageProblem as exc:
            problems[i] = str(exc)

    workers = min(32, 2 * (os.cpu_count() or 2))
    with progress() as bar, ThreadPoolExecutor(workers) as pool:
        task = bar.add_task(description, total=len(paths), status="")
        for _ in pool.map(work, range(len(paths)), chunksize=64):
            bar.advance(task)
    return out, problems


@dataclass
class ImageTable:
    """Decoded pixels of a data set, addressable by image id."""

    ids: list[str]
    pixels: np.ndarray

    def __post_init__(self):
        self._row = {image_id: i for i, image_id in enumerate(self.ids)}

    def rows(self, ids) -> np.ndarray:
        return np.fromiter((self._row[i] for i in ids), dtype=np.int64, count=len(ids))

    def take(self, ids) -> np.ndarray:
        return self.pixels[self.rows(ids)]


_MEMORY: dict[str, ImageTable] = {}


def cache_key(dataset: Dataset, *, size: int, crop_borders: bool, interpolation: str) -> str:
    parts = [
        str(CACHE_VERSION),
        dataset.spec,
        dataset.fingerprint,
        str(size),
        str(crop_borders),
        interpolation,
    ]
    return f"{dataset.name}-{size}px-" + hashlib.sha256("|".join(parts).encode()).hexdigest()[:12]


def load_images(
    dataset: Dataset,
    *,
    size: int,
    crop_borders: bool = False,
    interpolation: str = "bilinear",
    cache_dir: Path | None = None,
) -> ImageTable:
    """Every image of ``dataset`` decoded once, from memory, the disk cache, or the files.

    Raises :class:`DataProblems` listing the reader's problems and every unreadable image.
    """
    key = cache_key(dataset, size=size, crop_borders=crop_borders, interpolation=interpolation)
    if key in _MEMORY and not dataset.problems:
        return _MEMORY[key]
    if cache_dir is not None and not dataset.problems:
        array_file, index_file = Path(cache_dir) / f"{key}.npy", Path(cache_dir) / f"{key}.json"
        if array_file.exists() and index_file.exists():
            table = ImageTable(
                json.loads(index_file.read_text())["ids"], np.load(array_file, mmap_mode="r")
            )
            _MEMORY[key] = table
            return table
    pixels, bad = decode_many(
        list(dataset.records["path"]),
        size=size,
        crop_borders=crop_borders,
        interpolation=interpolation,
        description=f"decoding {dataset.name} at {size}px",
    )
    ids = dataset.ids
    problems = list(dataset.problems)
    problems += [
        f"image {ids[i]} ({dataset.records['path'].iloc[i] or 'no file'}): {why}"
        for i, why in sorted(bad.items())
        if dataset.records["path"].iloc[i]
    ]
    if problems:
        raise DataProblems(dataset.spec, problems)
    table = ImageTable(ids, pixels)
    if cache_dir is not None:
        Path(cache_dir).mkdir(parents=True, exist_ok=True)
        with atomic_path(Path(cache_dir) / f"{key}.npy", suffix=".npy") as tmp:
            np.save(tmp, pixels)
        atomic_write_json(
            Path(cache_dir) / f"{key}.json", {"ids": ids, "spec": dataset.spec, "size": size}
        )
    _MEMORY.clear()  # keep one data set in memory at a time
    _MEMORY[key] = table
    return table


def validate(dataset: Dataset, *, size: int = 32) -> None:
    """Check every file of ``dataset`` (cheaply, at a small size) and raise all problems at once."""
    load_images(dataset, size=size)

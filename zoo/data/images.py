"""Decode, convert, border-crop and resize images once; cache the pixels per data set.

Any PIL-readable file is converted to RGB (grayscale, RGBA, CMYK, palette, 16-bit), so such
images are accepted, not rejected. Decoded arrays are kept on disk in
``<workspace>/cache/images/`` keyed by the data fingerprint and the input settings, so that
epochs after the first — and later runs — read no JPEG at all; the index records each file's
size and modification time, and a file changed since it was decoded makes the set decode again. A part of a data set that fits
the memory budget (half the machine's memory, or ``$ZOO_MEMORY_BUDGET_GB``) is handed to the
pipeline as an in-memory array; a larger one as :class:`DiskRows`, read batch by batch from
the memory-mapped cache (and such a data set is decoded straight into that file).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from zoo import console
from zoo.console import progress
from zoo.data.dataset import Dataset
from zoo.errors import DataProblems, ZooError
from zoo.store.workspace import atomic_path, atomic_write_json

CACHE_VERSION = 2  # 2: the index records each file's size and time
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


def open_rgb(path, *, draft: int | None = None) -> Image.Image:
    """One image file (a path or a binary file object), decoded and converted to RGB (JPEGs at
    no less than ``draft`` pixels when given); raises :class:`ImageProblem`."""
    try:
        with Image.open(path) as image:
            if draft and image.format == "JPEG":
                image.draft("RGB", (draft, draft))
            image.load()
            return image.convert("RGB")
    except FileNotFoundError:
        raise ImageProblem("file not found") from None
    except (UnidentifiedImageError, Image.DecompressionBombError) as exc:
        raise ImageProblem(f"not a readable image ({exc.__class__.__name__})") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageProblem(f"unreadable or truncated image ({exc})") from None


def for_each_file(paths: list, read, *, description: str) -> dict[int, str]:
    r"""``read(i, path)`` for every path (or in-memory image) in parallel threads, with a progress bar; returns
    {position: problem} for missing paths and :class:`ImageProblem`\ s."""
    problems: dict[int, str] = {}

    def work(i: int) -> None:
        if isinstance(paths[i], str) and not paths[i]:  # in-memory images are never missing
            problems[i] = "file not found"
            return
        try:
            read(i, paths[i])
        except ImageProblem as exc:
            problems[i] = str(exc)

    workers = min(32, 2 * (os.cpu_count() or 2))
    with progress() as bar, ThreadPoolExecutor(workers) as pool:
        task = bar.add_task(description, total=len(paths), status="")
        for _ in pool.map(work, range(len(paths)), chunksize=64):
            bar.advance(task)
    return problems


def read_image(
    path,
    *,
    size: int,
    crop_borders: bool = False,
    interpolation: str = "bilinear",
) -> np.ndarray:
    """One image as uint8 RGB ``size × size × 3``; raises :class:`ImageProblem`.

    ``path`` is a file path or a binary file object, else an image already in memory: a PIL
    image or a uint8 ``H × W × 3`` array, which gets the same conversion, crop and resize (without
    ``crop_borders`` a JPEG file over twice ``size`` is decoded by libjpeg at a reduced scale,
    so the same picture decoded at full size can differ slightly)."""
    if isinstance(path, np.ndarray | Image.Image):
        return _resized(_in_memory_rgb(path), size, crop_borders, interpolation)
    return _resized(
        open_rgb(path, draft=None if crop_borders else size * 2), size, crop_borders, interpolation
    )


def _in_memory_rgb(image) -> Image.Image:
    """A PIL image or a uint8 ``H × W × 3`` array as an RGB PIL image."""
    if isinstance(image, Image.Image):
        try:
            return image.convert("RGB")
        except (OSError, SyntaxError, ValueError) as exc:
            raise ImageProblem(f"unreadable or truncated image ({exc})") from None
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3 or 0 in image.shape:
        raise ImageProblem(
            f"an array image must be uint8 of shape (height, width, 3); got {image.dtype} "
            f"{image.shape}"
        )
    return Image.fromarray(np.ascontiguousarray(image), "RGB")


def _resized(rgb: Image.Image, size: int, crop_borders: bool, interpolation: str) -> np.ndarray:
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
    out: np.ndarray | None = None,
) -> tuple[np.ndarray, dict[int, str]]:
    """Decode ``paths`` (or other sources :func:`read_image` takes) in parallel threads into
    ``out`` (default: a new array); returns the pixels and {position: problem}."""
    if out is None:
        out = np.zeros((len(paths), size, size, 3), dtype=np.uint8)

    def read(i: int, path) -> None:
        out[i] = read_image(path, size=size, crop_borders=crop_borders, interpolation=interpolation)

    return out, for_each_file(paths, read, description=description)


def memory_budget() -> int:
    """Bytes of decoded pixels zoo keeps in memory: ``$ZOO_MEMORY_BUDGET_GB``, else half of RAM."""
    configured = os.environ.get("ZOO_MEMORY_BUDGET_GB")
    if configured:
        try:
            gigabytes = float(configured)
            if not math.isfinite(gigabytes) or gigabytes < 0:
                raise ValueError(configured)
            return int(gigabytes * 2**30)
        except ValueError:
            raise ZooError(
                f"ZOO_MEMORY_BUDGET_GB must be a number of gigabytes (finite, >= 0); got {configured!r}."
            ) from None
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 2
    except (ValueError, OSError, AttributeError):
        return 8 * 2**30


class DiskRows:
    """Rows of a memory-mapped pixel cache, read on demand: an array-like for data sets larger
    than the memory budget. Indexing (an int, a slice or an index array) returns a numpy array;
    rows are read in file order, then put back in the order asked for."""

    def __init__(self, array: np.ndarray, rows: np.ndarray):
        self.array, self.rows = array, np.asarray(rows, dtype=np.int64)
        self.shape = (len(self.rows), *array.shape[1:])
        self.dtype = array.dtype
        self.nbytes = int(np.prod(self.shape)) * self.dtype.itemsize

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index) -> np.ndarray:
        wanted = self.rows[index]
        if np.ndim(wanted) == 0:
            return np.asarray(self.array[int(wanted)])
        order = np.argsort(wanted, kind="stable")
        out = np.empty((len(wanted), *self.shape[1:]), self.dtype)
        out[order] = self.array[wanted[order]]
        return out


@dataclass
class ImageTable:
    """Decoded pixels of a data set, addressable by image id."""

    ids: list[str]
    pixels: np.ndarray

    def __post_init__(self):
        self._row = {image_id: i for i, image_id in enumerate(self.ids)}

    def rows(self, ids) -> np.ndarray:
        return np.fromiter((self._row[i] for i in ids), dtype=np.int64, count=len(ids))

    def take(self, ids) -> np.ndarray | DiskRows:
        """Pixels of ``ids``: in memory when they fit the budget, else read from the cache file."""
        rows = self.rows(ids)
        row_bytes = int(np.prod(self.pixels.shape[1:])) * self.pixels.dtype.itemsize
        if isinstance(self.pixels, np.memmap) and len(rows) * row_bytes > memory_budget():
            return DiskRows(self.pixels, rows)
        return self.pixels[rows]


_MEMORY: dict[str, tuple[list[list[int]], ImageTable]] = {}


def file_stats(paths) -> list[list[int]]:
    """[size, modification time in ns] of each file ([-1, -1] when missing): what the pixel
    cache checks to notice an image changed since it was decoded."""
    stats = []
    for path in paths:
        try:
            st = os.stat(path) if path else None
        except OSError:
            st = None
        stats.append([st.st_size, st.st_mtime_ns] if st else [-1, -1])
    return stats


def _cached(array_file: Path, index_file: Path, stats: list[list[int]], name: str):
    """The cached table when its files are unchanged since decoding; else None (with a note)."""
    try:
        index = json.loads(index_file.read_text(encoding="utf-8"))
        pixels = np.load(array_file, mmap_mode="r")
    except (OSError, ValueError) as exc:
        console.info(f"the pixel cache {array_file} is unreadable ({exc}); decoding again.")
        return None
    if not isinstance(index, dict) or index.get("stats") != stats or len(pixels) != len(stats):
        changed = sum(a != b for a, b in zip(index.get("stats") or [], stats, strict=False))
        console.info(
            f"{changed or 'some'} image file(s) of {name} changed since they were cached; "
            "decoding again."
        )
        return None
    return ImageTable(index["ids"], pixels)


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
    paths = list(dataset.records["path"])
    stats = file_stats(paths)
    if key in _MEMORY and not dataset.problems and _MEMORY[key][0] == stats:
        return _MEMORY[key][1]
    if cache_dir is not None and not dataset.problems:
        array_file, index_file = Path(cache_dir) / f"{key}.npy", Path(cache_dir) / f"{key}.json"
        if array_file.exists() and index_file.exists():
            table = _cached(array_file, index_file, stats, dataset.name)
            if table is not None:
                _MEMORY[key] = (stats, table)
                return table
    with contextlib.ExitStack() as stack:
        pixels = None
        if cache_dir is not None and len(paths) * size * size * 3 > memory_budget():
            # too large for memory: decode straight into the cache file, then map it read-only
            Path(cache_dir).mkdir(parents=True, exist_ok=True)
            tmp = stack.enter_context(atomic_path(Path(cache_dir) / f"{key}.npy", suffix=".npy"))
            pixels = np.lib.format.open_memmap(
                tmp, mode="w+", dtype=np.uint8, shape=(len(paths), size, size, 3)
            )
        pixels, bad = decode_many(
            paths,
            size=size,
            crop_borders=crop_borders,
            interpolation=interpolation,
            description=f"decoding {dataset.name} at {size}px",
            out=pixels,
        )
        problems = _problems(dataset, bad)
        if problems:
            raise DataProblems(dataset.spec, problems)
        if isinstance(pixels, np.memmap):
            pixels.flush()
        elif cache_dir is not None:
            Path(cache_dir).mkdir(parents=True, exist_ok=True)
            with atomic_path(Path(cache_dir) / f"{key}.npy", suffix=".npy") as tmp:
                np.save(tmp, pixels)
    # (a memory-mapped decode was renamed into place when the ExitStack closed)
    if isinstance(pixels, np.memmap):
        pixels = np.load(Path(cache_dir) / f"{key}.npy", mmap_mode="r")
    table = ImageTable(dataset.ids, pixels)
    if cache_dir is not None:
        atomic_write_json(
            Path(cache_dir) / f"{key}.json",
            {"ids": dataset.ids, "spec": dataset.spec, "size": size, "stats": stats},
        )
    _MEMORY.clear()  # keep one data set in memory at a time
    _MEMORY[key] = (stats, table)
    return table


def _problems(dataset: Dataset, bad: dict[int, str]) -> list[str]:
    """The reader's problems and every unreadable image, each naming its id and file."""
    paths = dataset.records["path"]
    return list(dataset.problems) + [
        f"image {dataset.ids[i]} ({paths.iloc[i]}): {why}"
        for i, why in sorted(bad.items())
        if paths.iloc[i]
    ]


def validate(dataset: Dataset, *, size: int = 32) -> None:
    """Check every file of ``dataset`` (cheaply, at a small size) and raise all problems at once."""
    load_images(dataset, size=size)

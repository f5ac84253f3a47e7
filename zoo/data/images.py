"""Decode, convert, border-crop and resize images once; cache the pixels per data set.

Every image is decoded as the picture a person sees, or refused (:func:`to_rgb` handles each
PIL mode explicitly): EXIF orientation applied; an embedded ICC profile converted to sRGB
(one that does not describe the pixels' colour space, or cannot be read, is ignored, as web
browsers do); transparency composited on black (:data:`BACKGROUND`, like a dermoscope's
frame, which the border crop removes); 16-bit images scaled to 8 bits; 32-bit integer
greyscale read on the 16-bit scale and float greyscale on [0, 1] (other ranges are refused);
CMYK and CIELAB converted; the first frame of an animation or a multi-page file. A mode
zoo cannot show faithfully is refused in one line naming it; a path that is not a regular
file (a FIFO, a device, a socket, a folder) is refused without being opened.

Bounds (see "Limits" in docs/usage.md): batch sizes up to :data:`MAX_BATCH_SIZE`, input
sizes up to :data:`MAX_IMAGE_SIZE` px (:func:`check_bound`), images of at most
:data:`MAX_IMAGE_PIXELS` pixels. A large image is reduced while it is decoded (JPEG by
libjpeg's scaled decoding, others by ``Image.reduce`` right after), to no less than
:data:`DRAFT` times the input size (:data:`CROP_DRAFT` times when the black border is
cropped); at most two images over :data:`LARGE_IMAGE_PIXELS` are decoded at once.

Decoded arrays are kept on disk in
``<workspace>/cache/images/`` keyed by the data fingerprint and the input settings, so that
epochs after the first — and later runs — read no JPEG at all; the index records each file's
size and modification time, and a file changed since it was decoded makes the set decode again. A part of a data set that fits
the memory budget (half the machine's memory, or ``$ZOO_MEMORY_BUDGET_GB``) is handed to the
pipeline as an in-memory array; a larger one as :class:`DiskRows`, read batch by batch from
the memory-mapped cache (and such a data set is decoded straight into that file).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import json
import math
import numbers
import os
import stat
import threading
import warnings
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

CACHE_VERSION = 3  # 2: the index records each file's size and time; 3: to_rgb, reduction
RESAMPLING = {
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "nearest": Image.Resampling.NEAREST,
    "area": Image.Resampling.BOX,
    "lanczos": Image.Resampling.LANCZOS,
}


MAX_BATCH_SIZE = 4096  # images a batch; the recipes use 12 to 64
MAX_IMAGE_SIZE = 1024  # input pixels a side; the recipes use 64 to 456 (EfficientNet-B7: 600)
# pixels an image, checked before decoding: PIL's decompression-bomb limit (Image.open refuses
# twice its default Image.MAX_IMAGE_PIXELS), fixed here whatever PIL is set to
MAX_IMAGE_PIXELS = 2 * 89_478_485
LARGE_IMAGE_PIXELS = 5000 * 5000  # images this large are decoded at most two at a time
DRAFT, CROP_DRAFT = 2, 8  # decode at least this many times the input size (with a border crop)
BACKGROUND = (0, 0, 0)  # what transparent pixels are composited on
_LARGE_DECODES = threading.BoundedSemaphore(2)
# zoo refuses images over MAX_IMAGE_PIXELS itself (naming the file); PIL's warning about images
# over half that limit would only repeat itself on stderr for images zoo accepts
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)

_BOUNDS = {"batch_size": (MAX_BATCH_SIZE, "images"), "image_size": (MAX_IMAGE_SIZE, "pixels")}


def check_bound(name: str, value, *, option: str | None = None) -> int:
    """``value`` of ``batch_size`` or ``image_size`` when it is a whole number from 1 to its
    limit; else a one-line :class:`ZooError` naming ``option`` (default: ``name``)."""
    limit, unit = _BOUNDS[name]
    whole = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if not whole or not 1 <= value <= limit:
        raise ZooError(
            f"{option or name} must be a whole number of {unit} from 1 to {limit}; got "
            f"{value!r} (zoo's limit, far above any recipe's: see Limits in docs/usage.md)."
        )
    return int(value)


def check_bounds(*, batch_size=None, image_size=None) -> None:
    """:func:`check_bound` for each value given (``None``: not given)."""
    for name, value in (("batch_size", batch_size), ("image_size", image_size)):
        if value is not None:
            check_bound(name, value)


class ImageProblem(Exception):
    """An image that cannot be used, with the reason."""


class ImageTooLarge(ImageProblem):
    """An image of more pixels than :data:`MAX_IMAGE_PIXELS` (refused before decoding)."""


class UnsupportedImage(ImageProblem):
    """An image zoo cannot show faithfully as RGB (its mode, or its range of values)."""


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
    """One image file (a path or a binary file object) as the RGB picture :func:`to_rgb`
    makes, reduced while decoding to no less than ``draft`` pixels a side when given; raises
    :class:`ImageProblem`. A path that is not a regular file is refused without opening it."""
    try:
        with _opened(path) as image:
            _check_pixels(image.width, image.height)
            orientation = _orientation(image)
            if draft:
                image.draft(None, (draft, draft))  # JPEG: libjpeg's scaled decoding
            with _decode_slot(image.width * image.height):
                image.load()
                return _picture(image, draft=draft, orientation=orientation)
    except FileNotFoundError:
        raise ImageProblem("file not found") from None
    except Image.DecompressionBombError as exc:
        raise ImageTooLarge(
            f"too many pixels to decode ({exc.__class__.__name__}: {exc}); zoo decodes at most "
            f"{MAX_IMAGE_PIXELS:,} pixels an image: downscale it first"
        ) from None
    except UnidentifiedImageError as exc:
        raise ImageProblem(f"not a readable image ({exc.__class__.__name__})") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageProblem(f"unreadable or truncated image ({exc})") from None


_KINDS = [
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
]


def _not_regular(mode: int) -> ImageProblem | None:
    if stat.S_ISREG(mode):
        return None
    kind = next((text for test, text in _KINDS if test(mode)), "a special file")
    return ImageProblem(f"{kind}, not a regular file: skipped without opening it")


@contextlib.contextmanager
def _opened(source):
    """``Image.open`` of a file object, or of a path once it is known to be a regular file
    (checked before opening, and again on the open descriptor, which never blocks)."""
    if not isinstance(source, str | os.PathLike):
        with Image.open(source) as image:
            yield image
        return
    problem = _not_regular(os.stat(source).st_mode)
    if problem:
        raise problem
    fd = os.open(source, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    with os.fdopen(fd, "rb") as file:
        problem = _not_regular(os.fstat(fd).st_mode)  # replaced since the check
        if problem:
            raise problem
        with Image.open(file) as image:
            yield image


def _check_pixels(width: int, height: int) -> None:
    if width * height > MAX_IMAGE_PIXELS:
        raise ImageTooLarge(
            f"{width} × {height} = {width * height:,} pixels, over zoo's limit of "
            f"{MAX_IMAGE_PIXELS:,} an image (PIL's decompression-bomb limit); downscale it first"
        )


@contextlib.contextmanager
def _decode_slot(pixels: int):
    """One of the two slots for decoding an image over :data:`LARGE_IMAGE_PIXELS`."""
    if pixels <= LARGE_IMAGE_PIXELS:
        yield
        return
    with _LARGE_DECODES:
        yield


_TRANSPOSE = {  # EXIF orientation → the transposition that shows the picture upright
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def _orientation(image: Image.Image) -> int:
    """The EXIF orientation (1–8) of an image; 1 when it has none, or damaged EXIF data
    (which viewers ignore too)."""
    try:
        value = image.getexif().get(0x0112, 1)
    except (OSError, SyntaxError, ValueError, TypeError, KeyError):
        return 1
    return value if isinstance(value, int) else 1


# modes whose pixels Image.reduce may average (palettes, bits and 16-bit ints it cannot)
_REDUCIBLE = ("L", "LA", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr", "I", "F")


def _reduced(image: Image.Image, draft: int | None) -> Image.Image:
    """``image`` shrunk by a whole factor (box averages) to no less than ``draft`` a side."""
    factor = min(image.size) // draft if draft else 1
    return image.reduce(factor) if factor >= 2 else image


def _picture(image: Image.Image, *, draft: int | None, orientation: int) -> Image.Image:
    """A loaded image reduced towards ``draft``, turned upright and converted to RGB."""
    if image.mode in _REDUCIBLE and "transparency" not in image.info:
        image = _reduced(image, draft)  # before converting: the conversion sees fewer pixels
    if orientation in _TRANSPOSE:
        image = image.transpose(_TRANSPOSE[orientation])
    return _reduced(to_rgb(image), draft)


SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N")


def to_rgb(image: Image.Image) -> Image.Image:
    """``image``, of any PIL mode, as the RGB picture a person sees; raises
    :class:`UnsupportedImage` for what zoo cannot show faithfully.

    ======================  =================================================================
    1, L, RGB               as they are (a transparent colour or palette entry: see alpha)
    P, PA                   through the palette, with its transparency
    LA, RGBA, La, RGBa      composited on :data:`BACKGROUND` (black)
    CMYK, YCbCr, HSV, LAB   converted (CMYK by its ICC profile when it has one, else by
                            PIL's formulas)
    I;16, I;16L/B/N         16-bit greyscale, scaled to 8 bits (v / 257)
    I                       32-bit integer greyscale on the 16-bit scale (0–65535, as PIL
                            keeps 16-bit PNG, PGM and TIFF data); other values are refused
    F                       floating-point greyscale on [0, 1]; other values are refused
    others                  refused, naming the mode
    ======================  =================================================================

    An embedded ICC profile of the pixels' colour space (RGB, CMYK, grey) is converted to sRGB.
    """
    colour, alpha = _colour_and_alpha(image)
    rgb = _in_srgb(colour, image.info.get("icc_profile"))
    if alpha is not None and alpha.getextrema()[0] < 255:
        rgb = Image.composite(rgb, Image.new("RGB", rgb.size, BACKGROUND), alpha)
    return rgb


def _colour_and_alpha(image: Image.Image) -> tuple[Image.Image, Image.Image | None]:
    """The colour of ``image`` (mode L, RGB or CMYK) and its alpha band (or None)."""
    mode = image.mode
    if mode in ("La", "RGBa"):  # premultiplied alpha
        return _colour_and_alpha(image.convert(mode.upper()))
    if mode == "PA":
        return _colour_and_alpha(image.convert("RGBA"))
    if mode in ("LA", "RGBA"):
        return image.convert(mode[:-1]), image.getchannel("A")
    if mode in ("1", "L", "P", "RGB") and image.has_transparency_data:
        return _colour_and_alpha(image.convert("LA" if mode in ("1", "L") else "RGBA"))
    if mode in ("L", "RGB", "CMYK"):
        return image, None
    if mode == "1":
        return image.convert("L"), None
    if mode in ("P", "RGBX", "YCbCr", "HSV", "LAB"):
        return image.convert("RGB"), None
    if mode in (*SIXTEEN_BIT, "I", "F"):
        return _eight_bit(image)
    raise UnsupportedImage(
        f"colour mode {mode!r} cannot be shown faithfully as RGB; save it as an RGB JPEG or PNG"
    )


def _eight_bit(image: Image.Image) -> tuple[Image.Image, Image.Image | None]:
    """A 16-bit, 32-bit integer or float greyscale image as 8-bit L (and its transparent
    value as an alpha band)."""
    pixels = np.asarray(image)
    if image.mode == "F":
        finite = np.isfinite(pixels).all()
        low, high = (float(pixels.min()), float(pixels.max())) if pixels.size else (0.0, 0.0)
        if not finite or low < 0 or high > 1:
            shown = f"values from {low:g} to {high:g}" if finite else "NaN or infinite values"
            raise UnsupportedImage(
                f"floating-point greyscale (mode 'F') with {shown}: zoo shows float images "
                "on [0, 1] only; save it as an 8- or 16-bit image"
            )
        scaled = np.rint(pixels * 255)
    else:
        low, high = (int(pixels.min()), int(pixels.max())) if pixels.size else (0, 0)
        if low < 0 or high > 65535:
            raise UnsupportedImage(
                f"32-bit greyscale (mode 'I') with values from {low} to {high}, outside the "
                "16-bit range 0–65535 zoo shows; save it as an 8- or 16-bit image"
            )
        scaled = (pixels.astype(np.uint32) * 255 + 32767) // 65535  # round(v / 257)
    grey = Image.fromarray(scaled.astype(np.uint8))
    key = image.info.get("transparency")
    if not isinstance(key, int):
        return grey, None
    return grey, Image.fromarray(np.where(pixels == key, 0, 255).astype(np.uint8))


@functools.cache
def _srgb():
    from PIL import ImageCms

    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))


_PROFILE_SPACES = {"RGB": "RGB", "CMYK": "CMYK", "GRAY": "L"}


def _in_srgb(colour: Image.Image, profile: bytes | None) -> Image.Image:
    """``colour`` (L, RGB or CMYK) in sRGB: through its ICC profile when that describes its
    colour space and can be read, else as PIL converts it."""
    from PIL import ImageCms

    if profile:
        try:
            source = ImageCms.ImageCmsProfile(io.BytesIO(profile))
            if _PROFILE_SPACES.get(source.profile.xcolor_space.strip()) == colour.mode:
                return ImageCms.profileToProfile(colour, source, _srgb(), outputMode="RGB")
        except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
            pass  # a damaged profile: the pixels taken as sRGB, as web browsers take them
    return colour.convert("RGB")


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
    image or a uint8 ``H × W × 3`` array, which gets the same conversion, reduction, crop and
    resize. An image over :data:`DRAFT` times ``size`` (:data:`CROP_DRAFT` times with
    ``crop_borders``) is reduced while decoding (a JPEG file by libjpeg, so the same picture
    decoded at full size can differ slightly)."""
    check_bound("image_size", size)
    draft = size * (CROP_DRAFT if crop_borders else DRAFT)
    if isinstance(path, np.ndarray | Image.Image):
        rgb = _in_memory_rgb(path, draft=draft)
    else:
        rgb = open_rgb(path, draft=draft)
    return _resized(rgb, size, crop_borders, interpolation)


def _in_memory_rgb(image, *, draft: int | None = None) -> Image.Image:
    """A PIL image or a uint8 ``H × W × 3`` array as an RGB PIL image (as :func:`open_rgb`
    makes it, from the picture in memory)."""
    if isinstance(image, Image.Image):
        _check_pixels(image.width, image.height)
        try:
            return _picture(image, draft=draft, orientation=_orientation(image))
        except (OSError, SyntaxError, ValueError) as exc:
            raise ImageProblem(f"unreadable or truncated image ({exc})") from None
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3 or 0 in image.shape:
        raise ImageProblem(
            f"an array image must be uint8 of shape (height, width, 3); got {image.dtype} "
            f"{image.shape}"
        )
    _check_pixels(image.shape[1], image.shape[0])
    return _reduced(Image.fromarray(np.ascontiguousarray(image), "RGB"), draft)


def _resized(rgb: Image.Image, size: int, crop_borders: bool, interpolation: str) -> np.ndarray:
    if crop_borders:
        rgb = Image.fromarray(crop_black_border(np.asarray(rgb)))
    resized = rgb.resize((size, size), RESAMPLING[interpolation])
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
    check_bound("image_size", size)
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
    check_bound("image_size", size)
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

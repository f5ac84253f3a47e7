"""Every image is decoded as the picture it is, or refused: a table of every mode PIL opens.

Each case writes one known reference picture (a gradient and a red square, 64 × 48) with PIL
in one mode and format, decodes it with zoo, and compares the result with a reference decoding
of the same picture: the RGB picture as a person sees it — transparency composited on black
(zoo's ``BACKGROUND``), 16-bit scaled to 8 bits, EXIF orientation applied, CMYK, CIELAB and
ICC profiles converted to sRGB. Modes zoo cannot show faithfully are refused in one line that
names the mode; paths that are not regular files are refused without being opened.
"""

from __future__ import annotations

import io
import os
import re
import socket
import struct
import threading
import types
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageCms, features

from zoo.data import images
from zoo.data.images import ImageProblem, UnsupportedImage, open_rgb, read_image, to_rgb
from zoo.data.loading import load_dataset
from zoo.errors import DataProblems

HEIGHT, WIDTH = 48, 64


def _reference() -> np.ndarray:
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH]
    pixels = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    pixels[..., 0] = 30 + xx * 200 // (WIDTH - 1)
    pixels[..., 1] = 20 + yy * 210 // (HEIGHT - 1)
    pixels[..., 2] = 90
    pixels[10:30, 20:40] = (220, 40, 40)
    return pixels


REF = _reference()
RGB = Image.fromarray(REF)
GREY = np.asarray(RGB.convert("L"))  # ITU-R 601-2 luma, as PIL converts
ALPHA = np.tile(np.linspace(0, 255, WIDTH).round().astype(np.uint8), (HEIGHT, 1))
ALPHA[:, :8] = 0  # fully transparent on the left, opaque on the right


def grey3(grey: np.ndarray) -> np.ndarray:
    return np.repeat(grey[..., None], 3, axis=2)


def on_black(colour: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    return np.rint(colour.astype(float) * alpha[..., None] / 255).astype(np.uint8)


def saved(image: Image.Image, suffix: str, **options) -> Callable[[Path], Path]:
    def write(folder: Path) -> Path:
        path = folder / f"picture{suffix}"
        image.save(path, **options)
        return path

    return write


def _palette_with_transparency() -> Image.Image:
    """The reference in 64 colours, with the colour of the red square transparent."""
    palette = RGB.quantize(64)
    index = palette.getpixel((30, 20))
    palette.info["transparency"] = index
    return palette


PALETTE = _palette_with_transparency()
PALETTE_RGB = np.asarray(PALETTE.convert("RGB"))
PALETTE_SEEN = PALETTE_RGB * (np.asarray(PALETTE) != PALETTE.info["transparency"])[..., None]


def _png16_rgb(folder: Path) -> Path:
    """A 16-bit RGB PNG (PIL writes none): the reference times 257, big-endian samples."""
    samples = (REF.astype(">u2") * 257).reshape(HEIGHT, -1)
    raw = b"".join(b"\0" + row.tobytes() for row in samples)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    path = folder / "sixteen.png"
    header = struct.pack(">IIBBBBB", WIDTH, HEIGHT, 16, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )
    return path


def _s15(x: float) -> bytes:
    return struct.pack(">i", round(x * 65536))


def linear_rgb_profile() -> bytes:
    """An ICC v2 profile with sRGB's primaries and a linear tone curve (gamma 1)."""

    def xyz(x, y, z):
        return b"XYZ " + b"\0" * 4 + _s15(x) + _s15(y) + _s15(z)

    curve = b"curv" + b"\0" * 4 + struct.pack(">IH", 1, 256) + b"\0\0"
    text = b"linear sRGB\0"
    tags = [
        (b"desc", b"desc" + b"\0" * 4 + struct.pack(">I", len(text)) + text + b"\0" * 79),
        (b"wtpt", xyz(0.9642, 1.0, 0.8249)),
        (b"rXYZ", xyz(0.4361, 0.2225, 0.0139)),
        (b"gXYZ", xyz(0.3851, 0.7169, 0.0971)),
        (b"bXYZ", xyz(0.1431, 0.0606, 0.7141)),
        (b"rTRC", curve),
        (b"gTRC", curve),
        (b"bTRC", curve),
        (b"cprt", b"text" + b"\0" * 4 + b"none\0\0\0\0"),
    ]
    offset = 128 + 4 + 12 * len(tags)
    table, body = b"", b""
    for signature, data in tags:
        data += b"\0" * (-len(data) % 4)
        table += signature + struct.pack(">II", offset + len(body), len(data))
        body += data
    header = (
        struct.pack(">I", offset + len(body))
        + b"lcms"
        + struct.pack(">I", 0x02100000)
        + b"mntrRGB XYZ "
        + b"\0" * 12
        + b"acsp"
        + b"\0" * 28
        + _s15(0.9642)
        + _s15(1.0)
        + _s15(0.8249)
    ).ljust(128, b"\0")
    return header + struct.pack(">I", len(tags)) + table + body


def _linear(pixels: np.ndarray) -> np.ndarray:
    """sRGB-encoded 8-bit values as linear light, 8-bit."""
    v = pixels / 255
    lin = np.where(v <= 0.04045, v / 12.92, ((v + 0.055) / 1.055) ** 2.4)
    return np.rint(lin * 255).astype(np.uint8)


def _lab() -> Image.Image:
    srgb, lab = ImageCms.createProfile("sRGB"), ImageCms.createProfile("LAB")
    return ImageCms.profileToProfile(RGB, srgb, lab, outputMode="LAB")


def _frames(suffix: str, **options) -> Callable[[Path], Path]:
    """Two frames or pages: the reference first, then its negative."""
    other = Image.fromarray(255 - REF)

    def write(folder: Path) -> Path:
        path = folder / f"frames{suffix}"
        first, second = RGB, other
        if suffix == ".gif":
            first, second = RGB.quantize(256), other.quantize(256)
        first.save(path, save_all=True, append_images=[second], **options)
        return path

    return write


# stored picture for each EXIF orientation: what a camera writes when the picture, shown
# upright, is the reference
STORED = {
    1: lambda a: a,
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.transpose(1, 0, 2),
    6: lambda a: np.rot90(a, 1),
    7: lambda a: np.rot90(a, 2).transpose(1, 0, 2),
    8: lambda a: np.rot90(a, -1),
}


def _oriented(orientation: int) -> Callable[[Path], Path]:
    def write(folder: Path) -> Path:
        exif = Image.Exif()
        exif[0x0112] = orientation
        path = folder / f"oriented{orientation}.jpg"
        image = Image.fromarray(np.ascontiguousarray(STORED[orientation](REF)))
        image.save(path, quality=95, exif=exif.tobytes())
        return path

    return write


@dataclass
class Case:
    write: Callable[[Path], Path]
    mode: str  # the mode PIL opens it in
    expected: np.ndarray | None  # None: refused
    tolerance: float = 0.0  # mean absolute difference allowed (grey levels)
    refusal: str = ""


JPEG = 2.5  # what JPEG compression at quality 95 costs, on average

CASES = {
    "RGB PNG": Case(saved(RGB, ".png"), "RGB", REF),
    "RGB JPEG": Case(saved(RGB, ".jpg", quality=95), "RGB", REF, JPEG),
    "RGB BMP": Case(saved(RGB, ".bmp"), "RGB", REF),
    "1-bit PNG": Case(
        saved(RGB.convert("1"), ".png"),
        "1",
        grey3(np.asarray(RGB.convert("1")).astype(np.uint8) * 255),
    ),
    "L PNG": Case(saved(RGB.convert("L"), ".png"), "L", grey3(GREY)),
    "L JPEG": Case(saved(RGB.convert("L"), ".jpg", quality=95), "L", grey3(GREY), JPEG),
    "LA PNG": Case(
        saved(Image.fromarray(np.dstack([GREY, ALPHA])), ".png"),
        "LA",
        on_black(grey3(GREY), ALPHA),
        0.5,
    ),
    "P PNG": Case(
        saved(RGB.quantize(64), ".png"), "P", np.asarray(RGB.quantize(64).convert("RGB"))
    ),
    "P PNG, transparent index": Case(saved(PALETTE, ".png"), "P", PALETTE_SEEN),
    "P GIF, transparent index": Case(
        saved(PALETTE, ".gif", transparency=PALETTE.info["transparency"]), "P", PALETTE_SEEN
    ),
    "RGBA PNG": Case(
        saved(Image.fromarray(np.dstack([REF, ALPHA])), ".png"), "RGBA", on_black(REF, ALPHA), 0.5
    ),
    "RGB PNG, transparent colour": Case(
        saved(RGB, ".png", transparency=(220, 40, 40)),
        "RGB",
        REF * np.any(REF != (220, 40, 40), axis=2)[..., None].astype(np.uint8),
    ),
    "CMYK JPEG": Case(saved(RGB.convert("CMYK"), ".jpg", quality=95), "CMYK", REF, JPEG),
    "CMYK TIFF": Case(saved(RGB.convert("CMYK"), ".tif"), "CMYK", REF),
    "YCbCr TIFF": Case(saved(RGB.convert("YCbCr"), ".tif"), "YCbCr", REF, 2.0),
    "CIELAB TIFF": Case(saved(_lab(), ".tif"), "LAB", REF, 2.0),
    "I;16 PNG (16-bit grey)": Case(
        saved(Image.fromarray(GREY.astype(np.uint16) * 257), ".png"), "I;16", grey3(GREY)
    ),
    "I;16 TIFF": Case(
        saved(Image.fromarray(GREY.astype(np.uint16) * 257), ".tif"), "I;16", grey3(GREY)
    ),
    "I TIFF, 16-bit values": Case(
        saved(Image.fromarray(GREY.astype(np.int32) * 257), ".tif"), "I", grey3(GREY)
    ),
    "I TIFF, 32-bit values": Case(
        saved(Image.fromarray(GREY.astype(np.int32) * 8_000_000), ".tif"),
        "I",
        None,
        refusal="mode 'I') with values from",
    ),
    "F TIFF, values on [0, 1]": Case(
        saved(Image.fromarray(GREY.astype(np.float32) / 255), ".tif"), "F", grey3(GREY)
    ),
    "F TIFF, values on [0, 255]": Case(
        saved(Image.fromarray(GREY.astype(np.float32)), ".tif"),
        "F",
        None,
        refusal="mode 'F') with values from 31 to 214",
    ),
    "16-bit RGB PNG": Case(_png16_rgb, "RGB", REF),
    **{f"JPEG, EXIF orientation {k}": Case(_oriented(k), "RGB", REF, JPEG) for k in range(1, 9)},
    "animated GIF (first frame)": Case(
        _frames(".gif"), "P", np.asarray(RGB.quantize(256).convert("RGB"))
    ),
    "multi-page TIFF (first page)": Case(_frames(".tif"), "RGB", REF),
    "JPEG with an sRGB ICC profile": Case(
        saved(
            RGB,
            ".jpg",
            quality=95,
            icc_profile=ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes(),
        ),
        "RGB",
        REF,
        JPEG,
    ),
    "PNG with a linear-light ICC profile": Case(
        saved(Image.fromarray(_linear(REF)), ".png", icc_profile=linear_rgb_profile()),
        "RGB",
        REF,
        1.5,
    ),
}
if features.check("webp"):
    CASES["RGBA WebP (lossless)"] = Case(
        saved(Image.fromarray(np.dstack([REF, ALPHA])), ".webp", lossless=True),
        "RGBA",
        on_black(REF, ALPHA),
        0.5,
    )


@pytest.mark.parametrize("name", list(CASES))
def test_every_mode_decodes_as_the_picture_it_is_or_is_refused(tmp_path, name):
    case = CASES[name]
    path = case.write(tmp_path)
    with Image.open(path) as image:
        assert image.mode == case.mode, "the case does not test the mode it names"
    if case.expected is None:
        with pytest.raises(UnsupportedImage, match=re.escape(case.refusal)) as info:
            open_rgb(path)
        assert "\n" not in str(info.value) and "save it as" in str(info.value)
        return
    decoded = np.asarray(open_rgb(path))
    assert decoded.shape == case.expected.shape  # upright: EXIF orientation applied
    difference = np.abs(decoded.astype(int) - case.expected.astype(int))
    assert difference.mean() <= case.tolerance, (name, difference.mean(), difference.max())
    if not case.tolerance:
        assert difference.max() <= 1, (name, difference.max())
    # the model's input, through read_image: the same picture, resized
    pixels = read_image(path, size=32)
    want = np.asarray(Image.fromarray(case.expected).resize((32, 32), Image.Resampling.BILINEAR))
    assert np.abs(pixels.astype(int) - want.astype(int)).mean() <= case.tolerance + 1.0


def test_the_reference_is_no_flat_picture():
    """The table would not notice a flat decoding if the reference were flat itself."""
    assert REF.std() > 40 and GREY.std() > 30 and len(np.unique(GREY)) > 100


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("RGBX", REF),
        ("HSV", REF),
        ("La", on_black(grey3(GREY), ALPHA)),
        ("RGBa", on_black(REF, ALPHA)),
        ("PA", on_black(np.asarray(RGB.quantize(64).convert("RGB")), ALPHA)),
        ("I;16B", grey3(GREY)),
        ("I;16L", grey3(GREY)),
    ],
)
def test_modes_only_made_in_memory(mode, expected):
    """Modes no file format opens in, as PIL images handed to zoo (``zoo.load(...).predict``)."""
    if mode in ("La", "RGBa"):
        straight = Image.fromarray(
            np.dstack([GREY, ALPHA]) if mode == "La" else np.dstack([REF, ALPHA])
        )
        image = straight.convert(mode)
    elif mode == "PA":
        image = RGB.quantize(64).convert("PA")
        image.putalpha(Image.fromarray(ALPHA))
    elif mode.startswith("I;16"):
        order = ">" if mode == "I;16B" else "<"
        samples = (GREY.astype(np.uint16) * 257).astype(f"{order}u2").tobytes()
        image = Image.frombytes(mode, (WIDTH, HEIGHT), samples)
    else:
        image = RGB.convert(mode)
    assert image.mode == mode
    decoded = np.asarray(to_rgb(image))
    assert np.abs(decoded.astype(int) - expected.astype(int)).mean() <= 2.0, mode


def test_a_mode_zoo_does_not_know_is_refused_naming_it():
    strange = types.SimpleNamespace(mode="I;32S", info={}, has_transparency_data=False)
    with pytest.raises(UnsupportedImage, match="colour mode 'I;32S' cannot be shown faithfully"):
        to_rgb(strange)


def test_refusals_name_the_file_and_the_mode_in_one_line(tmp_path, write_images, monkeypatch):
    """In a data set and in zoo predict's decoder, the refusal names the file and the mode."""
    monkeypatch.setattr(images, "_MEMORY", {})
    folder = tmp_path / "set"
    write_images(folder / "a", ["a0", "a1"])
    write_images(folder / "b", ["b0"])
    Image.fromarray(GREY.astype(np.float32)).save(folder / "b" / "float.tif")
    (folder / "b" / "float.tif").rename(folder / "b" / "float.png")  # folder: takes png
    dataset = load_dataset(f"folder:{folder}", workspace=tmp_path)
    with pytest.raises(DataProblems) as info:
        images.load_images(dataset, size=16)
    (line,) = info.value.problems
    assert "float.png" in line and "mode 'F'" in line


# --- files that are not regular files -------------------------------------------------------


def _decoded_within(seconds: float, work: Callable[[], object]):
    """``work()`` in a thread: its result or exception, or a failure if it blocks."""
    outcome: dict = {}

    def run():
        try:
            outcome["value"] = work()
        except BaseException as exc:  # noqa: BLE001 - handed back to the test
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), "blocked on a file that is not a regular file"
    return outcome


needs_fifo = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes here")


@needs_fifo
def test_a_fifo_named_like_an_image_is_refused_without_opening_it(tmp_path):
    fifo = tmp_path / "x.jpg"
    os.mkfifo(fifo)
    outcome = _decoded_within(10, lambda: read_image(fifo, size=16))
    assert isinstance(outcome.get("error"), ImageProblem), outcome
    message = str(outcome["error"])
    assert "FIFO" in message and "not a regular file" in message and "\n" not in message


def test_devices_sockets_and_folders_are_refused(tmp_path):
    folder = tmp_path / "folder.jpg"
    folder.mkdir()
    specials = {folder: "a folder"}
    if os.path.exists("/dev/null"):
        (tmp_path / "null.jpg").symlink_to("/dev/null")
        specials[tmp_path / "null.jpg"] = "a character device"
    path = tmp_path / "s.png"
    if hasattr(socket, "AF_UNIX") and len(str(path)) < 100:
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind(str(path))
        specials[path] = "a socket"
    for special, kind in specials.items():
        outcome = _decoded_within(10, lambda s=special: open_rgb(s))
        assert isinstance(outcome.get("error"), ImageProblem), (special, outcome)
        assert str(outcome["error"]).startswith(f"{kind}, not a regular file"), outcome


@needs_fifo
def test_a_data_set_with_a_fifo_names_it_among_its_problems(tmp_path, write_images, monkeypatch):
    monkeypatch.setattr(images, "_MEMORY", {})
    folder = tmp_path / "set"
    write_images(folder / "a", ["a0", "a1"])
    write_images(folder / "b", ["b0", "b1"])
    os.mkfifo(folder / "a" / "x.jpg")
    dataset = load_dataset(f"folder:{folder}", workspace=tmp_path)
    outcome = _decoded_within(30, lambda: images.load_images(dataset, size=16))
    error = outcome.get("error")
    assert isinstance(error, DataProblems), outcome
    (line,) = error.problems
    assert "x.jpg" in line and "FIFO" in line


def test_in_memory_sources_take_the_same_path(tmp_path):
    """A file object and a PIL image decode as the file does (orientation included)."""
    path = _oriented(6)(tmp_path)
    from_file = read_image(path, size=24)
    with Image.open(path) as image:
        from_pil = read_image(image, size=24)
    from_bytes = read_image(io.BytesIO(path.read_bytes()), size=24)
    np.testing.assert_array_equal(from_file, from_bytes)
    np.testing.assert_array_equal(from_file, from_pil)
    assert pd.Series(from_file.ravel()).std() > 20

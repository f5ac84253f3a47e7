"""The exported graph's border crop and resize equal zoo's (numpy crop, then PIL's resize)."""

from __future__ import annotations

import numpy as np
import pytest

from zoo.data.images import crop_black_border, read_image
from zoo.deploy.export.resample import border_box, crop_and_resize


def lesion_like(rng, height: int, width: int, frame: tuple[int, int, int, int]) -> np.ndarray:
    """A smooth skin-and-lesion picture with noise and a black frame (top, bottom, left,
    right) as a dermoscope's field of view leaves."""
    y, x = np.mgrid[0:height, 0:width]
    blob = np.exp(-(((y - height / 2) / (height / 4)) ** 2 + ((x - width / 2) / (width / 5)) ** 2))
    base = np.stack([200 - 120 * blob, 160 - 110 * blob, 140 - 100 * blob], axis=-1)
    image = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
    top, bottom, left, right = frame
    image[:top], image[height - bottom :], image[:, :left], image[:, width - right :] = 0, 0, 0, 0
    return image


def graph_resize(image: np.ndarray, size: int, *, crop: bool, interpolation: str) -> np.ndarray:
    pixels = image[None].astype("float32")
    box = border_box(pixels) if crop else None
    return np.asarray(crop_and_resize(pixels, box, size, interpolation))[0]


@pytest.mark.parametrize("shape", [(150, 200), (211, 173), (40, 90), (300, 300)])
def test_border_box_is_crop_black_border(shape):
    rng = np.random.default_rng(sum(shape))
    for frame in [(0, 0, 0, 0), (12, 3, 20, 0), (0, 30, 5, 9), (shape[0] // 2 + 5, 0, 0, 0)]:
        image = lesion_like(rng, *shape, frame)
        top, bottom, left, right = (int(v[0]) for v in border_box(image[None].astype("float32")))
        expected = crop_black_border(image)
        np.testing.assert_array_equal(image[top:bottom, left:right], expected)


def test_border_box_leaves_a_dark_image_whole():
    image = np.full((20, 30, 3), 10, dtype=np.uint8)  # nothing bright: crop_black_border keeps it
    assert [int(v[0]) for v in border_box(image[None].astype("float32"))] == [0, 20, 0, 30]


CASES = [  # (height, width), black frame, size: down- and upscaling, square and not
    ((150, 200), (0, 0, 0, 0), 192),
    ((150, 200), (10, 4, 17, 2), 64),
    ((173, 211), (0, 9, 0, 21), 299),
    ((480, 640), (30, 30, 60, 60), 224),
    ((64, 64), (0, 0, 0, 0), 64),
]


def compared(interpolation: str, crop: bool):
    """(graph, zoo) pixels of each case."""
    rng = np.random.default_rng(7)
    for shape, frame, size in CASES:
        image = lesion_like(rng, *shape, frame)
        expected = read_image(image, size=size, crop_borders=crop, interpolation=interpolation)
        yield graph_resize(image, size, crop=crop, interpolation=interpolation), expected


@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic", "lanczos", "area"])
@pytest.mark.parametrize("crop", [True, False])
def test_graph_resize_is_pils_but_for_rare_rounding(interpolation, crop):
    """At most one grey level apart from zoo's own decoding, on at most 1 pixel in 100 (PIL
    sums in integers, the graph in float32, which breaks some of the exact ties at half a grey
    level that rational scales make)."""
    differing = total = 0
    for got, expected in compared(interpolation, crop):
        assert np.abs(got - expected.astype(float)).max() <= 1
        differing += int(np.count_nonzero(got != expected))
        total += expected.size
    assert differing / total <= 0.01


@pytest.mark.parametrize("crop", [True, False])
def test_graph_nearest_takes_the_pixel_under_each_centre(crop):
    """PIL's nearest computes centres in 16.16 fixed point; the graph exactly. They pick
    another neighbour only where a centre falls on a pixel edge."""
    differing = total = 0
    for got, expected in compared("nearest", crop):
        differing += int(np.count_nonzero(got != expected))
        total += expected.size
    assert differing / total <= 0.02


def test_images_of_one_batch_are_cropped_each_by_its_own_border():
    rng = np.random.default_rng(3)
    images = [lesion_like(rng, 120, 160, frame) for frame in [(0, 0, 0, 0), (20, 5, 30, 10)]]
    pixels = np.stack(images).astype("float32")
    got = np.asarray(crop_and_resize(pixels, border_box(pixels), 48, "bilinear"))
    for image, out in zip(images, got, strict=True):
        expected = read_image(image, size=48, crop_borders=True)
        assert np.abs(out - expected.astype(float)).max() <= 1

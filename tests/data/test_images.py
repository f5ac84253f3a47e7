"""zoo.data.images and zoo.data.pipeline: decoding, border crop, problems, cache, tf.data."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from zoo.data import images
from zoo.data.images import ImageProblem, crop_black_border, load_images, read_image
from zoo.data.loading import load_dataset
from zoo.data.pipeline import inference_dataset, training_dataset
from zoo.errors import DataProblems, ZooError


@pytest.fixture
def fresh_memory(monkeypatch):
    """An empty in-memory image cache for this test (the module keeps one data set)."""
    monkeypatch.setattr(images, "_MEMORY", {})


def _vignetted(height=90, width=120, *, radius=0.8) -> np.ndarray:
    """A skin-coloured field inside the dark circle of a dermoscope."""
    yy, xx = np.mgrid[0:height, 0:width].astype(float)
    d = np.hypot((yy - height / 2) / (height / 2), (xx - width / 2) / (width / 2))
    pixels = np.zeros((height, width, 3), np.uint8)
    pixels[d < radius] = (200, 150, 120)
    return pixels


def test_crop_black_border_rectangle_is_exact():
    pixels = np.zeros((80, 100, 3), np.uint8)
    pixels[10:70, 15:85] = (180, 120, 90)
    cropped = crop_black_border(pixels)
    assert cropped.shape == (60, 70, 3)
    assert (cropped == (180, 120, 90)).all()


def test_crop_black_border_on_a_vignette():
    pixels = _vignetted()
    cropped = crop_black_border(pixels)
    h, w = cropped.shape[:2]
    assert h < 90 and w < 120  # the dark frame is gone …
    assert h > 0.5 * 90 and w > 0.5 * 120  # … but not the lesion field
    assert (cropped.max(axis=2) > 25).mean() > 0.85
    # roughly centred
    rows = np.flatnonzero((pixels.max(axis=2) > 25).mean(axis=1) >= 0.5)
    assert h == rows[-1] + 1 - rows[0]


def test_crop_black_border_leaves_other_images_alone():
    bright = np.full((20, 30, 3), 200, np.uint8)
    np.testing.assert_array_equal(crop_black_border(bright), bright)
    dark = np.zeros((20, 30, 3), np.uint8)
    assert crop_black_border(dark) is dark
    speck = np.zeros((40, 40, 3), np.uint8)
    speck[18:22, 18:22] = 255  # less than half a side would remain: keep the image
    assert crop_black_border(speck) is speck


def test_read_image_crops_then_resizes(tmp_path):
    Image.fromarray(_vignetted(radius=0.7)).save(tmp_path / "v.png")
    plain = read_image(tmp_path / "v.png", size=32)
    cropped = read_image(tmp_path / "v.png", size=32, crop_borders=True)
    assert plain.shape == cropped.shape == (32, 32, 3) and cropped.dtype == np.uint8
    assert (cropped.max(axis=2) < 25).mean() < (plain.max(axis=2) < 25).mean()


@pytest.mark.parametrize(
    ("name", "mode"),
    [
        ("gray.png", "L"),
        ("gray.jpg", "L"),
        ("alpha.png", "RGBA"),
        ("cmyk.jpg", "CMYK"),
        ("palette.png", "P"),
        ("sixteen.png", "I;16"),
        ("rgb.bmp", "RGB"),
    ],
)
def test_other_colour_modes_are_converted_to_rgb(tmp_path, write_images, name, mode):
    (path,) = write_images(tmp_path, [name], mode=mode, size=20)
    with Image.open(path) as check:
        assert check.mode == mode or (mode, check.mode) == ("I;16", "I")
    for crop in (False, True):
        pixels = read_image(path, size=8, crop_borders=crop)
        assert pixels.shape == (8, 8, 3) and pixels.dtype == np.uint8
    if mode == "L":
        assert (pixels[..., 0] == pixels[..., 1]).all() and (pixels[..., 1] == pixels[..., 2]).all()


def _broken_files(folder, write_images) -> dict[str, str]:
    """image id → what is wrong with it (ok images map to '')."""
    write_images(folder, ["ok1", "ok2", "ok3"])
    (folder / "garbage.jpg").write_bytes(np.random.default_rng(0).bytes(500))
    (big,) = write_images(folder, ["whole.jpg"], size=96)
    data = big.read_bytes()
    (folder / "truncated.jpg").write_bytes(data[: len(data) // 2])
    big.unlink()
    (folder / "empty.png").write_bytes(b"")
    return {
        "ok1": "",
        "ok2": "",
        "ok3": "",
        "garbage": "not a readable image",
        "truncated": "truncated",
        "empty": "not a readable image",
        "absent": "file not found",
    }


def test_bad_images_are_reported_all_at_once(tmp_path, write_images, fresh_memory):
    folder = tmp_path / "set"
    expected = _broken_files(folder, write_images)
    files = {i: f"{i}.png" if i == "empty" else f"{i}.jpg" for i in expected}
    frame = pd.DataFrame({"image": [files[i] for i in expected], "label": ["a", "b"] * 3 + ["a"]})
    frame.to_csv(folder / "list.csv", index=False)
    dataset = load_dataset(f"csv:{folder / 'list.csv'}", workspace=tmp_path)
    assert dataset.problems == [f"{folder / 'list.csv'} line 8: image 'absent.jpg' not found"]
    with pytest.raises(DataProblems) as info:
        load_images(dataset, size=16, cache_dir=tmp_path / "cache")
    problems = info.value.problems
    assert len(problems) == 4, problems
    text = str(info.value)
    assert text.startswith(f"4 problem(s) in data set csv:{folder / 'list.csv'}")
    for image_id, why in expected.items():
        if why and image_id != "absent":
            (line,) = [p for p in problems if f"image {files[image_id]} " in p]
            assert why in line and str(folder / files[image_id]) in line
    assert "absent.jpg" in text
    assert not (tmp_path / "cache").exists()  # nothing cached from a bad data set


def test_read_image_problems(tmp_path, write_images):
    expected = _broken_files(tmp_path, write_images)
    for image_id, why in expected.items():
        path = tmp_path / (f"{image_id}.png" if image_id == "empty" else f"{image_id}.jpg")
        if why:
            with pytest.raises(ImageProblem, match=why):
                read_image(path, size=16)
        else:
            assert read_image(path, size=16).shape == (16, 16, 3)


def test_reader_and_image_problems_are_joined(tmp_path, write_ham10000, fresh_memory):
    folder = write_ham10000(tmp_path / "ham", classes=("mel", "nv"), lesions=2)
    meta = pd.read_csv(folder / "HAM10000_metadata.csv")
    meta.loc[0, "dx"] = "xyz"
    meta.to_csv(folder / "HAM10000_metadata.csv", index=False)
    (folder / "images" / "ISIC_0000003.jpg").write_bytes(b"not a jpeg at all")
    dataset = load_dataset(str(folder), workspace=tmp_path)
    with pytest.raises(DataProblems) as info:
        images.validate(dataset)
    assert len(info.value.problems) == 2
    assert "unknown label 'xyz'" in info.value.problems[0]
    assert "ISIC_0000003" in info.value.problems[1]


@pytest.fixture
def small_set(tmp_path, write_images):
    folder = tmp_path / "small"
    write_images(folder / "a", [f"a{i}" for i in range(6)], size=40)
    write_images(folder / "b", [f"b{i}.png" for i in range(4)], size=24, seed=50)
    Image.fromarray(_vignetted()).save(folder / "b" / "vignette.png")
    return load_dataset(f"folder:{folder}", workspace=tmp_path)


def test_disk_cache_returns_the_pixels_of_a_fresh_decode(
    tmp_path, small_set, monkeypatch, fresh_memory
):
    settings = dict(size=24, crop_borders=True, interpolation="bicubic")
    fresh = load_images(small_set, **settings)
    assert fresh.pixels.shape == (11, 24, 24, 3) and fresh.ids == small_set.ids
    images._MEMORY.clear()
    cache = tmp_path / "cache"
    written = load_images(small_set, cache_dir=cache, **settings)
    assert sorted(p.suffix for p in cache.iterdir()) == [".json", ".npy"]
    np.testing.assert_array_equal(written.pixels, fresh.pixels)

    images._MEMORY.clear()

    def no_decoding(*args, **kwargs):
        raise AssertionError("the disk cache should have been used")

    monkeypatch.setattr(images, "decode_many", no_decoding)
    cached = load_images(small_set, cache_dir=cache, **settings)
    assert cached.ids == fresh.ids
    np.testing.assert_array_equal(np.asarray(cached.pixels), fresh.pixels)
    some = ["b/vignette", "a/a3"]
    np.testing.assert_array_equal(cached.take(some), fresh.take(some))
    # other settings are another cache entry
    monkeypatch.undo()
    images._MEMORY.clear()
    other = load_images(small_set, cache_dir=cache, size=24)
    assert not np.array_equal(other.take(["b/vignette"]), fresh.take(["b/vignette"]))


def test_cached_pipeline_yields_the_same_images_as_the_uncached_one(
    tmp_path, small_set, fresh_memory
):
    """Issue 5: the cached pipeline yields the same images as the uncached one."""
    settings = dict(size=16, crop_borders=True)
    uncached = load_images(small_set, **settings)
    images._MEMORY.clear()
    load_images(small_set, cache_dir=tmp_path / "cache", **settings)
    images._MEMORY.clear()
    cached = load_images(small_set, cache_dir=tmp_path / "cache", **settings)
    labels = small_set.labels

    def batches(table):
        dataset, steps = training_dataset(table.pixels, labels, num_classes=2, batch_size=4, seed=7)
        return [tuple(np.asarray(t) for t in batch) for batch in dataset.take(2 * steps)]

    for a, b in zip(batches(uncached), batches(cached), strict=True):
        for x, y in zip(a, b, strict=True):
            np.testing.assert_array_equal(x, y)


def test_data_larger_than_memory_streams_from_the_disk_cache(
    tmp_path, small_set, fresh_memory, monkeypatch
):
    """Over the memory budget, images are decoded straight into the cache file and read from
    it batch by batch: the same batches, the same inference order, as the in-memory path."""
    settings = dict(size=16, crop_borders=True)
    in_memory = load_images(small_set, **settings)
    images._MEMORY.clear()
    monkeypatch.setenv("ZOO_MEMORY_BUDGET_GB", "0")
    on_disk = load_images(small_set, cache_dir=tmp_path / "cache", **settings)
    assert isinstance(on_disk.pixels, np.memmap)
    cached_files = sorted(p.suffix for p in (tmp_path / "cache").iterdir())
    assert cached_files == [".json", ".npy"]  # no temporary left behind
    ids = list(reversed(small_set.ids))
    streamed = on_disk.take(ids)
    assert isinstance(streamed, images.DiskRows) and len(streamed) == len(ids)
    np.testing.assert_array_equal(streamed[:], in_memory.take(ids))
    np.testing.assert_array_equal(streamed[[2, 0]], in_memory.take([ids[2], ids[0]]))
    labels = small_set.subset(ids).labels

    def batches(pixels):
        dataset, steps = training_dataset(pixels, labels, num_classes=2, batch_size=4, seed=3)
        return [tuple(np.asarray(t) for t in batch) for batch in dataset.take(2 * steps)]

    for a, b in zip(batches(in_memory.take(ids)), batches(streamed), strict=True):
        for x, y in zip(a, b, strict=True):
            np.testing.assert_array_equal(x, y)
    ordered = np.concatenate([np.asarray(b) for b in inference_dataset(streamed, batch_size=3)])
    np.testing.assert_array_equal(ordered, in_memory.take(ids).astype(np.float32))


def test_memory_budget_must_be_a_number(monkeypatch):
    monkeypatch.setenv("ZOO_MEMORY_BUDGET_GB", "lots")
    with pytest.raises(ZooError, match="ZOO_MEMORY_BUDGET_GB must be a number.*'lots'"):
        images.memory_budget()


def test_training_dataset_shapes_and_weights():
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (30, 8, 8, 3), dtype=np.uint8)
    labels = np.array([0] * 20 + [1] * 7 + [2] * 3)
    weights = np.array([0.5, 2.0, 3.0], np.float32)[labels]
    dataset, steps = training_dataset(
        pixels, labels, num_classes=3, batch_size=8, sample_weights=weights
    )
    assert steps == 4
    x, y, w = next(iter(dataset))
    assert x.shape == (8, 8, 8, 3) and x.dtype.name == "float32"
    assert y.shape == (8, 3) and w.shape == (8,)
    x, y, w = (np.asarray(t) for t in (x, y, w))
    assert x.min() >= 0 and x.max() <= 255
    np.testing.assert_array_equal(y.sum(axis=1), 1)
    np.testing.assert_allclose(w, np.array([0.5, 2.0, 3.0])[y.argmax(axis=1)])
    # the images really belong to their labels
    lookup = {pixels[i].tobytes(): labels[i] for i in range(30)}
    for image, onehot in zip(x.astype(np.uint8), y, strict=True):
        assert lookup[image.tobytes()] == onehot.argmax()
    # an epoch is a shuffled pass over every image
    seen = np.concatenate([np.asarray(b[1]).argmax(1) for b in dataset.take(steps)])
    assert len(seen) >= 30


@pytest.mark.parametrize("balanced", [False, True])
def test_balanced_sampling_gives_uniform_classes(balanced):
    labels = np.array([0] * 40 + [1] * 8 + [2] * 2)
    pixels = np.zeros((50, 2, 2, 3), np.uint8)
    dataset, _ = training_dataset(pixels, labels, num_classes=3, batch_size=25, balanced=balanced)
    drawn = np.concatenate([np.asarray(y).argmax(1) for _, y, _ in dataset.take(60)])
    share = np.bincount(drawn, minlength=3) / len(drawn)
    expected = np.full(3, 1 / 3) if balanced else np.array([0.8, 0.16, 0.04])
    np.testing.assert_allclose(share, expected, atol=0.04)


def test_inference_dataset_keeps_order():
    pixels = np.arange(10 * 2 * 2 * 3, dtype=np.uint8).reshape(10, 2, 2, 3)
    batches = [np.asarray(b) for b in inference_dataset(pixels, batch_size=4)]
    assert [len(b) for b in batches] == [4, 4, 2]
    np.testing.assert_array_equal(np.concatenate(batches), pixels.astype(np.float32))


# --- bounds: sizes checked before any work, large images reduced while decoding -------------


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("batch_size", 0),
        ("batch_size", images.MAX_BATCH_SIZE + 1),
        ("batch_size", 100_000_000_000),
        ("batch_size", True),
        ("batch_size", 32.0),
        ("image_size", images.MAX_IMAGE_SIZE + 1),
        ("image_size", "224"),
    ],
)
def test_sizes_over_the_limits_are_one_line_errors(name, value):
    with pytest.raises(ZooError) as info:
        images.check_bound(name, value)
    message = str(info.value)
    assert message.startswith(f"{name} must be a whole number") and "\n" not in message
    assert repr(value) in message and "Limits in docs/usage.md" in message


def test_the_limits_are_above_every_recipe():
    from zoo.recipes.recipe import load_registry

    for recipe in load_registry():
        assert recipe.input.size <= images.MAX_IMAGE_SIZE, recipe.name
        assert recipe.batch_size <= images.MAX_BATCH_SIZE, recipe.name
        images.check_bounds(batch_size=recipe.batch_size, image_size=recipe.input.size)


def test_a_huge_image_size_is_refused_before_any_allocation(tmp_path, write_images, monkeypatch):
    (path,) = write_images(tmp_path, ["a"])

    def no_allocation(*args, **kwargs):
        raise AssertionError("allocated before checking the size")

    monkeypatch.setattr(images.np, "zeros", no_allocation)
    for decode in (
        lambda: read_image(path, size=100_000),
        lambda: images.decode_many([str(path)], size=100_000),
    ):
        with pytest.raises(ZooError, match="image_size must be a whole number of pixels from 1 to"):
            decode()


def _png_header(path, width: int, height: int):
    """A PNG claiming ``width`` × ``height`` pixels with a tiny body."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
    )
    return path


def test_images_over_the_pixel_limit_are_refused_before_decoding(tmp_path, monkeypatch):
    # over PIL's own decompression-bomb limit: PIL's refusal, reported as too large
    bomb = _png_header(tmp_path / "bomb.png", 20_000, 20_000)
    with pytest.raises(images.ImageTooLarge, match="DecompressionBombError"):
        read_image(bomb, size=32)
    # zoo's limit holds whatever PIL is set to: checked from the header, before decoding
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    claimed = _png_header(tmp_path / "claimed.png", 15_000, 15_000)
    with pytest.raises(images.ImageTooLarge, match="15000 × 15000 = 225,000,000 pixels, over"):
        read_image(claimed, size=32)
    monkeypatch.setattr(images, "MAX_IMAGE_PIXELS", 1000)
    small = tmp_path / "small.png"
    Image.new("RGB", (40, 40)).save(small)
    with pytest.raises(images.ImageTooLarge, match="1,600 pixels"):
        read_image(small, size=8)
    with pytest.raises(images.ImageTooLarge):
        read_image(np.zeros((40, 40, 3), np.uint8), size=8)


def _smooth(height: int, width: int) -> np.ndarray:
    yy, xx = np.mgrid[0:height, 0:width]
    blue = xx * yy * 255 // (width * height)
    return np.dstack([xx * 255 // width, yy * 255 // height, blue]).astype(np.uint8)


@pytest.mark.parametrize(("suffix", "crop"), [(".png", False), (".png", True), (".jpg", False)])
def test_a_large_image_is_decoded_reduced(tmp_path, monkeypatch, suffix, crop):
    """A 3000 × 2400 image for a 32 px input: the picture zoo converts and keeps is a few
    times the input size, never the full 7.2 million pixels (21 MB); a JPEG is even decoded
    small by libjpeg."""
    import tracemalloc

    path = tmp_path / f"large{suffix}"
    Image.fromarray(_smooth(2400, 3000)).save(path)
    seen = []
    convert = images.to_rgb

    def spy(image):
        seen.append(image.size)
        return convert(image)

    monkeypatch.setattr(images, "to_rgb", spy)
    tracemalloc.start()
    try:
        pixels = read_image(path, size=32, crop_borders=crop)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert pixels.shape == (32, 32, 3)
    multiple = images.CROP_DRAFT if crop else images.DRAFT
    (size,) = seen
    assert min(size) < 2 * multiple * 32, size  # reduced before the conversion
    assert peak < 2_000_000, peak  # numpy never held the full picture (21.6 MB)
    # the same picture as decoding in full, within the reduction's rounding
    monkeypatch.setattr(images, "to_rgb", convert)
    full = np.asarray(images.open_rgb(path))
    if crop:
        full = images.crop_black_border(full)
    want = np.asarray(Image.fromarray(full).resize((32, 32), Image.Resampling.BILINEAR))
    assert np.abs(pixels.astype(int) - want.astype(int)).mean() < 3


def test_at_most_two_large_images_are_decoded_at_once(tmp_path, monkeypatch):
    import threading
    import time

    paths = []
    for i in range(6):
        paths.append(tmp_path / f"p{i}.png")
        Image.fromarray(_smooth(60, 80)).save(paths[-1])
    monkeypatch.setattr(images, "LARGE_IMAGE_PIXELS", 100)  # every one of them is "large"
    active, most, guard = [0], [0], threading.Lock()
    picture = images._picture

    def slow(*args, **kwargs):
        with guard:
            active[0] += 1
            most[0] = max(most[0], active[0])
        time.sleep(0.1)
        with guard:
            active[0] -= 1
        return picture(*args, **kwargs)

    monkeypatch.setattr(images, "_picture", slow)
    pixels, problems = images.decode_many([str(p) for p in paths], size=16)
    assert not problems and pixels.shape == (6, 16, 16, 3)
    assert most[0] == 2

"""Test-time augmentation: parsing, the geometry of every view, weights and prediction."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from zoo.errors import ZooError
from zoo.inference.tta import STEPPAN_ZOOM, TTAScheme, parse_tta, predict_tta

SIZE = 32


def _coordinates(batch=1, size=SIZE):
    """R = 4 × column, G = 4 × row, B = 100 + image index: every pixel says where it came from."""
    rows, cols = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    image = np.stack([4.0 * cols, 4.0 * rows, np.zeros_like(cols, dtype=float)], axis=-1)
    images = np.repeat(image[None], batch, axis=0)
    images[..., 2] = 100.0 + np.arange(batch)[:, None, None]
    return images.astype("float32")


def _noise(shape, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, shape).astype("float32")


def _views(spec, images):
    scheme = parse_tta(spec)
    out = keras.ops.convert_to_numpy(scheme.views(images))
    return out.reshape(scheme.n_views, images.shape[0], *images.shape[1:])


def _invariant_model(classes=4):
    """Mean colour → fixed Dense softmax: invariant to any rotation or flip."""
    inputs = keras.Input((None, None, 3))
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    dense = keras.layers.Dense(classes, activation="softmax")
    model = keras.Model(inputs, dense(x))
    rng = np.random.default_rng(1)
    dense.set_weights([rng.normal(size=(3, classes)) * 3, rng.normal(size=classes)])
    return model


# --- parsing ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "spec, name, canonical, n_views",
    [
        ("none", "none", "none", 1),
        ("steppan", "steppan", "steppan", 9),
        ("dihedral", "dihedral", "dihedral", 8),
        ("rotations:8", "rotations-8", "rotations:8", 8),
        (" Rotations:1 ", "rotations-1", "rotations:1", 1),
        ("rotations-64", "rotations-64", "rotations:64", 64),
    ],
)
def test_parse_forms(spec, name, canonical, n_views):
    scheme = parse_tta(spec)
    assert (scheme.name, scheme.spec, scheme.n_views) == (name, canonical, n_views)
    assert parse_tta(scheme.name) == scheme == parse_tta(scheme.spec)
    assert len(scheme.weights) == n_views
    assert sum(scheme.weights) == pytest.approx(1.0)


@pytest.mark.parametrize(
    "spec", ["", "steppen", "rotations", "rotations:0", "rotations:65", "rot:x"]
)
def test_bad_spec_lists_allowed_forms(spec):
    with pytest.raises(ZooError) as err:
        parse_tta(spec)
    message = str(err.value)
    assert repr(spec) in message and "rotations:" in message and "\n" not in message
    if not spec.startswith("rotations:"):
        assert all(form in message for form in ("none", "steppan", "dihedral"))


def test_steppan_weights():
    weights = parse_tta("steppan").weights
    assert weights[0] == pytest.approx(0.4)
    assert weights[1:] == pytest.approx((0.075,) * 8)


def test_scheme_is_frozen_and_hashable():
    scheme = parse_tta("steppan")
    with pytest.raises(AttributeError):
        scheme.kind = "none"  # type: ignore[misc]
    assert {scheme: 1}[TTAScheme(kind="steppan")] == 1


# --- views ------------------------------------------------------------------------------


def test_views_are_view_major():
    images = _noise((3, 16, 16, 3))
    views = _views("rotations:4", images)
    for b in range(3):
        alone = _views("rotations:4", images[b : b + 1])
        np.testing.assert_array_equal(views[:, b], alone[:, 0])


def test_none_view_is_the_image():
    images = _noise((2, 16, 16, 3))
    np.testing.assert_array_equal(_views("none", images)[0], images)


def test_steppan_corner_crops_hold_the_right_corner():
    images = _coordinates(batch=2)
    views = _views("steppan", images)
    np.testing.assert_array_equal(views[0], images)
    side = SIZE / STEPPAN_ZOOM
    out = np.arange(SIZE)
    # Sample positions of a crop of side `side` starting at edge `start`, resized
    # back with half-pixel centres, clamped to the image like keras resize.
    near = np.clip((out + 0.5) / STEPPAN_ZOOM - 0.5, 0, SIZE - 1)
    far = np.clip(SIZE - side + (out + 0.5) / STEPPAN_ZOOM - 0.5, 0, SIZE - 1)
    corners = {1: (near, near), 2: (near, far), 3: (far, near), 4: (far, far)}  # (rows, cols)
    for view, (rows, cols) in corners.items():
        for b in range(2):
            np.testing.assert_allclose(views[view, b, 0, :, 0], 4 * cols, atol=1e-3)
            np.testing.assert_allclose(views[view, b, :, 0, 1], 4 * rows, atol=1e-3)
            np.testing.assert_array_equal(views[view, b, ..., 2], 100.0 + b)
    # The top-left crop starts at the top-left pixel, the bottom-right one ends at
    # the bottom-right pixel.
    np.testing.assert_allclose(views[1, :, 0, 0, :2], [[0, 0]] * 2, atol=1e-3)
    np.testing.assert_allclose(views[4, :, -1, -1, :2], [[4 * 31, 4 * 31]] * 2, atol=1e-3)
    # Views 5–8 are views 1–4 mirrored left–right.
    np.testing.assert_array_equal(views[5:], views[1:5][:, :, :, ::-1])


def test_steppan_with_a_colour_block():
    images = np.full((1, SIZE, SIZE, 3), 50.0, dtype="float32")
    images[:, :8, :8] = (255.0, 0.0, 0.0)  # red block in the top-left corner
    views = _views("steppan", images)
    red = views[..., 0] > 200
    assert red[1, 0, 0, 0] and not red[1, 0, -1, -1]  # top-left crop: red top left
    assert red[5, 0, 0, -1] and not red[5, 0, 0, 0]  # its mirror: red top right
    redness = (views[..., 0] - views[..., 1]).sum(axis=(1, 2, 3))
    assert redness[1] > redness[0]  # zoomed in on the block's corner, it grows
    assert redness[4] < redness[0]  # the bottom-right crop cuts into it


def test_dihedral_views_are_exact_rotations_and_mirrors():
    images = _noise((2, 16, 16, 3))
    views = _views("dihedral", images)
    for k in range(4):
        rotated = np.rot90(images, k, axes=(1, 2))
        np.testing.assert_array_equal(views[k], rotated)
        np.testing.assert_array_equal(views[4 + k], rotated[:, :, ::-1])  # np.fliplr per image


def test_dihedral_needs_square_images():
    with pytest.raises(ZooError, match="square"):
        parse_tta("dihedral").views(_noise((1, 16, 24, 3)))


def test_rotations_4_are_the_quarter_turns():
    images = _noise((2, SIZE, SIZE, 3))
    views = _views("rotations:4", images)
    for k in range(4):
        np.testing.assert_allclose(
            views[k, :, 1:-1, 1:-1], np.rot90(images, k, axes=(1, 2))[:, 1:-1, 1:-1], atol=1e-2
        )


def test_rotations_keep_the_centre_and_show_no_fill():
    uniform = np.full((1, 17, 17, 3), 200.0, dtype="float32")
    views = _views("rotations:12", uniform)
    assert views.min() > 199.9
    images = _noise((2, 17, 17, 3))
    np.testing.assert_allclose(
        _views("rotations:12", images)[:, :, 8, 8], [images[:, 8, 8]] * 12, atol=1e-3
    )


def test_rotations_on_non_square_images_keep_the_shape():
    uniform = np.full((2, 16, 24, 3), 200.0, dtype="float32")
    views = _views("rotations:8", uniform)
    assert views.shape == (8, 2, 16, 24, 3) and views.min() > 199.9


# --- combine and predict ----------------------------------------------------------------


def test_combine_is_weighted_mean_over_views():
    scheme = parse_tta("steppan")
    plain = np.array([[1.0, 0.0], [0.0, 1.0]])
    other = np.array([[0.0, 1.0], [0.5, 0.5]])
    probs = np.concatenate([plain] + [other] * 8)
    np.testing.assert_allclose(scheme.combine(probs), 0.4 * plain + 0.6 * other)
    with pytest.raises(ValueError, match="n_views"):
        scheme.combine(probs[:-1])


def test_predict_none_equals_model_predict():
    model = _invariant_model()
    images = _noise((5, 16, 16, 3))
    np.testing.assert_allclose(
        predict_tta(model, images, parse_tta("none")), model.predict(images, verbose=0), atol=1e-6
    )


@pytest.mark.parametrize("spec", ["dihedral", "rotations:4"])
def test_invariant_model_is_unchanged_by_symmetric_tta(spec):
    model = _invariant_model()
    images = _noise((5, 16, 16, 3))
    plain = model.predict(images, verbose=0)
    np.testing.assert_allclose(predict_tta(model, images, spec, batch_size=2), plain, atol=1e-6)


def test_chunking_does_not_change_the_result():
    model = _invariant_model()
    images = _noise((7, 16, 16, 3))
    whole = predict_tta(model, images, "steppan", batch_size=64)
    chunked = predict_tta(model, images, "steppan", batch_size=3)
    assert whole.shape == (7, 4)
    np.testing.assert_allclose(whole.sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(chunked, whole, atol=1e-6)


def test_predict_tta_calls_the_model_once_per_chunk():
    model = _invariant_model()
    seen = []
    original = model.predict_on_batch

    def spy(batch):
        seen.append(tuple(batch.shape))
        return original(batch)

    model.predict_on_batch = spy
    predict_tta(model, _noise((5, 16, 16, 3)), "dihedral", batch_size=2)
    assert seen == [(16, 16, 16, 3), (16, 16, 16, 3), (8, 16, 16, 3)]


def test_predict_tta_rejects_a_bad_batch_size():
    with pytest.raises(ZooError, match="batch_size"):
        predict_tta(_invariant_model(), _noise((1, 16, 16, 3)), "none", batch_size=0)


def test_predict_tta_accepts_tensors_and_uint8():
    model = _invariant_model()
    images = _noise((3, 16, 16, 3)).round()
    want = predict_tta(model, images, "steppan")
    as_uint8 = predict_tta(model, images.astype("uint8"), "steppan")
    as_tensor = predict_tta(model, keras.ops.convert_to_tensor(images), "steppan")
    np.testing.assert_allclose(as_uint8, want, atol=1e-6)
    np.testing.assert_allclose(as_tensor, want, atol=1e-6)


def test_predict_tta_input_errors():
    model = _invariant_model()
    with pytest.raises(ZooError, match="square"):
        predict_tta(model, _noise((2, 16, 24, 3)), "dihedral")
    with pytest.raises(ZooError, match="no images"):
        predict_tta(model, np.zeros((0, 16, 16, 3), "float32"), "steppan")


@pytest.mark.parametrize("spec", ["none", "steppan", "dihedral", "rotations:1", "rotations:6"])
def test_every_scheme_makes_the_same_views_for_inference_and_export(spec):
    """One definition per scheme: the exported graph's steps give the inference views."""
    from zoo.deploy.export.graph import _views as export_views

    scheme = parse_tta(spec)
    images = _noise((2, SIZE, SIZE, 3))
    steps = scheme.export_steps(SIZE)
    assert len(steps) == scheme.n_views == len(scheme.weights)
    exported = np.concatenate([np.asarray(v) for v in export_views(images, steps, SIZE)])
    np.testing.assert_allclose(exported, np.asarray(scheme.views(images)), atol=0.05)


def test_every_kind_the_readers_accept_has_views():
    from zoo.inference.tta import VIEWS
    from zoo.store.names import TTA_KINDS

    assert set(VIEWS) == set(TTA_KINDS)

"""Geometry conventions, Esteva's inscribed rotation and the recipe augmenter."""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from zoo.data import geometry
from zoo.errors import ZooError
from zoo.training.augment import KNOWN_KEYS, RandomInscribedRotation, build_augmenter


def _noise(shape, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, shape).astype("float32")


# --- geometry ---------------------------------------------------------------------------


def test_inscribed_zoom_values_and_types():
    assert geometry.inscribed_zoom(0.0) == pytest.approx(1.0)
    assert geometry.inscribed_zoom(math.pi / 4) == pytest.approx(math.sqrt(2))
    assert geometry.inscribed_zoom(math.pi / 2) == pytest.approx(1.0)
    assert geometry.inscribed_zoom(math.pi / 6) == pytest.approx(math.cos(0.5236) + 0.5, abs=1e-4)
    arr = geometry.inscribed_zoom(np.array([0.0, math.pi / 4]))
    np.testing.assert_allclose(arr, [1.0, math.sqrt(2)])
    ten = geometry.inscribed_zoom(keras.ops.convert_to_tensor([math.pi / 4]))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(ten), [math.sqrt(2)], rtol=1e-6)
    # A 2:1 rectangle turned by 90° must shrink by 2 to fit upright inside itself.
    assert geometry.inscribed_zoom(math.pi / 2, aspect=2.0) == pytest.approx(2.0)


def test_affine_transform_maps_output_coordinates_to_input():
    """The convention everything relies on: [a0..a7] sends output (x, y) to input."""
    image = _noise((1, 8, 8, 1))
    shift = np.array([[1, 0, 2, 0, 1, 0, 0, 0]], dtype="float32")  # x_in = x_out + 2
    out = keras.ops.convert_to_numpy(geometry.apply_transforms(image, shift))
    np.testing.assert_array_equal(out[0, :, :6], image[0, :, 2:])


@pytest.mark.parametrize("k", [0, 1, 2, 3])
def test_rotation_matches_numpy_rot90(k):
    """Positive angles turn the picture counter-clockwise, like np.rot90; exact at 90°."""
    images = _noise((2, 16, 16, 3))
    out = geometry.rotate_and_zoom(images, [k * math.pi / 2] * 2, 1.0)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(out), np.rot90(images, k, axes=(1, 2)))


def test_rotation_and_zoom_are_about_the_centre():
    images = _noise((3, 17, 17, 3))  # odd size: the centre is a pixel
    out = keras.ops.convert_to_numpy(geometry.rotate_and_zoom(images, [0.3, 1.1, 2.5], 1.3))
    np.testing.assert_allclose(out[:, 8, 8], images[:, 8, 8], atol=1e-3)


def test_crop_and_resize_matches_resize_of_the_crop():
    images = _noise((2, 16, 16, 3))
    boxes = np.array([[0, 0, 0.75, 0.75], [0.25, 0.25, 1.0, 1.0]], dtype="float32")
    out = keras.ops.convert_to_numpy(geometry.crop_and_resize(images, boxes))
    first = keras.ops.image.resize(images[:1, :12, :12], (16, 16))
    second = keras.ops.image.resize(images[1:, 4:, 4:], (16, 16))
    want = keras.ops.convert_to_numpy(keras.ops.concatenate([first, second]))
    # resize clamps at the crop's inner edges where the affine crop reads the real
    # neighbouring pixel; everywhere else they agree.
    np.testing.assert_allclose(out[0, :-1, :-1], want[0, :-1, :-1], atol=1e-3)
    np.testing.assert_allclose(out[1, 1:, 1:], want[1, 1:, 1:], atol=1e-3)


# --- RandomInscribedRotation ------------------------------------------------------------


@pytest.mark.parametrize("size", [(16, 16), (16, 24)])
def test_inscribed_rotation_never_shows_fill(size):
    layer = RandomInscribedRotation(seed=7, fill_mode="constant", fill_value=0.0)
    uniform = np.full((256, *size, 3), 200.0, dtype="float32")
    out = keras.ops.convert_to_numpy(layer(uniform, training=True))
    assert out.shape == uniform.shape
    # Any visible fill would pull a corner towards 0; float slop costs < 0.01.
    assert out.min() > 199.9


def test_inscribed_rotation_rotates_each_image_differently():
    layer = RandomInscribedRotation(seed=1)
    same = np.repeat(_noise((1, 16, 16, 3)), 4, axis=0)
    out = keras.ops.convert_to_numpy(layer(same))  # training defaults to True
    assert not np.allclose(out[0], out[1])
    assert out.min() >= 0 and out.max() <= 255


def test_inscribed_rotation_is_identity_when_not_training():
    images = _noise((2, 16, 16, 3))
    layer = RandomInscribedRotation(seed=1)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer(images, training=False)), images)


def test_inscribed_rotation_seed_is_reproducible():
    images = _noise((4, 16, 16, 3))
    a = RandomInscribedRotation(seed=3)(images)
    b = RandomInscribedRotation(seed=3)(images)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))


def test_inscribed_rotation_config_round_trip():
    layer = RandomInscribedRotation(seed=5, interpolation="nearest", name="rot")
    clone = RandomInscribedRotation.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert isinstance(restored, RandomInscribedRotation) and restored.seed == 5


def test_model_with_inscribed_rotation_loads_in_safe_mode(tmp_path):
    inputs = keras.Input((16, 16, 3))
    x = RandomInscribedRotation(seed=2)(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(x))
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    assert any(isinstance(layer, RandomInscribedRotation) for layer in loaded.layers)
    images = _noise((3, 16, 16, 3))
    np.testing.assert_allclose(
        loaded.predict(images, verbose=0), model.predict(images, verbose=0), rtol=1e-6
    )


# --- build_augmenter --------------------------------------------------------------------

FULL = {
    "rotation": "inscribed",
    "flip": "horizontal_and_vertical",
    "zoom": 0.1,
    "translate": 0.1,
    "brightness": 0.2,
    "contrast": 0.2,
    "saturation": 0.3,
    "hue": 0.05,
    "erasing": 0.5,
}


def test_full_augmenter_keeps_shape_and_pixel_range():
    augmenter = build_augmenter(FULL, seed=0)
    names = [type(layer).__name__ for layer in augmenter.layers]
    assert names == [
        "RandomFlip",
        "RandomInscribedRotation",
        "RandomZoom",
        "RandomTranslation",
        "RandomBrightness",
        "RandomContrast",
        "RandomSaturation",
        "RandomHue",
        "RandomErasing",
    ]
    images = _noise((8, 32, 32, 3))
    out = keras.ops.convert_to_numpy(augmenter(images, training=True))
    assert out.shape == images.shape
    assert out.min() >= 0.0 and out.max() <= 255.0
    assert not np.allclose(out, images)
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(augmenter(images, training=False)), images
    )


def test_augmenter_runs_batched_in_tf_data():
    augmenter = build_augmenter({"rotation": "inscribed", "flip": "vertical", "zoom": 0.1}, seed=1)
    same = np.repeat(_noise((1, 16, 16, 3)), 6, axis=0)
    dataset = tf.data.Dataset.from_tensor_slices(same).batch(3)
    batches = [b.numpy() for b in dataset.map(lambda x: augmenter(x, training=True))]
    assert [b.shape for b in batches] == [(3, 16, 16, 3)] * 2
    # The seed generator advances inside the pipeline: batches get fresh draws.
    assert not np.allclose(batches[0], batches[1])


def test_numeric_rotation_uses_keras_random_rotation():
    augmenter = build_augmenter({"rotation": 180})
    (layer,) = augmenter.layers
    assert isinstance(layer, keras.layers.RandomRotation)


def test_empty_config_is_identity():
    augmenter = build_augmenter({})
    images = _noise((2, 16, 16, 3))
    assert [type(layer).__name__ for layer in augmenter.layers] == ["Identity"]
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(augmenter(images)), images)
    zeros = build_augmenter({"rotation": 0, "flip": "none", "zoom": 0, "erasing": 0.0})
    assert [type(layer).__name__ for layer in zeros.layers] == ["Identity"]


def test_saturation_and_hue_factors_map_to_keras_semantics():
    augmenter = build_augmenter({"saturation": 0.5, "hue": 0.1})
    saturation, hue = augmenter.layers
    low, high = saturation.factor
    # RandomSaturation multiplies saturation by f / (1 - f): here 0.5 .. 1.5.
    assert low / (1 - low) == pytest.approx(0.5) and high / (1 - high) == pytest.approx(1.5)
    assert hue.factor == (0.0, pytest.approx(0.2))


def test_unknown_key_lists_known_keys():
    with pytest.raises(ZooError) as err:
        build_augmenter({"rotate": 90})
    message = str(err.value)
    assert "'rotate'" in message and all(key in message for key in KNOWN_KEYS)
    assert "\n" not in message


@pytest.mark.parametrize(
    "config, words",
    [
        ({"flip": "diagonal"}, ["'diagonal'", "horizontal_and_vertical"]),
        ({"rotation": "spin"}, ["'spin'", "inscribed"]),
        ({"rotation": 400}, ["400", "[0, 180]"]),
        ({"zoom": 1.5}, ["zoom", "1.5"]),
        ({"brightness": -0.1}, ["brightness", "-0.1"]),
        ({"hue": 0.9}, ["hue", "0.9", "[0, 0.5]"]),
        ({"contrast": True}, ["contrast", "True"]),
    ],
)
def test_bad_values_are_zoo_errors(config, words):
    with pytest.raises(ZooError) as err:
        build_augmenter(config)
    assert all(word in str(err.value) for word in words), str(err.value)


def test_not_a_table_is_zoo_error():
    with pytest.raises(ZooError, match="table"):
        build_augmenter(["flip"])  # type: ignore[arg-type]

"""zoo.models: every registered recipe builds; weights options; the preprocessing layer."""

from __future__ import annotations

import dataclasses
import socket
import urllib.error
from pathlib import Path
from types import SimpleNamespace

import keras
import numpy as np
import pytest

from zoo.errors import ZooError
from zoo.models import build, pretrained
from zoo.models.build import build_backbone, build_model, split_model
from zoo.models.layers import ImagePreprocess
from zoo.recipes.recipe import get_recipe, load_registry

# Backbones whose build + forward pass takes more than ~5 s on a shared 2-core CPU.
SLOW_BACKBONES = {
    "DenseNet121",
    "EfficientNetB4",
    "EfficientNetB5",
    "InceptionResNetV2",
    "NASNetLarge",
}
OFFLINE = (
    "URL fetch failure on https://storage.googleapis.com/tensorflow/keras-applications/"
    "inception_v3/inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5: None -- "
    "[Errno -2] Name or service not known"
)


def _recipe_params():
    return [
        pytest.param(
            r.name,
            id=r.name,
            marks=[pytest.mark.slow] if r.model.backbone in SLOW_BACKBONES else [],
        )
        for r in load_registry()
    ]


@pytest.mark.parametrize("name", _recipe_params())
def test_every_recipe_builds_a_softmax_classifier(name):
    """One parametrized test builds every registered recipe, no download."""
    recipe = get_recipe(name)
    size = max(recipe.input.min_size, 32)  # the smallest the backbone accepts, 32–75 px
    model, used = build_model(recipe, num_classes=7, image_size=size, weights="none")
    try:
        assert used == "none"
        assert model.input_shape == (None, size, size, 3)
        assert model.output_shape == (None, 7)
        features, head = split_model(model)
        assert features.name == "features" and head.name == "head"
        assert head.get_layer("classifier").units == 7
        images = np.random.default_rng(0).uniform(0, 255, (2, size, size, 3)).astype("float32")
        probs = keras.ops.convert_to_numpy(model(images, training=False))
        assert probs.shape == (2, 7) and probs.dtype == np.float32
        assert np.all(probs >= 0)
        np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
        assert model.layers[-2:] == [features, head]  # image → features → head
    finally:
        keras.backend.clear_session()


def _backbone_weights(model: keras.Model) -> list[np.ndarray]:
    return [np.asarray(w) for w in model.get_weights()]


def _assert_same_weights(a: list[np.ndarray], b: list[np.ndarray]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize(
    "name", ["small_cnn", pytest.param("mobilenet_v3_small", marks=pytest.mark.slow)]
)
def test_weights_path_round_trip(tmp_path, name):
    """``--weights PATH``: a backbone saved with save_weights loads back exactly."""
    recipe = get_recipe(name)
    backbone, used = build_backbone(recipe, image_size=32, weights="none")
    assert used == "none"
    file = tmp_path / "backbone.weights.h5"
    backbone.save_weights(file)
    saved = _backbone_weights(backbone)

    again, used = build_backbone(recipe, image_size=32, weights=str(file))
    assert used == str(file.resolve())
    _assert_same_weights(_backbone_weights(again), saved)

    model, used = build_model(recipe, num_classes=7, image_size=32, weights=str(file))
    assert used == str(file.resolve())
    features, _ = split_model(model)
    inner = [layer for layer in features.layers if isinstance(layer, keras.Model)]
    assert len(inner) == 1
    _assert_same_weights(_backbone_weights(inner[0]), saved)
    keras.backend.clear_session()


def test_missing_weights_file_is_an_error(tmp_path):
    missing = tmp_path / "nope.weights.h5"
    with pytest.raises(ZooError, match="no such file") as info:
        build_backbone(get_recipe("small_cnn"), image_size=32, weights=str(missing))
    assert str(missing) in str(info.value)


@pytest.mark.filterwarnings("ignore:Skipping nested container")
def test_weights_of_another_backbone_are_an_error(tmp_path):
    recipe = get_recipe("small_cnn")
    small, _ = build_backbone(recipe, image_size=32, weights="none")
    file = tmp_path / "small.weights.h5"
    small.save_weights(file)
    narrow = dataclasses.replace(
        recipe, model=dataclasses.replace(recipe.model, backbone_options={"widths": [8, 16]})
    )
    with pytest.raises(ZooError, match="could not load it into backbone") as info:
        build_backbone(narrow, image_size=32, weights=str(file))
    assert str(file) in str(info.value) and "\n" not in str(info.value)
    keras.backend.clear_session()


def test_own_backbone_has_no_imagenet_weights():
    with pytest.raises(ZooError, match="no ImageNet weights.*--weights none"):
        build_backbone(get_recipe("small_cnn"), image_size=32, weights="imagenet")
    backbone, used = build_backbone(get_recipe("small_cnn"), image_size=32, weights="auto")
    assert used == "none" and backbone.output_shape == (None, 256)


def test_unknown_backbone_is_an_error():
    recipe = get_recipe("small_cnn")
    recipe = dataclasses.replace(recipe, model=dataclasses.replace(recipe.model, backbone="VGG99"))
    with pytest.raises(ZooError, match="unknown backbone 'VGG99'.*InceptionV3"):
        build_backbone(recipe, image_size=32, weights="none")


@pytest.fixture
def offline_applications(monkeypatch):
    """keras.applications as without network: asking for ImageNet weights fails like Keras does."""
    calls = []

    def offline(real):
        def application(**kwargs):
            calls.append(kwargs["weights"])
            if kwargs["weights"] == "imagenet":
                raise Exception(OFFLINE)
            return real(**kwargs)

        return application

    for name, real in list(build.APPLICATIONS.items()):
        monkeypatch.setitem(build.APPLICATIONS, name, offline(real))
    return calls


def test_imagenet_without_network_is_a_clear_error(offline_applications):
    with pytest.raises(ZooError) as info:
        build_model(get_recipe("inception_v3"), num_classes=7, image_size=75, weights="imagenet")
    message = str(info.value)
    assert "--weights none" in message and "--weights PATH" in message
    assert "InceptionV3" in message
    assert "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5" in message  # the file
    assert "\n" not in message
    assert offline_applications == ["imagenet"]


def test_auto_weights_fall_back_with_a_warning(offline_applications, capsys):
    recipe = get_recipe("mobilenet_v3_small")
    model, used = build_model(recipe, num_classes=7, image_size=32, weights="auto")
    assert used == "none"
    assert offline_applications == ["imagenet", None]
    out = capsys.readouterr().err
    assert "warning" in out and "MobileNetV3Small" in out and "from scratch" in out
    assert model.output_shape == (None, 7)
    keras.backend.clear_session()


@pytest.fixture
def empty_keras_cache(tmp_path, monkeypatch):
    """Keras' weights cache in an empty temporary folder; ``download(fake)`` replaces the
    download function (``urlretrieve`` inside keras.utils.get_file). No network is touched."""
    from keras.src.backend import config
    from keras.src.utils import file_utils

    home = tmp_path / "keras-home"
    home.mkdir()
    monkeypatch.setattr(config, "_KERAS_DIR", str(home))
    monkeypatch.setattr(file_utils, "urlretrieve", _no_network)

    def download(fake):
        monkeypatch.setattr(file_utils, "urlretrieve", fake)

    assert pretrained.keras_weights_cache() == home / "models"
    return SimpleNamespace(models=home / "models", download=download)


def _no_network(url, *args, **kwargs):
    raise urllib.error.URLError(socket.gaierror(-2, "Name or service not known"))


def _write_garbage(url, target, *args, **kwargs):
    """A "download" that leaves a damaged file: not HDF5 at all."""
    Path(target).write_bytes(b"this is not an HDF5 file")


@pytest.mark.filterwarnings("ignore:`input_shape` is undefined:UserWarning")
def test_imagenet_offline_names_the_file_keras_looked_for(empty_keras_cache):
    """The real keras.utils.get_file with no cached file and no network: exit-2 ZooError."""
    with pytest.raises(ZooError) as info:
        build_backbone(get_recipe("mobilenet_v3_small"), image_size=32, weights="imagenet")
    message = str(info.value)
    assert "\n" not in message
    assert "not in Keras' cache and could not be downloaded" in message
    assert str(empty_keras_cache.models / "weights_mobilenet_v3_small_") in message
    assert "--weights none" in message and "--weights PATH" in message
    keras.backend.clear_session()


@pytest.mark.filterwarnings("ignore:`input_shape` is undefined:UserWarning")
def test_auto_offline_falls_back_to_random_weights(empty_keras_cache, capsys):
    backbone, used = build_backbone(get_recipe("mobilenet_v3_small"), image_size=32, weights="auto")
    assert used == "none" and backbone.output_shape == (None, 576)
    out = capsys.readouterr().err
    assert "warning" in out and "from scratch" in out and str(empty_keras_cache.models) in out
    keras.backend.clear_session()


@pytest.mark.filterwarnings("ignore:`input_shape` is undefined:UserWarning")
@pytest.mark.parametrize("weights", ["imagenet", "auto"])
def test_damaged_cached_weights_are_an_error_naming_the_file(
    empty_keras_cache, monkeypatch, weights
):
    """A cached file that is there but cannot be loaded is not "missing": no silent fallback."""
    from keras.src.utils import file_utils

    empty_keras_cache.download(_write_garbage)
    monkeypatch.setattr(file_utils, "validate_file", lambda *args, **kwargs: True)
    with pytest.raises(ZooError) as info:
        build_backbone(get_recipe("mobilenet_v3_small"), image_size=32, weights=weights)
    message = str(info.value)
    (damaged,) = empty_keras_cache.models.glob("*.h5")
    assert "\n" not in message
    assert str(damaged) in message and "could not be loaded" in message
    assert "not in Keras' cache" not in message
    assert "delete it" in message and "--weights none" in message and "--weights PATH" in message
    keras.backend.clear_session()


@pytest.mark.filterwarnings("ignore:`input_shape` is undefined:UserWarning")
def test_cached_copy_failing_the_checksum_offline_says_so(empty_keras_cache):
    """Keras deletes a cached file whose checksum fails before re-downloading it."""
    empty_keras_cache.download(_write_garbage)  # a download that fails Keras' checksum
    with pytest.raises(ZooError, match="not in Keras' cache"):
        build_backbone(get_recipe("mobilenet_v3_small"), image_size=32, weights="imagenet")
    (damaged,) = empty_keras_cache.models.glob("*.h5")  # left behind by Keras
    empty_keras_cache.download(_no_network)
    with pytest.raises(ZooError) as info:
        build_backbone(get_recipe("mobilenet_v3_small"), image_size=32, weights="imagenet")
    message = str(info.value)
    assert not damaged.exists()
    assert str(damaged) in message and "failed Keras' checksum" in message
    assert "--weights none" in message
    keras.backend.clear_session()


def test_other_failures_are_not_reported_as_missing_weights(monkeypatch):
    """Only download, network and missing-file errors mean "ImageNet weights not available"."""

    def broken(**kwargs):
        raise ValueError("something unrelated to the weights file")

    monkeypatch.setitem(build.APPLICATIONS, "MobileNetV3Small", broken)
    for weights in ("imagenet", "auto"):
        with pytest.raises(ValueError, match="unrelated"):
            build_backbone(get_recipe("mobilenet_v3_small"), image_size=32, weights=weights)


@pytest.mark.parametrize(
    ("mode", "pixel", "expected"),
    [
        ("inception", (0.0, 127.5, 255.0), (-1.0, 0.0, 1.0)),
        ("unit", (0.0, 127.5, 255.0), (0.0, 0.5, 1.0)),
        ("raw", (10.0, 20.0, 30.0), (10.0, 20.0, 30.0)),
        (
            "torch",
            (0.485 * 255, 0.456 * 255, 0.406 * 255),
            (0.0, 0.0, 0.0),
        ),
        ("caffe", (123.68, 116.779, 103.939), (0.0, 0.0, 0.0)),  # RGB in, BGR − mean out
    ],
)
def test_image_preprocess_modes(mode, pixel, expected):
    layer = ImagePreprocess(mode)
    out = keras.ops.convert_to_numpy(layer(np.array(pixel, "float32").reshape(1, 1, 1, 3)))
    np.testing.assert_allclose(out.reshape(3), expected, atol=1e-4)


def test_image_preprocess_caffe_flips_to_bgr_like_keras():
    x = np.random.default_rng(1).uniform(0, 255, (2, 4, 4, 3)).astype("float32")
    ours = keras.ops.convert_to_numpy(ImagePreprocess("caffe")(x))
    theirs = keras.applications.resnet50.preprocess_input(x.copy())
    np.testing.assert_allclose(ours, theirs, atol=1e-4)
    ours = keras.ops.convert_to_numpy(ImagePreprocess("torch")(x))
    theirs = keras.applications.densenet.preprocess_input(x.copy())
    np.testing.assert_allclose(ours, theirs, atol=1e-4)


def test_image_preprocess_config_and_bad_mode():
    layer = ImagePreprocess("torch", name="p")
    again = ImagePreprocess.from_config(layer.get_config())
    assert again.mode == "torch" and again.name == "p"
    with pytest.raises(ValueError, match="mode must be one of"):
        ImagePreprocess("imagenet")


def test_model_saves_and_loads_in_safe_mode(tmp_path):
    import zoo.models.layers  # noqa: F401
    import zoo.training.augment  # noqa: F401

    recipe = get_recipe("small_cnn")
    model, _ = build_model(recipe, num_classes=3, image_size=32, weights="none")
    x = np.random.default_rng(2).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    expected = keras.ops.convert_to_numpy(model(x, training=False))
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras", safe_mode=True)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(loaded(x, training=False)), expected, atol=1e-6
    )
    assert [layer.name for layer in loaded.layers][-2:] == ["features", "head"]
    keras.backend.clear_session()


def test_backbone_options_that_do_not_fit_are_one_line():
    small = get_recipe("small_cnn")
    recipe = dataclasses.replace(
        small, model=dataclasses.replace(small.model, backbone_options={"depth": 3})
    )
    with pytest.raises(
        ZooError, match=r"\[backbone_options\] \{'depth': 3\} do not fit backbone small_cnn"
    ):
        build_model(recipe, num_classes=3, image_size=32, weights="none")


def test_shades_of_gray_removes_a_colour_cast_inside_the_saved_model(tmp_path):
    """A grey scene under a reddish illuminant comes out grey again: equal channel
    Minkowski means, whatever the cast; the layer survives a save and a safe load."""
    from zoo.models.layers import ShadesOfGray

    rng = np.random.default_rng(0)
    scene = rng.uniform(40, 200, size=(2, 16, 16, 1)).repeat(3, axis=-1)
    cast = np.clip(scene * np.array([1.0, 0.7, 0.45]), 0, 255).astype("float32")
    inputs = keras.Input((16, 16, 3))
    model = keras.Model(inputs, ShadesOfGray(power=6.0)(inputs))
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras", safe_mode=True)
    out = np.asarray(loaded(cast))
    means = np.mean((out / 255.0) ** 6, axis=(1, 2)) ** (1 / 6)
    np.testing.assert_allclose(means, means[:, :1].repeat(3, axis=1), rtol=1e-3)
    assert np.ptp(np.mean(cast, axis=(1, 2)), axis=1).min() > 30  # the input really was cast

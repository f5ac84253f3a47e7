"""Training augmentation from a recipe's ``[augment]`` table.

Built from Keras 3 core preprocessing layers (``keras.layers.RandomFlip``,
``RandomRotation``, ``RandomZoom``, ``RandomTranslation``, ``RandomBrightness``,
``RandomContrast``, ``RandomSaturation``, ``RandomHue``, ``RandomErasing``);
keras-cv is deprecated and not used. The one custom layer,
:class:`RandomInscribedRotation`, is registered for ``keras.saving`` so a model
that contains it loads with ``keras.saving.load_model(path, safe_mode=True)``.

Images are float32 in [0, 255], shape ``(B, H, W, 3)``, channels-last; every
layer is batched (one random draw per image, no Python loop over images) and
runs in a ``tf.data`` map or inside a model.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import keras
from keras import ops

from zoo.data import geometry
from zoo.recipes.specs import AugmentSpec, build

VALUE_RANGE = (0, 255)
KNOWN_KEYS = tuple(f.name for f in dataclasses.fields(AugmentSpec))


@keras.saving.register_keras_serializable(package="zoo")
class RandomInscribedRotation(keras.layers.Layer):
    """Esteva et al. (2017): rotate by a uniform random angle, keep the inscribed square.

    Each image is rotated by its own angle drawn uniformly from [0°, 360°), then
    the largest upright inscribed rectangle of the input's aspect ratio (a square
    for square images) is cropped and resized back to the input size. Both steps
    are one affine transform per image (rotation plus a zoom of
    :func:`zoo.data.geometry.inscribed_zoom`), applied to the whole batch in one op,
    so the output never shows fill. Identity when ``training`` is false.

    Args:
        seed: integer seed for the angle draws, or None.
        interpolation: ``"bilinear"`` or ``"nearest"``.
        fill_mode: what the sampler reads outside the image; only sub-pixel
            overshoot at the border can reach it. ``"nearest"`` (default) clamps
            to the edge pixel, as ``keras.ops.image.resize`` does.
        fill_value: the colour for ``fill_mode="constant"``.
    """

    def __init__(
        self,
        seed: int | None = None,
        interpolation: str = "bilinear",
        fill_mode: str = "nearest",
        fill_value: float = 0.0,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        self.seed = seed
        self.interpolation = interpolation
        self.fill_mode = fill_mode
        self.fill_value = fill_value
        self.generator = keras.random.SeedGenerator(seed)

    def call(self, images, training=True):
        if not training:
            return images
        images = ops.convert_to_tensor(images, dtype=self.compute_dtype)
        unbatched = len(images.shape) == 3
        if unbatched:
            images = ops.expand_dims(images, 0)
        shape = ops.shape(images)
        angles = keras.random.uniform(
            (shape[0],), minval=0.0, maxval=2.0 * math.pi, seed=self.generator
        )
        zooms = geometry.inscribed_zooms(angles, height=shape[1], width=shape[2])
        transforms = geometry.rotation_zoom_transforms(
            angles, zooms, height=shape[1], width=shape[2]
        )
        out = keras.ops.image.affine_transform(
            images,
            transforms,
            interpolation=self.interpolation,
            fill_mode=self.fill_mode,
            fill_value=self.fill_value,
            data_format="channels_last",
        )
        out = ops.cast(out, self.compute_dtype)
        return ops.squeeze(out, 0) if unbatched else out

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            {
                "seed": self.seed,
                "interpolation": self.interpolation,
                "fill_mode": self.fill_mode,
                "fill_value": self.fill_value,
            }
        )
        return config


def build_augmenter(
    config: AugmentSpec | dict[str, Any], *, seed: int | None = None
) -> keras.Sequential:
    """A ``keras.Sequential`` of augmentation layers for a recipe's ``[augment]`` table.

    ``config`` is an :class:`zoo.recipes.specs.AugmentSpec` (a plain table is checked into one first:
    any other key or a value out of range is a ZooError). Its steps:

    - ``flip``: ``"none"``, ``"horizontal"`` (left–right), ``"vertical"``
      (up–down) or ``"horizontal_and_vertical"``; each flip with p = 0.5.
    - ``rotation``: ``"inscribed"`` for Esteva's rotation by 0–359° keeping the
      largest upright inscribed square (:class:`RandomInscribedRotation`); a
      number ``d`` in (0, 180] for ``keras.layers.RandomRotation`` by up to ±d
      degrees (reflect fill); ``0`` for none.
    - ``zoom``: fraction ``z`` in [0, 1): zoom in or out by up to ``z``
      (``keras.layers.RandomZoom``, reflect fill).
    - ``translate``: fraction ``t`` in [0, 1): shift by up to ``t`` of the height
      and width (``keras.layers.RandomTranslation``, reflect fill).
    - ``brightness``: fraction ``b`` in [0, 1]: add up to ±``b`` × 255.
    - ``contrast``: fraction ``c`` in [0, 1]: scale contrast by a factor in
      [1 − c, 1 + c].
    - ``saturation``: fraction ``s`` in [0, 1]: scale saturation by a factor in
      [1 − s, 1 + s] (``keras.layers.RandomSaturation``).
    - ``hue``: fraction ``h`` in [0, 0.5]: turn the hue by up to ±``h`` of the
      colour wheel (0.05 ≈ ±18°; ``keras.layers.RandomHue``).
    - ``erasing``: probability ``p`` in [0, 1] of erasing a random patch (2–33 %
      of the image) with noise (``keras.layers.RandomErasing``).

    A zero value (or ``"none"``) leaves that step out. Layers run in the order
    listed: flip, rotation, zoom, translation (geometry), then brightness,
    contrast, saturation, hue (colour), then erasing; all keep pixels in [0, 255].
    An empty table gives a Sequential holding a single ``keras.layers.Identity``
    (never None, so callers can always call it). ``seed`` seeds layer ``i`` with
    ``seed + i``; with ``None`` every run differs.
    """
    if not isinstance(config, AugmentSpec):
        config = build(AugmentSpec, config, table="[augment]", prefix="augment.")
    layers: list[keras.layers.Layer] = []
    for key, make in _STEPS:
        value = getattr(config, key)
        if value and value != "none":
            layers.append(make(value, None if seed is None else seed + len(layers)))
    if not layers:
        layers.append(keras.layers.Identity(name="identity"))
    return keras.Sequential(layers, name="augment")


def _rotation(value, seed):
    if value == "inscribed":
        return RandomInscribedRotation(seed=seed, name="inscribed_rotation")
    return keras.layers.RandomRotation(
        factor=value / 360.0, fill_mode="reflect", seed=seed, name="rotation"
    )


def _saturation(value, seed):
    # RandomSaturation samples f and multiplies saturation by f / (1 - f);
    # f = m / (1 + m) turns the multiplier bounds m = 1 ∓ s into its factor.
    low, high = 1.0 - value, 1.0 + value
    return keras.layers.RandomSaturation(
        (low / (1.0 + low), high / (1.0 + high)),
        value_range=VALUE_RANGE,
        seed=seed,
        name="saturation",
    )


# (AugmentSpec field, layer for its value and seed), in the order the layers run
_STEPS = (
    ("flip", lambda v, seed: keras.layers.RandomFlip(mode=v, seed=seed, name="flip")),
    ("rotation", _rotation),
    (
        "zoom",
        lambda v, seed: keras.layers.RandomZoom(v, v, fill_mode="reflect", seed=seed, name="zoom"),
    ),
    (
        "translate",
        lambda v, seed: keras.layers.RandomTranslation(
            v, v, fill_mode="reflect", seed=seed, name="translate"
        ),
    ),
    (
        "brightness",
        lambda v, seed: keras.layers.RandomBrightness(
            v, value_range=VALUE_RANGE, seed=seed, name="brightness"
        ),
    ),
    (
        "contrast",
        lambda v, seed: keras.layers.RandomContrast(
            v, value_range=VALUE_RANGE, seed=seed, name="contrast"
        ),
    ),
    ("saturation", _saturation),
    # RandomHue shifts the hue (a turn = 1) by up to ±factor / 2.
    (
        "hue",
        lambda v, seed: keras.layers.RandomHue(
            2.0 * v, value_range=VALUE_RANGE, seed=seed, name="hue"
        ),
    ),
    (
        "erasing",
        lambda v, seed: keras.layers.RandomErasing(
            (v, v), value_range=VALUE_RANGE, seed=seed, name="erasing"
        ),
    ),
)

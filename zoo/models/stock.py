"""A member's input stages built from stock Keras layers and ``keras.ops`` only.

Everything here serialises into ``model.keras`` as Keras' own classes (``Rescaling``,
``Normalization`` and ops nodes), so a saved member loads with
``keras.saving.load_model(path, safe_mode=True)`` in a Python that has Keras and not zoo.
The results equal those of the older custom layers in :mod:`zoo.models.layers`
(``ImagePreprocess``, ``ShadesOfGray``), which stay registered so older members still load.
"""

from __future__ import annotations

import keras
from keras import ops

from zoo.models.layers import _CAFFE_MEAN_BGR, _IMAGENET_MEAN, _IMAGENET_STD, ImagePreprocess

MODES = ImagePreprocess.MODES


def preprocess(images, mode: str, *, name: str = "preprocess"):
    """RGB pixels in [0, 255] → what a backbone expects (modes of ``ImagePreprocess``)."""
    if mode == "inception":
        return keras.layers.Rescaling(1.0 / 127.5, offset=-1.0, name=name)(images)
    if mode == "unit":
        return keras.layers.Rescaling(1.0 / 255.0, name=name)(images)
    if mode == "raw":
        return keras.layers.Rescaling(1.0, name=name)(images)  # a cast to the compute dtype
    if mode == "torch":
        mean = [255.0 * m for m in _IMAGENET_MEAN]
        variance = [(255.0 * s) ** 2 for s in _IMAGENET_STD]
        return keras.layers.Normalization(mean=mean, variance=variance, name=name)(images)
    if mode == "caffe":
        bgr = ops.flip(images, axis=-1)
        return keras.layers.Normalization(
            mean=list(_CAFFE_MEAN_BGR), variance=[1.0] * 3, name=name
        )(bgr)
    raise ValueError(f"preprocessing mode must be one of {MODES}; got {mode!r}.")


def shades_of_gray(images, *, power: float = 6.0):
    """Shades-of-Gray colour constancy (see ``zoo.models.layers.ShadesOfGray``) as ops nodes,
    computed in float32 (``x ** 6`` needs its range); RGB in [0, 255] in and out."""
    if not power >= 1:
        raise ValueError(f"Shades of Gray power must be at least 1; got {power!r}.")
    x = ops.cast(images, "float32") / 255.0
    illuminant = ops.power(ops.mean(ops.power(x, power), axis=(1, 2), keepdims=True), 1.0 / power)
    norm = ops.sqrt(ops.sum(ops.square(illuminant), axis=-1, keepdims=True))
    gain = norm / (ops.maximum(illuminant, 1e-6) * 3.0**0.5)
    return ops.clip(x * gain, 0.0, 1.0) * 255.0


def without_optimizer(model: keras.Model) -> keras.Model:
    """The same network (shared layers and weights) as a fresh, uncompiled model, so that
    saving it writes no optimizer state and no training configuration."""
    return rewrapped(model, name=model.name)


def rewrapped(model: keras.Model, *, name: str) -> keras.Model:
    """A new functional model over ``model``'s graph (single input and output kept single)."""
    inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs
    outputs = model.outputs[0] if len(model.outputs) == 1 else model.outputs
    return keras.Model(inputs, outputs, name=name)


def with_stock_layers(model: keras.Model) -> keras.Model:
    """A member network whose older custom input layers (``ImagePreprocess``,
    ``ShadesOfGray``) are replaced by their stock equivalents; other models come back as they
    are. The backbone and head are shared, not copied."""
    from zoo.models.layers import ShadesOfGray

    names = {layer.name for layer in model.layers}
    if not {"features", "head"} <= names:
        return model
    features, head = model.get_layer("features"), model.get_layer("head")
    old = [layer for layer in features.layers if isinstance(layer, ImagePreprocess | ShadesOfGray)]
    if not old:
        return model
    inputs = keras.Input(model.input_shape[1:], name="image")
    x = inputs
    for layer in old:
        if isinstance(layer, ShadesOfGray):
            x = shades_of_gray(x, power=layer.power)
        else:
            x = preprocess(x, layer.mode)
    new_features = keras.Model(inputs, features.layers[-1](x), name="features")
    return keras.Model(inputs, head(new_features(inputs)), name=model.name)

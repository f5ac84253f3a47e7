"""Custom layers of members saved before zoo built its input stages from stock Keras layers.

New members use :mod:`zoo.models.stock` (same results, no zoo class in ``model.keras``); these
stay registered (``zoo>ImagePreprocess``, ``zoo>ShadesOfGray``) so that older members load in zoo.
"""

from __future__ import annotations

import keras
from keras import ops

# ImageNet statistics used by the "torch" and "caffe" conventions of keras.applications.
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
_CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)


@keras.saving.register_keras_serializable(package="zoo")
class ImagePreprocess(keras.layers.Layer):
    """Maps RGB pixels in [0, 255] to what a backbone expects.

    Modes follow keras.applications: ``inception`` → [-1, 1]; ``torch`` → ImageNet mean/std
    on [0, 1]; ``caffe`` → BGR minus the ImageNet mean; ``unit`` → [0, 1]; ``raw`` → unchanged
    (the backbone normalises itself, e.g. EfficientNet, MobileNetV3, ConvNeXt).
    """

    MODES = ("inception", "torch", "caffe", "unit", "raw")

    def __init__(self, mode: str = "inception", **kwargs):
        super().__init__(**kwargs)
        if mode not in self.MODES:
            raise ValueError(f"ImagePreprocess mode must be one of {self.MODES}; got {mode!r}.")
        self.mode = mode

    def call(self, images):
        x = ops.cast(images, self.compute_dtype)
        if self.mode == "inception":
            return x / 127.5 - 1.0
        if self.mode == "unit":
            return x / 255.0
        if self.mode == "torch":
            mean = ops.convert_to_tensor(_IMAGENET_MEAN, dtype=self.compute_dtype)
            std = ops.convert_to_tensor(_IMAGENET_STD, dtype=self.compute_dtype)
            return (x / 255.0 - mean) / std
        if self.mode == "caffe":
            mean = ops.convert_to_tensor(_CAFFE_MEAN_BGR, dtype=self.compute_dtype)
            return ops.flip(x, axis=-1) - mean
        return x

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}


@keras.saving.register_keras_serializable(package="zoo")
class ShadesOfGray(keras.layers.Layer):
    """Colour constancy by the Shades of Gray method (Finlayson & Trezzi 2004), as Gessert et
    al. applied it to every image in their ISIC 2019 entry: each image's illuminant is
    estimated per channel as the Minkowski ``power``-mean of its pixels, and the channels are
    rescaled so that this illuminant becomes neutral grey. RGB in [0, 255] in and out.
    """

    def __init__(self, power: float = 6.0, **kwargs):
        kwargs.setdefault("dtype", "float32")  # x**6 needs float32's range
        super().__init__(**kwargs)
        if not power >= 1:
            raise ValueError(f"ShadesOfGray power must be at least 1; got {power!r}.")
        self.power = float(power)

    def call(self, images):
        x = ops.cast(images, "float32") / 255.0
        illuminant = ops.power(
            ops.mean(ops.power(x, self.power), axis=(1, 2), keepdims=True), 1.0 / self.power
        )
        norm = ops.sqrt(ops.sum(ops.square(illuminant), axis=-1, keepdims=True))
        gain = norm / (ops.maximum(illuminant, 1e-6) * 3.0**0.5)
        return ops.clip(x * gain, 0.0, 1.0) * 255.0

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "power": self.power}

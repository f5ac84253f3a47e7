"""EfficientNet-Lite0/1/2 (Tan & Le 2019; the Lite family of the TensorFlow TPU repository).

Lite is EfficientNet made for mobile accelerators: no squeeze-excitation, ReLU6 instead of
swish, and the stem (32 channels) and head (1280 channels) fixed across sizes, as are the
repeats of the first and last block groups. Every layer is named after the module of the
PyTorch port whose ImageNet weights zoo converts (``zoo.models.pretrained``), so that the
conversion is a lookup by name. ``padding="same"`` reproduces TensorFlow's padding, with
which the weights were trained. Inputs are scaled to [-1, 1] (``ImagePreprocess("inception")``).

keras-hub's EfficientNet backbone was not used: it builds the Lite variants only through
its own preset configs and names its layers differently for each variant, so converting a
PyTorch state dict into it would need a second naming table per variant; this builder is
~100 lines and its names are the conversion table.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import keras

# Base block groups of EfficientNet-B0: kernel, repeats, stride, expansion, filters in → out.
_BASE_GROUPS = (
    (3, 1, 1, 1, 32, 16),
    (3, 2, 2, 6, 16, 24),
    (5, 2, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (5, 3, 1, 6, 80, 112),
    (5, 4, 2, 6, 112, 192),
    (3, 1, 1, 6, 192, 320),
)
STEM_FILTERS, HEAD_FILTERS = 32, 1280
BN_EPSILON = 1e-3


@dataclass(frozen=True)
class LiteVariant:
    """Width and depth multipliers of one Lite size, and its native input size."""

    width: float
    depth: float
    size: int
    dropout: float


VARIANTS = {
    "EfficientNetLite0": LiteVariant(width=1.0, depth=1.0, size=224, dropout=0.2),
    "EfficientNetLite1": LiteVariant(width=1.0, depth=1.1, size=240, dropout=0.2),
    "EfficientNetLite2": LiteVariant(width=1.1, depth=1.2, size=260, dropout=0.3),
}


def _round_filters(filters: int, width: float, divisor: int = 8) -> int:
    filters *= width
    rounded = max(divisor, int(filters + divisor / 2) // divisor * divisor)
    return int(rounded + divisor if rounded < 0.9 * filters else rounded)


def block_plan(variant: LiteVariant) -> list[dict]:
    """One dict per MBConv block: kernel, stride, expansion, filters in and out."""
    plan = []
    for group, (kernel, repeats, stride, expand, f_in, f_out) in enumerate(_BASE_GROUPS):
        fixed = group in (0, len(_BASE_GROUPS) - 1)  # Lite keeps the first and last groups
        count = repeats if fixed else int(math.ceil(variant.depth * repeats))
        f_in, f_out = _round_filters(f_in, variant.width), _round_filters(f_out, variant.width)
        for i in range(count):
            plan.append(
                dict(
                    kernel=kernel,
                    stride=stride if i == 0 else 1,
                    expand=expand,
                    f_in=f_in if i == 0 else f_out,
                    f_out=f_out,
                )
            )
    return plan


def _bn(name: str) -> keras.layers.BatchNormalization:
    return keras.layers.BatchNormalization(epsilon=BN_EPSILON, momentum=0.99, name=name)


def _mbconv(x, block: dict, *, index: int, drop_rate: float):
    """Inverted residual block without squeeze-excitation (names follow the PyTorch port)."""
    prefix = f"blocks_{index}"
    inputs = x
    expanded = block["f_in"] * block["expand"]
    if block["expand"] != 1:
        x = keras.layers.Conv2D(
            expanded, 1, padding="same", use_bias=False, name=f"{prefix}_expand_conv"
        )(x)
        x = _bn(f"{prefix}_bn0")(x)
        x = keras.layers.ReLU(6.0, name=f"{prefix}_expand_relu6")(x)
    x = keras.layers.DepthwiseConv2D(
        block["kernel"],
        strides=block["stride"],
        padding="same",
        use_bias=False,
        name=f"{prefix}_depthwise_conv",
    )(x)
    x = _bn(f"{prefix}_bn1")(x)
    x = keras.layers.ReLU(6.0, name=f"{prefix}_depthwise_relu6")(x)
    x = keras.layers.Conv2D(
        block["f_out"], 1, padding="same", use_bias=False, name=f"{prefix}_project_conv"
    )(x)
    x = _bn(f"{prefix}_bn2")(x)
    if block["stride"] == 1 and block["f_in"] == block["f_out"]:
        if drop_rate > 0:  # stochastic depth: drop the whole residual branch per image
            x = keras.layers.Dropout(drop_rate, noise_shape=(None, 1, 1, 1), name=f"{prefix}_drop")(
                x
            )
        x = keras.layers.Add(name=f"{prefix}_add")([x, inputs])
    return x


def efficientnet_lite(
    variant: str,
    *,
    input_shape=(224, 224, 3),
    pooling: str | None = "avg",
    drop_connect_rate: float = 0.2,
    include_top: bool = False,
    classes: int = 1000,
) -> keras.Model:
    """An EfficientNet-Lite backbone taking images already scaled to [-1, 1].

    ``pooling="avg"`` gives the 1280-d feature vector zoo's heads use; ``include_top`` adds
    the 1000-class ImageNet classifier (named ``fc``), used to check converted weights.
    """
    if variant not in VARIANTS:
        raise ValueError(
            f"unknown EfficientNet-Lite variant {variant!r}; known: {sorted(VARIANTS)}"
        )
    plan = block_plan(VARIANTS[variant])
    inputs = keras.Input(input_shape, name="scaled_image")
    x = keras.layers.Conv2D(
        STEM_FILTERS, 3, strides=2, padding="same", use_bias=False, name="conv_stem"
    )(inputs)
    x = _bn("bn0")(x)
    x = keras.layers.ReLU(6.0, name="stem_relu6")(x)
    for index, block in enumerate(plan):
        x = _mbconv(x, block, index=index, drop_rate=drop_connect_rate * index / len(plan))
    x = keras.layers.Conv2D(HEAD_FILTERS, 1, padding="same", use_bias=False, name="conv_head")(x)
    x = _bn("bn1")(x)
    x = keras.layers.ReLU(6.0, name="head_relu6")(x)
    if include_top or pooling == "avg":
        x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    elif pooling == "max":
        x = keras.layers.GlobalMaxPooling2D(name="max_pool")(x)
    if include_top:
        x = keras.layers.Dense(classes, activation="softmax", name="fc")(x)
    return keras.Model(inputs, x, name=variant.replace("EfficientNet", "efficientnet_").lower())


def efficientnet_lite0(**kwargs) -> keras.Model:
    """EfficientNet-Lite0 (native 224 px); keyword arguments as :func:`efficientnet_lite`."""
    return efficientnet_lite("EfficientNetLite0", **kwargs)


def efficientnet_lite1(**kwargs) -> keras.Model:
    """EfficientNet-Lite1 (native 240 px); keyword arguments as :func:`efficientnet_lite`."""
    return efficientnet_lite("EfficientNetLite1", **kwargs)


def efficientnet_lite2(**kwargs) -> keras.Model:
    """EfficientNet-Lite2 (native 260 px); keyword arguments as :func:`efficientnet_lite`."""
    return efficientnet_lite("EfficientNetLite2", **kwargs)

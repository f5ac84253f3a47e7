"""Test-time augmentation: several views of each image, one model call, a weighted mean.

Schemes (``--tta`` on the command line, ``tta`` in an ensemble file):

- ``none``: the plain image.
- ``steppan``: Steppan & Hanke (ISIC 2019): 0.4 × the plain prediction + 0.6 ×
  the mean of 8 views: the four corner crops at zoom 1.05 (side H / 1.05
  anchored at each corner, resized back to H × W), each also mirrored left–right.
- ``dihedral``: the 8 symmetries of the square: rotations by 0/90/180/270° and
  each also mirrored, equal weights (square images only).
- ``rotations:N``: N evenly spaced rotations by k · 360° / N, each keeping the
  largest upright inscribed crop as in Esteva's training augmentation, equal
  weights; 1 ≤ N ≤ 64.

All views of a batch are computed by one batched tensor op (an affine
transform, a flip or a transpose over the tiled batch) and the model sees them
in one call.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import keras
import numpy as np
from keras import ops

from zoo.data import geometry
from zoo.errors import ZooError
from zoo.store.names import tta_scheme

STEPPAN_ZOOM = 1.05
STEPPAN_PLAIN_WEIGHT = 0.4


@dataclass(frozen=True)
class TTAScheme:
    """A test-time augmentation scheme; make one with :func:`parse_tta`.

    ``views(images)`` returns a view-major batch: row ``v * B + b`` is view ``v``
    of image ``b``. The views, in order:

    - ``none``: the image.
    - ``steppan``: 0 the image; 1–4 the corner crops top-left, top-right,
      bottom-left, bottom-right; 5–8 those four crops mirrored left–right.
    - ``dihedral``: 0–3 ``np.rot90(image, k)`` for k = 0..3 (counter-clockwise);
      4–7 the same four, each then mirrored left–right (``np.fliplr``).
    - ``rotations``: view k turned counter-clockwise by k · 360° / N and zoomed by
      :func:`zoo.data.geometry.inscribed_zoom` so no corner is empty.
    """

    kind: str
    n_rotations: int = 0

    @property
    def name(self) -> str:
        """Canonical name, safe in file names: ``none``, ``steppan``, ``rotations-8``."""
        return f"rotations-{self.n_rotations}" if self.kind == "rotations" else self.kind

    @property
    def spec(self) -> str:
        """The form a user writes: ``none``, ``steppan``, ``rotations:8``."""
        return f"rotations:{self.n_rotations}" if self.kind == "rotations" else self.kind

    @property
    def n_views(self) -> int:
        return {"none": 1, "steppan": 9, "dihedral": 8}.get(self.kind, self.n_rotations)

    @property
    def weights(self) -> tuple[float, ...]:
        """Per-view weights, summing to 1, in the order of :meth:`views`."""
        if self.kind == "steppan":
            rest = (1.0 - STEPPAN_PLAIN_WEIGHT) / 8
            return (STEPPAN_PLAIN_WEIGHT,) + (rest,) * 8
        return (1.0 / self.n_views,) * self.n_views

    def views(self, images):
        """All views of a ``(B, H, W, C)`` batch as one ``(n_views * B, H, W, C)`` tensor."""
        images = ops.cast(ops.convert_to_tensor(images), "float32")
        if self.kind == "none":
            return images
        if self.kind == "dihedral":
            return _dihedral_views(images)
        shape = ops.shape(images)
        if self.kind == "steppan":
            transforms = geometry.crop_transforms(
                geometry.corner_boxes(STEPPAN_ZOOM), height=shape[1], width=shape[2]
            )
        else:
            angles = np.arange(self.n_rotations) * (2.0 * math.pi / self.n_rotations)
            zooms = geometry.inscribed_zooms(angles, height=shape[1], width=shape[2])
            transforms = geometry.rotation_zoom_transforms(
                angles, zooms, height=shape[1], width=shape[2]
            )
        n = int(transforms.shape[0])
        tiled = _tile_views(images, n)
        per_row = ops.repeat(transforms, shape[0], axis=0)
        out = geometry.apply_transforms(tiled, per_row)
        if self.kind == "steppan":
            out = ops.concatenate([images, out, ops.flip(out, axis=2)], axis=0)
        return out

    def combine(self, probs) -> np.ndarray:
        """Weighted mean over views: ``(n_views * B, K)`` in view-major order → ``(B, K)``."""
        probs = np.asarray(probs)
        if probs.ndim != 2 or probs.shape[0] % self.n_views:
            raise ValueError(
                f"combine expects shape (n_views * B, K) with n_views = {self.n_views} for "
                f"TTA {self.spec}; got {probs.shape}."
            )
        stacked = probs.reshape(self.n_views, -1, probs.shape[1]).astype("float64")
        weights = np.asarray(self.weights, dtype="float64")
        return np.tensordot(weights, stacked, axes=1).astype(probs.dtype)


def parse_tta(spec: str) -> TTAScheme:
    """The scheme for ``spec``: ``none``, ``steppan``, ``dihedral`` or ``rotations:N``.

    Also accepts the canonical names (``rotations-8``), so ``parse_tta(s.name) == s``; the
    parse is :func:`zoo.store.tta_scheme`, shared with the Keras-free readers.
    """
    if isinstance(spec, TTAScheme):
        return spec
    kind, n_rotations = tta_scheme(spec)
    return TTAScheme(kind=kind, n_rotations=n_rotations)


def predict_tta(model, images, scheme: TTAScheme | str, *, batch_size: int = 64) -> np.ndarray:
    """Class probabilities ``(N, K)`` for ``images`` ``(N, H, W, 3)`` under ``scheme``.

    At most ``batch_size`` original images are expanded at a time; the model then
    sees ``scheme.n_views * batch_size`` images in one call, so lower
    ``batch_size`` for many views or large inputs. With ``none`` this is
    ``model.predict_on_batch`` on each chunk.
    """
    scheme = parse_tta(scheme)
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ZooError(f"batch_size must be a positive integer; got {batch_size!r}.")
    if not hasattr(images, "shape"):
        images = np.asarray(images)
    n = int(images.shape[0])
    if n == 0:
        raise ZooError("predict_tta got no images (an empty batch); pass at least one image.")
    if scheme.kind == "dihedral" and images.shape[1] != images.shape[2]:
        # checked here too: the compiled views may have been traced with relaxed shapes
        raise ZooError(
            f"TTA dihedral needs square images; got {images.shape[1]}x{images.shape[2]}. "
            "Use steppan or rotations:N, or resize to a square."
        )
    views = _compiled_views(scheme)
    out = []
    for start in range(0, n, batch_size):
        chunk = ops.cast(ops.convert_to_tensor(images[start : start + batch_size]), "float32")
        probs = model.predict_on_batch(views(chunk))
        out.append(scheme.combine(np.asarray(probs)))
    return np.concatenate(out, axis=0)


@functools.cache
def _compiled_views(scheme: TTAScheme):
    """``scheme.views``, compiled once per scheme (a few schemes exist; no model inside)."""
    if scheme.kind == "none":
        return lambda images: images
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        return tf.function(scheme.views, reduce_retracing=True)
    return scheme.views


def _tile_views(images, n_views: int):
    """``(B, ...)`` → ``(n_views * B, ...)``, view-major (the batch repeated n_views times)."""
    return ops.tile(images, (n_views, 1, 1, 1))


def _dihedral_views(images):
    """The 8 dihedral views, exact pixel copies (flips and transposes only)."""
    if images.shape[1] is not None and images.shape[1] != images.shape[2]:
        raise ZooError(
            f"TTA dihedral needs square images; got {images.shape[1]}x{images.shape[2]}. "
            "Use steppan or rotations:N, or resize to a square."
        )
    # np.rot90(x, 1) (counter-clockwise) is "transpose, then flip rows"; rot180 is
    # both flips; rot270 is "transpose, then flip columns".
    transposed = ops.transpose(images, (0, 2, 1, 3))
    rotations = ops.concatenate(
        [
            images,
            ops.flip(transposed, axis=1),
            ops.flip(images, axis=(1, 2)),
            ops.flip(transposed, axis=2),
        ],
        axis=0,
    )
    return ops.concatenate([rotations, ops.flip(rotations, axis=2)], axis=0)

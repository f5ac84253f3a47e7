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
from zoo.data.pipeline import model_inputs
from zoo.errors import ZooError
from zoo.store.names import tta_scheme

STEPPAN_ZOOM = 1.05
STEPPAN_PLAIN_WEIGHT = 0.4


class Views:
    """How one kind of scheme makes its views, for inference (Keras ops on a batch) and for
    export (:meth:`export_steps`, the steps the exported graph applies). ``n`` is the scheme's
    parameter (the number of rotations; 0 for kinds without one)."""

    kind = ""
    square_only = False  # the views exist only for square images

    def count(self, n: int) -> int:
        raise NotImplementedError

    def weights(self, n: int) -> tuple[float, ...]:
        """Per-view weights summing to 1; equal unless a kind says otherwise."""
        return (1.0 / self.count(n),) * self.count(n)

    def views(self, images, n: int):
        """All views of a float32 ``(B, H, W, C)`` batch as one view-major tensor."""
        raise NotImplementedError

    def export_steps(self, size: int, n: int) -> list:
        """The views of a ``size × size`` batch as steps, in :meth:`views` order:
        ``("identity",)``, ``("affine", transform)``, ``("affine_flip", transform)``,
        ``("dihedral", k, mirrored)``."""
        raise NotImplementedError


class PlainView(Views):
    """``none``: the image itself."""

    kind = "none"

    def count(self, n: int) -> int:
        return 1

    def views(self, images, n: int):
        return images

    def export_steps(self, size: int, n: int) -> list:
        return [("identity",)]


class SteppanViews(Views):
    """``steppan``: the image (weight 0.4), then 4 corner crops at zoom 1.05 and those four
    mirrored left–right (0.6 shared)."""

    kind = "steppan"

    def count(self, n: int) -> int:
        return 9

    def weights(self, n: int) -> tuple[float, ...]:
        rest = (1.0 - STEPPAN_PLAIN_WEIGHT) / 8
        return (STEPPAN_PLAIN_WEIGHT,) + (rest,) * 8

    @staticmethod
    def _transforms(height, width):
        return geometry.crop_transforms(
            geometry.corner_boxes(STEPPAN_ZOOM), height=height, width=width
        )

    def views(self, images, n: int):
        shape = ops.shape(images)
        crops = _affine_views(images, self._transforms(shape[1], shape[2]))
        return ops.concatenate([images, crops, ops.flip(crops, axis=2)], axis=0)

    def export_steps(self, size: int, n: int) -> list:
        transforms = np.asarray(self._transforms(size, size))
        return (
            [("identity",)]
            + [("affine", t) for t in transforms]
            + [("affine_flip", t) for t in transforms]
        )


class DihedralViews(Views):
    """``dihedral``: rotations by 0/90/180/270° and each mirrored (square images only)."""

    kind = "dihedral"
    square_only = True

    def count(self, n: int) -> int:
        return 8

    def views(self, images, n: int):
        return _dihedral_views(images)

    def export_steps(self, size: int, n: int) -> list:
        return [("dihedral", k, mirrored) for mirrored in (False, True) for k in range(4)]


class RotationViews(Views):
    """``rotations:N``: N rotations by k · 360° / N, each zoomed to its largest upright
    inscribed crop."""

    kind = "rotations"

    def count(self, n: int) -> int:
        return n

    @staticmethod
    def _transforms(n: int, height, width):
        angles = np.arange(n) * (2.0 * math.pi / n)
        zooms = geometry.inscribed_zooms(angles, height=height, width=width)
        return geometry.rotation_zoom_transforms(angles, zooms, height=height, width=width)

    def views(self, images, n: int):
        shape = ops.shape(images)
        return _affine_views(images, self._transforms(n, shape[1], shape[2]))

    def export_steps(self, size: int, n: int) -> list:
        return [("affine", t) for t in np.asarray(self._transforms(n, size, size))]


VIEWS: dict[str, Views] = {
    v.kind: v for v in (PlainView(), SteppanViews(), DihedralViews(), RotationViews())
}


@dataclass(frozen=True)
class TTAScheme:
    """A test-time augmentation scheme; make one with :func:`parse_tta`. Its kind's
    :class:`Views` make the views, for inference (:meth:`views`) and export
    (:meth:`export_steps`).

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

    def __str__(self) -> str:  # what zoo's Keras-free readers parse (zoo.store.names)
        return self.name

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
        return VIEWS[self.kind].count(self.n_rotations)

    @property
    def weights(self) -> tuple[float, ...]:
        """Per-view weights, summing to 1, in the order of :meth:`views`."""
        return VIEWS[self.kind].weights(self.n_rotations)

    @property
    def square_only(self) -> bool:
        return VIEWS[self.kind].square_only

    def views(self, images):
        """All views of a ``(B, H, W, C)`` batch as one ``(n_views * B, H, W, C)`` tensor."""
        images = ops.cast(ops.convert_to_tensor(images), "float32")
        return VIEWS[self.kind].views(images, self.n_rotations)

    def export_steps(self, size: int) -> list:
        """The views of a ``size × size`` batch as the exported graph's steps."""
        return VIEWS[self.kind].export_steps(size, self.n_rotations)

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


def predict_tta(
    model,
    images,
    scheme: TTAScheme | str,
    *,
    batch_size: int = 64,
    metadata: np.ndarray | None = None,
) -> np.ndarray:
    """Class probabilities ``(N, K)`` for ``images`` ``(N, H, W, 3)`` under ``scheme``; a
    model that reads per-image metadata gets ``metadata`` (one encoded row per image) beside
    every view of its image.

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
    if scheme.square_only and images.shape[1] != images.shape[2]:
        # checked here too: the compiled views may have been traced with relaxed shapes
        raise ZooError(
            f"TTA dihedral needs square images; got {images.shape[1]}x{images.shape[2]}. "
            "Use steppan or rotations:N, or resize to a square."
        )
    views = _compiled_views(scheme)
    out = []
    for start in range(0, n, batch_size):
        chunk = ops.cast(ops.convert_to_tensor(images[start : start + batch_size]), "float32")
        rows = None
        if metadata is not None:  # the views are view-major: every image, then again
            rows = np.tile(np.asarray(metadata[start : start + batch_size]), (scheme.n_views, 1))
        probs = model.predict_on_batch(model_inputs(views(chunk), rows))
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
    if keras.backend.backend() == "jax":
        import jax

        return jax.jit(scheme.views)
    return scheme.views


def _affine_views(images, transforms):
    """Each of ``transforms`` applied to the whole batch, view-major: ``(n * B, H, W, C)``."""
    n = int(transforms.shape[0])
    tiled = ops.tile(images, (n, 1, 1, 1))
    per_row = ops.repeat(transforms, ops.shape(images)[0], axis=0)
    return geometry.apply_transforms(tiled, per_row)


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

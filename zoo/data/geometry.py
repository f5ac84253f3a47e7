"""Batched image geometry shared by training augmentation and test-time augmentation.

Every function here builds transforms for a whole batch at once and works on
``keras.ops`` tensors, so it runs inside a ``tf.data`` map or a model call.

The transforms use the 8-parameter projective format of
``keras.ops.image.affine_transform``: a row ``[a0, a1, a2, a3, a4, a5, a6, a7]``
maps each *output* pixel ``(x, y)`` (x = column, y = row, pixel centres at
integer coordinates) to the *input* point it samples::

    x_in = (a0 * x + a1 * y + a2) / k
    y_in = (a3 * x + a4 * y + a5) / k,   k = a6 * x + a7 * y + 1

so the matrices here are the inverse of the motion the picture undergoes.
Angles are in radians; a positive angle turns the picture counter-clockwise
as displayed (row 0 at the top), the same sense as ``np.rot90``.
"""

from __future__ import annotations

import math

import keras
import numpy as np
from keras import ops

# cos/sin below this magnitude are snapped to 0, so multiples of 90 degrees give
# exact integer matrices (and exact pixel copies under bilinear sampling).
_SNAP = 1e-6

#: Corner order used by :func:`corner_boxes` and the Steppan TTA views.
CORNERS = ("top_left", "top_right", "bottom_left", "bottom_right")


def inscribed_zoom(angle_rad, aspect: float = 1.0):
    """Zoom factor that fills the frame with the largest upright inscribed rectangle.

    A W x H image rotated by ``angle_rad`` contains, upright and centred, a
    rectangle of the same aspect ratio with sides ``W / z`` and ``H / z`` where
    ``z = |cos| + max(aspect, 1 / aspect) * |sin|`` and ``aspect = W / H``. For a
    square image this is ``|cos θ| + |sin θ|`` (1 at multiples of 90°, √2 at 45°).
    Zooming by ``z`` after the rotation therefore leaves no empty corners.

    Accepts a Python float (returns a float), a NumPy array (returns an array)
    or a tensor (returns a tensor).
    """
    stretch = max(aspect, 1.0 / aspect)
    if isinstance(angle_rad, (int, float)):
        return abs(math.cos(angle_rad)) + stretch * abs(math.sin(angle_rad))
    if isinstance(angle_rad, np.ndarray):
        return np.abs(np.cos(angle_rad)) + stretch * np.abs(np.sin(angle_rad))
    angle_rad = ops.convert_to_tensor(angle_rad, dtype="float32")
    return ops.abs(ops.cos(angle_rad)) + stretch * ops.abs(ops.sin(angle_rad))


def inscribed_zooms(angles, *, height, width):
    """:func:`inscribed_zoom` for a batch of angles (tensor out) on ``height x width`` images.

    Uses the aspect of the pixel-centre grid, ``(width - 1) / (height - 1)``, so
    every sampled point lands inside the input's pixel centres and bilinear
    sampling never blends in fill (for square images this is the plain formula).
    ``height`` and ``width`` may be ints or scalar tensors.
    """
    angles = ops.convert_to_tensor(angles, dtype="float32")
    h = ops.maximum(ops.cast(height, "float32") - 1.0, 1.0)
    w = ops.maximum(ops.cast(width, "float32") - 1.0, 1.0)
    stretch = ops.maximum(w / h, h / w)
    return ops.abs(ops.cos(angles)) + stretch * ops.abs(ops.sin(angles))


def rotation_zoom_transforms(angles, zooms, *, height, width):
    """Transforms that rotate each image by ``angles[i]`` and zoom in by ``zooms[i]``.

    Both motions are about the image centre ``((width - 1) / 2, (height - 1) / 2)``.
    ``zooms > 1`` magnifies (the output shows the central ``1 / zoom`` of the
    rotated picture); ``zooms`` may be a scalar. ``height`` and ``width`` may be
    ints or scalar tensors. Returns a float32 tensor of shape ``(B, 8)``.
    """
    angles = ops.convert_to_tensor(angles, dtype="float32")
    zooms = ops.convert_to_tensor(zooms, dtype="float32")
    zooms = ops.broadcast_to(zooms, ops.shape(angles))
    cos = ops.cos(angles)
    sin = ops.sin(angles)
    cos = ops.where(ops.abs(cos) < _SNAP, ops.zeros_like(cos), cos)
    sin = ops.where(ops.abs(sin) < _SNAP, ops.zeros_like(sin), sin)
    cx = (ops.cast(width, "float32") - 1.0) / 2.0
    cy = (ops.cast(height, "float32") - 1.0) / 2.0
    # Input offset from the centre = R(θ) · output offset / zoom, where R(θ) with
    # y pointing down turns the picture counter-clockwise on screen.
    a0 = cos / zooms
    a1 = -sin / zooms
    a3 = sin / zooms
    a4 = cos / zooms
    a2 = cx - a0 * cx - a1 * cy
    a5 = cy - a3 * cx - a4 * cy
    zero = ops.zeros_like(a0)
    return ops.stack([a0, a1, a2, a3, a4, a5, zero, zero], axis=1)


def crop_transforms(boxes, *, height, width):
    """Transforms that crop ``boxes`` and stretch each crop back to ``height x width``.

    ``boxes`` has shape ``(B, 4)``: ``(top, left, bottom, right)`` as fractions of
    the image, measured on pixel *edges* (``(0, 0, 1, 1)`` is the whole image), so
    sub-pixel boxes are exact. Sampling matches ``keras.ops.image.resize`` of the
    crop (half-pixel centres). Returns a float32 tensor of shape ``(B, 8)``.
    """
    boxes = ops.convert_to_tensor(boxes, dtype="float32")
    top, left, bottom, right = (boxes[:, i] for i in range(4))
    h = ops.cast(height, "float32")
    w = ops.cast(width, "float32")
    sx = right - left
    sy = bottom - top
    # Output pixel x covers edges [x, x + 1]; its centre x + 0.5 maps to the
    # input edge coordinate left * w + (x + 0.5) * sx, i.e. pixel index − 0.5.
    a2 = left * w + 0.5 * sx - 0.5
    a5 = top * h + 0.5 * sy - 0.5
    zero = ops.zeros_like(sx)
    return ops.stack([sx, zero, a2, zero, sy, a5, zero, zero], axis=1)


def corner_boxes(zoom: float) -> np.ndarray:
    """The four corner boxes of side ``1 / zoom``, in :data:`CORNERS` order, shape (4, 4)."""
    side = 1.0 / zoom
    rest = 1.0 - side
    return np.array(
        [
            [0.0, 0.0, side, side],  # top left
            [0.0, rest, side, 1.0],  # top right
            [rest, 0.0, 1.0, side],  # bottom left
            [rest, rest, 1.0, 1.0],  # bottom right
        ],
        dtype="float32",
    )


def apply_transforms(images, transforms, *, interpolation="bilinear", fill_mode="nearest"):
    """``keras.ops.image.affine_transform`` with channels-last images and float32 output.

    ``fill_mode="nearest"`` clamps sub-pixel overshoot at the border to the edge
    pixel, as ``keras.ops.image.resize`` does, instead of blending in a fill colour.
    """
    images = ops.convert_to_tensor(images)
    out = keras.ops.image.affine_transform(
        images,
        transforms,
        interpolation=interpolation,
        fill_mode=fill_mode,
        data_format="channels_last",
    )
    return ops.cast(out, images.dtype)


def rotate_and_zoom(images, angles, zooms, **kwargs):
    """Rotate each image of a ``(B, H, W, C)`` batch by its angle and zoom about the centre."""
    shape = ops.shape(images)
    transforms = rotation_zoom_transforms(angles, zooms, height=shape[1], width=shape[2])
    return apply_transforms(images, transforms, **kwargs)


def crop_and_resize(images, boxes, **kwargs):
    """Crop ``boxes[i]`` from image ``i`` and resize it back to the input size (one op)."""
    shape = ops.shape(images)
    transforms = crop_transforms(boxes, height=shape[1], width=shape[2])
    return apply_transforms(images, transforms, **kwargs)

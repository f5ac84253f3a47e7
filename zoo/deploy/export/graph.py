"""The exported inference graph: raw RGB uint8 images in, the target's probabilities out.

Built from stock Keras layers and ``keras.ops`` nodes only (no zoo class), so the ``.keras``
artifact loads with Keras alone and converts to a SavedModel, LiteRT or ONNX as it is. Per
member: zoo's black-border crop where the member was trained with it, and PIL's resize to the
member's size, both as matrix products (:mod:`zoo.deploy.export.resample`, so any image size gives
what ``zoo predict`` gives) → the TTA views of :mod:`zoo.inference.tta` (same transforms, as
constants) → the member's network on all views at once → the weighted mean over views → prior
correction to uniform priors. An ensemble then takes the weighted mean of its members (mean, weighted and
greedy rules; rank cannot be exported: it ranks across a batch).
"""

from __future__ import annotations

from dataclasses import dataclass

import keras
import numpy as np
from keras import ops

from zoo.data import geometry
from zoo.deploy.export import resample
from zoo.ensembles.combine import COMBINE_RULES, combiner_class
from zoo.errors import ZooError
from zoo.inference.members import Member, require_image_only
from zoo.inference.tta import TTAScheme
from zoo.models.stock import rewrapped, with_stock_layers


@dataclass(frozen=True)
class MemberPart:
    """One member inside the exported graph: its network, size, weight and priors."""

    member: Member
    weight: float
    priors: np.ndarray | None  # normalised training priors; None: no prior correction


def axis_matrices(transform, size: int) -> tuple[np.ndarray, np.ndarray] | None:
    """For an axis-aligned transform (a crop and scale, as Steppan's views are), the
    ``(size, size)`` matrices ``Ry``, ``Rx`` with ``view = Ry · image · Rxᵀ`` per channel;
    None for any other transform. They are read off the very op zoo's TTA uses
    (``keras.ops.image.affine_transform``, bilinear, nearest fill) applied to one-hot images,
    so the two agree to rounding; as matrix products the views need no image-transform op
    (LiteRT has none)."""
    t = np.asarray(transform, dtype="float32")
    if t[1] != 0 or t[3] != 0 or t[6] != 0 or t[7] != 0:
        return None
    eye = np.eye(size, dtype="float32")
    columns = np.broadcast_to(eye[None, :, :], (size, size, size))[None]  # channel c: column c
    rows = np.broadcast_to(eye[:, None, :], (size, size, size))[None]  # channel c: row c
    out = geometry.apply_transforms(np.concatenate([columns, rows]), t[None].repeat(2, axis=0))
    out = np.asarray(out)
    return out[1, :, 0, :], out[0, 0, :, :]  # Ry[y, i], Rx[x, j]


def _views(images, steps, size: int) -> list:
    """Each step of :meth:`TTAScheme.export_steps` applied to ``images``; axis-aligned transforms as
    matrix products, sharing the column pass between views with the same ``Rx``."""
    by_columns: dict[bytes, object] = {}
    out = []
    for step in steps:
        kind = step[0]
        if kind == "identity":
            out.append(images)
            continue
        if kind == "dihedral":
            out.append(_dihedral(images, *step[1:]))
            continue
        matrices = axis_matrices(step[1], size)
        if matrices is None:
            view = ops.image.affine_transform(
                images,
                np.asarray(step[1], dtype="float32"),
                interpolation="bilinear",
                fill_mode="nearest",
                data_format="channels_last",
            )
        else:
            ry, rx = matrices
            key = rx.tobytes()
            if key not in by_columns:  # (B, H, W, C) → (B, H, C, W) · Rxᵀ → (B, H, C, X)
                by_columns[key] = ops.matmul(ops.transpose(images, (0, 1, 3, 2)), rx.T)
            # (B, X, C, H) · Ryᵀ → (B, X, C, Y) → (B, Y, X, C)
            rows = ops.matmul(ops.transpose(by_columns[key], (0, 3, 2, 1)), ry.T)
            view = ops.transpose(rows, (0, 3, 1, 2))
        out.append(ops.flip(view, axis=2) if kind == "affine_flip" else view)
    return out


def _dihedral(images, k: int, mirrored: bool):
    """``np.rot90(image, k)`` on ``(B, H, W, C)``, then ``np.fliplr`` when ``mirrored``."""
    out = images
    if k == 1:
        out = ops.flip(ops.transpose(out, (0, 2, 1, 3)), axis=1)
    elif k == 2:
        out = ops.flip(out, axis=(1, 2))
    elif k == 3:
        out = ops.flip(ops.transpose(out, (0, 2, 1, 3)), axis=2)
    return ops.flip(out, axis=2) if mirrored else out


def member_output(pixels, part: MemberPart, scheme: TTAScheme, *, index: int, box):
    """Probabilities of one member for float32 pixels ``(B, H, W, 3)`` in [0, 255];
    ``box``: the images' black-border crop boxes (:func:`resample.border_box`), or ``None`` for
    a plain bilinear resize without a crop."""
    member = part.member
    size = member.image_size
    interpolation = str(member.input.get("interpolation", "bilinear"))
    if box is None:  # int8: a plain resize (the exact one does not survive quantisation)
        x = keras.layers.Resizing(size, size, antialias=False, name=f"resize_{index}")(pixels)
    else:
        crop = box if member.input.get("crop_borders", False) else None
        x = resample.crop_and_resize(pixels, crop, size, interpolation)
    network = _network(member, index=index)
    steps = scheme.export_steps(size)
    views = _views(x, steps, size)
    if len(steps) == 1:
        probs = network(views[0], training=False)
    else:
        views = ops.concatenate(views, axis=0)
        stacked = ops.reshape(network(views, training=False), (len(steps), -1, len(member.classes)))
        weights = np.asarray(scheme.weights, dtype="float32").reshape(-1, 1, 1)
        probs = ops.sum(ops.multiply(stacked, weights), axis=0)
    if part.priors is not None:
        uniform = np.full(len(part.priors), 1.0 / len(part.priors))
        scaled = ops.multiply(probs, np.asarray(uniform / part.priors, dtype="float32"))
        probs = scaled / ops.sum(scaled, axis=-1, keepdims=True)
    return probs


def _network(member: Member, *, index: int) -> keras.Model:
    """The member's network (stock layers only, older custom layers replaced) under a name
    unique in the exported graph."""
    from zoo.inference.target import load_model

    model = with_stock_layers(load_model(member))
    return rewrapped(model, name=f"member_{index}")


def build_graph(
    parts: list[MemberPart],
    scheme: TTAScheme,
    *,
    name: str,
    exact_resize: bool = True,
    calibration=None,
) -> keras.Model:
    """``image`` (uint8, ``(None, None, None, 3)``) → ``probabilities`` ``(None, K)``.

    ``exact_resize=False`` (for int8, whose quantiser rounds the crop boxes and filter weights
    of the exact resize to 256 steps even where they are denylisted) resizes by plain bilinear
    interpolation and leaves the black-border crop to the caller. ``calibration``: the
    target's stored calibration (:class:`zoo.inference.calibrated.Calibration`), applied last.
    """
    images = keras.Input((None, None, 3), dtype="uint8", name="image")
    pixels = ops.cast(images, "float32")
    used = [(index, part) for index, part in enumerate(parts) if part.weight != 0]
    box = resample.border_box(pixels) if exact_resize else None
    outputs = [
        (part.weight, member_output(pixels, part, scheme, index=index, box=box))
        for index, part in used
    ]
    if len(outputs) == 1 and outputs[0][0] == 1.0:
        probs = outputs[0][1]
    else:
        probs = ops.multiply(outputs[0][1], float(outputs[0][0]))
        for weight, out in outputs[1:]:
            probs = ops.add(probs, ops.multiply(out, float(weight)))
    if calibration is not None and calibration.method != "none":
        probs = calibrated_output(probs, calibration.method, calibration.parameters())
    probs = keras.layers.Identity(name="probabilities")(probs)
    return keras.Model(images, probs, name=_model_name(name))


def calibrated_output(probs, method: str, parameters: dict):
    """``softmax(w * log p + b)`` as graph ops: ``w = 1 / T``, ``b = 0`` for temperature
    scaling, per class for vector scaling (:mod:`zoo.scoring.calibrators`)."""
    logits = ops.log(ops.maximum(probs, 1e-12))
    if method == "temperature":
        logits = ops.multiply(logits, np.float32(1.0 / parameters["temperature"]))
    else:
        logits = ops.multiply(logits, np.asarray(parameters["scale"], dtype="float32"))
        logits = ops.add(logits, np.asarray(parameters["bias"], dtype="float32"))
    return ops.softmax(logits, axis=-1)


def _model_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "_-" else "_" for c in name)


def member_parts(target, *, prior_correction: bool) -> list[MemberPart]:
    """The members of a target with their weights and priors; a rank ensemble is refused."""
    require_image_only(target, "zoo export")
    if target.kind == "member":
        members, weights = [target.member], [1.0]
    else:
        rule = target.info["rule"]
        if not combiner_class(rule).works_per_image:
            exportable = [r for r in COMBINE_RULES if combiner_class(r).works_per_image]
            raise ZooError(
                f"ensemble {target.name} combines with rule {rule!r}, which ranks images across "
                f"a batch and cannot run image by image; export works for {', '.join(exportable)}."
            )
        members = target.members
        weights = [float(w) for w in target.combiner.weights_]
    parts = []
    for member, weight in zip(members, weights, strict=True):
        priors = None
        if prior_correction:
            priors = member.effective_priors / member.effective_priors.sum()
        parts.append(MemberPart(member=member, weight=weight, priors=priors))
    return parts

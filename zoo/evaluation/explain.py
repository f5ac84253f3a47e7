"""``zoo explain TARGET IMAGE…``: where in the image the prediction comes from.

- ``saliency`` (Simonyan et al. 2014, as in Esteva et al. 2017): the L1 norm over RGB of the
  gradient of the loss (``-log p`` of the explained class) with respect to the input pixels;
- ``gradcam`` (Selvaraju et al. 2017): the last convolutional feature maps weighted by the
  mean gradient of the explained class's probability, rectified, resized to the input.

The explained class is the target's predicted class unless ``--class`` names one. For an
ensemble the map is the weight-averaged map of its members (each member's map normalised to
sum 1 and resized to the largest input size), explaining the ensemble's class.

Per image, ``<out>/<image>.<method>.npy`` holds the raw map (float32, input size of the model)
and ``<out>/<image>.<method>.png`` the overlay; ``<out>/explain.csv`` lists image, method, class and
its probability (the target's output with its prior correction, without TTA).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from zoo.errors import ZooError

METHODS = ("saliency", "gradcam")


def check_method(method: str) -> str:
    if method not in METHODS:
        raise ZooError(f"unknown --method {method!r}; choose saliency or gradcam.")
    return method


def saliency_maps(model, pixels: np.ndarray, class_index: np.ndarray) -> np.ndarray:
    """``(N, H, W)`` L1 norms over RGB of ``d(-log p[class]) / d pixels``."""
    import tensorflow as tf

    x = tf.convert_to_tensor(np.asarray(pixels, dtype=np.float32))
    with tf.GradientTape() as tape:
        tape.watch(x)
        probs = model(x, training=False)
        chosen = tf.gather(probs, np.asarray(class_index), axis=1, batch_dims=1)
        loss = -tf.math.log(tf.maximum(chosen, 1e-12))
    grads = tape.gradient(loss, x)
    return tf.reduce_sum(tf.abs(grads), axis=-1).numpy()


def _last_4d(layers):
    """The last layer with a spatial (4-D, larger than 1 × 1) output."""
    import keras

    found = None
    for layer in layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        shape = tuple(layer.output.shape)
        if len(shape) == 4 and (shape[1] or 2) > 1:
            found = layer
    return found


def _gradcam_forward(model):
    """``pixels → (feature maps, probabilities)`` through the last convolutional layer.

    A zoo member is ``features`` (preprocess → backbone) then ``head``: the backbone is
    probed for its last spatial output; any other model is probed at its own top level."""
    import keras

    names = {layer.name for layer in model.layers}
    if {"features", "head"} <= names:
        features, head = model.get_layer("features"), model.get_layer("head")
        backbone = features.layers[-1]
        # everything before the backbone (colour constancy, normalisation: layers or ops)
        before = keras.Model(features.inputs, features.get_layer("preprocess").output)
        conv = _last_4d(getattr(backbone, "layers", []))
        if conv is None:
            raise ZooError(f"{model.name}: no convolutional layer found; use --method saliency.")
        probe = keras.Model(backbone.inputs, [conv.output, backbone.output])

        def forward(x):
            fmap, pooled = probe(before(x, training=False), training=False)
            return fmap, head(pooled, training=False)

        return forward
    conv = _last_4d(model.layers)
    if conv is None:
        raise ZooError(f"{model.name}: no convolutional layer found; use --method saliency.")
    probe = keras.Model(model.inputs, [conv.output, model.output])
    return lambda x: probe(x, training=False)


def gradcam_maps(model, pixels: np.ndarray, class_index: np.ndarray) -> np.ndarray:
    """``(N, H, W)`` Grad-CAM maps of the last convolutional layer, resized to the input."""
    import tensorflow as tf

    forward = _gradcam_forward(model)
    images = tf.convert_to_tensor(np.asarray(pixels, dtype=np.float32))
    with tf.GradientTape() as tape:
        features, probs = forward(images)
        chosen = tf.gather(probs, np.asarray(class_index), axis=1, batch_dims=1)
    grads = tape.gradient(chosen, features)
    weights = tf.reduce_mean(grads, axis=(1, 2), keepdims=True)
    cam = tf.nn.relu(tf.reduce_sum(weights * features, axis=-1))[..., None]
    return tf.image.resize(cam, pixels.shape[1:3], method="bilinear")[..., 0].numpy()


def explain_model(model, pixels: np.ndarray, *, method: str, class_index=None):
    """Maps, explained classes and their probabilities for one Keras model."""
    probs = np.asarray(model(np.asarray(pixels, dtype=np.float32), training=False))
    index = probs.argmax(axis=1) if class_index is None else np.full(len(pixels), class_index)
    compute = saliency_maps if check_method(method) == "saliency" else gradcam_maps
    return compute(model, pixels, index), index, probs


def _resize(maps: np.ndarray, size: int) -> np.ndarray:
    import tensorflow as tf

    if maps.shape[1] == size:
        return maps
    return tf.image.resize(maps[..., None], (size, size), method="bilinear")[..., 0].numpy()


def _normalised(maps: np.ndarray) -> np.ndarray:
    total = maps.reshape(len(maps), -1).sum(axis=1)[:, None, None]
    return np.where(total > 0, maps / np.where(total > 0, total, 1), 0.0)


def explain_target(target, paths: Sequence[Path], *, method: str, class_name: str | None):
    """``(maps, images, frame)``: maps ``(N, H, W)``, the pixels shown under them, and
    ``image, method, class, probability`` per file: the explained class is the target's
    prediction (with its prior correction, without TTA) unless ``class_name`` is given."""
    from zoo.inference.target import decode_files, image_names, load_model

    classes = [str(c) for c in target.classes]
    if class_name is not None and class_name not in classes:
        raise ZooError(
            f"--class {class_name!r} is not a class of {target.name}; choose one of {', '.join(classes)}."
        )
    wanted = None if class_name is None else classes.index(class_name)
    members = [target.member] if target.kind == "member" else list(target.members)
    weights = (
        [1.0] if target.kind == "member" else [target.weights.get(m.name, 0.0) for m in members]
    )
    runs = []
    for member, weight in zip(members, weights, strict=True):
        if weight <= 0:
            continue
        pixels = decode_files(paths, member)
        runs.append((member, weight, pixels))
    probs = target.predict_files(
        list(paths), tta="none", prior_correction=target.default_prior_correction
    ).to_numpy()
    index = probs.argmax(axis=1) if wanted is None else np.full(len(paths), wanted)
    size = max(px.shape[1] for _, _, px in runs)
    maps = 0.0
    for member, weight, pixels in runs:
        model = load_model(member)
        compute = saliency_maps if check_method(method) == "saliency" else gradcam_maps
        one = _resize(compute(model, pixels, index), size)
        maps = maps + weight * (one if len(runs) == 1 else _normalised(one))
    shown = next(px for _, _, px in runs if px.shape[1] == size)
    frame = pd.DataFrame(
        {
            "image": image_names(list(paths)),
            "method": method,
            "class": [classes[i] for i in index],
            "probability": probs[np.arange(len(index)), index],
        }
    )
    return np.asarray(maps, dtype=np.float32), shown, frame


def write_explanations(maps, images, frame: pd.DataFrame, *, method: str, out: Path) -> list[Path]:
    """The ``.npy`` map and the overlay ``.png`` of every image, and ``explain.csv``."""
    from zoo.scoring.plots import plot_overlay
    from zoo.store.workspace import atomic_write_csv

    out.mkdir(parents=True, exist_ok=True)
    written = []
    for i, row in frame.iterrows():
        name = f"{str(row['image']).replace('/', '__')}.{method}"
        tmp = out / f".{name}.tmp.npy"
        np.save(tmp, maps[i])
        os.replace(tmp, out / f"{name}.npy")
        title = f"{row['image']}: {method} for {row['class']} (p = {row['probability']:.3f})"
        written.append(plot_overlay(images[i], maps[i], out / f"{name}.png", title=title))
    atomic_write_csv(out / "explain.csv", frame, index=False)
    return written


def explain_command(
    target_name: str,
    paths,
    *,
    workspace: Path,
    method: str,
    out: str | Path | None,
    class_name: str | None = None,
) -> int:
    """``zoo explain TARGET PATH… --method saliency|gradcam --out DIR``."""
    from zoo import console
    from zoo.data.sources import collect_images
    from zoo.ensembles.targets import resolve_target

    method = check_method(method)
    if not out:
        raise ZooError("--out DIR is required: the folder for the maps and overlays.")
    target = resolve_target(target_name, workspace)
    files = collect_images(paths)
    maps, images, frame = explain_target(target, files, method=method, class_name=class_name)
    write_explanations(maps, images, frame, method=method, out=Path(out))
    console.info(f"Wrote {len(frame)} {method} map(s) to {out}")
    return 0

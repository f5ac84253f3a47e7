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
its probability (the target's output with its prior correction, without TTA). The folder is
replaced whole and marked as zoo's (``.zoo-output.json``); one that holds anything else is
refused (:mod:`zoo.store.outputs`).
"""

from __future__ import annotations

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


def input_gradient(function, x: np.ndarray) -> np.ndarray:
    """``d sum(function(x)) / dx`` for a float32 array ``x``, by the backend's own automatic
    differentiation: ``tf.GradientTape`` on TensorFlow, ``jax.grad`` on JAX."""
    import keras
    from keras import ops

    x = np.asarray(x, dtype=np.float32)
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        x = tf.convert_to_tensor(x)
        with tf.GradientTape() as tape:
            tape.watch(x)
            total = ops.sum(function(x))
        return tape.gradient(total, x).numpy()
    if backend == "jax":
        import jax

        return np.asarray(jax.grad(lambda v: ops.sum(function(v)))(x))
    raise ZooError(
        f"zoo explain computes gradients on the TensorFlow or JAX backend; this process runs "
        f"on {backend}. Run it with KERAS_BACKEND=tensorflow or KERAS_BACKEND=jax."
    )


def _chosen(probs, class_index: np.ndarray):
    """``probs[i, class_index[i]]`` for each row ``i``."""
    from keras import ops

    return ops.take_along_axis(probs, np.asarray(class_index)[:, None], axis=1)[:, 0]


def saliency_maps(model, pixels: np.ndarray, class_index: np.ndarray) -> np.ndarray:
    """``(N, H, W)`` L1 norms over RGB of ``d(-log p[class]) / d pixels``."""
    from keras import ops

    def loss(x):
        return -ops.log(ops.maximum(_chosen(model(x, training=False), class_index), 1e-12))

    return np.abs(input_gradient(loss, pixels)).sum(axis=-1)


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


def _gradcam_parts(model):
    """``(to_maps, from_maps)``: pixels → the last convolutional feature maps → probabilities.

    A zoo member is ``features`` (preprocess → backbone) then ``head``: the backbone is
    probed for its last spatial output; any other model is probed at its own top level."""
    import keras

    names = {layer.name for layer in model.layers}
    if {"features", "head"} <= names:
        features, head = model.get_layer("features"), model.get_layer("head")
        backbone = features.layers[-1]
        # everything before the backbone (colour constancy, normalisation: layers or ops)
        before = keras.Model(features.input, features.get_layer("preprocess").output)
        conv = _last_4d(getattr(backbone, "layers", []))
        if conv is None:
            raise ZooError(f"{model.name}: no convolutional layer found; use --method saliency.")
        maps, rest = _split_at(model, backbone, conv)

        def to_maps(x):
            return maps(before(x, training=False), training=False)

        def from_maps(fmap):
            return head(rest(fmap, training=False), training=False)

        return to_maps, from_maps
    conv = _last_4d(model.layers)
    if conv is None:
        raise ZooError(f"{model.name}: no convolutional layer found; use --method saliency.")
    maps, rest = _split_at(model, model, conv)
    return (lambda x: maps(x, training=False)), (lambda fmap: rest(fmap, training=False))


def _split_at(model, network, conv):
    """``network`` as two models: its inputs → ``conv``'s output → its outputs."""
    import keras

    try:
        rest = keras.Model(conv.output, network.output)
    except ValueError:
        raise ZooError(
            f"{model.name}: the layers after {conv.name} also read earlier layers, so Grad-CAM "
            "cannot start there; use --method saliency."
        ) from None
    return keras.Model(network.input, conv.output), rest


def gradcam_maps(model, pixels: np.ndarray, class_index: np.ndarray) -> np.ndarray:
    """``(N, H, W)`` Grad-CAM maps of the last convolutional layer, resized to the input."""
    from keras import ops

    to_maps, from_maps = _gradcam_parts(model)
    maps = ops.convert_to_numpy(to_maps(np.asarray(pixels, dtype=np.float32)))
    grads = input_gradient(lambda fmap: _chosen(from_maps(fmap), class_index), maps)
    weights = grads.mean(axis=(1, 2), keepdims=True)
    cam = np.maximum((weights * maps).sum(axis=-1), 0.0)
    return _resized(cam, tuple(pixels.shape[1:3]))


def explain_model(model, pixels: np.ndarray, *, method: str, class_index=None):
    """Maps, explained classes and their probabilities for one Keras model."""
    probs = np.asarray(model(np.asarray(pixels, dtype=np.float32), training=False))
    index = probs.argmax(axis=1) if class_index is None else np.full(len(pixels), class_index)
    compute = saliency_maps if check_method(method) == "saliency" else gradcam_maps
    return compute(model, pixels, index), index, probs


def _resized(maps: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """``(N, h, w)`` maps resized bilinearly to ``(N, *shape)`` (float32)."""
    from keras import ops

    if tuple(maps.shape[1:3]) == tuple(shape):
        return np.asarray(maps, dtype=np.float32)
    resized = ops.image.resize(
        np.asarray(maps, dtype=np.float32)[..., None], shape, interpolation="bilinear"
    )
    return ops.convert_to_numpy(resized)[..., 0]


def _resize(maps: np.ndarray, size: int) -> np.ndarray:
    return _resized(maps, (size, size))


def _normalised(maps: np.ndarray) -> np.ndarray:
    total = maps.reshape(len(maps), -1).sum(axis=1)[:, None, None]
    return np.where(total > 0, maps / np.where(total > 0, total, 1), 0.0)


def explain_target(target, paths: Sequence[Path], *, method: str, class_name: str | None):
    """``(maps, images, frame)``: maps ``(N, H, W)``, the pixels shown under them, and
    ``image, method, class, probability`` per file: the explained class is the target's
    prediction (with its prior correction, without TTA) unless ``class_name`` is given."""
    from zoo.inference.members import require_image_only
    from zoo.inference.target import decode_files, image_names, load_model

    classes = [str(c) for c in target.classes]
    if class_name is not None and class_name not in classes:
        raise ZooError(
            f"--class {class_name!r} is not a class of {target.name}; choose one of {', '.join(classes)}."
        )
    wanted = None if class_name is None else classes.index(class_name)
    require_image_only(target, "zoo explain")
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


def write_explanations(
    maps, images, frame: pd.DataFrame, *, method: str, out: Path, workspace: Path | None = None
) -> list[Path]:
    """The ``.npy`` map and the overlay ``.png`` of every image, and ``explain.csv``, in ``out``:
    the folder is replaced whole (:func:`zoo.store.outputs.output_folder`), so it must be new,
    empty or an earlier ``zoo explain`` folder. Returns the overlays' paths."""
    from zoo.scoring.plots import plot_overlay
    from zoo.store.outputs import output_folder
    from zoo.store.workspace import atomic_write_csv

    out = Path(out).expanduser().resolve()
    written = []
    with output_folder(
        out, "explain", written_by=f"zoo explain --method {method}", workspace=workspace
    ) as tmp:
        for i, row in frame.iterrows():
            name = f"{str(row['image']).replace('/', '__')}.{method}"
            np.save(tmp / f"{name}.npy", maps[i])
            title = f"{row['image']}: {method} for {row['class']} (p = {row['probability']:.3f})"
            plot_overlay(images[i], maps[i], tmp / f"{name}.png", title=title)
            written.append(out / f"{name}.png")
        atomic_write_csv(tmp / "explain.csv", frame, index=False)
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
    from zoo.store.outputs import claim_output_folder

    method = check_method(method)
    if not out:
        raise ZooError("--out DIR is required: the folder for the maps and overlays.")
    claim_output_folder(out, "explain", workspace=workspace)  # refused before any work
    target = resolve_target(target_name, workspace)
    files = collect_images(paths)
    maps, images, frame = explain_target(target, files, method=method, class_name=class_name)
    write_explanations(maps, images, frame, method=method, out=Path(out), workspace=workspace)
    console.info(f"Wrote {len(frame)} {method} map(s) to {out}")
    return 0

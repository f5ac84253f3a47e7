"""``zoo evaluate --tsne``: a t-SNE map of the last hidden layer (Esteva et al. 2017, Fig. 4).

The last hidden layer of a member is the output of its ``features`` part (the pooled backbone
output the softmax head reads). For an ensemble, each member's features are standardised and
concatenated. ``sklearn.manifold.TSNE`` (PCA initialisation, seeded) maps them to 2-D;
``tsne.csv`` holds ``image, truth, predicted, x, y`` and ``tsne.png`` the points coloured by
true class.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from zoo.errors import ZooError
from zoo.store import Layout

TSNE_SEED = 0
BATCH = 64


def member_features(member, dataset, ids: Sequence[str], *, workspace: Path) -> np.ndarray:
    """Last-hidden-layer activations ``(N, D)`` of ``ids`` of ``dataset``."""
    from zoo.data.images import load_images
    from zoo.inference.target import image_settings

    table = load_images(dataset, **image_settings(member), cache_dir=Layout(workspace).image_cache)
    return pixel_features(member, table.take(list(ids)))


def pixel_features(member, pixels: np.ndarray) -> np.ndarray:
    """Last-hidden-layer activations ``(N, D)`` of decoded ``pixels`` (uint8, member size)."""
    from zoo.inference.target import load_model

    features = load_model(member).get_layer("features")
    call = _feature_call(features, batch=min(BATCH, len(pixels)))
    parts = [
        np.asarray(call(np.asarray(pixels[i : i + BATCH], dtype=np.float32)))
        for i in range(0, len(pixels), BATCH)
    ]
    if not parts:
        return np.zeros((0, int(np.prod(features.output.shape[1:]))), dtype=np.float32)
    return np.concatenate(parts, axis=0).reshape(len(pixels), -1)


def _feature_call(features, *, batch: int):
    """``float32 batch → features``: an eager call on TensorFlow (its fastest here); elsewhere
    (JAX) the compiled ``predict_on_batch`` on batches padded to ``batch`` rows, so that it
    is compiled once, not op by op."""
    import keras

    if keras.backend.backend() == "tensorflow":
        return lambda x: features(x, training=False)
    from zoo.inference.target import pad_rows

    return lambda x: np.asarray(features.predict_on_batch(pad_rows(x, batch)))[: len(x)]


def target_features(target, dataset, ids: Sequence[str], *, workspace: Path) -> np.ndarray:
    """A member's features, or an ensemble's members' standardised features side by side."""
    if target.kind == "member":
        return member_features(target.member, dataset, ids, workspace=workspace)
    blocks = []
    for member in target.members:
        f = member_features(member, dataset, ids, workspace=workspace)
        blocks.append((f - f.mean(axis=0)) / (f.std(axis=0) + 1e-8))
    return np.concatenate(blocks, axis=1)


def tsne(features: np.ndarray, *, seed: int = TSNE_SEED) -> np.ndarray:
    """2-D t-SNE embedding; perplexity ``min(30, (n - 1) / 3)``."""
    from sklearn.manifold import TSNE

    n = len(features)
    if n < 5:
        raise ZooError(f"--tsne needs at least 5 images; the evaluation has {n}.")
    model = TSNE(n_components=2, perplexity=min(30.0, (n - 1) / 3), init="pca", random_state=seed)
    return model.fit_transform(np.asarray(features, dtype=np.float64))


def write_tsne(
    target,
    dataset,
    truth: pd.DataFrame,
    probs: pd.DataFrame,
    *,
    out: Path,
    workspace: Path,
    title: str,
) -> dict:
    """``tsne.csv`` and ``tsne.png`` of the evaluated images; the record for metrics.json."""
    from zoo.scoring.plots import plot_embedding
    from zoo.store.workspace import atomic_write_csv

    ids = [str(i) for i in truth.index]
    points = tsne(target_features(target, dataset, ids, workspace=workspace))
    frame = pd.DataFrame(
        {
            "image": ids,
            "truth": truth.idxmax(axis=1).to_numpy(),
            "predicted": probs.idxmax(axis=1).to_numpy(),
            "x": points[:, 0],
            "y": points[:, 1],
        }
    )
    atomic_write_csv(out / "tsne.csv", frame, index=False)
    plot_embedding(
        frame, out / "tsne.png", title=f"{title}\nt-SNE of the last hidden layer, n = {len(frame)}"
    )
    return {"method": "tsne", "layer": "features", "seed": TSNE_SEED, "n": len(frame)}

"""What a member records about itself when it is saved: ``card.md`` and library versions."""

from __future__ import annotations

import platform

import numpy as np
import pandas as pd


def library_versions() -> dict[str, str]:
    import keras
    import sklearn
    import tensorflow as tf

    import zoo

    return {
        "zoo": zoo.__version__,
        "keras": keras.__version__,
        "tensorflow": tf.__version__,
        "numpy": np.__version__,
        "pandas": pd.__version__,
        "scikit-learn": sklearn.__version__,
        "python": platform.python_version(),
    }


def model_card(info: dict) -> str:
    """``card.md``: what the member is, how it was trained, how it scores, what it is for."""
    data, training, metrics = info["data"], info["training"], info.get("metrics", {})
    counts = ", ".join(f"{c} {n}" for c, n in data["class_counts"].items())
    lines = [
        f"# {info['name']}",
        "",
        f"Recipe `{info['recipe']}` ({info['config']['recipe']['source']}), backbone "
        f"{info['config']['recipe']['backbone']}, input {info['input']['size']} px, weights {info['weights']}.",
        "",
        "## Intended use",
        "Research on skin-lesion classification and ensembling. **Not for diagnosis**: it has not been "
        "validated clinically, and its scores on one data set do not carry over to other populations, "
        "devices or clinics.",
        "",
        "## Data",
        f"- Source: `{data['source']}`{' (synthetic demo data)' if data.get('demo') else ''}",
        f"- {data['count']} images, fingerprint `{data['fingerprint']}`; classes: {counts}",
        f"- Split (lesion-grouped, stratified, seed {info['split']['seed']}): "
        + ", ".join(f"{p} {len(info['split']['ids'][p])}" for p in ("train", "val", "test")),
        "",
        "## Training",
        f"- {training['epochs_run']} epochs in {training['seconds']:.0f} s, best epoch {training['best_epoch']} "
        f"(by validation balanced accuracy), seed {info['config']['options']['seed']}",
        *_origin(info),
        f"- Class weighting `{info['config']['recipe']['class_weight']}`, sampling `{info['config']['recipe']['sampling']}`; "
        "effective training priors: "
        + ", ".join(
            f"{c} {p:.3f}"
            for c, p in zip(info["classes"], info["priors"]["effective"], strict=True)
        ),
        "",
        "## Metrics (raw softmax, no TTA, no prior correction)",
        "| split | balanced accuracy | macro AUC | accuracy |",
        "|---|---|---|---|",
    ]
    for split, m in metrics.items():
        auc = "–" if m.get("macro_auc") is None else f"{m['macro_auc']:.3f}"
        lines.append(f"| {split} | {m['balanced_accuracy']:.3f} | {auc} | {m['accuracy']:.3f} |")
    lines += [
        "",
        f"Library versions: {', '.join(f'{k} {v}' for k, v in info['versions'].items())}.",
        "",
    ]
    return "\n".join(lines)


def _origin(info: dict) -> list[str]:
    """Where an extra member's weights come from: a snapshot or the weight average of a run."""
    if isinstance(info.get("snapshot"), dict):
        snap = info["snapshot"]
        return [
            f"- Snapshot {snap['cycle']} of {snap['of']} of run `{snap['run']}`: the weights at the "
            f"end of epoch {snap['epoch']}, the end of a cosine-restart cycle (Huang et al. 2017)"
        ]
    if isinstance(info.get("swa"), dict):
        swa = info["swa"]
        return [
            f"- Stochastic weight average (Izmailov et al. 2018) of run `{swa['run']}` over the "
            f"ends of epochs {', '.join(map(str, swa['epochs']))}; batch-norm statistics "
            f"recomputed over {swa['batchnorm_batches']} batches of training images"
        ]
    return []

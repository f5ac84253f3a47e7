"""Save a trained model as a member: ``members/<name>/``, written whole, then renamed in.

:func:`save_member` predicts the validation and test splits, scores them, and writes
``model.keras``, ``member.json``, the cached predictions with their sidecars, the training
images' hashes, ``history.csv``, ``calibration.json`` and ``card.md`` under a temporary name
(:func:`zoo.store.workspace.atomic_directory`). A partitioned run's model is saved answering in
its inference classes; a snapshot or SWA member is saved the same way under its own name.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from zoo import console
from zoo.console import escape
from zoo.data.combined import split_counts
from zoo.data.duplicates import public, save_hashes
from zoo.data.pipeline import inference_dataset
from zoo.models.build import saved_bytes, weights_provenance
from zoo.models.stock import without_optimizer
from zoo.scoring.headline import headline_metrics
from zoo.scoring.priors import PriorCorrection
from zoo.store import (
    MEMBER_FILE,
    MODEL_FILE,
    TRAIN_HASHES_FILE,
    Layout,
    MemberRecord,
    PredictionCache,
    predictions_frame,
    sha256_of,
)
from zoo.store.hashes import predictions_digest
from zoo.store.workspace import atomic_directory, atomic_write_text, ensure_free_space
from zoo.training.card import library_versions, machine, model_card, source_commit
from zoo.training.partition import summed_model, summed_priors
from zoo.training.run import ClassBalance, ResolvedRun, Run
from zoo.training.runtime import is_chief


def predict_probabilities(
    model, pixels: np.ndarray, *, batch_size: int = 128, metadata: np.ndarray | None = None
) -> np.ndarray:
    """Softmax outputs for decoded pixels (and their encoded ``metadata``, for a model that
    reads it), batched and prefetched."""
    if len(pixels) == 0:
        return np.zeros((0, model.output_shape[-1]))
    batches = inference_dataset(pixels, batch_size=batch_size, metadata=metadata)
    return model.predict(batches, verbose=0)


@dataclass(frozen=True)
class _Answering:
    """The model as the member answers, in the classes it answers in, with their priors."""

    model: object  # a keras.Model
    classes: Sequence[str]
    labels_of: Callable[[str], np.ndarray]  # a split part → its labels in ``classes``
    counts: np.ndarray
    class_weights: np.ndarray
    priors: np.ndarray
    partition: dict | None = None  # member.json's ``partition``: training → inference classes


@dataclass(frozen=True)
class _Predictions:
    """The member's validation and test predictions, their headline metrics and timings."""

    frames: dict[str, pd.DataFrame]
    metrics: dict[str, dict]
    seconds: dict[str, float]
    inference_rate: float  # test images per second


def save_member(run: Run, model, balance: ClassBalance, extra=None) -> Path:
    """Save ``model`` as the run's member, or as ``extra``: (name, provenance in member.json)."""
    name, provenance = extra or (run.setup.name, {})
    answering = _answering(run.setup, model, balance)
    predictions = _predict(run.setup, answering)
    info = _member_info(run, answering, predictions, name=name, provenance=provenance)
    final = Layout(run.setup.options.workspace).member(info["name"])
    if not is_chief():
        return final
    record = MemberRecord.from_dict(info)
    with atomic_directory(final) as tmp:
        _write_files(tmp, run, answering, predictions, info=info, record=record)
    _print_summary(run, info, final)
    return final


def _answering(setup: ResolvedRun, model, balance: ClassBalance) -> _Answering:
    """The model and priors as trained, or, for a partitioned run, summed from the training
    classes into the inference classes."""
    if setup.plan is None:
        return _Answering(
            model,
            setup.dataset.classes,
            setup.labels,
            balance.counts,
            balance.class_weights,
            balance.priors,
        )
    matrix = setup.plan.summation()
    partition = setup.plan.record(setup.source.class_counts())
    partition["train_counts"] = balance.counts.tolist()
    to_inference = matrix.argmax(axis=1)
    return _Answering(
        summed_model(model, matrix),
        setup.plan.inference,
        lambda part: to_inference[setup.labels(part)],
        *summed_priors(balance.counts, balance.class_weights, balance.priors, matrix),
        partition=partition,
    )


def _predict(setup: ResolvedRun, answering: _Answering) -> _Predictions:
    """Predict and score the validation and test splits (validation first: it traces the
    predict function, so the test split's time is the inference rate)."""
    frames, metrics, seconds, rate = {}, {}, {}, 0.0
    for part in ("val", "test"):
        ids = setup.split.ids(part)
        start = time.perf_counter()
        probs = predict_probabilities(
            answering.model, setup.pixels.take(ids), metadata=setup.metadata_inputs(ids)
        )
        seconds[part] = time.perf_counter() - start
        rate = len(ids) / max(seconds[part], 1e-9)
        frames[part] = predictions_frame(ids, probs, answering.classes)
        metrics[part] = headline_metrics(answering.labels_of(part), probs)
    return _Predictions(frames, metrics, seconds, rate)


def _member_info(
    run: Run, answering: _Answering, predictions: _Predictions, *, name: str, provenance: dict
) -> dict:
    """``member.json``: what the member is, how it was trained, what it scored."""
    setup = run.setup
    info = {
        "name": name,
        "recipe": setup.recipe.name,
        "config": {"recipe": setup.recipe.as_dict(), "options": setup.options.to_dict()},
        "classes": list(answering.classes),
        "weights": run.weights,
        "weights_provenance": weights_provenance(setup.recipe, run.weights),
        "priors": _priors_record(setup, answering),
        "input": {
            **dataclasses.asdict(setup.recipe.input),
            "dtype": "float32",
            "range": [0, 255],
            "layout": "NHWC",
        },
        "data": _data_record(setup),
        "split": setup.split.to_dict(),
        "versions": library_versions(),
        "training": _training_record(run, answering.model, predictions.inference_rate),
        "metrics": predictions.metrics,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    if answering.partition is not None:
        info["partition"] = answering.partition
    if setup.metadata is not None:
        info["metadata_inputs"] = setup.metadata.to_dict()
    info.update(provenance)
    return info


def _priors_record(setup: ResolvedRun, answering: _Answering) -> dict:
    """member.json's ``priors``: the training split's class counts and frequencies, the loss's
    class weights, the effective priors, and the counts as the sources weigh them."""
    counts = answering.counts
    record = {
        "train_counts": np.asarray(counts).tolist(),
        "train_frequency": (counts / counts.sum()).tolist(),
        "class_weights": np.asarray(answering.class_weights).tolist(),
        "effective": list(map(float, answering.priors)),
    }
    per_source = setup.source_weights()
    if per_source is not None:  # the counts behind the effective priors, as sources weigh them
        record["source_weighted_counts"] = np.bincount(
            answering.labels_of("train"), weights=per_source, minlength=len(answering.classes)
        ).tolist()
    return record


def _training_record(run: Run, model, inference_rate: float) -> dict:
    """member.json's ``training``: time, best epoch, speed, size, replicas, precision, and the
    image size of every epoch under progressive resizing."""
    seen = sum(r["images_per_second"] * (r["seconds"]) for r in run.history) or 1
    record = {
        "seconds": run.seconds,
        "best_epoch": run.best_epoch,
        "epochs_run": len(run.history),
        "images_per_second": seen / max(sum(r["seconds"] for r in run.history), 1e-9),
        "parameters": int(model.count_params()),
        "inference_images_per_second": inference_rate,
        "replicas": run.replicas,
        "precision": run.precision,
        "backend": console.keras_backend(),
        "machine": machine(),
        "commit": source_commit(),
    }
    if run.history and "image_size" in run.history[0]:  # progressive resizing
        record["image_sizes"] = [r["image_size"] for r in run.history]
    return record


def _data_record(setup: ResolvedRun) -> dict:
    """member.json's ``data``: the data set, each source with its split counts, duplicates."""
    record = (setup.source or setup.dataset).describe()
    if setup.dataset.sources:
        counts = split_counts(setup.dataset, setup.split)
        for source in record["sources"]:
            source["split_counts"] = counts[source["name"]]
    if setup.duplicates is not None:
        record["duplicates"] = public(setup.duplicates)
    if setup.hashes is not None:
        record["train_hashes"] = {
            "file": TRAIN_HASHES_FILE,
            "kind": setup.duplicates["kind"] if setup.duplicates else None,
            "count": len(setup.split.train),
        }
    return record


def _write_files(
    tmp: Path,
    run: Run,
    answering: _Answering,
    predictions: _Predictions,
    *,
    info: dict,
    record: MemberRecord,
) -> None:
    """Every file of the member, into the folder that becomes ``members/<name>/``."""
    setup = run.setup
    ensure_free_space(tmp, saved_bytes(answering.model))
    without_optimizer(answering.model).save(tmp / MODEL_FILE)  # optimizer state stays in runs/
    record.write(tmp / MEMBER_FILE)
    cache = PredictionCache(tmp, answering.classes)
    model_sha256 = sha256_of(tmp / MODEL_FILE)  # uncached: no .sha256-cache.json here
    if setup.hashes is not None:
        order = {image_id: k for k, image_id in enumerate(setup.hashes.ids)}
        save_hashes(
            tmp / TRAIN_HASHES_FILE, setup.hashes.hashes[[order[i] for i in setup.split.train]]
        )
    for part, frame in predictions.frames.items():
        metadata = setup.metadata_inputs(setup.split.ids(part))
        cache.write(
            part,
            frame,
            tta="none",
            model_sha256=predictions_digest(model_sha256, metadata),
            seconds=predictions.seconds[part],
            origin="trainer",
        )
    pd.DataFrame(run.history).to_csv(tmp / "history.csv", index=False)
    _write_calibration(tmp, setup, predictions.frames["val"], answering)
    atomic_write_text(tmp / "card.md", model_card(info, folder=tmp, dataset=setup.dataset))


def _write_calibration(
    folder: Path, setup: ResolvedRun, val: pd.DataFrame, answering: _Answering
) -> None:
    """``calibration.json``: the calibrator and melanoma operating point of the member's
    default outputs (no TTA, prior-corrected), chosen on its validation split."""
    from zoo.scoring.calibrators import write_served_outputs

    priors = np.asarray(answering.priors, dtype=float)
    corrected = PriorCorrection().fit(priors).transform(val.to_numpy())
    groups = setup.dataset.lesion_groups(val.index)
    write_served_outputs(
        folder,
        classes=list(val.columns),
        tta="none",
        prior_correction=True,
        probabilities=corrected,
        labels=np.asarray(answering.labels_of("val")),
        groups=None if groups is None else groups.to_numpy(),
    )


def _print_summary(run: Run, info: dict, final: Path) -> None:
    """The member's headline metrics per split, its best epoch and where it was saved."""
    from rich.table import Table

    table = Table(title=f"{info['name']}", show_edge=False)
    for column in ("split", "images", "balanced acc.", "macro AUC", "accuracy"):
        table.add_column(column, justify="right" if column != "split" else "left")
    for part, m in info["metrics"].items():
        auc = "–" if m["macro_auc"] is None else f"{m['macro_auc']:.3f}"
        table.add_row(
            part, str(m["n_images"]), f"{m['balanced_accuracy']:.3f}", auc, f"{m['accuracy']:.3f}"
        )
    if not console.is_quiet():
        console.console.print(table)
    console.info(
        f"best epoch {run.best_epoch} of {len(run.history)}, {run.seconds:.0f} s of training"
    )
    console.console.print(f"Saved member [bold]{info['name']}[/bold] to {escape(str(final))}")

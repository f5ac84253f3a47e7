"""The epoch monitor: progress, validation balanced accuracy, best epoch, checkpoints, early stop."""

from __future__ import annotations

import time
from collections.abc import Callable

import keras
import numpy as np

from zoo import console
from zoo.errors import ZooError
from zoo.scoring.headline import balanced_accuracy


class Diverged(ZooError):
    """The training loss became NaN or infinite; ``epoch`` is the global epoch (1-based)."""

    def __init__(self, epoch: int, loss: float):
        self.epoch, self.loss = epoch, loss
        super().__init__(f"training diverged: the loss is {loss} in epoch {epoch}")


class TrainingMonitor(keras.callbacks.Callback):
    """Scores the validation split after every epoch and keeps the best weights.

    ``predict_val`` returns validation probabilities for the model being trained;
    ``on_checkpoint(epoch, logs, is_best)`` persists state so that a run can resume.
    The best epoch is chosen by validation balanced accuracy (ties: the earlier epoch).
    """

    def __init__(
        self,
        *,
        predict_val: Callable[[], np.ndarray],
        val_labels: np.ndarray,
        steps: int,
        batch_size: int,
        stage_label: str,
        epoch_offset: int,
        total_epochs: int,
        best_score: float = -1.0,
        patience: int = 0,
        epochs_since_best: int = 0,
        on_checkpoint: Callable[[int, dict, bool], None] | None = None,
        before_validation: Callable[[], object] | None = None,
    ):
        super().__init__()
        self.predict_val, self.val_labels = predict_val, val_labels
        self.steps, self.batch_size = steps, batch_size
        self.stage_label, self.epoch_offset, self.total_epochs = (
            stage_label,
            epoch_offset,
            total_epochs,
        )
        self.best_score, self.patience, self.epochs_since_best = (
            best_score,
            patience,
            epochs_since_best,
        )
        self.on_checkpoint, self.before_validation = on_checkpoint, before_validation
        self.best_weights: list | None = None
        self.rows: list[dict] = []

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()
        self._bar = console.progress()
        self._bar.start()
        label = f"{self.stage_label} · epoch {self.epoch_offset + epoch + 1}/{self.total_epochs}"
        self._task = self._bar.add_task(label, total=self.steps, status="")

    def on_train_batch_end(self, batch, logs=None):
        logs = logs or {}
        status = "  ".join(f"{k} {v:.3f}" for k, v in logs.items() if k in ("loss", "accuracy"))
        self._bar.update(self._task, completed=batch + 1, status=status)

    def on_epoch_end(self, epoch, logs=None):
        train_seconds = time.perf_counter() - self._start
        self._bar.stop()
        loss = float((logs or {}).get("loss", 0.0))
        if not np.isfinite(loss):
            raise Diverged(self.epoch_offset + epoch + 1, loss)
        if self.before_validation is not None:
            self.before_validation()
        probs = self.predict_val()
        predicted = probs.argmax(axis=1)
        onehot = np.eye(probs.shape[1])[self.val_labels]
        row = {
            "epoch": self.epoch_offset + epoch + 1,
            "stage": self.stage_label,
            "loss": float(logs.get("loss", np.nan)),
            "accuracy": float(logs.get("accuracy", np.nan)),
            "val_loss": float(-np.mean(np.sum(onehot * np.log(np.clip(probs, 1e-7, 1)), axis=1))),
            "val_accuracy": float(np.mean(predicted == self.val_labels)),
            "val_balanced_accuracy": balanced_accuracy(self.val_labels, predicted),
            "learning_rate": float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)),
            "images_per_second": self.steps * self.batch_size / train_seconds,
            "seconds": time.perf_counter() - self._start,
        }
        is_best = row["val_balanced_accuracy"] > self.best_score
        if is_best:
            self.best_score, self.epochs_since_best = row["val_balanced_accuracy"], 0
        else:
            self.epochs_since_best += 1
        row["best"] = is_best
        self.rows.append(row)
        mark = "[green]★ best[/green]" if is_best else ""
        console.info(
            f"  epoch {row['epoch']:>3}/{self.total_epochs}  loss {row['loss']:.3f}  acc {row['accuracy']:.3f}  "
            f"val loss {row['val_loss']:.3f}  val bal-acc {row['val_balanced_accuracy']:.3f}  "
            f"{row['images_per_second']:.0f} img/s  {row['seconds']:.0f}s {mark}",
            markup=True,
        )
        if self.on_checkpoint is not None:
            self.on_checkpoint(row["epoch"], row, is_best)
        if self.patience and self.epochs_since_best >= self.patience:
            console.info(
                f"  early stop: no better validation balanced accuracy for {self.patience} epochs"
            )
            self.model.stop_training = True


class LearningRateSchedule(keras.callbacks.Callback):
    """Sets the optimizer's learning rate before every batch from ``rate(epoch_fraction)``."""

    def __init__(self, rate: Callable[[float], float], *, steps: int, initial_epoch: int = 0):
        super().__init__()
        self.rate, self.steps, self._epoch = rate, steps, initial_epoch

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_begin(self, batch, logs=None):
        self.model.optimizer.learning_rate.assign(self.rate(self._epoch + batch / self.steps))

"""A training loop for strategies that ``model.fit`` cannot drive in Keras 3.

Keras 3 ``fit`` fails under ``tf.distribute.MultiWorkerMirroredStrategy`` (it reduces the
first distributed batch and the scalar logs with ``axis=0``; keras-team/keras#20585). This
loop does what ``fit`` would: one ``strategy.run`` per step inside a ``tf.function``, the loss
averaged over the global batch, the same callbacks (learning-rate schedule, monitor) with the
same ``loss`` and ``accuracy`` logs. Everything else (mirrored, one device) uses ``fit``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import keras

if TYPE_CHECKING:
    import tensorflow as tf


def needs_custom_loop(strategy) -> bool:
    """Whether ``fit`` cannot drive ``strategy`` (multi-worker), so zoo's own loop runs."""
    if keras.backend.backend() != "tensorflow":
        return False
    import tensorflow as tf

    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)


def fit_with_strategy(
    model: keras.Model,
    dataset: tf.data.Dataset,
    *,
    strategy: tf.distribute.Strategy,
    loss: keras.losses.Loss,
    global_batch: int,
    steps: int,
    epochs: int,
    initial_epoch: int = 0,
    callbacks=(),
) -> None:
    """Train ``model`` (compiled, built under ``strategy``) on ``(x, one_hot, weight)`` batches."""
    import tensorflow as tf

    per_sample = loss.__class__.from_config({**loss.get_config(), "reduction": None})
    optimizer = model.optimizer
    iterator = iter(strategy.experimental_distribute_dataset(dataset))

    def replica_step(x, y, w):
        with tf.GradientTape() as tape:
            predicted = model(x, training=True)
            value = tf.nn.compute_average_loss(
                per_sample(y, predicted) * w, global_batch_size=global_batch
            )
            scaled = optimizer.scale_loss(value) if hasattr(optimizer, "scale_loss") else value
        gradients = tape.gradient(scaled, model.trainable_variables)
        optimizer.apply_gradients(zip(gradients, model.trainable_variables, strict=True))
        hits = tf.reduce_sum(
            tf.cast(tf.equal(tf.argmax(y, 1), tf.argmax(predicted, 1)), tf.float32)
        )
        return value, hits, tf.cast(tf.shape(y)[0], tf.float32)

    @tf.function
    def train_step(iterator):
        value, hits, count = strategy.run(replica_step, args=next(iterator))
        return tuple(strategy.reduce("SUM", v, axis=None) for v in (value, hits, count))

    for callback in callbacks:
        callback.set_model(model)
    model.stop_training = False
    for epoch in range(initial_epoch, epochs):
        for callback in callbacks:
            callback.on_epoch_begin(epoch)
        total, hits, seen, logs = 0.0, 0.0, 0.0, {}
        for step in range(steps):
            for callback in callbacks:
                callback.on_train_batch_begin(step)
            value, correct, count = (float(v) for v in train_step(iterator))
            total, hits, seen = total + value, hits + correct, seen + count
            logs = {"loss": total / (step + 1), "accuracy": hits / max(seen, 1.0)}
            for callback in callbacks:
                callback.on_train_batch_end(step, logs)
        for callback in callbacks:
            callback.on_epoch_end(epoch, logs)
        if model.stop_training:
            break

"""Where training runs: mixed precision and tf.distribute strategies.

Every Keras backend trains on one device (the ``default`` strategy: on TensorFlow its default
``tf.distribute`` strategy, elsewhere :class:`OneDevice`); ``mirrored`` and ``multi-worker``
are ``tf.distribute``'s and need the TensorFlow backend. TensorFlow is imported only on it.
"""

from __future__ import annotations

import contextlib
import json
import os
from typing import TYPE_CHECKING

import keras

from zoo.errors import ZooError

if TYPE_CHECKING:
    import tensorflow as tf

STRATEGIES = ("default", "mirrored", "multi-worker")


def on_tensorflow() -> bool:
    return keras.backend.backend() == "tensorflow"


def has_gpu() -> bool:
    """Whether the backend computes on a GPU."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return bool(tf.config.list_physical_devices("GPU"))
    if backend == "jax":
        import jax

        return jax.default_backend() == "gpu"
    if backend == "torch":
        import torch

        return torch.cuda.is_available()
    return False


def configure_precision(mixed_precision: bool) -> str:
    """Set Keras' global dtype policy: mixed_float16 on GPU, mixed_bfloat16 on CPU."""
    if not mixed_precision:
        policy = "float32"
    else:
        policy = "mixed_float16" if has_gpu() else "mixed_bfloat16"
    keras.config.set_dtype_policy(policy)
    return policy


class OneDevice:
    """The ``default`` strategy on a backend without ``tf.distribute``: one device, one replica."""

    num_replicas_in_sync = 1

    def scope(self):
        return contextlib.nullcontext()


def split_logical_cpus() -> None:
    """With ``ZOO_LOGICAL_CPUS=N``, present the CPU as N logical devices (to test ``mirrored``
    on a machine without GPUs). Must run before TensorFlow initialises its devices."""
    text = os.environ.get("ZOO_LOGICAL_CPUS", "0") or "0"
    try:
        count = int(text)
    except ValueError:
        raise ZooError(
            f"ZOO_LOGICAL_CPUS must be a whole number of devices; got {text!r}."
        ) from None
    if count > 1:
        import tensorflow as tf

        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * count
        )


def make_strategy(name: str) -> tf.distribute.Strategy | OneDevice:
    """``default`` (one device), ``mirrored`` (all GPUs of this machine, or its logical CPUs
    when there is no GPU) or ``multi-worker`` (several machines described by ``TF_CONFIG``).
    A ``TF_CONFIG`` that is set is checked here, before training, not when the member is saved."""
    tf_config()
    if name not in STRATEGIES:
        raise ZooError(f"--strategy must be one of {', '.join(STRATEGIES)}; got {name!r}.")
    if not on_tensorflow():
        if name != "default":
            raise ZooError(
                f"--strategy {name} is tf.distribute's and needs Keras' TensorFlow backend; "
                f"this process runs on {keras.backend.backend()}. Run it with "
                "KERAS_BACKEND=tensorflow, or train on one device (--strategy default)."
            )
        return OneDevice()
    import tensorflow as tf

    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        split_logical_cpus()
        gpus = tf.config.list_logical_devices("GPU")
        devices = [d.name for d in gpus] or [d.name for d in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices=devices)
    if name == "multi-worker":
        if "TF_CONFIG" not in os.environ:
            raise ZooError(
                "--strategy multi-worker needs TF_CONFIG (cluster and task of this worker); see README."
            )
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ZooError(f"--strategy must be one of {', '.join(STRATEGIES)}; got {name!r}.")


def tf_config() -> dict:
    """``$TF_CONFIG`` as a dict ({} when unset); a malformed one is a :class:`ZooError`."""
    text = os.environ.get("TF_CONFIG", "") or "{}"
    try:
        config = json.loads(text)
        task = config.get("task", {})
        if not isinstance(task, dict) or not isinstance(config.get("cluster", {}), dict):
            raise ValueError("'task' and 'cluster' must be objects")
        int(task.get("index", 0))
    except (ValueError, TypeError, AttributeError) as exc:
        raise ZooError(
            f"TF_CONFIG is not a valid cluster description ({exc}); see README for an example."
        ) from None
    return config


def is_chief() -> bool:
    """True unless this process is a non-chief worker of a multi-worker cluster."""
    config = tf_config()
    task = config.get("task", {})
    if not task:
        return True
    kinds = config.get("cluster", {})
    if "chief" in kinds:
        return task.get("type") == "chief"
    return task.get("type") == "worker" and int(task.get("index", 0)) == 0

"""Where training runs: mixed precision and tf.distribute strategies."""

from __future__ import annotations

import json
import os

import keras
import tensorflow as tf

from zoo.errors import ZooError

STRATEGIES = ("default", "mirrored", "multi-worker")


def configure_precision(mixed_precision: bool) -> str:
    """Set Keras' global dtype policy: mixed_float16 on GPU, mixed_bfloat16 on CPU."""
    if not mixed_precision:
        policy = "float32"
    else:
        policy = "mixed_float16" if tf.config.list_physical_devices("GPU") else "mixed_bfloat16"
    keras.config.set_dtype_policy(policy)
    return policy


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
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * count
        )


def make_strategy(name: str) -> tf.distribute.Strategy:
    """``default`` (one device), ``mirrored`` (all GPUs of this machine, or its logical CPUs
    when there is no GPU) or ``multi-worker`` (several machines described by ``TF_CONFIG``).
    A ``TF_CONFIG`` that is set is checked here, before training, not when the member is saved."""
    tf_config()
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

"""Keras backends: a member trained on TensorFlow evaluates, ensembles, predicts and explains
on JAX.

The JAX runs are subprocesses with ``KERAS_BACKEND=jax`` in which TensorFlow cannot be
imported (as on a machine set up for JAX alone); their outputs are compared with the same
commands run here, on TensorFlow. They skip, with the reason, where jax is not installed.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from zoo.cli.main import main
from zoo.data import load_dataset
from zoo.errors import ZooError
from zoo.inference.members import Member

NAME = "small_cnn.demo.s0"
ROOT = Path(__file__).resolve().parents[1]
# TensorFlow → JAX on the same member and pixels: float32 round-off. Measured on the demo
# member's 126 validation and test images: 9e-7 at most over the class probabilities (TTA
# none, steppan, dihedral, rotations:8), 2e-6 over its last-hidden-layer features, 1.5e-6 of
# the largest value over saliency and Grad-CAM maps. Asserted with a margin of ten.
PROBABILITY_TOLERANCE = 1e-5
MAP_TOLERANCE = 2e-5  # relative to the largest value of the maps
# share of map pixels allowed beyond it: where round-off picks the other branch of a near tie
# in a max-pool, the gradient of that unit's whole receptive field moves (a block of 3 x 3 to
# 6 x 6 pixels). Measured over repeated trainings of the demo member, on noisy inputs: up to
# 3 % of a 32 x 32 saliency map, those pixels at most 0.7 % of the map's largest value apart
MAX_TIED_PIXELS = 0.05
MAX_TIED_DIFFERENCE = 0.02  # relative to the largest value of the map

needs_jax = pytest.mark.skipif(
    importlib.util.find_spec("jax") is None,
    reason="jax is not installed (pip install -e '.[jax]' to run zoo on JAX)",
)

# Runs zoo commands in one process on JAX, with TensorFlow unimportable; prints their exit
# statuses as one JSON list.
JAX_DRIVER = """
import json, sys

class NoTensorFlow:
    def find_spec(self, name, path=None, target=None):
        if name == "tensorflow" or name.startswith("tensorflow."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, NoTensorFlow())
from zoo.cli.main import main

codes = [main(argv) for argv in json.loads(sys.argv[1])]
import keras
assert keras.backend.backend() == "jax" and "tensorflow" not in sys.modules
print(json.dumps(codes))
"""


def jax_env() -> dict:
    return {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"}


def run_on_jax(tmp_path: Path, commands: list[list[str]]) -> list[int]:
    """Exit statuses of ``zoo`` commands run one after the other in one JAX process."""
    driver = tmp_path / "jax_driver.py"
    driver.write_text(JAX_DRIVER, encoding="utf-8")
    argv = [[str(a) for a in command] for command in commands]
    done = subprocess.run(
        [sys.executable, str(driver), json.dumps(argv)],
        cwd=ROOT,
        env=jax_env(),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def fresh_copy(trained_workspace: Path, folder: Path) -> Path:
    """A copy of the demo workspace without cached predictions, so they are computed."""
    shutil.copytree(trained_workspace, folder, ignore=shutil.ignore_patterns("evaluations"))
    shutil.rmtree(folder / "members" / NAME / "predictions", ignore_errors=True)
    shutil.rmtree(folder / "cache" / "ood", ignore_errors=True)
    return folder


def largest_difference(a: pd.DataFrame, b: pd.DataFrame, columns) -> float:
    return float(np.abs(a[columns].to_numpy(float) - b[columns].to_numpy(float)).max())


@pytest.mark.slow
@needs_jax
def test_evaluate_ensemble_predict_and_explain_on_jax_match_tensorflow(trained_workspace, tmp_path):
    member = Member(trained_workspace / "members" / NAME)
    images = tmp_path / "images"
    images.mkdir()
    demo = load_dataset("demo", workspace=trained_workspace)
    rng = np.random.default_rng(0)
    for image_id in member.split_ids("test")[:6]:
        # the demo's flat colour regions give exactly equal activations, whose max-pool ties
        # round-off breaks one way on TensorFlow and the other on JAX (up to 12 % of a
        # saliency map apart without it); a little noise, saved losslessly, leaves no exact ties
        pixels = np.asarray(Image.open(demo.records.loc[image_id, "path"]).convert("RGB"), int)
        noisy = np.clip(pixels + rng.integers(-2, 3, pixels.shape), 0, 255).astype(np.uint8)
        Image.fromarray(noisy).save(images / f"{image_id}.png")

    spec = tmp_path / "one.toml"
    spec.write_text(f'name = "one"\nmembers = ["{NAME}"]\ncombine = "mean"\n')

    def commands(workspace: Path, out: Path) -> list[list]:
        ws = ["--workspace", workspace, "--quiet"]
        return [
            ["evaluate", NAME, *ws, "--out", out / "plain"],
            ["ensemble", "build", spec, *ws],
            ["evaluate", "one", *ws, "--tta", "steppan", "--out", out / "steppan"],
            ["predict", NAME, images, *ws, "--ood-scores", "--out", out / "predict.csv"],
            ["explain", NAME, images, *ws, "--method", "saliency", "--out", out / "sal"],
            ["explain", NAME, images, *ws, "--method", "gradcam", "--out", out / "cam"],
        ]

    on_tf, on_jax = tmp_path / "tf", tmp_path / "jax"
    tf_ws = fresh_copy(trained_workspace, tmp_path / "ws-tf")
    jax_ws = fresh_copy(trained_workspace, tmp_path / "ws-jax")
    assert [main([str(a) for a in c]) for c in commands(tf_ws, on_tf)] == [0] * 6
    assert run_on_jax(tmp_path, commands(jax_ws, on_jax)) == [0] * 6

    classes = member.classes
    for run in ("plain", "steppan"):
        tf_probs = pd.read_csv(on_tf / run / "predictions.csv", index_col=0)
        jax_probs = pd.read_csv(on_jax / run / "predictions.csv", index_col=0)
        assert list(jax_probs.index) == list(tf_probs.index) and len(tf_probs) > 50
        assert largest_difference(tf_probs, jax_probs, classes) <= PROBABILITY_TOLERANCE
        tf_metrics = json.loads((on_tf / run / "metrics.json").read_text())
        jax_metrics = json.loads((on_jax / run / "metrics.json").read_text())
        assert jax_metrics["aggregate"]["balanced_accuracy"] == pytest.approx(
            tf_metrics["aggregate"]["balanced_accuracy"], abs=1e-12
        )
    # the cached raw outputs were computed on each backend, not copied
    assert (jax_ws / "members" / NAME / "predictions" / "test.csv").is_file()

    tf_rows = pd.read_csv(on_tf / "predict.csv", index_col=0)
    jax_rows = pd.read_csv(on_jax / "predict.csv", index_col=0)
    assert list(jax_rows.columns) == list(tf_rows.columns) and len(tf_rows) == 6
    assert largest_difference(tf_rows, jax_rows, classes) <= PROBABILITY_TOLERANCE
    ood = [c for c in ("ood_msp", "ood_energy", "ood_mahalanobis") if c in tf_rows.columns]
    assert "ood_mahalanobis" in ood  # last-hidden-layer features, on each backend
    for column in ood:
        scale = max(1.0, float(tf_rows[column].abs().max()))
        assert largest_difference(tf_rows, jax_rows, [column]) <= 1e-3 * scale, column

    for method, folder in (("saliency", "sal"), ("gradcam", "cam")):
        for file in sorted((on_tf / folder).glob("*.npy")):
            tf_map, jax_map = np.load(file), np.load(on_jax / folder / file.name)
            scale = float(np.abs(tf_map).max()) or 1.0
            apart = np.abs(tf_map - jax_map) > MAP_TOLERANCE * scale
            # round-off can send a gradient down the other branch of a max-pool or ReLU tie
            # on a few pixels; everywhere else the maps agree to round-off
            assert apart.mean() <= MAX_TIED_PIXELS, (method, file.name, apart.mean())
            largest = float(np.abs(tf_map - jax_map).max()) / scale
            assert largest <= MAX_TIED_DIFFERENCE, (method, file.name, largest)
            assert np.corrcoef(tf_map.ravel(), jax_map.ravel())[0, 1] >= 0.999, (method, file)


@needs_jax
@pytest.mark.parametrize(
    ("command", "what"),
    [
        (["export", NAME, "--format", "keras"], "zoo export needs"),
        (
            ["train", "small_cnn", "--strategy", "mirrored"],
            "--strategy mirrored is tf.distribute's and needs",
        ),
    ],
)
def test_tensorflow_only_commands_say_so_in_one_line_on_jax(tmp_path, command, what):
    done = subprocess.run(
        [sys.executable, "-m", "zoo", *command, "--workspace", str(tmp_path / "ws")],
        cwd=ROOT,
        env=jax_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2, done.stderr[-2000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"error: {what} Keras' TensorFlow backend"), lines[0]
    assert "KERAS_BACKEND=tensorflow" in lines[0]


def test_require_tensorflow_names_the_backend(monkeypatch):
    import keras

    from zoo.console import require_tensorflow

    require_tensorflow("zoo train")  # the tests run on TensorFlow
    monkeypatch.setattr(keras.backend, "backend", lambda: "jax")
    with pytest.raises(ZooError, match=r"zoo export needs .* runs on jax") as caught:
        require_tensorflow("zoo export")
    assert "\n" not in str(caught.value)


def test_batches_off_tensorflow_are_numpy(monkeypatch):
    """Inference batches in order; training batches a PyDataset of one epoch's steps."""
    import keras

    from zoo.data.pipeline import PixelBatches, TrainingBatches, inference_dataset, training_dataset

    pixels = np.arange(10 * 2 * 2 * 3, dtype=np.uint8).reshape(10, 2, 2, 3)
    monkeypatch.setattr(keras.backend, "backend", lambda: "jax")
    batches = inference_dataset(pixels, batch_size=4)
    assert isinstance(batches, PixelBatches) and len(batches) == 3
    assert all(batches[i].dtype == np.float32 for i in range(3))
    assert np.array_equal(np.concatenate([batches[i] for i in range(3)]), pixels)
    training, steps = training_dataset(pixels, np.zeros(10, int), num_classes=2, batch_size=4)
    assert isinstance(training, TrainingBatches) and steps == len(training) == 3


def test_explain_gradients_on_another_backend_are_one_line(monkeypatch):
    import keras

    from zoo.evaluation.explain import input_gradient

    x = np.ones((1, 2, 2, 3), np.float32)
    assert np.allclose(input_gradient(lambda v: 3.0 * v, x), 3.0)  # TensorFlow here
    monkeypatch.setattr(keras.backend, "backend", lambda: "torch")
    with pytest.raises(ZooError, match="TensorFlow or JAX backend; this process runs on torch"):
        input_gradient(lambda v: v, x)


def test_member_json_records_the_training_backend(trained_workspace):
    assert Member(trained_workspace / "members" / NAME).info["training"]["backend"] == (
        "tensorflow"
    )


# JAX → TensorFlow on one member trained on JAX: float32 round-off, as TensorFlow → JAX above
ROUND_TRIP_TOLERANCE = 1e-4


@pytest.mark.slow
@needs_jax
def test_a_member_trained_on_jax_evaluates_there_and_predicts_the_same_on_tensorflow(tmp_path):
    """zoo trains on JAX without TensorFlow (NumPy batches, the same augmentation layers), the
    member records its backend, evaluates on JAX (balanced accuracy as scikit-learn computes it), and TensorFlow
    loads it and gives the same probabilities."""
    from sklearn.metrics import balanced_accuracy_score

    ws = tmp_path / "ws"
    images = tmp_path / "images"
    from conftest import write_image

    files = [write_image(images / f"i{k}.png", size=40, seed=k) for k in range(4)]
    on_jax = tmp_path / "jax.csv"
    codes = run_on_jax(
        tmp_path,
        [
            ["train", "small_cnn", "--epochs", "2", "--image-size", "32", "--workspace", ws],
            ["evaluate", NAME, "--bootstrap", "0", "--out", tmp_path / "eval", "--workspace", ws],
            ["predict", NAME, images, "--out", on_jax, "--workspace", ws],
        ],
    )
    assert codes == [0, 0, 0]
    info = json.loads((ws / "members" / NAME / "member.json").read_text())
    assert info["training"]["backend"] == "jax" and "jax" in info["versions"]
    assert info["training"]["machine"] and info["training"]["commit"]
    assert "tensorflow" not in info["versions"]
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    truth = pd.read_csv(tmp_path / "eval" / "truth.csv").set_index("image")
    probs = pd.read_csv(tmp_path / "eval" / "predictions.csv").set_index("image")
    classes = info["classes"]
    expected = balanced_accuracy_score(
        truth[classes].to_numpy().argmax(1), probs.loc[truth.index, classes].to_numpy().argmax(1)
    )
    assert metrics["aggregate"]["balanced_accuracy"] == pytest.approx(expected, abs=1e-12)
    on_tf = tmp_path / "tf.csv"
    assert main(["predict", NAME, str(images), "--out", str(on_tf), "--workspace", str(ws)]) == 0
    a, b = pd.read_csv(on_jax), pd.read_csv(on_tf)
    assert len(a) == len(files)
    assert largest_difference(a, b, info["classes"]) <= ROUND_TRIP_TOLERANCE

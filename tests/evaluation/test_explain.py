"""zoo explain (saliency and Grad-CAM maps) and evaluate --tsne (the last hidden layer)."""

from __future__ import annotations

import numpy as np
import pytest

from zoo.cli.main import main
from zoo.evaluation.explain import explain_model

SIZE, REGION = 32, (slice(4, 12), slice(20, 28))  # rows 4–11, columns 20–27


def region_model():
    """A model whose output depends on the 8 × 8 region ``REGION`` only."""
    import keras

    mask = np.zeros((1, SIZE, SIZE, 1), dtype="float32")
    mask[0, REGION[0], REGION[1]] = 1.0
    inputs = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv")(inputs)
    x = keras.layers.Lambda(lambda t: t * mask, name="region")(x)  # aligned with the input
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(3, activation="softmax")(x)
    return keras.Model(inputs, outputs)


@pytest.mark.parametrize("method", ["saliency", "gradcam"])
def test_maps_concentrate_on_the_region_the_output_depends_on(method):
    import keras

    keras.utils.set_random_seed(0)
    model = region_model()
    pixels = np.random.default_rng(0).uniform(0, 255, (2, SIZE, SIZE, 3)).astype(np.float32)
    maps, index, probs = explain_model(model, pixels / 255.0, method=method)
    assert maps.shape == (2, SIZE, SIZE) and np.isfinite(maps).all()
    assert (index == probs.argmax(axis=1)).all()
    inside = maps[:, REGION[0], REGION[1]].sum(axis=(1, 2))
    total = maps.sum(axis=(1, 2))
    if method == "saliency":  # the gradient is exactly 0 outside the region (and its 3 × 3 rim)
        rim = (slice(3, 13), slice(19, 29))
        assert np.allclose(maps[:, rim[0], rim[1]].sum(axis=(1, 2)), total)
        assert (inside / total > 0.6).all()
    else:  # the last spatial layer is zero outside the region; bilinear resizing is exact
        assert (total > 0).all() and (inside / total > 0.99).all()


def test_explain_command_writes_overlays_and_maps(workspace, tmp_path, write_images, capsys):
    write_images(tmp_path / "imgs", ["a", "b"], size=40)
    for method in ("saliency", "gradcam"):
        code = main(
            ["explain", "small_cnn.demo.s0", str(tmp_path / "imgs"), "--method", method]
            + ["--workspace", str(workspace), "--out", str(tmp_path / "out"), "--quiet"]
        )
        assert code == 0
        for name in ("a", "b"):
            raw = np.load(tmp_path / "out" / f"{name}.{method}.npy")
            # L1 norms of gradients and rectified Grad-CAM maps are never negative
            assert raw.shape == (32, 32) and np.isfinite(raw).all() and raw.min() >= 0
            png = tmp_path / "out" / f"{name}.{method}.png"
            assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    code = main(
        ["explain", "small_cnn.demo.s0", str(tmp_path / "imgs"), "--method", "lime"]
        + ["--workspace", str(workspace), "--out", str(tmp_path / "out")]
    )
    assert code == 2 and "unknown --method 'lime'" in capsys.readouterr().err


def test_explain_class_explains_the_named_class(workspace, tmp_path, capsys):
    """``--class NAME``: the map is of that class, not the top one. Both maps are checked
    against the saliency computed here with a gradient tape: the L1 norm over RGB of the
    gradient of ``-log p[class]`` (``p`` clipped at 1e-12) at the member's input pixels."""
    import shutil
    from pathlib import Path

    import pandas as pd
    import tensorflow as tf

    from zoo.data import load_dataset
    from zoo.ensembles.targets import resolve_target
    from zoo.inference.target import decode_files, load_model

    member = resolve_target("small_cnn.demo.s0", workspace).member
    model = load_model(member)
    demo = load_dataset("demo", workspace=workspace)
    paths = demo.records.loc[member.info["split"]["ids"]["test"], "path"]
    pixels = decode_files(list(paths), member).astype("float32")
    raw = np.asarray(model(pixels, training=False))
    # a lesion the member is unsure of: its second class is far from the clip at 1e-12
    i = int(np.argmax(np.sort(raw, axis=1)[:, -2]))
    (tmp_path / "imgs").mkdir()
    image = tmp_path / "imgs" / f"a{Path(paths.iloc[i]).suffix}"
    shutil.copy(paths.iloc[i], image)
    pixels = decode_files([image], member).astype("float32")
    base = ["explain", "small_cnn.demo.s0", str(tmp_path / "imgs"), "--workspace", str(workspace)]
    assert main([*base, "--out", str(tmp_path / "top"), "--quiet"]) == 0
    (top,) = pd.read_csv(tmp_path / "top" / "explain.csv")["class"]
    classes = list(member.classes)
    other = max((c for c in classes if c != top), key=lambda c: raw[i, classes.index(c)])
    argv = [*base, "--class", other, "--out", str(tmp_path / "named"), "--quiet"]
    assert main(argv) == 0
    named = pd.read_csv(tmp_path / "named" / "explain.csv")
    assert named["class"].tolist() == [other] and named["method"].tolist() == ["saliency"]

    maps = {}
    for folder, cls in (("top", top), ("named", other)):
        x = tf.convert_to_tensor(pixels)
        with tf.GradientTape() as tape:
            tape.watch(x)
            p = model(x, training=False)[:, classes.index(cls)]
            loss = -tf.math.log(tf.maximum(p, 1e-12))
        by_hand = np.abs(tape.gradient(loss, x).numpy()).sum(axis=-1)[0]
        maps[folder] = np.load(tmp_path / folder / "a.saliency.npy")
        assert by_hand.max() > 0, folder
        np.testing.assert_allclose(maps[folder], by_hand, rtol=1e-4, atol=1e-6 * by_hand.max())
    assert not np.allclose(maps["named"], maps["top"], rtol=0.05)
    capsys.readouterr()
    assert main([*base, "--class", "melanoma", "--out", str(tmp_path / "bad")]) == 2
    assert "--class 'melanoma' is not a class of small_cnn.demo.s0" in capsys.readouterr().err


def test_evaluate_tsne_writes_a_seeded_embedding(workspace, tmp_path):
    import json

    import pandas as pd

    from zoo.data import load_dataset
    from zoo.ensembles.targets import resolve_target
    from zoo.evaluation.evaluate import evaluate_target

    target = resolve_target("small_cnn.demo.s0", workspace)
    demo = load_dataset("demo", workspace=workspace)
    frames = []
    for run in ("a", "b"):
        out = evaluate_target(
            target, demo, tsne=True, bootstrap=0, out=tmp_path / run, workspace=workspace
        )
        frames.append(pd.read_csv(out / "tsne.csv"))
        assert (out / "tsne.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert list(frames[0].columns) == ["image", "truth", "predicted", "x", "y"]
    assert len(frames[0]) == 84 and frames[0]["x"].notna().all()
    pd.testing.assert_frame_equal(frames[0], frames[1])  # seeded
    metrics = json.loads((tmp_path / "a" / "metrics.json").read_text())
    assert metrics["embedding"] == {"method": "tsne", "layer": "features", "seed": 0, "n": 84}


def test_an_ensemble_of_one_member_explains_like_the_member(workspace, tmp_path, write_images):
    from zoo.ensembles.build import build_ensemble

    (tmp_path / "one.toml").write_text(
        'name = "one"\nmembers = ["small_cnn.demo.s0"]\ncombine = "mean"\n'
    )
    build_ensemble(tmp_path / "one.toml", workspace=workspace)
    write_images(tmp_path / "imgs", ["a"], size=40)
    for target in ("small_cnn.demo.s0", "one"):
        argv = ["explain", target, str(tmp_path / "imgs"), "--workspace", str(workspace)]
        assert main([*argv, "--out", str(tmp_path / target), "--quiet"]) == 0
    member = np.load(tmp_path / "small_cnn.demo.s0" / "a.saliency.npy")
    ensemble = np.load(tmp_path / "one" / "a.saliency.npy")
    np.testing.assert_allclose(ensemble, member, rtol=1e-5, atol=1e-8)

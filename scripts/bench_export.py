"""Size and single-image latency of each export format of one member or ensemble.

    python scripts/bench_export.py TARGET --workspace WS [--out DIR] [--runs 30]
        [--formats keras,saved_model,litert,litert-float16,litert-int8,onnx] [--agreement N]

Exports TARGET in each format (``zoo export``), then times batch-1 calls on one image (median
of ``--runs`` after two warm-up calls; CPU threads as TensorFlow chooses) and prints one row
per format: bytes on disk and milliseconds. With ``--agreement N`` it also reports, for each
format, the share of the first N test-split images whose argmax equals that of the float32
Keras artifact and of the float32 LiteRT artifact, the largest probability difference, the
balanced accuracy and melanoma AUC on those images, and how far each is from the float32
reference's (the check for a quantised format: both within 0.01). Quantisation uses the
target's training images only (calibration).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
from sklearn.metrics import balanced_accuracy_score, roc_auc_score

BATCH = 16  # images per call when measuring agreement


def runner(folder: Path, fmt: str):
    """A function ``uint8 batch → probabilities`` for the artifact in ``folder``."""
    if fmt == "keras":
        import keras

        model = keras.saving.load_model(folder / "model.keras", safe_mode=True)
        return lambda x: np.asarray(model(x, training=False))
    if fmt == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(folder / "model.onnx"))
        return lambda x: session.run(["probabilities"], {"image": x})[0]
    import tensorflow as tf

    if fmt == "saved_model":
        loaded = tf.saved_model.load(str(folder / "saved_model"))
        return lambda x: loaded.serve(tf.constant(x)).numpy()
    interpreter = tf.lite.Interpreter(model_path=str(folder / "model.tflite"))
    detail = interpreter.get_input_details()[0]
    output = interpreter.get_output_details()[0]["index"]

    def run(x):
        interpreter.resize_tensor_input(detail["index"], x.shape)
        interpreter.allocate_tensors()
        interpreter.set_tensor(detail["index"], x)
        interpreter.invoke()
        return interpreter.get_tensor(output)

    return run


def latency_ms(run, image: np.ndarray, runs: int) -> float:
    run(image)
    run(image)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        run(image)
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def size_of(path: Path) -> int:
    return (
        path.stat().st_size
        if path.is_file()
        else sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("target")
    parser.add_argument("--workspace", required=True)
    parser.add_argument(
        "--out", default=None, help="folder for the exports (default: <workspace>/exports/bench)"
    )
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument(
        "--formats", default="keras,saved_model,litert,litert-float16,litert-int8,onnx"
    )
    parser.add_argument("--agreement", type=int, default=0, metavar="N")
    args = parser.parse_args()

    from zoo import console
    from zoo.data import load_dataset
    from zoo.data.images import decode_many
    from zoo.deploy.export.writer import FORMATS, export_target
    from zoo.ensembles.targets import resolve_target
    from zoo.inference.target import image_settings

    workspace = Path(args.workspace)
    out = Path(args.out or workspace / "exports" / "bench")
    target = resolve_target(args.target, workspace)
    members = [target.member] if target.kind == "member" else target.members
    member = max(members, key=lambda m: m.image_size)  # test images at the largest size
    dataset = load_dataset(target.data_info["source"], workspace=workspace)
    test_ids = target.split_ids("test")[: max(args.agreement, 1)]
    paths = [str(dataset.records.loc[i, "path"]) for i in test_ids]
    pixels, _ = decode_many(paths, **image_settings(member), description="test images")
    rows, outputs = [], {}
    console.set_quiet(True)
    for name in args.formats.split(","):
        fmt, _, quantize = name.partition("-")
        folder = out / name
        start = time.perf_counter()
        export_target(target, fmt=fmt, out=folder, quantize=quantize or None, workspace=workspace)
        seconds = time.perf_counter() - start
        run = runner(folder, fmt)
        row = {
            "format": name,
            "bytes": size_of(folder / FORMATS[fmt].file),
            "latency_ms": round(latency_ms(run, pixels[:1], args.runs), 2),
            "export_seconds": round(seconds, 1),
        }
        if args.agreement:
            outputs[name] = np.concatenate(
                [run(pixels[i : i + BATCH]) for i in range(0, len(pixels), BATCH)]
            )
        rows.append(row)
        print(json.dumps(row), flush=True)
    truth = dataset.records.loc[test_ids, "label"].map(list(target.classes).index).to_numpy()
    for reference in ("keras", "litert"):
        if reference in outputs:
            for name, probs in outputs.items():
                row = agreement(truth, probs, outputs[reference], list(target.classes))
                print(json.dumps({"format": name, "reference": reference, **row}), flush=True)


def scores(truth: np.ndarray, probs: np.ndarray, classes: list[str]) -> dict:
    """Balanced accuracy and, where the classes have melanoma, its AUC."""
    out = {"balanced_accuracy": float(balanced_accuracy_score(truth, probs.argmax(axis=1)))}
    if "mel" in classes:
        k = classes.index("mel")
        positive = truth == k
        out["mel_auc"] = (
            float(roc_auc_score(positive, probs[:, k])) if 0 < positive.sum() < len(truth) else None
        )
    return out


def agreement(truth, probs, reference, classes) -> dict:
    """How ``probs`` compares with the ``reference`` outputs on the same images."""
    own, theirs = scores(truth, probs, classes), scores(truth, reference, classes)
    gaps = {
        f"{key}_gap": None if own[key] is None else round(abs(own[key] - theirs[key]), 4)
        for key in own
    }
    return {
        "argmax_agreement": round(
            float(np.mean(probs.argmax(axis=1) == reference.argmax(axis=1))), 4
        ),
        "max_abs_diff": round(float(np.abs(probs - reference).max()), 5),
        **{k: None if v is None else round(v, 4) for k, v in own.items()},
        **gaps,
        "within_0.01": all(g is not None and g <= 0.01 for g in gaps.values()),
        "n_images": len(truth),
    }


if __name__ == "__main__":
    main()

"""Speed figures of zoo on this machine, every ratio measured side by side in one run.

    python scripts/bench.py [--json] [--data ../shared/data/ham10000] [--quick]

Prints one JSON object (with --json, only that):
  train_img_s_files / train_img_s_memory / pipeline_ratio — steady-state training throughput of
      small_cnn at 64 px with its augmentation, fed by zoo's pipeline from the HAM10000 files
      (decoded once, cached) vs. from a tensor already in memory; train_img_s_decode_each_epoch is
      the naive tf.data pipeline that decodes JPEGs every epoch, for contrast;
  predict_img_s / predict_ratio — `zoo predict` (files → decode → batches → model) with
      inception_v3 at 299 px on 256 HAM10000 images vs. model.predict on the same images preloaded
      as a tensor (and the same for small_cnn at 64 px: predict_small_*);
  tta8_ratio / tta_steppan_ratio — dihedral (8 views) and steppan (9 views) vs. a plain prediction;
  train_img_s_lite0_224 — fine-tuning EfficientNet-Lite0 at 224 px as its recipe's last stage
      does (float32, no XLA, early layers and batch norm frozen), with _all_layers, _bf16 and
      _xla for the settings it was chosen against;
  feature_cache_speedup — an epoch of a frozen, un-augmented stage with cached features vs. running
      the frozen backbone every epoch (same head, same loss);
  inception_v3_gflops / matmul_gflops — forward arithmetic rate of Inception v3 at 299 px vs. a
      large float32 matrix product (the practical ceiling), with the XLA and batch settings tried;
  ensemble_build_s — building a 10-member × 10,000-image ensemble from cached predictions
      (members' file digests cached; ensemble_build_cold_s hashes all ten 96 MB model files);
  cores — os.cpu_count().
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def log(message: str, quiet: bool) -> None:
    if not quiet:
        print(message, file=sys.stderr, flush=True)


def best_time(fn, repeats: int = 3) -> float:
    """Shortest wall time of ``repeats`` calls (after one warm-up call)."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def matmul_gflops(n: int = 4096) -> float:
    import tensorflow as tf

    a = tf.random.normal((n, n))
    b = tf.random.normal((n, n))
    run = tf.function(lambda: tf.reduce_sum(tf.matmul(a, b)))
    seconds = best_time(lambda: run().numpy())
    return 2 * n**3 / seconds / 1e9


def model_flops(model, size: int) -> float:
    """Floating-point operations of one forward pass (TensorFlow's profiler)."""
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    fn = tf.function(lambda x: model(x, training=False))
    concrete = fn.get_concrete_function(tf.TensorSpec((1, size, size, 3), tf.float32))
    frozen = convert_variables_to_constants_v2(concrete)
    options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    options["output"] = "none"
    info = tf.compat.v1.profiler.profile(
        graph=frozen.graph, run_meta=tf.compat.v1.RunMetadata(), cmd="op", options=options
    )
    return float(info.total_float_ops)


def inception_gflops(quiet: bool) -> dict:
    import numpy as np
    import tensorflow as tf

    from zoo.models.build import build_model
    from zoo.recipes.recipe import get_recipe

    model, _ = build_model(get_recipe("inception_v3"), num_classes=7, weights="none")
    flops = model_flops(model, 299)
    results = {"inception_v3_gflop_per_image": flops / 1e9}
    best = 0.0
    for batch in (16, 32, 64):
        x = tf.constant(np.random.rand(batch, 299, 299, 3).astype("float32") * 255)
        for jit in (False, True):
            fn = tf.function(lambda t: model(t, training=False), jit_compile=jit)
            seconds = best_time(lambda fn=fn, x=x: fn(x).numpy(), repeats=2)
            rate = batch * flops / seconds / 1e9
            results[f"inception_v3_gflops_b{batch}_{'xla' if jit else 'graph'}"] = rate
            log(
                f"  inception_v3 forward, batch {batch}, {'XLA' if jit else 'graph'}: {rate:.1f} GFLOP/s",
                quiet,
            )
            best = max(best, rate)
    results["inception_v3_gflops"] = best
    return results


NEEDS_DATA = (
    "train_img_s_files",
    "train_img_s_memory",
    "pipeline_ratio",
    "predict_img_s",
    "predict_ratio",
    "tta8_ratio",
    "tta_steppan_ratio",
)
THREAD_SETTINGS = ((0, 0), (1, 1), (0, 1), (0, 2))  # (intra-op, inter-op); 0 = TensorFlow's choice


def probe_threads(intra: int, inter: int, batch: int = 32) -> float:
    """Inception v3 forward images/s at 299 px (XLA) under one thread setting (fresh process)."""
    import numpy as np
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(intra)
    tf.config.threading.set_inter_op_parallelism_threads(inter)
    from zoo.models.build import build_model
    from zoo.recipes.recipe import get_recipe

    model, _ = build_model(get_recipe("inception_v3"), num_classes=7, weights="none")
    x = tf.constant(np.random.rand(batch, 299, 299, 3).astype("float32") * 255)
    fn = tf.function(lambda t: model(t, training=False), jit_compile=True)
    return batch / best_time(lambda: fn(x).numpy(), repeats=2)


def thread_settings(quiet: bool) -> dict:
    """Inception v3 forward throughput under each of THREAD_SETTINGS, one process each (the
    thread pools are fixed once TensorFlow starts)."""
    import subprocess

    results = {}
    for intra, inter in THREAD_SETTINGS:
        out = subprocess.run(
            [sys.executable, __file__, "--probe-threads", f"{intra},{inter}"],
            capture_output=True,
            text=True,
            cwd=REPO,
            check=True,
        )
        rate = float(out.stdout.strip().splitlines()[-1])
        results[f"inception_v3_img_s_threads_{intra}_{inter}"] = rate
        log(f"  inception_v3 forward, intra-op {intra}, inter-op {inter}: {rate:.1f} img/s", quiet)
    return results


def pipeline_throughput(data: Path, workspace: Path, quiet: bool, steps: int) -> dict:
    import keras
    import tensorflow as tf

    from zoo.data import load_dataset
    from zoo.data.images import load_images
    from zoo.data.pipeline import training_dataset
    from zoo.models.build import build_model
    from zoo.recipes.recipe import get_recipe
    from zoo.training.augment import build_augmenter

    recipe = get_recipe("small_cnn")
    size, batch = recipe.input.size, recipe.batch_size
    dataset = load_dataset(f"ham10000:{data}", workspace=workspace)
    ids = dataset.ids[: steps * batch * 2]
    labels = dataset.subset(ids).labels

    def measure(make_dataset) -> float:
        keras.utils.set_random_seed(0)
        model, _ = build_model(recipe, num_classes=7, weights="none")
        model.compile(optimizer="adam", loss="categorical_crossentropy")
        ds = make_dataset()
        model.fit(ds, steps_per_epoch=steps, epochs=1, verbose=0)  # warm-up: tracing, first decode
        start = time.perf_counter()
        model.fit(ds, steps_per_epoch=steps, epochs=1, verbose=0)
        return steps * batch / (time.perf_counter() - start)

    augmenter = build_augmenter(recipe.augment, seed=0)

    def from_files():
        table = load_images(
            dataset.subset(ids),
            size=size,
            crop_borders=recipe.input.crop_borders,
            cache_dir=workspace / "cache" / "images",
        )
        ds, _ = training_dataset(
            table.take(ids), labels, num_classes=7, batch_size=batch, augmenter=augmenter
        )
        return ds.map(lambda x, y, w: (x, y))

    in_memory = tf.constant(
        load_images(dataset.subset(ids), size=size, crop_borders=recipe.input.crop_borders).take(
            ids
        )
    )
    onehot = tf.one_hot(labels, 7)

    def from_memory():
        ds = (
            tf.data.Dataset.from_tensor_slices((in_memory, onehot))
            .shuffle(len(ids))
            .repeat()
            .batch(batch)
        )
        ds = ds.map(
            lambda x, y: (augmenter(tf.cast(x, tf.float32), training=True), y),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
        return ds.prefetch(tf.data.AUTOTUNE)

    paths = tf.constant(list(dataset.subset(ids).records["path"]))

    def decode_each_epoch():
        def read(path):
            image = tf.image.decode_jpeg(tf.io.read_file(path), channels=3)
            return tf.image.resize(image, (size, size))

        ds = tf.data.Dataset.from_tensor_slices((paths, onehot)).shuffle(len(ids)).repeat()
        ds = ds.map(lambda p, y: (read(p), y), num_parallel_calls=tf.data.AUTOTUNE).batch(batch)
        ds = ds.map(
            lambda x, y: (augmenter(x, training=True), y), num_parallel_calls=tf.data.AUTOTUNE
        )
        return ds.prefetch(tf.data.AUTOTUNE)

    files = measure(from_files)
    memory = measure(from_memory)
    naive = measure(decode_each_epoch)
    log(
        f"  training small_cnn 64 px: files {files:.0f} img/s, memory {memory:.0f} img/s, "
        f"decode every epoch {naive:.0f} img/s",
        quiet,
    )
    return {
        "train_img_s_files": files,
        "train_img_s_memory": memory,
        "pipeline_ratio": files / memory,
        "train_img_s_decode_each_epoch": naive,
    }


def feature_cache(quiet: bool) -> dict:
    """One epoch of a frozen stage: head on cached features vs. the frozen backbone every step."""
    import keras
    import numpy as np

    from zoo.data.pipeline import training_dataset
    from zoo.models.build import build_model, split_model
    from zoo.recipes.recipe import get_recipe

    recipe = get_recipe("efficientnet_b0")
    n, size, batch = 1024, 128, 32
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 255, (n, size, size, 3), dtype=np.uint8)
    labels = rng.integers(0, 7, n)
    model, _ = build_model(recipe, num_classes=7, image_size=size, weights="none")
    features, head = split_model(model)
    features.trainable = False
    steps = n // batch

    def epoch_time(trained, x) -> float:
        trained.compile(optimizer=keras.optimizers.Adam(1e-3), loss="categorical_crossentropy")
        ds, _ = training_dataset(x, labels, num_classes=7, batch_size=batch)
        trained.fit(ds, steps_per_epoch=steps, epochs=1, verbose=0)
        start = time.perf_counter()
        trained.fit(ds, steps_per_epoch=steps, epochs=1, verbose=0)
        return time.perf_counter() - start

    slow = epoch_time(model, pixels)
    cached = features.predict(pixels, batch_size=128, verbose=0)
    fast = epoch_time(head, cached)
    log(
        f"  frozen efficientnet_b0 stage, 1024 images at {size} px: {slow:.2f} s/epoch full path, "
        f"{fast:.3f} s/epoch on cached features",
        quiet,
    )
    return {
        "feature_cache_speedup": slow / fast,
        "frozen_epoch_s_full": slow,
        "frozen_epoch_s_cached": fast,
    }


def training_throughput(quiet: bool) -> dict:
    """Training images/s of inception_v3 at 299 px and small_cnn at 64 px, float32 vs mixed
    bfloat16 (each in a fresh process: the dtype policy is global)."""
    import subprocess

    code = (
        "import sys, time, numpy as np, keras; from zoo.models.build import build_model; from zoo.recipes.recipe import get_recipe;"
        "name, size, batch, steps, policy = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5];"
        "keras.config.set_dtype_policy(policy);"
        "m, _ = build_model(get_recipe(name), num_classes=7, image_size=size, weights='none');"
        "m.compile(optimizer='rmsprop', loss='categorical_crossentropy');"
        "x = np.random.rand(batch * steps, size, size, 3).astype('float32') * 255; y = np.eye(7)[np.random.randint(0, 7, batch * steps)];"
        "m.fit(x[:batch * 2], y[:batch * 2], batch_size=batch, epochs=1, verbose=0);"
        "t = time.perf_counter(); m.fit(x, y, batch_size=batch, epochs=1, verbose=0); print(batch * steps / (time.perf_counter() - t))"
    )
    results = {}
    for name, size, batch, steps in (("inception_v3", 299, 16, 6), ("small_cnn", 64, 64, 30)):
        for policy in ("float32", "mixed_bfloat16"):
            out = subprocess.run(
                [sys.executable, "-c", code, name, str(size), str(batch), str(steps), policy],
                capture_output=True,
                text=True,
                cwd=REPO,
                check=True,
            )
            rate = float(out.stdout.strip().splitlines()[-1])
            key = f"train_img_s_{name}_{size}px_{'bf16' if policy != 'float32' else 'fp32'}"
            results[key] = rate
            log(f"  training {name} {size} px {policy}: {rate:.1f} img/s", quiet)
    return results


LITE_CODE = """
import sys, time, numpy as np, keras
from zoo.models.build import build_model, split_model
from zoo.recipes.recipe import get_recipe
from zoo.training.finetune import make_optimizer, prepare_backbone
setting, size, batch, steps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
keras.config.set_dtype_policy("mixed_bfloat16" if setting == "bf16" else "float32")
recipe = get_recipe("efficientnet_lite0")
stage = recipe.stages[-1]
if setting == "all_layers":
    import dataclasses
    stage = dataclasses.replace(stage, lr_multipliers=(), batchnorm="train")
model, _ = build_model(recipe, num_classes=7, image_size=size, weights="none")
multipliers = prepare_backbone(split_model(model)[0], stage)
model.compile(optimizer=make_optimizer(recipe.optimizer, 1e-4, multipliers),
              loss="categorical_crossentropy", jit_compile=setting == "xla")
x = np.random.rand(batch * steps, size, size, 3).astype("float32") * 255
y = np.eye(7)[np.random.randint(0, 7, batch * steps)]
model.fit(x[:batch], y[:batch], batch_size=batch, epochs=1, verbose=0)
t = time.perf_counter(); model.fit(x, y, batch_size=batch, epochs=1, verbose=0)
print(batch * steps / (time.perf_counter() - t))
"""


def lite_throughput(quiet: bool, steps: int = 4) -> dict:
    """Training images/s of EfficientNet-Lite0 at 224 px in its recipe's fine-tuning stage
    (early layer group frozen, batch norm frozen, float32, no XLA: ``train_img_s_lite0_224``),
    and the settings it was chosen against: every layer and batch norm training, mixed
    bfloat16, XLA (each in a fresh process: the dtype policy is global)."""
    import subprocess

    results = {}
    for setting in ("recipe", "all_layers", "bf16", "xla"):
        out = subprocess.run(
            [sys.executable, "-c", LITE_CODE, setting, "224", "32", str(steps)],
            capture_output=True,
            text=True,
            cwd=REPO,
            check=True,
        )
        rate = float(out.stdout.strip().splitlines()[-1])
        key = "train_img_s_lite0_224" + ("" if setting == "recipe" else f"_{setting}")
        results[key] = rate
        log(f"  fine-tuning efficientnet_lite0 224 px ({setting}): {rate:.1f} img/s", quiet)
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--json", action="store_true", help="print only the JSON object")
    parser.add_argument(
        "--data",
        default=os.environ.get("ZOO_HAM10000", str(REPO.parent / "shared" / "data" / "ham10000")),
    )
    parser.add_argument("--steps", type=int, default=30, help="training steps per timed epoch")
    parser.add_argument("--probe-threads", metavar="INTRA,INTER", help=argparse.SUPPRESS)
    parser.add_argument(
        "--skip",
        default="",
        help="comma-separated parts to skip: "
        "flops,threads,pipeline,training,lite,features,predict,ensemble",
    )
    args = parser.parse_args(argv)
    if args.probe_threads:  # a child process of thread_settings()
        intra, inter = map(int, args.probe_threads.split(","))
        print(probe_threads(intra, inter))
        return 0
    quiet = args.json
    skip = set(filter(None, args.skip.split(",")))
    from zoo import console

    console.set_quiet(True)
    results: dict = {"cores": os.cpu_count()}
    with tempfile.TemporaryDirectory() as tmp:
        workspace = Path(tmp)
        data = Path(args.data)
        if "flops" not in skip:
            log("matrix product and Inception v3 arithmetic rate…", quiet)
            results["matmul_gflops"] = matmul_gflops()
            results.update(inception_gflops(quiet))
        if "threads" not in skip:
            log("thread settings…", quiet)
            results.update(thread_settings(quiet))
        has_data = (data / "HAM10000_metadata.csv").exists()
        if not has_data and not {"pipeline", "predict"} <= skip:
            results.update(dict.fromkeys(NEEDS_DATA))
            results["note"] = f"no HAM10000 at {data}: the figures set to null need it (--data DIR)"
        if "pipeline" not in skip and has_data:
            log("training throughput: files vs memory…", quiet)
            results.update(pipeline_throughput(data, workspace, quiet, args.steps))
        if "training" not in skip:
            log("training throughput, float32 vs mixed bfloat16…", quiet)
            results.update(training_throughput(quiet))
        if "lite" not in skip:
            log("fine-tuning throughput of EfficientNet-Lite0 at 224 px…", quiet)
            results.update(lite_throughput(quiet))
        if "features" not in skip:
            log("feature cache…", quiet)
            results.update(feature_cache(quiet))
        if "predict" not in skip and has_data:
            from bench_predict import predict_figures  # noqa: PLC0415  (scripts/ sibling)

            log("prediction and TTA throughput…", quiet)
            results.update(predict_figures(data, workspace, quiet))
        if "ensemble" not in skip:
            from bench_ensemble import bench as bench_ensemble  # scripts/ sibling

            log("ensemble build from cache (10 members × 10,000 images)…", quiet)
            built = bench_ensemble(members=10, images=10_000, repeat=3)
            results["ensemble_build_s"] = built["ensemble_build_s"]
            results["ensemble_build_cold_s"] = built["ensemble_build_cold_s"]
    print(
        json.dumps(
            {k: round(v, 4) if isinstance(v, float) else v for k, v in results.items()},
            indent=None if args.json else 2,
        )
    )
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    raise SystemExit(main())

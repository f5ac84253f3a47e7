"""Training speed of a zoo recipe on each installed Keras backend, side by side.

Trains the same member (recipe, data, size, epochs, seed) once per backend, each in its own
process with ``KERAS_BACKEND`` set, and prints the fine-tuning images/s of its last epoch
(from ``history.csv``; the first epoch includes compilation) and the validation balanced
accuracy. Run it alone: other work on the cores lowers every figure.

    python scripts/bench_backends.py                       # small_cnn, demo data, 64 px
    python scripts/bench_backends.py --recipe efficientnet_lite0 --data ham10000:DIR \\
        --image-size 192 --epochs 2
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd

BACKENDS = ("tensorflow", "jax", "torch")


def train_on(backend: str, args, workspace: Path) -> dict:
    command = [sys.executable, "-m", "zoo", "train", args.recipe, "--quiet"]
    command += ["--epochs", str(args.epochs), "--image-size", str(args.image_size)]
    command += ["--name", f"bench-{backend}", "--workspace", str(workspace)]
    if args.data:
        command += ["--data", args.data]
    env = {**os.environ, "KERAS_BACKEND": backend}
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        return {"backend": backend, "error": done.stderr.strip().splitlines()[-1]}
    history = pd.read_csv(workspace / "members" / f"bench-{backend}" / "history.csv")
    last = history.iloc[-1]
    return {
        "backend": backend,
        "images_per_second": round(float(last["images_per_second"]), 1),
        "first_epoch_seconds": round(float(history.iloc[0]["seconds"]), 1),
        "val_balanced_accuracy": round(float(last["val_balanced_accuracy"]), 3),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipe", default="small_cnn")
    parser.add_argument("--data", default=None, help="data spec (default: the demo set)")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for backend in BACKENDS:
            if importlib.util.find_spec(backend) is None:
                rows.append({"backend": backend, "error": "not installed"})
                continue
            rows.append(train_on(backend, args, Path(folder) / backend))
            print(rows[-1], flush=True)
    print(pd.DataFrame(rows).to_string(index=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Time ``zoo ensemble build`` on cached predictions: 10 members × 10,000 images × 7 classes.

Creates a synthetic workspace in a temporary folder — a ``csv:`` data set (ids and labels
only) and fake member directories whose ``predictions/{val,test}[.steppan].csv`` are
written like the trainer writes them — then times :func:`zoo.ensembles.build.build_ensemble`
(the library call behind the command, not a subprocess) for the mean, greedy and weighted
rules with prior correction and the Steppan TTA. Import time is excluded: modules are
imported before timing, and each rule's build is repeated (the median is reported).

Each fake ``model.keras`` has the size of a real member's (``--model-mb``, default 96: the
float32 weights of Inception v3), because a build checks the sha256 of every member file.
Before each timed build the in-process digests are forgotten, so every build reads the
on-disk digest cache as a new ``zoo`` process would; ``ensemble_build_cold_s`` is a build
with no digest cached anywhere (the very first build after training).

    python scripts/bench_ensemble.py            # a table, then the JSON line
    python scripts/bench_ensemble.py --json     # only {"ensemble_build_s": ..., ...}

``ensemble_build_s`` is the slowest rule's median; the target is under 1 second.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from zoo.data import load_dataset  # noqa: E402
from zoo.ensembles.build import build_ensemble  # noqa: E402
from zoo.ensembles.spec import EnsembleSpec  # noqa: E402
from zoo.store import PredictionCache, prediction_key, predictions_frame  # noqa: E402
from zoo.store import hashes as hashing  # noqa: E402

CLASSES = ("akiec", "bcc", "bkl", "df", "mel", "nv", "vasc")
FREQUENCIES = np.array([0.03, 0.05, 0.11, 0.01, 0.11, 0.67, 0.02])
RULES = ("mean", "greedy", "weighted")


def synthetic_workspace(
    root: Path,
    *,
    members: int,
    images: int,
    model_bytes: int = 1 << 16,
    tta: str = "steppan",
    seed: int = 0,
) -> Path:
    """A workspace whose members share one split of ``images`` val and ``images`` test images."""
    rng = np.random.default_rng(seed)
    n_train = max(images // 5, 10)
    parts = {
        "train": [f"ISIC_{i:07d}" for i in range(n_train)],
        "val": [f"ISIC_{i:07d}" for i in range(n_train, n_train + images)],
        "test": [f"ISIC_{i:07d}" for i in range(n_train + images, n_train + 2 * images)],
    }
    all_ids = [i for ids in parts.values() for i in ids]
    labels = rng.choice(len(CLASSES), size=len(all_ids), p=FREQUENCIES)
    # a data set in the HAM10000 layout (metadata only: the builder never reads pixels)
    folder = root / "data"
    folder.mkdir()
    pd.DataFrame(
        {
            "lesion_id": [f"HAM_{k:07d}" for k in range(len(all_ids))],
            "image_id": all_ids,
            "dx": np.asarray(CLASSES)[labels],
        }
    ).to_csv(folder / "HAM10000_metadata.csv", index=False)
    source = f"ham10000:{folder}"
    dataset = load_dataset(source, workspace=root)
    data = {
        **{k: v for k, v in dataset.describe().items() if k != "class_counts"},
        "class_counts": dataset.class_counts(),
    }
    by_id = dict(zip(all_ids, labels, strict=True))
    for m in range(members):
        name = f"fake_{m:02d}.bench.s{m}"
        folder = root / "members" / name
        (folder / "predictions").mkdir(parents=True)
        quality = 0.15 + 0.5 * rng.random()  # how much each member's softmax leans to the truth
        priors = FREQUENCIES * rng.uniform(0.8, 1.2, len(CLASSES))
        info = {
            "name": name,
            "recipe": "fake",
            "classes": list(CLASSES),
            "priors": {"effective": list(priors / priors.sum())},
            "data": data,
            "split": {"seed": 0, "fold": None, "ids": parts},
        }
        (folder / "member.json").write_text(json.dumps(info))
        model = rng.bytes(model_bytes)
        (folder / "model.keras").write_bytes(model)
        for part in ("val", "test"):
            ids = parts[part]
            truth = np.eye(len(CLASSES))[[by_id[i] for i in ids]]
            noise = rng.dirichlet(FREQUENCIES * 5 + 0.1, len(ids))
            probs = quality * truth + (1 - quality) * noise
            frame = predictions_frame(ids, probs, CLASSES)
            model_sha256 = hashlib.sha256(model).hexdigest()
            cache = PredictionCache(folder, CLASSES)
            for scheme in dict.fromkeys(
                ("none", tta)
            ):  # the trainer's, then zoo.inference.target's
                cache.write(
                    prediction_key(part, scheme),
                    frame,
                    tta=scheme,
                    model_sha256=model_sha256,
                    seconds=None,
                    origin="trainer" if scheme == "none" else "zoo.inference.target",
                )
    return root


def _forget_digests(workspace: Path, *, on_disk: bool) -> None:
    """Forget the digests this process remembers (and, with ``on_disk``, the cached files)."""
    hashing._MEMORY.clear()
    if on_disk:
        for file in workspace.glob(f"members/*/{hashing.CACHE_NAME}"):
            file.unlink()


def bench(*, members: int, images: int, repeat: int, model_mb: float = 96) -> dict:
    with tempfile.TemporaryDirectory(prefix="zoo-bench-ensemble-") as tmp:
        ws = synthetic_workspace(
            Path(tmp), members=members, images=images, model_bytes=int(model_mb * 2**20)
        )
        time.sleep(hashing.RACY_NS / 1e9)  # let the files settle, as trained members have
        # import what the rules use before timing (import time is excluded)
        import scipy.optimize  # noqa: F401
        import scipy.stats  # noqa: F401
        import sklearn.metrics  # noqa: F401

        import zoo.scoring.priors  # noqa: F401
        import zoo.store.workspace  # noqa: F401

        result: dict = {}
        _forget_digests(ws, on_disk=True)
        start = time.perf_counter()
        build_ensemble(
            EnsembleSpec(name="bench-cold", members=("*",), combine="mean", tta="steppan"),
            workspace=ws,
        )
        result["ensemble_build_cold_s"] = round(time.perf_counter() - start, 4)
        for rule in RULES:
            spec = EnsembleSpec(
                name=f"bench-{rule}",
                members=("*",),
                combine=rule,
                prior_correction=True,
                tta="steppan",
            )
            times, cpu = [], []
            for _ in range(repeat):
                _forget_digests(ws, on_disk=False)
                start, start_cpu = time.perf_counter(), time.process_time()
                build_ensemble(spec, workspace=ws)
                times.append(time.perf_counter() - start)
                cpu.append(time.process_time() - start_cpu)
            result[f"{rule}_s"] = round(statistics.median(times), 4)
            result[f"{rule}_first_s"] = round(times[0], 4)
            result[f"{rule}_cpu_s"] = round(statistics.median(cpu), 4)
        heavy = [m for m in ("tensorflow", "keras") if m in sys.modules]
    return {
        "ensemble_build_s": max(result[f"{rule}_s"] for rule in RULES),
        **result,
        "members": members,
        "model_mb": model_mb,
        "images_per_split": images,
        "classes": len(CLASSES),
        "repeat": repeat,
        "imported_tensorflow_or_keras": bool(heavy),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=10)
    parser.add_argument("--images", type=int, default=10_000, help="images per split (val, test)")
    parser.add_argument("--repeat", type=int, default=3, help="builds per rule (median reported)")
    parser.add_argument(
        "--model-mb", type=float, default=96, help="size of each member's model.keras (MB)"
    )
    parser.add_argument("--json", action="store_true", help="print only the JSON line")
    args = parser.parse_args(argv)
    result = bench(
        members=args.members, images=args.images, repeat=args.repeat, model_mb=args.model_mb
    )
    if not args.json:
        from rich.console import Console
        from rich.table import Table

        table = Table(
            title=f"ensemble build: {args.members} members × {args.images:,} images × "
            f"{len(CLASSES)} classes (cached predictions)"
        )
        for column in ("rule", "median s", "first s", "median CPU s"):
            table.add_column(column, justify="left" if column == "rule" else "right")
        for rule in RULES:
            table.add_row(
                rule,
                f"{result[f'{rule}_s']:.3f}",
                f"{result[f'{rule}_first_s']:.3f}",
                f"{result[f'{rule}_cpu_s']:.3f}",
            )
        Console().print(table)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

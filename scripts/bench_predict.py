"""Prediction and TTA throughput of `zoo predict` against model.predict on preloaded tensors.

Used by scripts/bench.py; runnable alone: python scripts/bench_predict.py [--data DIR] [--images 256]
A throwaway member with random weights (--weights none) is written to a temporary workspace:
speed does not depend on the weights.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def make_member(folder: Path, recipe_name: str, size: int) -> Path:
    """A minimal member directory around an untrained model of ``recipe_name``."""
    import numpy as np

    from zoo.models.build import build_model
    from zoo.recipes.recipe import get_recipe
    from zoo.store.workspace import atomic_write_json

    recipe = get_recipe(recipe_name)
    model, _ = build_model(recipe, num_classes=7, image_size=size, weights="none")
    path = folder / "members" / f"{recipe_name}.bench"
    path.mkdir(parents=True)
    model.save(path / "model.keras")
    classes = ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]
    atomic_write_json(
        path / "member.json",
        {
            "name": path.name,
            "recipe": recipe_name,
            "classes": classes,
            "input": {"size": size, "crop_borders": False, "interpolation": "bilinear"},
            "priors": {"effective": list(np.full(7, 1 / 7))},
            "data": {"fingerprint": "none", "source": "none", "name": "none"},
            "split": {"ids": {"train": [], "val": [], "test": []}},
        },
    )
    return path


def predict_figures(data: Path, workspace: Path, quiet: bool, n_images: int = 256) -> dict:
    """Each figure is the best of timed calls made after an untimed warm-up call with the very
    same inputs, so no timed call traces a new batch shape."""
    import numpy as np
    from bench import best_time  # scripts/ sibling: one timing rule for every figure

    from zoo.data.images import decode_many
    from zoo.inference.target import MemberTarget, load_model

    paths = sorted((data / "images").glob("*.jpg"))[:n_images]
    results = {}
    for recipe, size, key in (("inception_v3", 299, ""), ("small_cnn", 64, "_small")):
        target = MemberTarget.from_path(make_member(workspace, recipe, size))
        model = load_model(target.member)
        pixels, _ = decode_many([str(p) for p in paths], size=size)
        tensor = np.asarray(pixels, dtype=np.float32)
        preloaded = best_time(lambda: model.predict(tensor, batch_size=64, verbose=0), 2)  # noqa: B023
        via_zoo = best_time(lambda: target.predict_files(paths, tta="none"), 2)  # noqa: B023
        results[f"predict{key}_img_s"] = len(paths) / via_zoo
        results[f"predict{key}_img_s_preloaded"] = len(paths) / preloaded
        results[f"predict{key}_ratio"] = preloaded / via_zoo
        if not quiet:
            print(
                f"  {recipe} {size} px: zoo predict {len(paths) / via_zoo:.1f} img/s, "
                f"model.predict on a tensor {len(paths) / preloaded:.1f} img/s",
                file=sys.stderr,
            )
        if recipe == "inception_v3":
            few = paths[:64]
            plain = best_time(lambda: target.predict_files(few, tta="none"), 1)  # noqa: B023
            for scheme, name in (("dihedral", "tta8_ratio"), ("steppan", "tta_steppan_ratio")):
                run = lambda s=scheme, t=target, f=few: t.predict_files(f, tta=s)  # noqa: E731
                results[name] = best_time(run, 1) / plain
                if not quiet:
                    print(
                        f"  TTA {scheme}: {results[name]:.2f}x a plain prediction", file=sys.stderr
                    )
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--data",
        default=os.environ.get("ZOO_HAM10000", str(REPO.parent / "shared" / "data" / "ham10000")),
    )
    parser.add_argument("--images", type=int, default=256)
    args = parser.parse_args(argv)
    from zoo import console

    console.set_quiet(True)
    with tempfile.TemporaryDirectory() as tmp:
        print(json.dumps(predict_figures(Path(args.data), Path(tmp), False, args.images)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

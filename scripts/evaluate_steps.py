"""What prior correction and each TTA scheme do to one member, on its own test split.

    python scripts/evaluate_steps.py MEMBER [--workspace DIR] [--tta none,steppan,dihedral,rotations:8]

Evaluates MEMBER (a name in the workspace, or its folder) with every TTA scheme, each with
and without prior correction, through ``zoo.evaluation.evaluate.evaluate_target`` (so the evaluations
land in the workspace like ``zoo evaluate`` runs). Prints a table and one JSON line with
balanced accuracy and macro AUC of every step, and each scheme's wall time relative to
``none``: the member's model runs every scheme over the same test images, decoded and in
memory, one after another in this process (after a warm-up call that traces each scheme).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

DEFAULT_SCHEMES = "none,steppan,dihedral,rotations:8"


def measure(member: str, workspace: Path, schemes: list[str]) -> dict:
    from zoo.data import load_dataset
    from zoo.ensembles.targets import resolve_target
    from zoo.evaluation.evaluate import evaluate_target

    target = resolve_target(member, workspace)
    dataset = load_dataset(target.data_info["source"], workspace=workspace)
    rows = []
    for scheme in schemes:
        for corrected in (False, True):
            folder = evaluate_target(
                target,
                dataset,
                split="test",
                tta=scheme,
                prior_correction=corrected,
                workspace=workspace,
            )
            metrics = json.loads((folder / "metrics.json").read_text())
            rows.append(
                {
                    "tta": scheme,
                    "prior_correction": corrected,
                    "balanced_accuracy": metrics["aggregate"]["balanced_accuracy"],
                    "macro_auc": metrics["macro_average"]["auc"],
                }
            )
    seconds = time_schemes(target, dataset, schemes, workspace)
    for r in rows:
        r["seconds"] = seconds[r["tta"]]
        r["time_vs_none"] = seconds[r["tta"]] / seconds["none"] if "none" in seconds else None
    return {"member": target.name, "n_images": metrics["n_images"], "steps": rows}


def time_schemes(target, dataset, schemes: list[str], workspace: Path) -> dict[str, float]:
    """Wall seconds of each scheme over the member's test images (pixels already decoded)."""
    from zoo.data.images import load_images
    from zoo.inference.target import image_settings, load_model, run_model
    from zoo.inference.tta import parse_tta

    member = target.member
    ids = list(member.split_ids("test"))
    table = load_images(dataset, **image_settings(member), cache_dir=workspace / "cache" / "images")
    pixels = table.take(ids)  # an array, or DiskRows beyond the memory budget
    model = load_model(member)
    seconds = {}
    for spec in dict.fromkeys(["none", *schemes]):
        scheme = parse_tta(spec)
        run_model(model, pixels[:256], scheme)  # warm-up: trace the views and the model call
        start = time.perf_counter()
        run_model(model, pixels, scheme)
        seconds[spec] = time.perf_counter() - start
    return seconds


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("member", help="member name or folder")
    parser.add_argument("--workspace", default=os.environ.get("ZOO_HOME", "zoo-runs"))
    parser.add_argument("--tta", default=DEFAULT_SCHEMES, help="comma-separated TTA schemes")
    args = parser.parse_args(argv)
    from rich.console import Console
    from rich.table import Table

    from zoo import console
    from zoo.errors import ZooError

    console.set_quiet(True)
    try:
        result = measure(args.member, Path(args.workspace), args.tta.split(","))
    except ZooError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    table = Table(title=f"{result['member']}: test split, {result['n_images']} images")
    for column in ("TTA", "prior correction", "balanced acc.", "macro AUC", "s", "time vs none"):
        table.add_column(column, justify="left" if column == "TTA" else "right")
    for r in result["steps"]:
        table.add_row(
            r["tta"],
            "on" if r["prior_correction"] else "off",
            f"{r['balanced_accuracy']:.3f}",
            f"{r['macro_auc']:.3f}",
            f"{r['seconds']:.1f}",
            f"{r['time_vs_none']:.2f}×" if r["time_vs_none"] else "–",
        )
    Console(stderr=True).print(table)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

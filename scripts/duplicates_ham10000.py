"""Duplicate detection on HAM10000: recall on altered copies, false matches between lesions.

Usage: python scripts/duplicates_ham10000.py [HAM10000_DIR] [--copies N] [--seed S]

1. Hashes all images of HAM10000 (cached in a temporary workspace unless --workspace).
2. Counts pairs of *different* lesions whose hashes lie within the threshold (false matches)
   and, separately, pairs of images of the same lesion that match (HAM10000 has several
   pictures of many lesions; those are legitimate, not errors).
3. Writes N copies (default 1000) into a temporary folder, each resized to 0.5–0.8× and
   re-encoded as JPEG at quality 70–85, and counts how many are matched to their original.

Prints recall and false-match rate for several thresholds; zoo uses MAX_DISTANCE.

With ``--check N`` it instead writes N altered copies as a second source (a CSV list in a
temporary folder, each copy its own lesion) and runs ``zoo data check`` on HAM10000 combined
with it.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from zoo.data.duplicates import (  # noqa: E402
    MAX_DISTANCE,
    altered_copy,
    distances,
    hash_image,
    image_hashes,
)
from zoo.data.sources import read_ham10000  # noqa: E402

THRESHOLDS = (0, 8, 16, 20, 24, 28, 32, 40)


def random_copy(source: str, target: Path, rng: np.random.Generator) -> Path:
    """``source`` resized to 0.5–0.8× and saved as JPEG of quality 70–85."""
    scale, quality = rng.uniform(0.5, 0.8), int(rng.integers(70, 86))
    return altered_copy(source, target, scale=scale, quality=quality)


def data_check(dataset, folder: Path, copies: int, seed: int, workspace: Path) -> int:
    """``zoo data check`` on HAM10000 plus ``copies`` altered copies of its images."""
    from zoo.cli.main import main as zoo

    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(dataset), size=copies, replace=False)
    rows = []
    for k, i in enumerate(chosen):
        image_id = dataset.ids[i]
        random_copy(
            dataset.records["path"].iloc[i], workspace / "copies" / f"{image_id}_copy.jpg", rng
        )
        rows.append(f"copies/{image_id}_copy.jpg,{dataset.records['label'].iloc[i]},copy{k}")
    listing = workspace / "copies.csv"
    listing.write_text("image,label,group\n" + "\n".join(rows) + "\n")
    specs = [f"ham10000:{folder}", f"csv:{listing}"]
    return zoo(["data", "check", *specs, "--workspace", str(workspace / "ws")])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", nargs="?", default="../shared/data/ham10000")
    parser.add_argument("--copies", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workspace", help="keep the hash cache here (default: temporary)")
    parser.add_argument("--check", type=int, metavar="N", help="run zoo data check instead")
    args = parser.parse_args()
    dataset = read_ham10000(Path(args.folder))
    if args.check:
        with tempfile.TemporaryDirectory() as tmp:
            return data_check(dataset, Path(args.folder), args.check, args.seed, Path(tmp))
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(args.workspace or tmp) / "cache" / "hashes"
        table = image_hashes(dataset, cache_dir=cache)
        hashes = table.hashes
        lesions = dataset.records["group"].to_numpy()
        n = len(hashes)
        print(f"{n} images, {len(set(lesions))} lesions, {len(table.problems)} unreadable")
        different = {t: 0 for t in THRESHOLDS}
        same = {t: 0 for t in THRESHOLDS}
        same_total = 0
        for start in range(0, n, 1024):
            d = distances(hashes[start : start + 1024], hashes)
            rows = np.arange(start, min(start + 1024, n))
            upper = rows[:, None] < np.arange(n)[None, :]
            same_lesion = lesions[rows][:, None] == lesions[None, :]
            same_total += int((upper & same_lesion).sum())
            for t in THRESHOLDS:
                hit = upper & (d <= t)
                different[t] += int((hit & ~same_lesion).sum())
                same[t] += int((hit & same_lesion).sum())
        all_pairs = n * (n - 1) // 2
        cross_pairs = all_pairs - same_total
        rng = np.random.default_rng(args.seed)
        chosen = rng.choice(n, size=min(args.copies, n), replace=False)
        copy_dist = np.zeros(len(chosen), dtype=int)
        copy_hashes = np.zeros((len(chosen), hashes.shape[1]), dtype=np.uint64)
        for k, i in enumerate(chosen):
            target = Path(tmp) / f"copy_{k}.jpg"
            random_copy(dataset.records["path"].iloc[i], target, rng)
            copy_hashes[k] = hash_image(target)[0]
            copy_dist[k] = int(distances(copy_hashes[k], hashes[i])[0, 0])
        # a copy may also match other images; count copies whose nearest image is its original
        nearest = distances(copy_hashes, hashes).argmin(axis=1)
        print(
            f"{len(chosen)} altered copies (0.5–0.8×, JPEG q70–85); distance to original: "
            f"median {np.median(copy_dist):.0f}, max {copy_dist.max()}; nearest image is the "
            f"original for {np.mean(nearest == chosen):.1%}"
        )
        print(
            f"{'bits':>4}  {'recall':>7}  {'false pairs':>11}  {'false-match rate':>16}  "
            f"{'same-lesion pairs':>17}"
        )
        for t in THRESHOLDS:
            mark = "  ← zoo" if t == MAX_DISTANCE else ""
            print(
                f"{t:>4}  {np.mean(copy_dist <= t):>7.1%}  {different[t]:>11}  "
                f"{different[t] / cross_pairs:>16.2e}  {same[t]:>6} of {same_total}{mark}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

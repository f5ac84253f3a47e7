"""``zoo predict``: Class probabilities for images or folders (ISIC CSV)."""

from __future__ import annotations

from pathlib import Path

from zoo.cli.options import (
    PRIORS_HELP,
    TTA_HELP,
    add_command,
    add_common,
)

NEEDS_TENSORFLOW = True


def add_options(sub) -> None:
    """``zoo predict``'s options."""
    p = add_command(sub, "predict", "class probabilities for images or folders (ISIC CSV)")
    p.add_argument("target", help="member or ensemble name, or its directory")
    p.add_argument("paths", nargs="+", metavar="PATH", help="image files or folders")
    p.add_argument("--tta", default=None, metavar="SCHEME", help=TTA_HELP)
    p.add_argument(
        "--ood-scores",
        action="store_true",
        help="add columns ood_msp and ood_energy (out-of-distribution scores; lower: less "
        "like the training images) after the class columns",
    )
    p.add_argument(
        "--no-prior-correction",
        action="store_true",
        help="raw softmax outputs (default: prior-corrected; an ensemble as its prior_correction "
        "says)",
    )
    p.add_argument("--target-priors", metavar="FILE|uniform", help=PRIORS_HELP)
    p.add_argument(
        "--metadata",
        metavar="FILE.csv",
        help="age, sex and anatomical site per image (columns image, age, sex, site; HAM10000 "
        "and ISIC names too), for members that read them; missing values are allowed (default: "
        "none: such members read every value as missing)",
    )
    p.add_argument(
        "--no-calibration",
        action="store_true",
        help="uncalibrated probabilities (default: the target's stored calibration, where it "
        "holds for these settings)",
    )
    add_common(
        p,
        out=(
            "FILE.csv",
            "output CSV, with its settings in FILE.csv.json (default: the CSV on standard output)",
        ),
    )


def run(args, workspace: Path) -> int:
    from zoo.deploy.predict import predict_command

    return predict_command(
        args.target,
        args.paths,
        workspace=workspace,
        tta=args.tta,
        prior_correction=False if args.no_prior_correction else None,
        target_priors=args.target_priors,
        out=args.out,
        ood_scores=args.ood_scores,
        calibrated=not args.no_calibration,
        metadata=args.metadata,
    )

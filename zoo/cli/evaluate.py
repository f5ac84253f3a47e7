"""``zoo evaluate``: Score a member or ensemble; writes truth, predictions, metrics, plots."""

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
    """``zoo evaluate``'s options."""
    p = add_command(
        sub, "evaluate", "score a member or ensemble; writes truth, predictions, metrics, plots"
    )
    p.add_argument("target", help="member or ensemble name, or its directory")
    p.add_argument(
        "--data", metavar="SPEC", help="data set (default: the one the target was trained on)"
    )
    p.add_argument(
        "--images",
        metavar="DIR",
        help="image folder for isic:/csv: data (default: beside the CSV)",
    )
    p.add_argument(
        "--split",
        default=None,
        choices=["test", "val", "all"],
        help="which part (default: test on the training data, all on other data)",
    )
    p.add_argument("--tta", default=None, metavar="SCHEME", help=TTA_HELP)
    p.add_argument(
        "--no-prior-correction",
        action="store_true",
        help="score raw softmax outputs (default: prior-corrected; an ensemble as its "
        "prior_correction says)",
    )
    p.add_argument("--target-priors", metavar="FILE|uniform", help=PRIORS_HELP)
    p.add_argument(
        "--label-map",
        metavar="FILE",
        help='JSON {"source label": "model class"} (default: none; labels must be the '
        "target's classes)",
    )
    p.add_argument(
        "--ignore-unmapped",
        action="store_true",
        help="drop images whose label the map does not cover",
    )
    p.add_argument(
        "--task",
        metavar="NAME",
        help="binary task: melanocytic, epidermal or malignant (default: none, all classes)",
    )
    p.add_argument(
        "--bootstrap", type=int, default=1000, metavar="N", help="bootstrap resamples (0 = none)"
    )
    cal = p.add_mutually_exclusive_group()
    cal.add_argument(
        "--calibrate",
        dest="calibrate",
        action="store_const",
        const=True,
        default=None,
        help="temperature scaling fitted on the target's validation split (default: on where "
        "it can be fitted and prior correction is on)",
    )
    cal.add_argument(
        "--no-calibration",
        dest="calibrate",
        action="store_const",
        const=False,
        help="score the probabilities without temperature scaling",
    )
    p.add_argument(
        "--operating-point",
        action="append",
        default=[],
        metavar="CLASS:METRIC=V",
        help="threshold chosen on validation, e.g. mel:sensitivity=0.90 or "
        "nv:specificity=0.95; repeatable (default: mel at sensitivity 0.90 and 0.95)",
    )
    p.add_argument(
        "--tsne",
        action="store_true",
        help="also write tsne.csv/tsne.png: t-SNE of the last hidden layer, coloured by class",
    )
    p.add_argument(
        "--ood-data",
        metavar="SPEC",
        help="images from elsewhere (any data spec) to separate from the evaluated ones: "
        "AUROC and FPR at 95 %% recall of the OOD scores (default: none)",
    )
    add_common(
        p,
        out=(
            "DIR",
            "evaluation folder (default: <workspace>/evaluations/<target>-<data>-<split>…)",
        ),
    )


def run(args, workspace: Path) -> int:
    from zoo.evaluation.evaluate import evaluate_command

    return evaluate_command(
        args.target,
        workspace=workspace,
        data=args.data,
        images=args.images,
        label_map=args.label_map,
        ood_data=args.ood_data,
        split=args.split,
        tta=args.tta,
        prior_correction=False if args.no_prior_correction else None,
        ignore_unmapped=args.ignore_unmapped,
        task=args.task,
        bootstrap=args.bootstrap,
        target_priors=args.target_priors,
        calibrate=args.calibrate,
        operating_points=args.operating_point,
        tsne=args.tsne,
        out=args.out,
    )

"""``zoo explain``: Saliency or Grad-CAM maps of a member or ensemble for images."""

from __future__ import annotations

from pathlib import Path

from zoo.cli.options import (
    add_command,
    add_common,
)

NEEDS_TENSORFLOW = True


def add_options(sub) -> None:
    """``zoo explain``'s options."""
    p = add_command(sub, "explain", "saliency or Grad-CAM maps of a member or ensemble for images")
    p.add_argument("target", help="member or ensemble name, or its directory")
    p.add_argument("paths", nargs="+", metavar="PATH", help="image files or folders")
    p.add_argument(
        "--method",
        default="saliency",
        metavar="NAME",
        help="saliency (L1 norm over RGB of the loss gradient at the input) or gradcam",
    )
    p.add_argument(
        "--class",
        dest="class_name",
        metavar="NAME",
        help="class to explain (default: the predicted class of each image)",
    )
    add_common(
        p,
        out=(
            "DIR",
            "folder for <image>.<method>.png overlays and .npy maps (required, no default)",
        ),
    )


def run(args, workspace: Path) -> int:
    from zoo.evaluation.explain import explain_command

    return explain_command(
        args.target,
        args.paths,
        workspace=workspace,
        method=args.method,
        out=args.out,
        class_name=args.class_name,
    )

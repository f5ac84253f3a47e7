"""``zoo export``: A member or ensemble as one artifact: uint8 images in, probabilities out."""

from __future__ import annotations

from pathlib import Path

from zoo.cli.options import (
    add_command,
    add_common,
)

NEEDS_TENSORFLOW = True


def add_options(sub) -> None:
    """``zoo export``'s options."""
    p = add_command(
        sub, "export", "a member or ensemble as one artifact: uint8 images in, probabilities out"
    )
    p.add_argument("target", help="member or ensemble name, or its directory")
    p.add_argument(
        "--format",
        default="keras",
        metavar="NAME",
        help="keras (model.keras, loads with Keras alone), saved_model (TensorFlow), litert "
        "(model.tflite) or onnx (model.onnx; needs the onnx extra)",
    )
    p.add_argument(
        "--quantize",
        default=None,
        metavar="MODE",
        help="litert only: float16 (weights), or int8 (networks in int8 calibrated on training "
        "images, their classifiers and what follows in float32) (default: float32)",
    )
    p.add_argument(
        "--data",
        default=None,
        metavar="SPEC",
        help="with --quantize int8: where the target's training data is now (default: the "
        "data spec it was trained with)",
    )
    p.add_argument(
        "--no-calibration",
        action="store_true",
        help="leave the target's stored calibration out of the graph (default: in it)",
    )
    add_common(
        p,
        out=("DIR", "export folder (default: <workspace>/exports/<target>-<format>[-<quantize>])"),
    )


def run(args, workspace: Path) -> int:
    from zoo.console import require_tensorflow

    require_tensorflow("zoo export")  # SavedModel, LiteRT and ONNX are TensorFlow graphs
    from zoo.deploy.export.writer import export_command

    return export_command(
        args.target,
        workspace=workspace,
        fmt=args.format,
        quantize=args.quantize,
        data=args.data,
        out=args.out,
        calibrated=not args.no_calibration,
    )

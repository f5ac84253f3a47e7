"""``zoo export TARGET --format keras|saved_model|litert|onnx [--quantize float16|int8] --out DIR``.

The export folder is written under a temporary name and renamed when complete. It holds the
artifact (``model.keras``, ``saved_model/``, ``model.tflite`` or ``model.onnx``), ``signature.json`` (input
and output, classes, TTA, priors, members and their sha256, the operating point) and
``card.md``, and the marker ``.zoo-output.json``: ``--out`` must be new, empty or an earlier
export (:mod:`zoo.store.outputs`). Every key is described in ``docs/formats.md``.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from zoo import console
from zoo.deploy.export.graph import MemberPart, build_graph, member_parts
from zoo.deploy.export.quantize import int8_with_float_ends
from zoo.ensembles.card import card_body, front_matter_lines, target_card
from zoo.errors import ZooError, close_matches
from zoo.inference.calibrated import load_calibration
from zoo.inference.tta import TTAScheme, parse_tta
from zoo.store.outputs import claim_output_folder, output_folder
from zoo.store.workspace import atomic_write_json, atomic_write_text

ONNX_OPSET = 17
# int8 keeps a plain resize from the largest member's size, and no crop: TensorFlow's quantiser
# rounds the exact crop and resize to int8 even where they are kept out of quantisation
PLAIN_RESIZE_QUANTIZE = ("int8",)
QUANTIZE = ("float16", "int8")
CALIBRATION_IMAGES = 200  # training images that calibrate int8 quantisation
INPUT_NAME, OUTPUT_NAME = "image", "probabilities"


def check_options(fmt: str, quantize: str | None) -> None:
    """One-line errors for an unknown format or quantisation, or one the format cannot do."""
    if fmt not in FORMATS:
        raise ZooError(
            f"--format {fmt!r} is not an export format;{close_matches(fmt, list(FORMATS))} "
            f"choose one of {', '.join(FORMATS)}."
        )
    if quantize is not None and quantize not in QUANTIZE:
        raise ZooError(
            f"--quantize {quantize!r} is not supported; choose {' or '.join(QUANTIZE)} "
            "(or leave it out for float32)."
        )
    if quantize is not None and fmt != "litert":
        raise ZooError(
            f"--quantize {quantize} works with --format litert only; got --format {fmt}."
        )


def default_out(workspace: Path, target_name: str, fmt: str, quantize: str | None) -> Path:
    suffix = f"-{quantize}" if quantize else ""
    return Path(workspace) / "exports" / f"{target_name}-{fmt}{suffix}"


def export_target(
    target,
    *,
    fmt: str,
    out: Path,
    quantize: str | None = None,
    calibration_data: str | None = None,
    calibrated: bool = True,
    workspace: Path,
) -> Path:
    """Write the export folder of ``target`` (a member or ensemble) at ``out``; returns it.
    The graph ends with the target's stored calibration (``calibrated=False``: without)."""
    check_options(fmt, quantize)
    out = claim_output_folder(out, "export", workspace=workspace, legacy=EXPORT_FILES)
    scheme = parse_tta(target.default_tta)
    prior_correction = bool(target.default_prior_correction)
    parts = member_parts(target, prior_correction=prior_correction)
    calibration = None
    if quantize == "int8":
        calibration = calibration_images(target, parts, spec=calibration_data, workspace=workspace)
    exact = quantize not in PLAIN_RESIZE_QUANTIZE
    stored = load_calibration(target) if calibrated else None
    model = build_graph(parts, scheme, name=target.name, exact_resize=exact, calibration=stored)
    with console.progress() as bar:
        task = bar.add_task(f"exporting {target.name} ({fmt})", total=1, status="")
        with output_folder(
            out,
            "export",
            written_by=f"zoo export {target.name} --format {fmt}",
            workspace=workspace,
            legacy=EXPORT_FILES,
        ) as tmp:
            artifact = tmp / FORMATS[fmt].file
            runtime = write_artifact(
                model,
                artifact,
                fmt,
                quantize=quantize,
                calibration=calibration,
            )
            signature = signature_record(
                target, parts, scheme, fmt=fmt, quantize=quantize, prior_correction=prior_correction
            )
            signature.update(_served(target, stored))
            signature["artifact"] = {"file": FORMATS[fmt].file, "bytes": _size(artifact), **runtime}
            if calibration is not None:
                signature["quantization"] = {
                    "mode": "int8",
                    "float32": "each member's classifier and softmax, the TTA mean, prior "
                    "correction and the combination of members",
                    "calibration": {
                        "data": calibration.data,
                        "split": "train",
                        "n_images": len(calibration.pixels),
                    },
                }
            atomic_write_json(tmp / "signature.json", signature)
            atomic_write_text(tmp / "card.md", model_card(signature, target_card(target)))
        bar.advance(task)
    console.info(f"Exported {target.name} as {fmt} to {out}")
    return out


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


# --- artifacts ------------------------------------------------------------------------------


def write_artifact(model, path: Path, fmt: str, *, quantize=None, calibration=None) -> dict:
    """Write ``fmt``'s artifact of ``model`` at ``path`` (see :data:`FORMATS`); returns what
    ``signature.json`` records about the runtime it needs."""
    return FORMATS[fmt].write(model, path, quantize=quantize, calibration=calibration)


def _write_keras(model, path: Path, **_) -> dict:
    model.save(path)
    return {"load": "keras.saving.load_model(path, safe_mode=True)"}


def _write_saved_model(model, path: Path, **_) -> dict:
    model.export(str(path), format="tf_saved_model", verbose=False)
    return {"load": "tf.saved_model.load(path).serve(images)", "endpoint": "serve"}


def _write_onnx(model, path: Path, **_) -> dict:
    path.write_bytes(onnx_bytes(model))
    return {
        "load": "onnxruntime.InferenceSession(path).run(None, {'image': images})",
        "opset": ONNX_OPSET,
    }


def _write_litert(model, path: Path, *, quantize=None, calibration=None) -> dict:
    flatbuffer, select_ops = litert_bytes(
        model, quantize=quantize, calibration=calibration, work=path.parent
    )
    path.write_bytes(flatbuffer)
    return {
        "load": "tf.lite.Interpreter(model_path=path)",
        "select_tf_ops": select_ops,
        "note": (
            "uses TensorFlow ops (the affine transforms of rotations:N TTA): it needs the "
            "Flex delegate, which tf.lite.Interpreter of TensorFlow 2.21 does not link; "
            "export as saved_model, or with another TTA"
            if select_ops
            else "LiteRT builtin ops only"
        ),
    }


@dataclass(frozen=True)
class ExportFormat:
    """One export format: its artifact's file (or folder) name and the function that writes
    it — ``write(model, path, *, quantize, calibration)`` → the runtime record. Adding a format
    is one entry of :data:`FORMATS`."""

    file: str
    write: Callable[..., dict]


FORMATS: dict[str, ExportFormat] = {
    "keras": ExportFormat("model.keras", _write_keras),
    "saved_model": ExportFormat("saved_model", _write_saved_model),
    "litert": ExportFormat("model.tflite", _write_litert),
    "onnx": ExportFormat("model.onnx", _write_onnx),
}
# what an export folder held before zoo marked its folders (accepted inside the workspace)
EXPORT_FILES = frozenset({*(f.file for f in FORMATS.values()), "signature.json", "card.md"})


def litert_bytes(model, *, quantize, calibration, work: Path) -> tuple[bytes, bool]:
    """The model as a LiteRT (TensorFlow Lite) flatbuffer via ``tf.lite.TFLiteConverter``,
    float32, float16 weights, or int8 calibrated on ``calibration`` images (networks in int8,
    classifiers and what follows them in float32: :mod:`zoo.deploy.export.quantize`); and whether it
    needs TensorFlow ops (the Flex delegate): the affine transforms of ``rotations:N`` have no
    LiteRT builtin (the border crop, the resize, Steppan's and the dihedral views are builtin
    matrix products, flips and transposes)."""
    import tensorflow as tf

    saved = work / ".litert-saved-model"
    # a plain resize takes images at the calibration images' size
    side = calibration.pixels.shape[1] if quantize in PLAIN_RESIZE_QUANTIZE else None
    spec = tf.TensorSpec((None, side, side, 3), tf.uint8, name=INPUT_NAME)
    model.export(str(saved), format="tf_saved_model", verbose=False, input_signature=[spec])
    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved))
    if quantize == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    try:
        if quantize == "int8":
            pixels = calibration.pixels

            def representative():
                for row in pixels:
                    yield [row[None]]

            flatbuffer, _ = int8_with_float_ends(converter, representative)
            return flatbuffer, False
        try:
            return converter.convert(), False
        except Exception:  # an op without a LiteRT builtin: keep it as a TensorFlow op
            converter.target_spec.supported_ops = [
                tf.lite.OpsSet.TFLITE_BUILTINS,
                tf.lite.OpsSet.SELECT_TF_OPS,
            ]
            return converter.convert(), True
    except Exception as exc:  # the converter's errors are long MLIR dumps
        raise ZooError(
            f"LiteRT conversion failed: {str(exc).strip().splitlines()[0][:300]}; export as "
            "saved_model or keras instead."
        ) from None
    finally:
        shutil.rmtree(saved, ignore_errors=True)


def onnx_bytes(model) -> bytes:
    """The model as ONNX (opset :data:`ONNX_OPSET`) via ``tf2onnx`` from its TensorFlow
    function; input ``image`` (uint8, any batch and size), output ``probabilities``."""
    try:
        import onnx
        import tf2onnx
    except ImportError:
        raise ZooError(
            "--format onnx needs tf2onnx and onnx; install them with pip install 'zoo[onnx]' "
            "(onnxruntime runs the file)."
        ) from None
    import tensorflow as tf

    spec = tf.TensorSpec((None, None, None, 3), tf.uint8, name=INPUT_NAME)
    function = tf.function(
        lambda image: {OUTPUT_NAME: model(image, training=False)}, input_signature=[spec]
    )
    try:
        proto, _ = tf2onnx.convert.from_function(function, input_signature=[spec], opset=ONNX_OPSET)
        # tf2onnx keeps an op it cannot convert under its TensorFlow name; the checker refuses it
        onnx.checker.check_model(proto)
    except Exception as exc:  # the converter's and the checker's errors
        raise ZooError(
            f"ONNX conversion failed: {str(exc).strip().splitlines()[0][:300]}; export as "
            "saved_model, keras or litert instead."
        ) from None
    return proto.SerializeToString()


class Calibration:
    """Training images for int8 calibration: ``pixels`` (N, S, S, 3) uint8 and ``data`` spec."""

    def __init__(self, pixels: np.ndarray, data: str):
        self.pixels, self.data = pixels, data


def calibration_images(target, parts: list[MemberPart], *, spec: str | None, workspace: Path):
    """Up to :data:`CALIBRATION_IMAGES` images of the target's training split (never val or
    test), decoded as zoo decodes them for the largest member."""
    from zoo.data import load_training_data
    from zoo.data.images import decode_many
    from zoo.inference.target import image_settings

    source = spec or target.data_info.get("source")
    dataset = load_training_data(
        source,
        workspace=workspace,
        owner=target.name,
        needed_for="--quantize int8",
        hint="it calibrates on them; pass --data SPEC where they are now",
    )
    ids = [i for i in target.split_ids("train") if i in dataset.records.index]
    if not ids:
        raise ZooError(
            f"--quantize int8: none of {target.name}'s training images are in {source}; pass "
            "--data SPEC with the data it was trained on."
        )
    rng = np.random.default_rng(0)
    chosen = sorted(rng.choice(len(ids), size=min(CALIBRATION_IMAGES, len(ids)), replace=False))
    paths = [str(dataset.records.loc[ids[i], "path"]) for i in chosen]
    largest = max((p.member for p in parts), key=lambda m: m.image_size)
    pixels, problems = decode_many(
        paths, **image_settings(largest), description="calibration images"
    )
    keep = [i for i in range(len(paths)) if i not in problems]
    return Calibration(pixels[keep], str(source))


# --- signature and card ---------------------------------------------------------------------


def _operating_point(target) -> dict | None:
    point = getattr(target, "operating_point", None)
    return None if point is None else point.to_dict()


def _served(target, stored) -> dict:
    """The calibration inside the graph, and the operating point its outputs serve: the
    calibration's (chosen on calibrated outputs) with it, the target's own without."""
    if stored is None:
        return {"calibration": {"applied": False}}
    point = stored.operating_point
    return {
        "calibration": {
            "applied": stored.method != "none",
            "method": stored.method,
            "parameters": stored.parameters(),
            "fitted_on": "val",
        },
        "operating_point": None if point is None else point.to_dict(),
    }


def signature_record(
    target, parts: list[MemberPart], scheme: TTAScheme, *, fmt, quantize, prior_correction
) -> dict:
    """``signature.json``: what goes in and out, and everything the graph holds."""
    import zoo
    from zoo.ensembles.build import member_hashes

    members = []
    for part in parts:
        member = part.member
        members.append(
            {
                "name": member.name,
                "sha256": member_hashes(member.path),
                "weight": part.weight,
                "input": {
                    "size": member.image_size,
                    "crop_borders": bool(member.input.get("crop_borders", False)),
                    "interpolation": str(member.input.get("interpolation", "bilinear")),
                    "preprocessing": member.input.get("preprocessing"),
                    "color_constancy": member.input.get("color_constancy", "none"),
                },
                "training_priors": (
                    dict(zip(member.classes, part.priors.tolist(), strict=True))
                    if part.priors is not None
                    else None
                ),
            }
        )
    crop = any(m["input"]["crop_borders"] for m in members)
    exact = quantize not in PLAIN_RESIZE_QUANTIZE
    sizes = sorted({m["input"]["size"] for m in members})
    return {
        "format": fmt,
        "quantize": quantize,
        "target": {"name": target.name, "kind": target.kind},
        "input": {
            "name": INPUT_NAME,
            "dtype": "uint8",
            # a plain resize takes images at the largest member's size
            "shape": [None, *([None, None] if exact else [sizes[-1]] * 2), 3],
            "layout": "NHWC",
            "range": [0, 255],
            "color": "RGB",
            "resize": (
                f"in the graph, to each member's size ({', '.join(map(str, sizes))} px) as zoo "
                "does it (PIL's filter, two passes rounded to 8 bits, as matrix products): any "
                "image size gives zoo predict's pixels, but for float32 rounding that moves a "
                "few in 10,000 (at most about 1 in 1,000) by one grey level"
                if exact
                else f"in the graph, from {sizes[-1]} px to each member's size by plain "
                "bilinear interpolation; pass images decoded, border-cropped and resized as "
                f"zoo does ({sizes[-1]} px)"
            ),
            "crop_borders": {
                "required": crop,
                "in_graph": crop and exact,
                "note": (
                    "not used by this target"
                    if not crop
                    else "cropped in the graph as zoo.data.images.crop_black_border does, per image"
                    if exact
                    else "crop the black border of the dermoscope's field of view before (as "
                    "zoo.data.images.crop_black_border does)"
                ),
            },
        },
        "output": {
            "name": OUTPUT_NAME,
            "dtype": "float32",
            "shape": [None, len(target.classes)],
            "meaning": "class probabilities after TTA, prior correction, combination and the "
            "target's stored calibration; rows sum to 1",
        },
        "classes": [str(c) for c in target.classes],
        "tta": {"spec": scheme.spec, "n_views": scheme.n_views, "weights": list(scheme.weights)},
        "prior_correction": prior_correction,
        "combine": (
            {"rule": "single member", "weights": {parts[0].member.name: 1.0}}
            if target.kind == "member"
            else {"rule": target.info["rule"], "weights": {p.member.name: p.weight for p in parts}}
        ),
        "members": members,
        "operating_point": _operating_point(target),
        "zoo_version": zoo.__version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def model_card(signature: dict, card: tuple[dict, str] | None = None) -> str:
    """``card.md``: the exported target's card (``card``: its front matter and markdown, from
    :func:`zoo.ensembles.card.target_card`), the front matter extended by an ``export`` block,
    then what the artifact is, how to feed it, what it is for, and the target's own card."""
    front, markdown = card if card is not None else ({}, "")
    if front:
        front = {**front, "zoo": {**front.get("zoo", {}), "export": _export_block(signature)}}
    target, inp = signature["target"], signature["input"]
    point = signature["operating_point"]
    rows = "\n".join(
        f"| {m['name']} | {m['input']['size']} | {m['weight']:.4g} | `{m['sha256']['model.keras'][:12]}…` |"
        for m in signature["members"]
    )
    lines = [
        f"# {target['name']} ({target['kind']}), exported as {signature['format']}"
        + (f" ({signature['quantize']})" if signature["quantize"] else ""),
        "",
        "## Intended use",
        "Research on skin-lesion classification. **Not for diagnosis**: not validated clinically; "
        "scores on one data set do not carry over to other populations, devices or clinics.",
        "",
        "## Input and output",
        f"- Input `{inp['name']}`: RGB uint8 images, shape (batch, height, width, 3), values 0–255 "
        "(not 0–1). Resize: " + inp["resize"] + ".",
        f"- Black border: {inp['crop_borders']['note']}.",
        f"- Output `{signature['output']['name']}`: {signature['output']['meaning']}; classes "
        f"{', '.join(signature['classes'])}.",
        f"- Inside the graph: TTA `{signature['tta']['spec']}` ({signature['tta']['n_views']} views), "
        f"prior correction {'on (to uniform priors)' if signature['prior_correction'] else 'off'}, "
        f"combination `{signature['combine']['rule']}`.",
    ]
    if point:
        lines.append(
            f"- Operating point: flag `{point['class']}` when its probability ≥ "
            f"{point['threshold']:.6g} ({point['criterion']} {point['value']} chosen on validation)."
        )
    lines += [
        "",
        "## Members",
        "| member | input px | weight | model.keras sha256 |",
        "|---|---|---|---|",
        rows,
        "",
        f"zoo {signature['zoo_version']}, exported {signature['created']}.",
        "",
    ]
    if markdown:
        body = card_body(markdown).replace("\n# ", "\n## ").removeprefix("# ")
        lines += [f"## The {target['kind']}'s card: {body}", ""]
    return "\n".join([*(front_matter_lines(front) if front else []), *lines])


def _export_block(signature: dict) -> dict:
    """What the front matter says of the artifact itself."""
    return {
        "format": signature["format"],
        "quantize": signature["quantize"],
        "file": signature["artifact"]["file"],
        "input": signature["input"]["name"],
        "output": signature["output"]["name"],
        "calibrated": bool(signature["calibration"]["applied"]),
        "operating_point": signature["operating_point"],
        "created": signature["created"],
    }


def export_command(
    target_name: str,
    *,
    workspace: Path,
    fmt: str = "keras",
    quantize: str | None = None,
    data: str | None = None,
    out: str | Path | None = None,
    calibrated: bool = True,
) -> int:
    """``zoo export TARGET --format … [--quantize …] [--data SPEC] [--out DIR]``."""
    from zoo.ensembles.targets import resolve_target

    check_options(fmt, quantize)
    if data is not None and quantize != "int8":
        raise ZooError("--data is only for --quantize int8 (its calibration images); drop it.")
    target = resolve_target(target_name, workspace)
    out = Path(out) if out else default_out(workspace, target.name, fmt, quantize)
    export_target(
        target,
        fmt=fmt,
        out=out,
        quantize=quantize,
        calibration_data=data,
        calibrated=calibrated,
        workspace=workspace,
    )
    return 0

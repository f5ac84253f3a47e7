"""The subcommands behind ``python -m zoo``: each turns parsed options into one library call."""

from __future__ import annotations

import json
from pathlib import Path

from rich.markup import escape
from rich.table import Table

from zoo import console
from zoo.errors import ZooError
from zoo.models.backbones import get_backbone, small_cnn_parameters
from zoo.store import Layout

# Listing recipes never builds the large networks: their parameter counts come from the
# backbone table (``zoo recipes --params`` builds them).
COUNTED_CLASSES = 7  # parameters are shown for a 7-class head, as for HAM10000


def known_parameters(recipe) -> int | None:
    """A recipe's parameter count from the backbone table (``small_cnn`` counted from its
    options), or None when ``[backbone_options]`` change a table backbone's count."""
    backbone = get_backbone(recipe.model.backbone)
    if recipe.model.backbone == "small_cnn":
        options = recipe.model.backbone_options
        try:
            body = small_cnn_parameters(**options)
        except TypeError:  # options the builder will refuse too
            return None
        width = options.get("widths", (32, 64, 128, 256))[-1]
        return body + (width + 1) * COUNTED_CLASSES
    if recipe.model.backbone_options:
        return None
    return backbone.parameters + (backbone.features + 1) * COUNTED_CLASSES


def recipe_row(recipe, parameters: int | None) -> dict:
    """One recipe as the listing shows it (``--json`` prints these dicts)."""
    return {
        "name": recipe.name,
        "backbone": recipe.model.backbone,
        "image_size": recipe.input.size,
        "parameters": parameters,
        "stages": [{"trainable": s.trainable, "epochs": s.epochs} for s in recipe.stages],
        "class_weight": recipe.class_weight,
        "sampling": recipe.sampling,
        "source": recipe.source,
    }


def recipes(args, workspace: Path) -> int:
    """Table of registered recipes: name, backbone, input size, parameters, source paper."""
    from zoo.recipes.recipe import load_registry, recipe_dirs

    registry = list(load_registry(recipe_dirs(workspace)))
    counts = {r.name: None if args.params else known_parameters(r) for r in registry}
    to_build = [r for r in registry if counts[r.name] is None and args.params]
    counts.update(parameter_counts(to_build, workspace) if to_build else {})
    rows = [recipe_row(r, counts[r.name]) for r in registry]
    if args.json:
        console.print_json(rows)
        return 0
    console.console.print(_recipes_table(rows))
    if any(row["parameters"] is None for row in rows):
        console.info(
            "Parameters shown as – are counted by building each network: zoo recipes --params"
        )
    return 0


def _recipes_table(rows: list[dict]) -> Table:
    table = Table(title=f"{len(rows)} recipes", show_lines=False)
    for column in ("name", "backbone", "input", "parameters", "stages", "class weights", "source"):
        table.add_column(column, justify="right" if column in ("input", "parameters") else "left")
    for row in rows:
        params = row["parameters"]
        sampling = row["sampling"]
        table.add_row(
            escape(row["name"]),
            escape(row["backbone"]),
            f"{row['image_size']} px",
            "–" if params is None else f"{params / 1e6:.1f} M",
            " → ".join(f"{s['trainable']}×{s['epochs']}" for s in row["stages"]),
            row["class_weight"] if sampling == "none" else f"{sampling} sampling",
            escape(row["source"]),
        )
    return table


def parameter_counts(recipes, workspace: Path) -> dict[str, int]:
    """Parameters of each recipe's network for 7 classes, counted by building it; cached in
    ``<workspace>/cache/parameters.json`` per recipe content and Keras version."""
    import hashlib

    import keras

    cache_file = Layout(workspace).parameters_cache
    try:
        cache = json.loads(cache_file.read_text(encoding="utf-8")) if cache_file.exists() else {}
    except (OSError, ValueError):  # a damaged cache is recomputed, not fatal
        cache = {}
    if not isinstance(cache, dict):
        cache = {}
    result, missing = {}, []
    for r in recipes:
        key = hashlib.sha256(
            f"{keras.__version__}|{json.dumps(r.as_dict(), sort_keys=True, default=str)}".encode()
        ).hexdigest()[:16]
        if key in cache:
            result[r.name] = cache[key]
        else:
            missing.append((r, key))
    if missing:
        from zoo.models.build import build_model
        from zoo.store.workspace import atomic_write_json

        with console.progress() as bar:
            task = bar.add_task("counting parameters (once)", total=len(missing), status="")
            for r, key in missing:
                model, _ = build_model(
                    r,
                    num_classes=COUNTED_CLASSES,
                    image_size=max(r.input.min_size, 96),
                    weights="none",
                )
                cache[key] = result[r.name] = int(model.count_params())
                keras.backend.clear_session()
                bar.advance(task)
        atomic_write_json(cache_file, cache)
    return result


def train(args, workspace: Path) -> int:
    from zoo.data.combined import join_specs
    from zoo.training.trainer import TrainOptions
    from zoo.training.trainer import train as run_training

    options = TrainOptions(
        recipe=args.recipe,
        workspace=workspace,
        data=join_specs(args.data or []),
        images=args.images,
        epochs=args.epochs,
        batch_size=args.batch_size,
        image_size=args.image_size,
        crop_borders=args.crop_borders,
        weights=args.weights,
        seed=args.seed,
        split_seed=args.split_seed,
        fold=args.fold,
        folds=args.folds,
        name=args.name,
        resume=args.resume,
        mixed_precision=args.mixed_precision,
        strategy=args.strategy,
        jit_compile=args.jit_compile,
        feature_cache=not args.no_feature_cache,
        settings=tuple(args.settings),
        partition=args.partition,
    )
    run_training(options)
    return 0


def member_record(member) -> dict:
    """One member as the listing shows it (``--json`` prints these dicts); raises ZooError,
    KeyError, TypeError or ValueError when ``member.json`` or ``model.keras`` is damaged."""
    from zoo.inference.members import MODEL_FILE, model_file_problem

    info = member.info
    problem = model_file_problem(member.path / MODEL_FILE)
    if problem is not None:
        raise ZooError(f"{member.path / MODEL_FILE}: {problem}; retrain the member.")
    val, test = info["metrics"]["val"], info["metrics"]["test"]
    return {
        "name": str(info["name"]),
        "recipe": str(info["recipe"]),
        "data": str(info["data"]["name"]),
        "image_size": member.image_size,
        "epochs": int(info["training"]["epochs_run"]),
        "val_balanced_accuracy": float(val["balanced_accuracy"]),
        "val_macro_auc": None if val["macro_auc"] is None else float(val["macro_auc"]),
        "test_balanced_accuracy": float(test["balanced_accuracy"]),
        "train_seconds": float(info["training"]["seconds"]),
        "path": str(member.path),
    }


def _member_cells(record: dict) -> list[str]:
    auc = record["val_macro_auc"]
    return [
        escape(record["name"]),
        escape(record["recipe"]),
        escape(record["data"]),
        str(record["image_size"]),
        str(record["epochs"]),
        f"{record['val_balanced_accuracy']:.3f}",
        "–" if auc is None else f"{auc:.3f}",
        f"{record['test_balanced_accuracy']:.3f}",
        f"{record['train_seconds'] / 60:.1f} min",
    ]


def _damage(member, exc: Exception) -> str:
    """Why a member's row cannot be shown, naming its member.json and what to do."""
    if isinstance(exc, ZooError):  # unreadable or not JSON: the message names the file
        return str(exc).splitlines()[0]
    if isinstance(exc, KeyError):
        reason = f"no {exc.args[0]!r} entry"
    else:
        reason = f"{exc.__class__.__name__}: {str(exc).splitlines()[0] if str(exc) else '?'}"
    return (
        f"{member.path / 'member.json'} is damaged ({reason}); retrain the member or delete "
        f"{member.path}."
    )


def member_records(workspace: Path) -> list[dict]:
    """Every member of the workspace; a damaged one as ``{name, path, damaged: why}``."""
    from zoo.inference.members import list_members

    records = []
    for m in list_members(workspace):
        try:
            records.append(member_record(m))
        except (ZooError, KeyError, TypeError, ValueError, IndexError) as exc:
            records.append({"name": m.path.name, "path": str(m.path), "damaged": _damage(m, exc)})
    return records


MEMBER_COLUMNS = (
    "name",
    "recipe",
    "data",
    "px",
    "epochs",
    "val bal. acc.",
    "val AUC",
    "test bal. acc.",
    "train time",
)


def members(args, workspace: Path) -> int:
    """Table of saved members with their headline metrics (``--json``: a list of objects)."""
    records = member_records(workspace)
    if args.json:
        console.print_json(records)
        return 0
    folder = Layout(workspace).members
    if not records:
        console.info(f"No members in {folder} yet: run [bold]zoo train RECIPE[/bold].")
        return 0
    table = Table(title=f"{len(records)} members in {folder}")
    for column in MEMBER_COLUMNS:
        table.add_column(
            column, justify="left" if column in ("name", "recipe", "data") else "right"
        )
    for record in records:
        if "damaged" in record:
            table.add_row(escape(record["name"]), "[red]damaged[/red]", *[""] * 7)
        else:
            table.add_row(*_member_cells(record))
    console.console.print(table)
    for record in records:
        if "damaged" in record:
            console.warn(escape(record["damaged"]))
    return 0


def evaluate(args, workspace: Path) -> int:
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


def explain(args, workspace: Path) -> int:
    from zoo.evaluation.explain import explain_command

    return explain_command(
        args.target,
        args.paths,
        workspace=workspace,
        method=args.method,
        out=args.out,
        class_name=args.class_name,
    )


def predict(args, workspace: Path) -> int:
    from zoo.deploy.predict import predict_command

    return predict_command(
        args.target,
        args.paths,
        workspace=workspace,
        tta=args.tta,
        prior_correction=not args.no_prior_correction,
        target_priors=args.target_priors,
        out=args.out,
        ood_scores=args.ood_scores,
    )


def data(args, workspace: Path) -> int:
    from zoo.data.check import check_command

    return check_command(args, workspace)


def export(args, workspace: Path) -> int:
    from zoo.deploy.export.writer import export_command

    return export_command(
        args.target,
        workspace=workspace,
        fmt=args.format,
        quantize=args.quantize,
        data=args.data,
        out=args.out,
    )


def ensemble(args, workspace: Path) -> int:
    from zoo.ensembles.build import build_command

    if args.ensemble_command != "build":
        raise ZooError(f"unknown ensemble action {args.ensemble_command!r}; use build")
    return build_command(args.spec, workspace, operating_point=args.operating_point)


def leaderboard(args, workspace: Path) -> int:
    from zoo.publish.leaderboard import leaderboard_command

    return leaderboard_command(workspace, out=args.out, data_name=args.data, as_json=args.json)


def serve(args, workspace: Path) -> int:
    from zoo.deploy.serve.command import serve_command

    return serve_command(
        args.target,
        workspace=workspace,
        host=args.host,
        port=args.port,
        max_upload_mb=args.max_upload_mb,
    )

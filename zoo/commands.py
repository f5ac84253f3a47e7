"""The subcommands behind ``python -m zoo``: each turns parsed options into one library call."""

from __future__ import annotations

import json
from pathlib import Path

from rich.markup import escape
from rich.table import Table

from zoo import console
from zoo.errors import ZooError


def recipes(args, workspace: Path) -> int:
    """Table of registered recipes: name, backbone, input size, parameters, source paper."""
    from zoo.recipes import load_registry, recipe_dirs

    registry = load_registry(recipe_dirs(workspace))
    counts = parameter_counts(list(registry), workspace)
    table = Table(title=f"{len(registry)} recipes", show_lines=False)
    for column in ("name", "backbone", "input", "parameters", "stages", "class weights", "source"):
        table.add_column(column, justify="right" if column in ("input", "parameters") else "left")
    for r in registry:
        stages = " → ".join(f"{s.trainable}×{s.epochs}" for s in r.stages)
        weighting = r.class_weight if r.sampling == "none" else f"{r.sampling} sampling"
        table.add_row(
            r.name,
            r.backbone,
            f"{r.input.size} px",
            f"{counts[r.name] / 1e6:.1f} M",
            stages,
            weighting,
            r.source,
        )
    console.console.print(table)
    return 0


def parameter_counts(recipes, workspace: Path) -> dict[str, int]:
    """Parameters of each recipe's network for 7 classes, cached per recipe file and Keras version."""
    import hashlib

    import keras

    cache_file = workspace / "cache" / "parameters.json"
    try:
        cache = json.loads(cache_file.read_text(encoding="utf-8")) if cache_file.exists() else {}
    except (OSError, ValueError):  # a damaged cache is recomputed, not fatal
        cache = {}
    if not isinstance(cache, dict):
        cache = {}
    result, missing = {}, []
    for r in recipes:
        key = hashlib.sha256(
            f"{keras.__version__}|{json.dumps(r.to_dict(), sort_keys=True, default=str)}".encode()
        ).hexdigest()[:16]
        if key in cache:
            result[r.name] = cache[key]
        else:
            missing.append((r, key))
    if missing:
        from zoo.models import build_model
        from zoo.workspace import atomic_write_json

        with console.progress() as bar:
            task = bar.add_task("counting parameters (once)", total=len(missing), status="")
            for r, key in missing:
                model, _ = build_model(
                    r, num_classes=7, image_size=max(r.input.min_size, 96), weights="none"
                )
                cache[key] = result[r.name] = int(model.count_params())
                keras.backend.clear_session()
                bar.advance(task)
        atomic_write_json(cache_file, cache)
    return result


def train(args, workspace: Path) -> int:
    from zoo.training.trainer import TrainOptions
    from zoo.training.trainer import train as run_training

    options = TrainOptions(
        recipe=args.recipe,
        workspace=workspace,
        data=args.data,
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
    )
    run_training(options)
    return 0


def _member_row(member) -> list[str]:
    """One row of the members table; raises ZooError, KeyError, TypeError or ValueError
    when ``member.json`` or ``model.keras`` is damaged."""
    from zoo.members import MODEL_FILE, model_file_problem

    info = member.info
    problem = model_file_problem(member.path / MODEL_FILE)
    if problem is not None:
        raise ZooError(f"{member.path / MODEL_FILE}: {problem}; retrain the member.")
    val, test = info["metrics"]["val"], info["metrics"]["test"]
    return [
        info["name"],
        info["recipe"],
        info["data"]["name"],
        str(member.image_size),
        str(info["training"]["epochs_run"]),
        f"{val['balanced_accuracy']:.3f}",
        "–" if val["macro_auc"] is None else f"{val['macro_auc']:.3f}",
        f"{test['balanced_accuracy']:.3f}",
        f"{info['training']['seconds'] / 60:.1f} min",
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


def members(args, workspace: Path) -> int:
    """Table of saved members with their headline metrics."""
    from zoo.members import list_members

    found = list_members(workspace)
    if not found:
        console.console.print(
            f"No members in {workspace / 'members'} yet: run [bold]zoo train RECIPE[/bold]."
        )
        return 0
    table = Table(title=f"{len(found)} members in {workspace / 'members'}")
    for column in (
        "name",
        "recipe",
        "data",
        "px",
        "epochs",
        "val bal. acc.",
        "val AUC",
        "test bal. acc.",
        "train time",
    ):
        table.add_column(
            column, justify="left" if column in ("name", "recipe", "data") else "right"
        )
    damaged = []
    for m in found:
        try:
            table.add_row(*_member_row(m))
        except (ZooError, KeyError, TypeError, ValueError, IndexError) as exc:
            table.add_row(m.path.name, "[red]damaged[/red]", *[""] * 7)
            damaged.append(_damage(m, exc))
    console.console.print(table)
    for line in damaged:
        console.warn(escape(line))
    return 0


def evaluate(args, workspace: Path) -> int:
    from zoo.evaluate import evaluate_command

    return evaluate_command(args, workspace)


def predict(args, workspace: Path) -> int:
    from zoo.predict import predict_command

    return predict_command(args, workspace)


def ensemble(args, workspace: Path) -> int:
    from zoo.ensembles.build import build_command

    return build_command(args, workspace)


def leaderboard(args, workspace: Path) -> int:
    from zoo.leaderboard import leaderboard_command

    return leaderboard_command(args, workspace)

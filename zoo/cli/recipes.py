"""``zoo recipes``: Table of registered recipes."""

from __future__ import annotations

import json
from pathlib import Path

from rich.markup import escape
from rich.table import Table

from zoo import console
from zoo.cli.options import (
    add_command,
    add_common,
)
from zoo.models.backbones import get_backbone, small_cnn_parameters
from zoo.store import Layout
from zoo.store.json_cache import read_cache, write_cache

NEEDS_TENSORFLOW = False


def add_options(sub) -> None:
    """``zoo recipes``'s options."""
    p = add_command(sub, "recipes", "table of registered recipes")
    p.add_argument(
        "--params",
        action="store_true",
        help="count every network's parameters by building it (slow the first time, then "
        "cached); without it the counts come from a table of known backbones",
    )
    add_common(p, json=True)


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


def run(args, workspace: Path) -> int:
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
    cache = read_cache(
        cache_file, lambda n: isinstance(n, int) and not isinstance(n, bool) and n > 0
    )
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
        write_cache(cache_file, cache)
    return result

"""``zoo members``: Table of saved members."""

from __future__ import annotations

from pathlib import Path

from rich.markup import escape
from rich.table import Table

from zoo import console
from zoo.cli.options import (
    add_command,
    add_common,
)
from zoo.errors import ZooError
from zoo.store import Layout

NEEDS_TENSORFLOW = False


def add_options(sub) -> None:
    """``zoo members``'s options."""
    p = add_command(sub, "members", "table of saved members")
    add_common(p, json=True)


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


def run(args, workspace: Path) -> int:
    """Table of saved members with their headline metrics (``--json``: a list of objects)."""
    records = member_records(workspace)
    if args.json:
        console.print_json(records)
        return 0
    folder = Layout(workspace).members
    if not records:
        console.info(f"No members in {folder} yet: run zoo train RECIPE.")
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

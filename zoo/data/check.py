"""``zoo data check SPEC …``: what to know about data before training on it.

Per source and per class: images and lesions, image sizes, unreadable files, the reader's
problems, near-duplicate images within and across sources (the pairs training keeps together),
and how each source's labels map onto the run's classes. A rich table, or ``--json``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from rich.table import Table

from zoo import console
from zoo.data.combined import join_specs
from zoo.data.dataset import Dataset
from zoo.data.duplicates import duplicate_report, image_hashes, merge_duplicates, public
from zoo.data.loading import load_dataset

SHOWN_PAIRS = 10


def _sources(dataset: Dataset) -> list[dict]:
    """Each source's record (a plain data set is one source named after it)."""
    if dataset.sources:
        return [dict(s) for s in dataset.sources]
    return [
        {
            "name": dataset.name,
            "source": dataset.spec,
            "fingerprint": dataset.fingerprint,
            "count": len(dataset),
            "weight": 1.0,
            "unknown": False,
            "label_map": None,
            "label_coverage": None,
        }
    ]


def _sizes(sizes: np.ndarray) -> dict | None:
    """Width and height: minimum, median, maximum (None when no image was readable)."""
    ok = sizes[sizes[:, 0] >= 0]
    if not len(ok):
        return None
    return {
        axis: {"min": int(v.min()), "median": float(np.median(v)), "max": int(v.max())}
        for axis, v in (("width", ok[:, 0]), ("height", ok[:, 1]))
    }


def check_data(specs: list[str], *, workspace: Path, images: Path | None = None) -> dict:
    """The report behind ``zoo data check`` (what ``--json`` prints)."""
    dataset = load_dataset(join_specs(list(specs)), workspace=workspace, images=images)
    records = dataset.records
    source_of = records.get("source")
    hashes = image_hashes(dataset, cache_dir=Path(workspace) / "cache" / "hashes")
    duplicates = duplicate_report(dataset, hashes)
    sources = _sources(dataset)
    for source in sources:
        rows = (
            np.ones(len(records), bool)
            if source_of is None
            else (source_of == source["name"]).to_numpy()
        )
        part = records[rows]
        source["images"] = int(rows.sum())
        source["lesions"] = int(part["group"].nunique())
        source["class_counts"] = {c: int((part["label"] == c).sum()) for c in dataset.classes}
        source["sizes"] = _sizes(hashes.sizes[rows])
        source["unreadable"] = {
            i: why for i, why in hashes.problems.items() if i in set(part.index)
        }
    merged = merge_duplicates(dataset, duplicates).records
    classes = {
        c: {
            "images": int((records["label"] == c).sum()),
            "lesions": int(records.loc[records["label"] == c, "group"].nunique()),
            "lesions_merged": int(merged.loc[merged["label"] == c, "group"].nunique()),
        }
        for c in dataset.classes
    }
    unlabelled = int((~records["label"].isin(dataset.classes)).sum())
    return {
        "data": {"spec": dataset.spec, "name": dataset.name, "fingerprint": dataset.fingerprint},
        "images": len(dataset),
        "classes": classes,
        "unlabelled_images": unlabelled,
        "sources": sources,
        "duplicates": public(duplicates),
        "unreadable": len(hashes.problems),
        "problems": list(dataset.problems),
        "notes": list(dataset.notes),
    }


def _size_text(sizes: dict | None) -> str:
    if sizes is None:
        return "–"
    w, h = sizes["width"], sizes["height"]
    if w["min"] == w["max"] and h["min"] == h["max"]:
        return f"{w['min']}×{h['min']}"
    return f"{w['min']}–{w['max']} × {h['min']}–{h['max']} (median {w['median']:g}×{h['median']:g})"


def print_report(report: dict) -> None:
    """The report as rich tables: sources, classes, label maps, duplicates, problems."""
    out = console.console
    sources = report["sources"]
    table = Table(title=f"{report['data']['name']}: {report['images']} images", show_edge=False)
    for column in ("source", "images", "lesions", "size (w × h)", "unreadable", "weight", "spec"):
        table.add_column(column, justify="right" if column in ("images", "lesions") else "left")
    for s in sources:
        table.add_row(
            s["name"] + (" (unknown)" if s.get("unknown") else ""),
            str(s["images"]),
            str(s["lesions"]),
            _size_text(s["sizes"]),
            str(len(s["unreadable"])),
            f"{s['weight']:g}",
            s["source"],
        )
    out.print(table)
    table = Table(title="images per class", show_edge=False)
    table.add_column("class")
    for s in sources:
        table.add_column(s["name"], justify="right")
    table.add_column("images", justify="right")
    table.add_column("lesions", justify="right")
    table.add_column("after merging duplicates", justify="right")
    for c, total in report["classes"].items():
        table.add_row(
            c,
            *[str(s["class_counts"][c]) for s in sources],
            str(total["images"]),
            str(total["lesions"]),
            str(total["lesions_merged"]),
        )
    out.print(table)
    for s in sources:
        coverage = s.get("label_coverage")
        if not coverage or all(label == v["class"] for label, v in coverage.items()):
            continue
        mapping = ", ".join(
            f"{label} → {v['class'] or '(dropped)'} ({v['images']})"
            for label, v in coverage.items()
        )
        out.print(f"labels of {s['name']}: {mapping}")
    d = report["duplicates"]
    out.print(
        f"duplicates (≤ {d['max_distance']} of 256 hash bits): {d['pairs']} pair(s), "
        f"{d['exact']} identical; {d['within_sources']} within a source, {d['across_sources']} "
        f"across sources; {d['other_lesion']} join different lesions, {d['label_conflicts']} "
        "have different labels"
    )
    if d["examples"]:
        table = Table(show_edge=False)
        for column in ("image", "duplicate", "bits apart"):
            table.add_column(column, justify="right" if column == "bits apart" else "left")
        for e in d["examples"][:SHOWN_PAIRS]:
            table.add_row(e["a"], e["b"], str(e["distance"]))
        out.print(table)
        if d["pairs"] > SHOWN_PAIRS:
            out.print(
                f"  … and {d['pairs'] - SHOWN_PAIRS} more (--json lists {len(d['examples'])})"
            )
    for s in sources:
        for image, why in s["unreadable"].items():
            out.print(f"unreadable: {s['name']} {image}: {why}")
    for problem in report["problems"]:
        out.print(f"problem: {problem}")
    for note in report["notes"]:
        out.print(f"note: {note}")


def check_command(args, workspace: Path) -> int:
    """``zoo data check SPEC … [--images DIR] [--json]``; exit status 1 when problems."""
    report = check_data(
        args.specs, workspace=workspace, images=Path(args.images) if args.images else None
    )
    if args.json:
        console.print_json(report)
    elif not console.is_quiet():
        print_report(report)
    return 1 if report["problems"] or report["unreadable"] else 0

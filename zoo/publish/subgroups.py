"""The leaderboard page's subgroup section: for each top entry whose evaluation has subgroup
results (``metrics.json`` ``subgroups``), its forest plot and its table — images, lesions,
balanced accuracy and melanoma AUC, sensitivity and specificity per subgroup with their
intervals, and each variable's largest gap — so that a reader sees where it is weaker."""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path

from zoo.evaluation.subgroups import METRICS, SHORT, melanoma_text, write_forest
from zoo.publish.page import cell, figure


def _cell(value, interval, label: str, *, signed: bool = False) -> str:
    """The page's number cell (:func:`zoo.publish.page.cell`)."""
    return cell(value, label=label, interval=interval, signed=signed)


def subgroup_html_table(section: dict) -> str:
    """One row per subgroup (all images first), and each variable's largest gap in italics."""
    heads = ("variable", "subgroup", "images", "lesions", *SHORT)
    head = "".join(f'<th class="{"text" if i < 2 else ""}">{h}</th>' for i, h in enumerate(heads))
    rows = []

    def row(variable: str, entry: dict) -> str:
        cells = "".join(
            _cell(entry[m], entry[f"{m}_ci95"], label)
            for m, label in zip(METRICS, SHORT, strict=True)
        )
        note = f' title="{html.escape(entry["note"])}"' if entry.get("note") else ""
        return (
            f'<tr{note}><td class="text" data-label="variable">{html.escape(variable)}</td>'
            f'<td class="text" data-label="subgroup">{html.escape(str(entry.get("name", "")))}'
            f'</td><td data-label="images">{entry["n_images"]}</td>'
            f'<td data-label="lesions">{entry["n_lesions"]}</td>{cells}</tr>'
        )

    rows.append(row("all images", section["overall"]))
    for variable, block in section["variables"].items():
        rows += [row(variable, entry) for entry in block["subgroups"]]
        gaps = block.get("gaps") or {}
        if any(gaps.values()):
            cells = "".join(
                _cell(g["value"] if g else None, g and g["ci95"], label, signed=True)
                for g, label in zip((gaps.get(m) for m in METRICS), SHORT, strict=True)
            )
            rows.append(
                f'<tr><td class="text" data-label="variable">{html.escape(variable)}</td>'
                '<td class="text" data-label="subgroup"><i>largest gap</i></td>'
                f'<td data-label="images"></td><td data-label="lesions"></td>{cells}</tr>'
            )
    return (
        f'<table class="compact cards"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody>'
        "</table>"
    )


def subgroup_sections(entries: Sequence, out: Path) -> str:
    """The section's HTML for ``entries`` (the top entries, best first); each forest plot is
    also written as ``subgroups-<rank>.png`` into ``out``. Empty when none has subgroups."""
    parts = []
    for rank, entry in enumerate(entries, 1):
        section = entry.metrics.get("subgroups")
        if not section or not section.get("variables"):
            continue
        path = write_forest(section, out / f"subgroups-{rank}.png", title=entry.label)
        caption = (
            f"Point and 95 % lesion-bootstrap interval per subgroup; dashed: all images. "
            f"{melanoma_text(section['melanoma']).capitalize()}. Hover a row for a subgroup "
            "too small to report."
        )
        parts.append(
            f"<h3>{html.escape(entry.label)}</h3>"
            f"<div class='grid'><section>{subgroup_html_table(section)}</section></div>"
            + figure(path, title=f"Subgroups of {entry.label}", caption=caption)
        )
    return "".join(parts)

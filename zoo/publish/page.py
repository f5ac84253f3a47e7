"""``index.html`` of ``zoo leaderboard``: one self-contained, offline page.

One sortable, filterable ranking (a small inline script; no network), per-class tables and
confusion matrices of the top entries, each ensemble's members and weights, and the plots at
full width with captions. At narrow widths (phones) the ranking turns into one card per entry,
so no table is wider than the screen.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

STYLE = """
*{box-sizing:border-box}
body{font-family:system-ui,sans-serif;margin:0 auto;padding:1em;max-width:1400px;color:#222}
h1{font-size:1.5em;margin:.2em 0}h2{margin-top:1.6em}h3{margin:.8em 0 .3em}
.meta{color:#555;font-size:.9em;display:flex;flex-wrap:wrap;gap:.3em 1.2em;padding:0;
list-style:none}
table{border-collapse:collapse;font-size:12px;max-width:100%}
td,th{border:1px solid #ccc;padding:3px 5px;text-align:right;white-space:nowrap}
th{background:#f3f3f3;white-space:normal;vertical-align:bottom}
td.text,th.text{text-align:left;white-space:normal;overflow-wrap:break-word}
#ranking{font-size:10.5px}#ranking td.text{min-width:7em}
@media (min-width:901px){#ranking td,#ranking th{padding:3px 3px}}
table.sortable th{cursor:pointer;user-select:none}
tr[hidden]{display:none !important}
table.sortable th[aria-sort=ascending]::after{content:" ▲"}
table.sortable th[aria-sort=descending]::after{content:" ▼"}
.ci{color:#666;font-size:.85em}
.controls{display:flex;flex-wrap:wrap;gap:.5em;margin:.5em 0}
.controls input,.controls select{font-size:14px;padding:3px;max-width:100%}
.grid{display:flex;flex-wrap:wrap;gap:1em 2em}
.grid>section{min-width:0;max-width:100%}
table.compact{font-size:12px}table.compact td,table.compact th{padding:2px 4px}
figure{margin:1em 0}figure img{width:100%;max-width:760px;height:auto;display:block}
figcaption{color:#444;font-size:.9em;max-width:900px}
@media (max-width:900px){
 table.cards,table.cards tbody,table.cards tr,table.cards td{display:block;width:100%}
 table.cards thead{display:none}
 table.cards tr{border:1px solid #ccc;margin-bottom:.6em}
 table.cards td{border:none;text-align:right;white-space:normal;padding:2px 6px}
 table.cards td::before{content:attr(data-label);float:left;font-weight:600;
 text-align:left;padding-right:.5em}
 table.compact td,table.compact th{padding:1px 3px;font-size:11px}
}
"""

SCRIPT = """
document.querySelectorAll('table.sortable').forEach(function(table){
  table.querySelectorAll('th').forEach(function(th, i){
    th.addEventListener('click', function(){
      var ascending = th.getAttribute('aria-sort') !== 'ascending';
      table.querySelectorAll('th').forEach(function(h){h.removeAttribute('aria-sort');});
      th.setAttribute('aria-sort', ascending ? 'ascending' : 'descending');
      var body = table.tBodies[0], rows = Array.prototype.slice.call(body.rows);
      function key(row){
        var cell = row.cells[i], v = cell.getAttribute('data-value');
        if (v === null) v = cell.textContent;
        if (v === '' || v === '–') return null;
        var n = Number(v);
        return isNaN(n) ? v.toLowerCase() : n;
      }
      rows.sort(function(a, b){
        var x = key(a), y = key(b);
        if (x === null || y === null) return (x === null) - (y === null);
        var c = (typeof x === 'number' && typeof y === 'number') ? x - y
          : String(x).localeCompare(String(y));
        return ascending ? c : -c;
      });
      rows.forEach(function(r){body.appendChild(r);});
    });
  });
});
function applyFilter(){
  var q = document.getElementById('filter').value.toLowerCase();
  var step = document.getElementById('step').value;
  document.querySelectorAll('#ranking tbody tr').forEach(function(r){
    var ok = r.textContent.toLowerCase().indexOf(q) >= 0 &&
      (step === '' || r.getAttribute('data-step') === step);
    r.hidden = !ok;
  });
}
document.getElementById('filter').addEventListener('input', applyFilter);
document.getElementById('step').addEventListener('change', applyFilter);
"""


@dataclass
class Column:
    """A ranking column: header, the value, the interval columns, digits."""

    header: str
    key: str
    interval: tuple[str, str] | None = None
    digits: int = 3
    text: bool = False
    signed: bool = False


RANKING = (
    Column("entry", "entry", text=True),
    Column("step", "step", text=True),
    Column("TTA", "tta", text=True),
    Column("balanced acc. (95 % CI)", "balanced_accuracy", ("ba_low", "ba_high")),
    Column(
        "ensemble gain (95 % CI)",
        "ensemble_gain",
        ("ensemble_gain_low", "ensemble_gain_high"),
        signed=True,
    ),
    Column("macro AUC (95 % CI)", "macro_auc", ("macro_auc_low", "macro_auc_high")),
    Column("mel AUC (95 % CI)", "mel_auc", ("mel_auc_low", "mel_auc_high")),
    Column(
        "mel spec. at 90 % sens.",
        "mel_spec_at_sens_90",
        ("mel_spec_at_sens_90_low", "mel_spec_at_sens_90_high"),
    ),
    Column(
        "mel spec. at 95 % sens.",
        "mel_spec_at_sens_95",
        ("mel_spec_at_sens_95_low", "mel_spec_at_sens_95_high"),
    ),
    Column(
        "mel sens. at ≥ 90 % point",
        "mel_sens_at_least_90",
        ("mel_sens_at_least_90_low", "mel_sens_at_least_90_high"),
    ),
    Column("ECE (95 % CI)", "ece", ("ece_low", "ece_high")),
    Column("T", "temperature", digits=2),
    Column("OOD AUROC", "ood_auroc_mahalanobis"),
    Column("params (M)", "parameters_m", digits=2),
    Column("train min", "train_minutes", digits=1),
    Column("img/s", "images_per_second", digits=0),
)


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value)) or pd.isna(value)


def number(value, digits: int = 3, *, signed: bool = False) -> str:
    return "–" if _missing(value) else f"{value:{'+' if signed else ''}.{digits}f}"


def cell(
    value, *, label: str, digits: int = 3, interval=None, text: bool = False, signed=False
) -> str:
    if text:
        # long member names may break after their dots (name.data.seed.size)
        shown = html.escape("–" if _missing(value) else str(value)).replace(".", ".<wbr>")
        return f'<td class="text" data-label="{html.escape(label)}">{shown}</td>'
    body = number(value, digits, signed=signed)
    if interval and not _missing(interval[0]):
        low, high = (number(v, digits, signed=signed) for v in interval)
        body += f' <span class="ci">({low}–{high})</span>'
    data = "" if _missing(value) else f"{float(value):.6g}"
    return f'<td data-label="{html.escape(label)}" data-value="{data}">{body}</td>'


def ranking_table(ranked: pd.DataFrame) -> str:
    """The one ranking: every entry and step, sortable on a header click."""
    frame = ranked.assign(parameters_m=ranked["parameters"] / 1e6)
    head = '<th class="text">#</th>' + "".join(
        f'<th class="{"text" if c.text else ""}">{html.escape(c.header)}</th>' for c in RANKING
    )
    rows = []
    for i, r in enumerate(frame.to_dict("records"), 1):
        cells = [f'<td data-label="#" data-value="{i}">{i}</td>']
        for c in RANKING:
            interval = (r[c.interval[0]], r[c.interval[1]]) if c.interval else None
            cells.append(
                cell(
                    r[c.key],
                    label=c.header,
                    digits=c.digits,
                    interval=interval,
                    text=c.text,
                    signed=c.signed,
                )
            )
        rows.append(f'<tr data-step="{html.escape(r["step"])}">{"".join(cells)}</tr>')
    return (
        f'<table id="ranking" class="sortable cards"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


def controls(steps: Sequence[str]) -> str:
    options = "".join(f'<option value="{html.escape(s)}">{html.escape(s)}</option>' for s in steps)
    return (
        '<div class="controls"><input id="filter" type="search" placeholder="filter entries…" '
        'aria-label="filter entries">'
        f'<select id="step" aria-label="step"><option value="">every step</option>{options}'
        "</select></div>"
    )


def class_table(metrics: dict, rates: dict) -> str:
    """Per class: n, the argmax decision's sensitivity and specificity (``rates``, from
    :func:`zoo.scoring.metrics.argmax_rates`: they agree with the confusion matrix beside it)
    and the AUC, each with its interval."""
    per, ci = metrics["per_category"], (metrics.get("ci95") or {}).get("auc") or {}
    headers = ("class", "n", "sens. (95 % CI)", "spec. (95 % CI)", "AUC (95 % CI)")
    head = "".join(f'<th class="{"text" if h == "class" else ""}">{h}</th>' for h in headers)
    rows = []
    for c in metrics["classes"]:
        rows.append(
            "<tr>"
            + cell(c, label="class", text=True)
            + cell(metrics["class_counts"][c], label="n", digits=0)
            + cell(rates["sensitivity"][c], label="sens.", interval=rates["sensitivity_ci95"][c])
            + cell(rates["specificity"][c], label="spec.", interval=rates["specificity_ci95"][c])
            + cell(per["auc"][c], label="AUC", interval=ci.get(c))
            + "</tr>"
        )
    return f'<table class="compact"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


def _rule(point: dict) -> str:
    """How a point's threshold was chosen on validation, in words."""
    level = f"{point['target'] * 100:g} %"
    if point.get("at_least"):
        return f"{point['metric']} ≥ {level} in 95 % of validation resamples"
    return f"{point['metric']} {level} on validation"


def points_table(metrics: dict) -> str:
    """Each operating point chosen on validation, with the sensitivity *and* specificity it
    reached on the evaluated images (and their intervals); empty when there is none."""
    points = metrics.get("operating_points") or []
    if not points:
        return ""
    headers = (
        "class",
        "threshold chosen on validation",
        "threshold",
        "sens. (95 % CI)",
        "spec. (95 % CI)",
    )
    head = "".join(f'<th class="{"text" if i < 2 else ""}">{h}</th>' for i, h in enumerate(headers))
    rows = [
        "<tr>"
        + cell(p["class"], label="class", text=True)
        + cell(_rule(p), label="chosen", text=True)
        + cell(p["threshold"], label="threshold", digits=4)
        + cell(p["sensitivity"], label="sens.", interval=p.get("sensitivity_ci95"))
        + cell(p["specificity"], label="spec.", interval=p.get("specificity_ci95"))
        + "</tr>"
        for p in points
    ]
    return (
        "<section><h4>Operating points: thresholds chosen on validation, sensitivity and "
        "specificity reached here</h4>"
        f'<table class="compact"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody>'
        "</table></section>"
    )


def confusion_table(matrix: pd.DataFrame) -> str:
    """Counts: rows true class, columns predicted class (argmax; ties "undecided")."""
    head = '<th class="text">true ╲ pred.</th>' + "".join(
        f"<th>{html.escape(str(c))}</th>" for c in matrix.columns
    )
    rows = []
    for true, values in matrix.iterrows():
        cells = "".join(
            f'<td style="background:rgba(31,119,180,{v / max(values.sum(), 1):.2f})">{int(v)}</td>'
            for v in values
        )
        rows.append(f'<tr><th class="text">{html.escape(str(true))}</th>{cells}</tr>')
    return f'<table class="compact"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


def figure(path: Path, *, title: str, caption: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return (
        f"<figure><h3>{html.escape(title)}</h3>"
        f'<img alt="{html.escape(title)}" src="data:image/png;base64,{data}">'
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
    )


def page(
    *,
    title: str,
    meta: dict[str, str],
    intro: str,
    ranking: str,
    steps: Sequence[str],
    details: str,
    subgroups: str,
    ensembles: str,
    figures: str,
    references: str,
) -> str:
    items = "".join(
        f"<li><b>{html.escape(k)}</b>: {html.escape(str(v))}</li>" for k, v in meta.items()
    )
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>"
        f"<header><h1>{html.escape(title)}</h1><ul class='meta'>{items}</ul></header>"
        f"<p>{html.escape(intro)}</p>"
        f"<h2>Ranking</h2>{controls(steps)}{ranking}"
        f"<h2>Top entries per class</h2>{details}"
        + (f"<h2>Subgroups of the top entries</h2>{subgroups}" if subgroups else "")
        + f"<h2>Ensembles</h2>{ensembles}"
        f"<h2>Plots</h2>{figures}"
        f"<h2>Published numbers (measured on other data)</h2><ul>{references}</ul>"
        "<p>Research software, not for diagnosis.</p>"
        f"<script>{SCRIPT}</script></body></html>"
    )

"""What a member records about itself when it is saved: ``card.md`` and library versions.

``card.md`` opens with YAML front matter in the Hugging Face model-card format (``license``,
``library_name``, ``pipeline_tag``, ``tags``, ``datasets``, ``metrics``, ``model-index`` with
the metric values) and zoo's own ``zoo`` block (licences of the code, the weights and each data
set; calibration and operating point). PyYAML is not a dependency, so :func:`yaml_lines` writes
the small YAML subset this needs by hand: block mappings and lists, flow lists of scalars, and
every string double-quoted (JSON escapes, which YAML reads the same). See docs/formats.md.
"""

from __future__ import annotations

import json
import math
import os
import platform
import re
from pathlib import Path

import numpy as np
import pandas as pd

from zoo.errors import ZooError
from zoo.scoring.metrics import bootstrap_ci
from zoo.store.calibration import read_calibration
from zoo.store.predictions import read_predictions

CODE_LICENSE = "apache-2.0"  # pyproject.toml, LICENSE
# Terms of the data sets zoo knows, as Hugging Face licence ids, and what to cite for each.
DATA_TERMS = {
    "ham10000": (
        "cc-by-nc-4.0",
        "Tschandl P, Rosendahl C, Kittler H. The HAM10000 dataset, a large collection of "
        "multi-source dermatoscopic images of common pigmented skin lesions. Sci Data 5, 180161 "
        "(2018). doi:10.1038/sdata.2018.161",
    ),
    "isic2018": (
        "cc-by-nc-4.0",
        "Codella N et al. Skin lesion analysis toward melanoma detection 2018: a challenge hosted "
        "by the International Skin Imaging Collaboration (ISIC). arXiv:1902.03368; and HAM10000 "
        "(Tschandl et al. 2018)",
    ),
    "isic2019": (
        "cc-by-nc-4.0",
        "Tschandl et al. 2018 (HAM10000); Codella N et al. 2018, arXiv:1710.05006; Combalia M et "
        "al. BCN20000: dermoscopic lesions in the wild, 2019, arXiv:1908.02288",
    ),
    "isic2020": (
        "cc-by-nc-4.0",
        "Rotemberg V et al. A patient-centric dataset of images and metadata for identifying "
        "melanomas using clinical context. Sci Data 8, 34 (2021). doi:10.1038/s41597-021-00815-z",
    ),
    "demo": ("apache-2.0", "zoo's synthetic demo set (zoo.data.demo), made by zoo's code"),
}
NON_COMMERCIAL = ("cc-by-nc-4.0",)
FEW_TRAINING_IMAGES = 100  # a class with fewer training images is named under Limitations
N_RESAMPLES = 1000  # lesion-bootstrap resamples behind the card's intervals


def source_commit() -> str:
    """The git commit of the zoo source (short, ``+`` when it has uncommitted changes), or
    ``unknown`` (an installed wheel)."""
    import subprocess

    folder = Path(__file__).parent
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=folder,
            capture_output=True,
            text=True,
            timeout=10,
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", str(folder)],
            cwd=folder,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    if head.returncode != 0:
        return "unknown"
    return head.stdout.strip() + ("+" if dirty.stdout.strip() else "")


def machine() -> str:
    """The processor and its cores, as a reader of a training cost needs them."""
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            model = next(
                (line.split(":", 1)[1].strip() for line in info if line.startswith("model name")),
                model,
            )
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} cores"


def library_versions() -> dict[str, str]:
    """Versions of zoo, Keras, the backend library that trained (tensorflow, jax or torch)
    and the libraries the numbers depend on."""
    import importlib

    import keras
    import sklearn

    import zoo

    backend = keras.backend.backend()
    return {
        "zoo": zoo.__version__,
        "keras": keras.__version__,
        backend: importlib.import_module(backend).__version__,
        "numpy": np.__version__,
        "pandas": pd.__version__,
        "scikit-learn": sklearn.__version__,
        "python": platform.python_version(),
    }


def model_card(info: dict, *, folder: str | Path | None = None, dataset=None) -> str:
    """``card.md``: YAML front matter in the Hugging Face model-card format, then what the
    member is, what it is for and not for, its data, training, evaluation, calibration and
    operating point, limitations and citation.

    ``info`` is the member's ``member.json``; ``folder`` the member's folder (its
    ``calibration.json`` and ``predictions/``), ``dataset`` its training data (for
    lesion-bootstrap intervals of the split metrics); without them those parts say so."""
    calibration = read_calibration(folder) if folder is not None else None
    intervals = metric_intervals(info, folder=folder, dataset=dataset)
    lines = [
        "---",
        *yaml_lines(front_matter(info, calibration=calibration, intervals=intervals)),
        "---",
        f"# {info['name']}",
        "",
        f"Recipe `{info['recipe']}` ({info['config']['recipe']['source']}), backbone "
        f"{info['config']['recipe']['backbone']}, input {info['input']['size']} px, weights {info['weights']}.",
        "",
        "## Intended use",
        "Research on skin-lesion classification and ensembling. **Not for diagnosis**: it has not been "
        "validated clinically, and its scores on one data set do not carry over to other populations, "
        "devices or clinics.",
        "",
        *_out_of_scope(info),
        *_data_lines(info),
        *_training_lines(info),
        *_evaluation_lines(info, intervals),
        *_calibration_lines(calibration),
        *_limitations(info),
        *_citation(info),
        f"Library versions: {', '.join(f'{k} {v}' for k, v in info['versions'].items())}.",
        "",
    ]
    return "\n".join(lines)


def _training_lines(info: dict) -> list[str]:
    training = info["training"]
    return [
        "## Training",
        f"- {training['epochs_run']} epochs in {training['seconds']:.0f} s, best epoch {training['best_epoch']} "
        f"(by validation balanced accuracy), seed {info['config']['options']['seed']}",
        *_origin(info),
        f"- Class weighting `{info['config']['recipe']['class_weight']}`, sampling `{info['config']['recipe']['sampling']}`; "
        "effective training priors: "
        + ", ".join(
            f"{c} {p:.3f}"
            for c, p in zip(info["classes"], info["priors"]["effective"], strict=True)
        ),
        "",
    ]


def _origin(info: dict) -> list[str]:
    """Where an extra member's weights come from: a snapshot or the weight average of a run."""
    if isinstance(info.get("snapshot"), dict):
        snap = info["snapshot"]
        return [
            f"- Snapshot {snap['cycle']} of {snap['of']} of run `{snap['run']}`: the weights at the "
            f"end of epoch {snap['epoch']}, the end of a cosine-restart cycle (Huang et al. 2017)"
        ]
    if isinstance(info.get("swa"), dict):
        swa = info["swa"]
        return [
            f"- Stochastic weight average (Izmailov et al. 2018) of run `{swa['run']}` over the "
            f"ends of epochs {', '.join(map(str, swa['epochs']))}; batch-norm statistics "
            f"recomputed over {swa['batchnorm_batches']} batches of training images"
        ]
    return []


# --- data sets and licences -----------------------------------------------------------------


def dataset_id(name: str, spec: str) -> str:
    """The id zoo knows a data set by (a key of :data:`DATA_TERMS`), else its own name."""
    if spec.startswith("ham10000:"):
        return "ham10000"
    if spec == "demo" or spec.startswith("demo:"):
        return "demo"
    year = re.search(r"20(17|18|19|20)", Path(spec).name) if spec.startswith("isic:") else None
    return f"isic20{year.group(1)}" if year else name


def training_datasets(info: dict) -> list[dict]:
    """Each data set the member was trained on: ``name`` (:func:`dataset_id`), ``source``
    (its spec), ``images``, ``class_counts`` and ``license`` (``null`` where unknown)."""
    data = info["data"]
    sources = data.get("sources") or [data]
    found = []
    for source in sources:
        name = dataset_id(str(source.get("name", "")), str(source.get("source", "")))
        terms = DATA_TERMS.get(name)
        found.append(
            {
                "name": name,
                "source": source.get("source"),
                "images": source.get("count"),
                "class_counts": source.get("class_counts"),
                "license": terms[0] if terms else None,
            }
        )
    return found


def weights_license(datasets: list[dict]) -> str:
    """The weights inherit the training data's terms: ``other`` when a data set's terms are
    unknown to zoo, else the non-commercial licence where any data set has one, else the
    code's licence (data zoo made itself)."""
    licences = [d["license"] for d in datasets]
    if None in licences:
        return "other"
    return next((x for x in licences if x in NON_COMMERCIAL), CODE_LICENSE)


# --- metrics --------------------------------------------------------------------------------


def metric_intervals(
    info: dict, *, folder: str | Path | None, dataset, n_resamples: int = N_RESAMPLES
) -> dict:
    """``{split: {"balanced_accuracy": [low, high], "macro_auc": [low, high], "unit"}}``: 95 %
    lesion-bootstrap intervals of the split metrics of ``member.json``, from the member's
    ``predictions/<split>.csv`` and ``dataset``'s labels; empty without them (or when the
    data's classes are not the member's, as for a ``--partition`` member)."""
    if folder is None or dataset is None or list(dataset.classes) != list(info["classes"]):
        return {}
    found = {}
    for split in info.get("metrics") or {}:
        path = Path(folder) / "predictions" / f"{split}.csv"
        if not path.is_file():
            continue
        probs = read_predictions(path)
        if not probs.index.isin(dataset.records.index).all():
            continue
        part = dataset.subset(probs.index)
        truth = part.truth()
        groups = part.lesion_groups(truth.index)
        try:
            ci = bootstrap_ci(truth, probs.loc[truth.index], groups=groups, n_resamples=n_resamples)
        except ZooError:  # labels the scorer cannot read: the card says "where known"
            continue
        found[split] = {
            "balanced_accuracy": ci["balanced_accuracy"],
            "macro_auc": ci["macro_auc"],
            "unit": ci["unit"],
        }
    return found


METRIC_TYPES = (  # member.json metric, Hugging Face metric id, name
    ("balanced_accuracy", "balanced_accuracy", "Balanced accuracy"),
    ("accuracy", "accuracy", "Accuracy"),
    ("macro_auc", "roc_auc", "Macro one-vs-rest ROC AUC"),
)


def metric_entries(metrics: dict, intervals: dict) -> list[dict]:
    """The ``model-index`` metrics of one split: type, value, name and ``ci95`` where known."""
    entries = []
    for key, kind, name in METRIC_TYPES:
        if metrics.get(key) is None:
            continue
        entry = {"type": kind, "value": round(float(metrics[key]), 4), "name": name}
        if intervals.get(key):
            entry["ci95"] = [round(float(v), 4) for v in intervals[key]]
        entries.append(entry)
    return entries


# --- front matter ---------------------------------------------------------------------------


def front_matter(info: dict, *, calibration=None, intervals: dict | None = None) -> dict:
    """The card's YAML front matter as a dict (see the module and docs/formats.md)."""
    datasets = training_datasets(info)
    licence = weights_license(datasets)
    results = [
        {
            "task": {"type": "image-classification", "name": "Skin-lesion classification"},
            "dataset": {"type": datasets[0]["name"], "name": info["data"]["name"], "split": split},
            "metrics": metric_entries(m, (intervals or {}).get(split, {})),
        }
        for split, m in (info.get("metrics") or {}).items()
    ]
    front = {"license": licence}
    if licence == "other":
        front["license_name"] = "training-data-terms"
    front |= {
        "library_name": "keras",
        "pipeline_tag": "image-classification",
        "tags": _tags(info),
        "datasets": list(dict.fromkeys(d["name"] for d in datasets)),
        "metrics": [kind for _, kind, _ in METRIC_TYPES],
        "model-index": [{"name": info["name"], "results": results}],
        "zoo": _zoo_block(info, datasets, licence, calibration),
    }
    return front


DERMOSCOPIC = ("ham10000", "isic2018", "isic2019", "isic2020")  # data sets of dermoscopy


def _tags(info: dict) -> list[str]:
    """Free tags; ``dermoscopy`` only where every training data set is one of dermoscopy."""
    recipe = info["config"]["recipe"]
    tags = ["image-classification", "dermatology", "skin-lesion", "keras"]
    if all(d["name"] in DERMOSCOPIC for d in training_datasets(info)):
        tags.append("dermoscopy")
    tags += ["research-only", "not-for-diagnosis", "zoo", str(info["recipe"])]
    return list(dict.fromkeys([*tags, str(recipe["backbone"])]))


def _zoo_block(info: dict, datasets: list[dict], licence: str, calibration) -> dict:
    """zoo's own part of the front matter: licences, intended use, calibration, operating point."""
    return {
        "member": info["name"],
        "classes": list(info["classes"]),
        "code_license": CODE_LICENSE,
        "weights_license": licence,
        "weights_license_note": "the weights inherit the terms of their training data",
        "datasets": [{k: d[k] for k in ("name", "source", "images", "license")} for d in datasets],
        "intended_use": "research on skin-lesion classification; not a diagnostic device",
        "metrics_of": "raw softmax on the member's own lesion-grouped split (no TTA, no prior "
        "correction); ci95: 95 % lesion-bootstrap interval",
        "calibration": calibration_block(calibration),
        "operating_point": None if calibration is None else calibration.operating_point,
    }


def calibration_block(calibration) -> dict | None:
    if calibration is None:
        return None
    fit = calibration.fit or {}
    return {
        "method": calibration.method,
        "parameters": dict(calibration.parameters),
        "fitted_on": "val",
        "images": fit.get("images"),
        "nll_before": fit.get("nll_before"),
        "nll_after": fit.get("nll_after"),
    }


# --- YAML -----------------------------------------------------------------------------------

_PLAIN_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")


def _scalar(value) -> str:
    """A YAML scalar: ``null``, ``true``/``false``, a number, or a double-quoted string."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "null"
    if isinstance(value, bool | np.bool_):
        return "true" if value else "false"
    if isinstance(value, int | float | np.integer | np.floating):
        return json.dumps(value.item() if isinstance(value, np.generic) else value)
    return json.dumps(str(value))


def _is_scalar(value) -> bool:
    return not isinstance(value, dict | list | tuple)


def _scalar_list(value) -> bool:
    return isinstance(value, list | tuple) and all(map(_is_scalar, value))


def yaml_lines(value, indent: int = 0) -> list[str]:
    """``value`` (dicts, lists, scalars) as block YAML; lists of scalars in flow style."""
    pad = "  " * indent
    if isinstance(value, dict):
        lines = []
        for key, item in value.items():
            if not _PLAIN_KEY.match(str(key)):
                raise ZooError(f"front matter key {key!r} is not a plain YAML key.")
            if _is_scalar(item) or not item or _scalar_list(item):
                lines.append(f"{pad}{key}: {_inline(item)}")
            else:
                lines += [f"{pad}{key}:", *yaml_lines(item, indent + 1)]
        return lines
    lines = []
    for item in value:
        if _is_scalar(item):
            lines.append(f"{pad}- {_scalar(item)}")
            continue
        block = yaml_lines(item, indent + 1)
        lines += [f"{pad}- {block[0].lstrip()}", *block[1:]]
    return lines


def _inline(value) -> str:
    if isinstance(value, dict):
        return "{}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_scalar(v) for v in value) + "]"
    return _scalar(value)


# --- sections -------------------------------------------------------------------------------


def _out_of_scope(info: dict) -> list[str]:
    licence = weights_license(training_datasets(info))
    lines = [
        "## Out-of-scope use",
        "- Research software, **not a diagnostic device**: it has no regulatory clearance; do not "
        "use it to diagnose, screen, triage or treat patients, nor as a second opinion.",
        f"- Images unlike its training data (other devices, e.g. clinical photographs instead of "
        f"dermoscopy; other populations, skin types or body sites) and lesions outside its classes "
        f"({', '.join(info['classes'])}): it always answers one of these classes.",
    ]
    if licence in NON_COMMERCIAL:
        lines.append(
            f"- Commercial use: the weights inherit the training data's terms ({licence})."
        )
    return [*lines, ""]


def _data_lines(info: dict) -> list[str]:
    data = info["data"]
    counts = ", ".join(f"{c} {n}" for c, n in data["class_counts"].items())
    train = info["priors"].get("train_counts")
    lines = [
        "## Training data",
        f"- Source: `{data['source']}`{' (synthetic demo data)' if data.get('demo') else ''}",
        f"- {data['count']} images, fingerprint `{data['fingerprint']}`; classes: {counts}",
        f"- Split (lesion-grouped, stratified, seed {info['split']['seed']}): "
        + ", ".join(f"{p} {len(info['split']['ids'][p])}" for p in ("train", "val", "test")),
    ]
    if train:
        pairs = zip(info["classes"], train, strict=True)
        lines.append("- Training images per class: " + ", ".join(f"{c} {n}" for c, n in pairs))
    for d in training_datasets(info):
        terms = d["license"] or "unknown to zoo: see the data's own terms"
        lines.append(f"- Data set `{d['name']}` ({d['images']} images): licence {terms}")
    lines.append(
        f"- The code is {CODE_LICENSE}; the weights inherit the data's terms: "
        f"{weights_license(training_datasets(info))}"
    )
    return [*lines, ""]


def _interval_text(interval) -> str:
    return f" ({interval[0]:.3f}–{interval[1]:.3f})" if interval else ""


def _evaluation_lines(info: dict, intervals: dict) -> list[str]:
    lines = [
        "## Evaluation",
        "Scores of the member's own held-out splits (lesion-grouped: no lesion in two parts); "
        "in brackets the 95 % lesion-bootstrap interval where it is known. They describe this "
        "data set's population and devices only. `zoo evaluate` scores any data, with subgroups "
        "(sex, age, site, diagnosis confirmation), calibration and operating points "
        "(`metrics.json`).",
        "",
        "### Metrics (raw softmax, no TTA, no prior correction)",
        "| split | images | balanced accuracy | macro AUC | accuracy |",
        "|---|---|---|---|---|",
    ]
    for split, m in (info.get("metrics") or {}).items():
        ci = intervals.get(split, {})
        auc = "–" if m.get("macro_auc") is None else f"{m['macro_auc']:.3f}"
        lines.append(
            f"| {split} | {m.get('n_images', '–')} | {m['balanced_accuracy']:.3f}"
            f"{_interval_text(ci.get('balanced_accuracy'))} | {auc}"
            f"{_interval_text(ci.get('macro_auc'))} | {m['accuracy']:.3f} |"
        )
    return [*lines, ""]


def _calibration_lines(calibration) -> list[str]:
    lines = ["## Calibration and operating point"]
    if calibration is None:
        return [*lines, "Not recorded: `zoo calibrate NAME` fits and stores one.", ""]
    fit = calibration.fit or {}
    params = ", ".join(
        f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
        for k, v in calibration.parameters.items()
    )
    settings = calibration.settings
    lines.append(
        f"- Calibration `{calibration.method}` ({params or 'no parameters'}), chosen on the "
        f"validation split ({fit.get('images', '–')} images) by lesion-grouped cross-validated "
        f"NLL, for outputs with TTA `{settings.get('tta')}` and prior correction "
        f"{'on' if settings.get('prior_correction') else 'off'}"
    )
    point = calibration.operating_point
    if point is None:
        lines.append("- No melanoma operating point (no melanoma in the classes or validation)")
    else:
        val = point.get("val") or {}
        lines.append(
            f"- Operating point served: {point['class']} called at probability >= "
            f"{point['threshold']:.8g}, chosen on validation for {point['criterion']} "
            f"{'at least ' if point.get('at_least') else ''}{point['value']:g}; there "
            f"sensitivity {val.get('sensitivity', float('nan')):.3f}, specificity "
            f"{val.get('specificity', float('nan')):.3f}"
        )
    return [*lines, ""]


def _limitations(info: dict) -> list[str]:
    lines = [
        "## Limitations",
        "- Scores come from one data set's split: the same clinics, devices and population as "
        "training. Expect lower and different performance elsewhere; validate on local data first.",
        "- Labels are as the source gives them; not every diagnosis is confirmed by "
        "histopathology (HAM10000: about half are follow-up, expert consensus or confocal).",
        "- Public dermoscopy sets hold mostly light skin; performance on darker skin is unknown.",
        '- It never says "none of these": use `zoo predict --ood-scores` to flag unusual images.',
    ]
    train = info["priors"].get("train_counts") or []
    few = [
        f"{c} ({n})"
        for c, n in zip(info["classes"], train, strict=False)
        if n < FEW_TRAINING_IMAGES
    ]
    if few:
        lines.append(f"- Few training images (< {FEW_TRAINING_IMAGES}): {', '.join(few)}.")
    if info["data"].get("demo"):
        lines.append("- Trained on synthetic demo images: for testing the software only.")
    return [*lines, ""]


def _citation(info: dict) -> list[str]:
    import zoo

    lines = [
        "## Citation",
        f"- This member: `{info['name']}`, trained with zoo {zoo.__version__} "
        "(a Keras model zoo for skin-lesion classification, Apache-2.0).",
        f"- Recipe: {info['config']['recipe']['source']}",
    ]
    for d in training_datasets(info):
        if d["name"] in DATA_TERMS:
            lines.append(f"- Data `{d['name']}`: {DATA_TERMS[d['name']][1]}")
    return [*lines, ""]

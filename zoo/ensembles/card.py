"""The card of a target in the Hugging Face model-card format, for ensembles as for members.

A member's ``card.md`` is written by :mod:`zoo.training.card`; :func:`ensemble_front_matter`
gives an ensemble's the same front matter (licences follow the training data, metrics with
the ensemble's validation and test figures), and :func:`target_card` gives any target's card
— front matter as a dict for machines, the markdown for people — to ``zoo serve``'s ``/info``
and to the export folder.
"""

from __future__ import annotations

from pathlib import Path

from zoo.store import EnsembleRecord
from zoo.store.calibration import read_calibration
from zoo.training.card import (
    CODE_LICENSE,
    DERMOSCOPIC,
    METRIC_TYPES,
    calibration_block,
    front_matter,
    metric_entries,
    model_card,
    training_datasets,
    weights_license,
    yaml_lines,
)

CARD_FILE = "card.md"


def ensemble_front_matter(info: dict, *, calibration=None) -> dict:
    """The YAML front matter of an ensemble's card as a dict (``info``: its ``ensemble.json``)."""
    datasets = training_datasets(info)
    licence = weights_license(datasets)
    results = [
        {
            "task": {"type": "image-classification", "name": "Skin-lesion classification"},
            "dataset": {"type": datasets[0]["name"], "name": info["data"]["name"], "split": split},
            "metrics": metric_entries(m, {}),
        }
        for split, m in (info.get("metrics") or {}).items()
    ]
    tags = ["image-classification", "dermatology", "skin-lesion", "keras", "ensemble"]
    if all(d["name"] in DERMOSCOPIC for d in datasets):
        tags.append("dermoscopy")
    front = {"license": licence}
    if licence == "other":
        front["license_name"] = "training-data-terms"
    point = info.get("operating_point")
    front |= {
        "library_name": "keras",
        "pipeline_tag": "image-classification",
        "tags": [*tags, "research-only", "not-for-diagnosis", "zoo", str(info["rule"])],
        "datasets": list(dict.fromkeys(d["name"] for d in datasets)),
        "metrics": [kind for _, kind, _ in METRIC_TYPES],
        "model-index": [{"name": info["name"], "results": results}],
        "zoo": {
            "ensemble": info["name"],
            "rule": info["rule"],
            "members": [
                {"name": m["name"], "weight": info["weights"].get(m["name"], m.get("weight"))}
                for m in info["members"]
            ],
            "classes": list(info["classes"]),
            "code_license": CODE_LICENSE,
            "weights_license": licence,
            "weights_license_note": "the weights inherit the terms of their training data",
            "datasets": [
                {k: d[k] for k in ("name", "source", "images", "license")} for d in datasets
            ],
            "intended_use": "research on skin-lesion classification; not a diagnostic device",
            "metrics_of": f"the ensemble's outputs (TTA {info['tta']}, prior correction "
            f"{'on' if info['prior_correction'] else 'off'}) on its members' split",
            "calibration": calibration_block(calibration),
            "operating_point": (calibration.operating_point if calibration is not None else point),
        },
    }
    return front


def front_matter_lines(front: dict) -> list[str]:
    """The front matter block of a card: ``---``, the YAML, ``---``."""
    return ["---", *yaml_lines(front), "---"]


def target_card(target) -> tuple[dict, str]:
    """The card of a member or ensemble: its front matter (with the calibration it serves now)
    and its markdown (``card.md`` as saved, else written now)."""
    folder = Path(target.path)
    calibration = read_calibration(folder)
    if target.kind == "ensemble":
        front = ensemble_front_matter(target.info, calibration=calibration)
    else:
        front = front_matter(target.member.info, calibration=calibration)
    file = folder / CARD_FILE
    if file.is_file():
        markdown = file.read_text(encoding="utf-8")
    elif target.kind == "member":
        markdown = model_card(target.member.info, folder=folder)
    else:
        markdown = ensemble_card(target.info)
    return front, markdown


def card_body(markdown: str) -> str:
    """``markdown`` without its YAML front matter (cards saved before it had one have none)."""
    if markdown.startswith("---\n"):
        end = markdown.find("\n---\n", 4)
        if end >= 0:
            return markdown[end + 5 :].lstrip("\n")
    return markdown


def fmt_score(value: float | None) -> str:
    """A score to 3 decimals, "–" where undefined."""
    return "–" if value is None else f"{value:.3f}"


def ensemble_card(info: dict) -> str:
    """``card.md``: what the ensemble combines, how, how it scores, what it is for."""
    val = info["metrics"]["val"]
    data = info["data"]
    lines = [
        *front_matter_lines(ensemble_front_matter(info)),
        f"# {info['name']}",
        "",
        info.get("description") or _default_description(info),
        "",
        "## Intended use",
        "Research on skin-lesion classification and ensembling. **Not for diagnosis**: it has not "
        "been validated clinically, and its scores on one data set do not carry over to other "
        "populations, devices or clinics.",
        "",
        "## Combination",
        f"- Rule `{info['rule']}`"
        + (f" with options {info['options']}" if info["options"] else "")
        + ", fitted on the validation split only (never on the test split)",
        f"- Test-time augmentation `{info['tta']}`; prior correction "
        + ("per member, to uniform priors" if info["prior_correction"] else "off"),
        *reduction_lines(info),
        f"- Data: `{data.get('source')}`, fingerprint `{data.get('fingerprint')}`; "
        f"validation {len(info['split']['ids']['val'])} images, test "
        f"{len(info['split']['ids']['test'])} images",
        "",
        "## Members (validation, after TTA and prior correction)",
        "| member | weight | balanced accuracy | macro AUC |",
        "|---|---|---|---|",
    ]
    for m in info["members"]:
        mv = m["metrics"]["val"]
        lines.append(
            f"| {m['name']} | {m['weight']:.3f} | {fmt_score(mv['balanced_accuracy'])} | "
            f"{fmt_score(mv['macro_auc'])} |"
        )
    lines.append(
        f"| **ensemble** | 1.000 | {fmt_score(val['balanced_accuracy'])} | {fmt_score(val['macro_auc'])} |"
    )
    lines += [
        "",
        "Member files are recorded by sha256; the ensemble refuses to run when a member changes. "
        "Rebuild it with `zoo ensemble build` after retraining a member.",
        "",
    ]
    return "\n".join(lines)


def _default_description(info: dict) -> str:
    """``A greedy ensemble of 2 members; c, d got weight 0.``: counts the members it uses."""
    used = EnsembleRecord.from_dict(info).used_member_names
    unused = [m["name"] for m in info["members"] if m["name"] not in used]
    dropped = f"; {', '.join(unused)} got weight 0" if unused else ""
    return f"A {info['rule']} ensemble of {len(used)} member{'s' * (len(used) != 1)}{dropped}."


def reduction_note(info: dict) -> str:
    """One line for an ensemble that reduces to one member (``ensemble.json`` ``reduces_to``)."""
    member = info["reduces_to"]
    return (
        f"ensemble {info['name']} puts all its weight on member {member}: it predicts what "
        f"{member} does with TTA {info['tta']} and prior correction "
        f"{'on' if info['prior_correction'] else 'off'}"
    )


def reduction_lines(info: dict) -> list[str]:
    return (
        [f"- **Reduces to one member**: {reduction_note(info)}"] if info.get("reduces_to") else []
    )

"""zoo.training.card: card.md's YAML front matter (Hugging Face format) and its sections."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from zoo.data import load_dataset
from zoo.scoring.metrics import bootstrap_ci
from zoo.store.calibration import CalibrationRecord
from zoo.training.card import model_card, yaml_lines

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "v1-member" / "small_cnn.demo.s0"
SECTIONS = (
    "## Intended use",
    "## Out-of-scope use",
    "## Training data",
    "## Training",
    "## Evaluation",
    "## Calibration and operating point",
    "## Limitations",
    "## Citation",
)


def info() -> dict:
    return json.loads((FIXTURE / "member.json").read_text())


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def parse_subset(lines: list[str]):
    """A reader of the YAML subset card.py writes (block mappings and lists, JSON scalars and
    flow lists): checks the front matter without PyYAML, which is not a zoo dependency."""
    lines = list(lines)

    def block(i: int, indent: int):
        if lines[i].lstrip().startswith("- "):
            items = []
            while i < len(lines) and _indent(lines[i]) == indent and lines[i].lstrip()[:2] == "- ":
                rest = lines[i].lstrip()[2:]
                if rest[:1] in '"[{-0123456789' or rest in ("null", "true", "false"):
                    items.append(json.loads(rest))
                    i += 1
                else:  # a mapping item: its first key on the dash line
                    lines[i] = " " * (indent + 2) + rest
                    value, i = block(i, indent + 2)
                    items.append(value)
            return items, i
        mapping = {}
        while i < len(lines) and _indent(lines[i]) == indent and lines[i].lstrip()[:2] != "- ":
            key, _, rest = lines[i].strip().partition(": ")
            if rest:
                mapping[key], i = json.loads(rest), i + 1
            else:
                mapping[key.rstrip(":")], i = block(i + 1, _indent(lines[i + 1]))
        return mapping, i

    value, end = block(0, 0)
    assert end == len(lines), lines[end]
    return value


def front_lines(card: str) -> list[str]:
    assert card.startswith("---\n")
    return card.split("---\n")[1].splitlines()


def front_of(card: str) -> dict:
    """The front matter read with PyYAML where it is installed, and always with the subset
    reader (the two must agree)."""
    front = parse_subset(front_lines(card))
    try:
        import yaml
    except ImportError:
        return front
    assert yaml.safe_load("\n".join(front_lines(card))) == front
    return front


def test_front_matter_parses_as_yaml_with_pyyaml():
    yaml = pytest.importorskip(
        "yaml", reason="PyYAML is not a zoo dependency; pip install pyyaml to check with it"
    )
    front = yaml.safe_load("\n".join(front_lines(model_card(info()))))
    assert front["pipeline_tag"] == "image-classification" and front["license"] == "apache-2.0"


def test_front_matter_holds_the_hugging_face_fields():
    front = front_of(model_card(info()))
    assert front["license"] == "apache-2.0"  # synthetic demo data, made by zoo's code
    assert front["pipeline_tag"] == "image-classification"
    assert front["library_name"] == "keras"
    assert {"image-classification", "dermatology", "research-only", "small_cnn"} <= set(
        front["tags"]
    )
    assert front["datasets"] == ["demo"] and "dermoscopy" not in front["tags"]
    assert front["metrics"] == ["balanced_accuracy", "accuracy", "roc_auc"]
    (model,) = front["model-index"]
    assert model["name"] == "small_cnn.demo.s0"
    splits = {r["dataset"]["split"]: r for r in model["results"]}
    assert set(splits) == {"val", "test"}
    assert splits["test"]["task"]["type"] == "image-classification"
    test_metrics = {m["type"]: m for m in splits["test"]["metrics"]}
    assert test_metrics["balanced_accuracy"]["value"] == round(
        info()["metrics"]["test"]["balanced_accuracy"], 4
    )
    assert "ci95" not in test_metrics["balanced_accuracy"]  # no data given: not known
    zoo = front["zoo"]
    assert zoo["code_license"] == "apache-2.0" and zoo["weights_license"] == "apache-2.0"
    assert zoo["datasets"] == [
        {"name": "demo", "source": "demo", "images": 420, "license": "apache-2.0"}
    ]
    assert zoo["calibration"] is None and zoo["operating_point"] is None


def test_sections_keep_the_existing_content():
    card = model_card(info())
    body = card.split("---\n", 2)[2]
    assert body.startswith("# small_cnn.demo.s0\n")
    positions = [body.index(s + "\n") for s in SECTIONS]
    assert positions == sorted(positions)
    assert "**Not for diagnosis**" in body and "not a diagnostic device" in body
    assert "- Split (lesion-grouped, stratified, seed 0): train 294, val 42, test 84" in body
    assert "| test | 84 | 0.695 | 0.984 | 0.798 |" in body
    assert "Training images per class: akiec 28, bcc 32" in body
    assert body.rstrip().endswith("python 3.11.7.")


@pytest.mark.parametrize(
    ("source", "name", "licence"),
    [
        ("ham10000:/data/HAM10000", "ham10000", "cc-by-nc-4.0"),
        ("isic:/data/ISIC_2019_Training_GroundTruth.csv", "isic2019", "cc-by-nc-4.0"),
        ("folder:/data/mine", "mine", "other"),
    ],
)
def test_the_weights_inherit_the_datas_terms(source, name, licence):
    member = info()
    member["data"].update(source=source, name=name, demo=False)
    card = model_card(member)
    front = front_of(card)
    assert front["license"] == licence and front["zoo"]["weights_license"] == licence
    assert front["zoo"]["code_license"] == "apache-2.0"
    assert front["datasets"] == [name]
    assert ("dermoscopy" in front["tags"]) is (licence != "other")  # known dermoscopy sets only
    if licence == "other":
        assert front["license_name"] == "training-data-terms"
        assert front["zoo"]["datasets"][0]["license"] is None
        assert "unknown to zoo" in card
    else:
        assert "Commercial use: the weights inherit the training data's terms" in card
        assert "doi:10.1038/sdata.2018.161" in card or "arXiv:1908.02288" in card


def test_combined_sources_list_each_data_set():
    member = info()
    member["data"]["sources"] = [
        {"name": "ham", "source": "ham10000:/d/ham", "count": 300, "class_counts": {}},
        {"name": "web", "source": "folder:/d/web", "count": 120, "class_counts": {}},
    ]
    front = front_of(model_card(member))
    assert front["datasets"] == ["ham10000", "web"]
    assert [d["license"] for d in front["zoo"]["datasets"]] == ["cc-by-nc-4.0", None]
    assert front["license"] == "other"  # one source's terms are unknown to zoo


def test_calibration_operating_point_and_intervals_from_the_member(tmp_path, demo_workspace):
    folder = tmp_path / "member"
    shutil.copytree(FIXTURE, folder)
    CalibrationRecord.from_dict(
        {
            "classes": info()["classes"],
            "settings": {"tta": "none", "prior_correction": True},
            "method": "temperature",
            "parameters": {"temperature": 1.25},
            "fit": {"images": 42, "lesions": 30, "nll_before": 0.9, "nll_after": 0.8},
            "operating_point": {
                "class": "mel",
                "criterion": "sensitivity",
                "value": 0.9,
                "at_least": True,
                "threshold": 0.125,
                "chosen_on": "val",
                "val": {"sensitivity": 0.95, "specificity": 0.7},
            },
        }
    ).write(folder / "calibration.json")
    demo = load_dataset("demo", workspace=demo_workspace)
    assert demo.fingerprint == info()["data"]["fingerprint"]
    card = model_card(info(), folder=folder, dataset=demo)
    front = front_of(card)
    assert front["zoo"]["calibration"]["method"] == "temperature"
    assert front["zoo"]["calibration"]["parameters"] == {"temperature": 1.25}
    assert front["zoo"]["operating_point"]["threshold"] == 0.125
    assert "mel called at probability >= 0.125" in card
    assert "sensitivity 0.950, specificity 0.700" in card
    test = next(r for r in front["model-index"][0]["results"] if r["dataset"]["split"] == "test")
    interval = {m["type"]: m.get("ci95") for m in test["metrics"]}
    part = demo.subset(json.loads((FIXTURE / "member.json").read_text())["split"]["ids"]["test"])
    from zoo.store.predictions import read_predictions

    probs = read_predictions(FIXTURE / "predictions" / "test.csv")
    truth = part.truth().loc[probs.index]
    expected = bootstrap_ci(truth, probs, groups=part.lesion_groups(truth.index))
    assert interval["balanced_accuracy"] == [round(v, 4) for v in expected["balanced_accuracy"]]
    assert interval["roc_auc"] == [round(v, 4) for v in expected["macro_auc"]]
    assert interval["accuracy"] is None
    low, high = expected["balanced_accuracy"]
    assert f"| test | 84 | 0.695 ({low:.3f}–{high:.3f}) |" in card


def test_yaml_writer_quotes_any_text():
    value = {
        "text": 'a "quoted": value\nwith # and: colons, ünïcode',
        "empty": [],
        "nothing": {},
        "flags": [True, False, None, 1, 2.5],
        "nested": [{"a": 1, "b": [{"c": "d"}]}, "plain"],
    }
    assert parse_subset(yaml_lines(value)) == value
    yaml = pytest.importorskip("yaml", reason="PyYAML is not a zoo dependency")
    assert yaml.safe_load("\n".join(yaml_lines(value))) == value


def test_machine_and_commit_name_what_a_cost_was_measured_on():
    import os
    import subprocess
    from pathlib import Path

    from zoo.training.card import machine, source_commit

    assert machine().endswith(f", {os.cpu_count()} cores")
    head = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        cwd=Path(__file__).parent,
        capture_output=True,
        text=True,
    )
    commit = source_commit()
    if head.returncode == 0:
        assert commit.rstrip("+") == head.stdout.strip()
    else:
        assert commit == "unknown"

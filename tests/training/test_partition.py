"""Esteva's taxonomy partition: the rule on a hand-made tree, the fine demo set, a member."""

from __future__ import annotations

import json

import numpy as np
import pytest

from zoo.data import load_dataset
from zoo.errors import ZooError
from zoo.training.partition import Tree, load_tree, parse_partition, partition, plan_partition

# root ─┬─ a ─┬─ a1 ─┬─ a1x
#       │     │      └─ a1y
#       │     └─ a2
#       └─ b ─┬─ b1
#             └─ b2
TREE = Tree(
    root="root",
    children={
        "root": ("a", "b"),
        "a": ("a1", "a2"),
        "a1": ("a1x", "a1y"),
        "b": ("b1", "b2"),
    },
    inference=("a", "b"),
)
COUNTS = {"a1x": 30, "a1y": 50, "a2": 10, "b1": 5, "b2": 6}


@pytest.mark.parametrize(
    ("max_class_size", "expected"),
    [
        # everything fits: the inference classes themselves (never above them)
        (1000, {"a": ["a1x", "a1y", "a2"], "b": ["b1", "b2"]}),
        # a (90) is too big, a1 (80) fits; b (11) fits
        (80, {"a1": ["a1x", "a1y"], "a2": ["a2"], "b": ["b1", "b2"]}),
        # a1 (80) too big: its leaves; b (11) too big: its leaves
        (10, {"a1x": ["a1x"], "a1y": ["a1y"], "a2": ["a2"], "b1": ["b1"], "b2": ["b2"]}),
        # a leaf bigger than the limit is still a class (it cannot be divided)
        (1, {"a1x": ["a1x"], "a1y": ["a1y"], "a2": ["a2"], "b1": ["b1"], "b2": ["b2"]}),
    ],
)
def test_partition_rule_on_a_hand_made_tree(max_class_size, expected):
    got = partition(TREE, COUNTS, max_class_size)
    assert {k: sorted(v) for k, v in got.items()} == {k: sorted(v) for k, v in expected.items()}
    # every label with images lies under exactly one training class (listed: labels with images)
    covered = [label for labels in got.values() for label in labels]
    assert sorted(covered) == sorted(COUNTS)


def test_nodes_without_images_are_dropped_and_labelled_inner_nodes_refused():
    got = partition(TREE, {"a1x": 5, "b1": 5, "b2": 5}, 8)
    assert list(got) == ["a", "b1", "b2"]  # a (5) fits; a2, a1y have no images
    assert got["a"] == ["a1x"]
    with pytest.raises(ZooError, match=r"labelled 'b'.*b1, b2"):
        partition(TREE, {"b": 4, "b1": 5, "b2": 5}, 8)


def test_summation_matrix_and_label_map():
    plan = plan_partition(
        ["nv_junctional"] * 50 + ["nv_dermal"] * 50 + ["mel"] * 20, "max_class_size=60"
    )
    assert plan.training_classes == ["mel", "nv_junctional", "nv_dermal"]
    matrix = plan.summation()
    assert matrix.shape == (3, 7) and (matrix.sum(axis=1) == 1).all()
    nv = plan.inference.index("nv")
    assert matrix[:, nv].tolist() == [0, 1, 1]
    probabilities = np.array([[0.2, 0.5, 0.3]])
    assert (probabilities @ matrix)[0, nv] == pytest.approx(0.8)
    assert plan.label_map() == {"mel": "mel", "nv_junctional": "nv", "nv_dermal": "nv"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("max_class_size=abc", "whole number"),
        ("size=3", "expected max_class_size=N"),
        ("max_class_size=0", "at least 1"),
    ],
)
def test_bad_partition_option(text, message):
    with pytest.raises(ZooError, match=message):
        plan_partition(["mel", "nv"], text)


def test_labels_outside_the_tree_and_default_taxonomy():
    assert parse_partition("max_class_size=5")["taxonomy"].endswith("taxonomy.toml")
    with pytest.raises(ZooError, match="MEL are not in the taxonomy"):
        plan_partition(["MEL"], "max_class_size=5")
    tree = load_tree()
    assert set(tree.inference) == {"akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"}


def test_fine_demo_set_leaves_the_default_one_alone(demo_workspace, tmp_path):
    demo = load_dataset("demo", workspace=demo_workspace)
    assert demo.fingerprint == "46e391accb3830d0"  # the default demo set, as before
    fine = load_dataset("demo:fine", workspace=tmp_path)
    assert fine.ids == demo.ids and (fine.records["group"] == demo.records["group"]).all()
    tree = load_tree()
    inference = {
        label: next(c for c in tree.inference if label in tree.below(c)) for label in fine.classes
    }
    coarse = fine.records["label"].map(inference)
    assert (coarse == demo.records["label"]).all()  # fine labels refine the default ones
    assert set(fine.classes) >= {"nv_junctional", "nv_compound", "nv_dermal"}
    assert set(fine.classes) >= {"bkl_seborrheic", "bkl_solar_lentigo"}


@pytest.mark.slow
def test_partition_member_answers_in_inference_classes(tmp_path):
    from zoo.cli.main import main

    ws = tmp_path / "ws"
    base = ["--workspace", str(ws), "--quiet"]
    train = ["train", "small_cnn", "--data", "demo:fine", "--partition", "max_class_size=60"]
    assert main([*train, "--image-size", "32", "--epochs", "1", "--weights", "none", *base]) == 0
    member = ws / "members" / "small_cnn.demo-fine.s0"
    info = json.loads((member / "member.json").read_text())
    assert info["classes"] == ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]
    names = [c["name"] for c in info["partition"]["training_classes"]]
    assert {"nv_junctional", "nv_compound", "nv_dermal", "bkl"} <= set(names)
    by_inference = dict.fromkeys(info["classes"], 0)
    for count, node in zip(
        info["partition"]["train_counts"], info["partition"]["training_classes"], strict=True
    ):
        by_inference[node["inference_class"]] += count
    assert info["priors"]["train_counts"] == list(by_inference.values())
    assert len(info["priors"]["effective"]) == 7
    assert sum(info["priors"]["effective"]) == pytest.approx(1.0)
    out = tmp_path / "eval"
    assert (
        main(["evaluate", "small_cnn.demo-fine.s0", "--out", str(out), "--bootstrap", "0", *base])
        == 0
    )
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["data"]["training_data"] is True and metrics["split"] == "test"
    assert metrics["classes"] == info["classes"]
    assert sum(metrics["class_counts"].values()) == info["metrics"]["test"]["n_images"]

"""zoo.data.splits: leak-free (lesion-grouped), stratified, seeded splits and folds."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from zoo.data.loading import load_dataset
from zoo.data.splits import PARTS, Split, make_split
from zoo.errors import DataProblems, ZooError


@pytest.fixture(scope="module")
def demo_set(demo_workspace):
    return load_dataset("demo", workspace=demo_workspace)


def _groups(dataset, ids) -> set[str]:
    return set(dataset.records.loc[list(ids), "group"])


def _assert_leak_free_and_complete(dataset, split: Split) -> None:
    parts = {p: split.ids(p) for p in PARTS}
    for p in PARTS:
        assert len(set(parts[p])) == len(parts[p])  # no image twice in one part
    everything = [i for p in PARTS for i in parts[p]]
    assert sorted(everything) == sorted(dataset.ids)  # every image in exactly one part
    groups = {p: _groups(dataset, parts[p]) for p in PARTS}
    assert not groups["train"] & groups["val"]
    assert not groups["train"] & groups["test"]
    assert not groups["val"] & groups["test"]
    for p in PARTS:
        labels = set(dataset.records.loc[list(parts[p]), "label"])
        assert labels == set(dataset.classes), f"{p} lacks {set(dataset.classes) - labels}"


def test_demo_split_is_grouped_stratified_and_70_10_20(demo_set):
    split = make_split(demo_set, seed=0)
    _assert_leak_free_and_complete(demo_set, split)
    n = len(demo_set)
    assert len(split.train) / n == pytest.approx(0.7, abs=0.05)
    assert len(split.val) / n == pytest.approx(0.1, abs=0.04)
    assert len(split.test) / n == pytest.approx(0.2, abs=0.04)
    # stratified: each class keeps roughly its share of the test part
    counts = demo_set.class_counts()
    test_counts = demo_set.subset(split.test).class_counts()
    for c, total in counts.items():
        assert test_counts[c] / total == pytest.approx(0.2, abs=0.1), c


def test_same_seed_same_split_other_seed_other_split(demo_set):
    first, again = make_split(demo_set, seed=3), make_split(demo_set, seed=3)
    assert first == again
    other = make_split(demo_set, seed=4)
    assert set(other.test) != set(first.test)
    _assert_leak_free_and_complete(demo_set, other)


def test_k_fold(demo_set):
    folds = [make_split(demo_set, seed=0, fold=k, folds=4) for k in range(4)]
    plain = make_split(demo_set, seed=0)
    for split in folds:
        _assert_leak_free_and_complete(demo_set, split)
        assert split.test == plain.test  # the test part does not depend on the fold
        assert (split.folds, split.seed) == (4, 0)
    vals = [set(s.val) for s in folds]
    for i in range(4):
        for j in range(i + 1, 4):
            assert not vals[i] & vals[j]  # validation folds are disjoint
    rest = set(demo_set.ids) - set(plain.test)
    assert set().union(*vals) == rest  # and together cover everything but the test part
    for split in folds:
        assert set(split.train) == rest - set(split.val)
    assert [s.fold for s in folds] == [0, 1, 2, 3]


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"fold": 1}, "--fold needs --folds"),
        ({"fold": 0, "folds": 1}, "N ≥ 2"),
        ({"fold": 5, "folds": 5}, "0 ≤ K < N"),
        ({"folds": 3}, "fold=None"),
        ({"test_fraction": 0.6}, "test fraction"),
    ],
)
def test_bad_split_options(demo_set, kwargs, pattern):
    with pytest.raises(ZooError, match=pattern) as info:
        make_split(demo_set, **kwargs)
    assert not isinstance(info.value, DataProblems)  # an option error, not a data problem


def test_split_round_trips_through_json(demo_set):
    split = make_split(demo_set, seed=1, fold=2, folds=5)
    data = json.loads(json.dumps(split.to_dict()))
    assert set(data["ids"]) == set(PARTS)
    assert Split.from_dict(data) == split
    with pytest.raises(ZooError, match="unknown split 'training'"):
        split.ids("training")


def test_class_with_too_few_lesions_is_an_error_naming_it(tmp_path, write_ham10000):
    folder = write_ham10000(tmp_path / "ham", classes=("bcc", "mel", "nv"), lesions=8)
    frame = pd.read_csv(folder / "HAM10000_metadata.csv")
    frame.loc[frame["dx"] == "mel", "lesion_id"] = ["HAM_mel_0"] * 4 + ["HAM_mel_1"] * 4
    frame.to_csv(folder / "HAM10000_metadata.csv", index=False)
    dataset = load_dataset(str(folder), workspace=tmp_path)
    dataset.classes = ("bcc", "mel", "nv")  # the HAM classes without any image aside
    with pytest.raises(DataProblems) as info:
        make_split(dataset)
    assert info.value.problems == [
        "class mel has 2 lesion(s) (8 image(s)), fewer than the 3 that a train/val/test split "
        "needs; add images of it or drop the class"
    ]
    with pytest.raises(DataProblems) as info:
        make_split(dataset, fold=0, folds=9)
    assert [p.split(" has")[0] for p in info.value.problems] == [
        "class bcc",
        "class mel",
        "class nv",
    ]
    assert "fewer than the 9 that 9 folds plus a test part needs" in info.value.problems[0]


def test_missing_classes_of_a_label_set_are_an_error(tmp_path, write_ham10000):
    """HAM10000's seven classes with images of only three: the split says which are empty."""
    folder = write_ham10000(tmp_path / "ham", classes=("bcc", "mel", "nv"), lesions=8)
    with pytest.raises(DataProblems) as info:
        make_split(load_dataset(str(folder), workspace=tmp_path))
    named = [p.split(" has")[0].removeprefix("class ") for p in info.value.problems]
    assert named == ["akiec", "bkl", "df", "vasc"]
    assert "akiec has 0 lesion(s) (0 image(s))" in str(info.value)


def test_tiny_data_set_is_a_zoo_error_not_a_crash(tmp_path, write_ham10000):
    """Five lesions per class pass the lesion count but are too few for 8 inner folds."""
    folder = write_ham10000(tmp_path / "ham", lesions=5)
    with pytest.raises(ZooError, match="add images"):
        make_split(load_dataset(str(folder), workspace=tmp_path))


@pytest.mark.realdata
@pytest.mark.slow
def test_real_ham10000_split_is_leak_free(ham10000_dir, tmp_path):
    dataset = load_dataset(f"ham10000:{ham10000_dir}", workspace=tmp_path)
    assert dataset.problems == []
    assert len(dataset) == 10015
    assert dataset.records["group"].nunique() == 7470
    split = make_split(dataset, seed=0)
    _assert_leak_free_and_complete(dataset, split)  # no lesion_id in two parts, all assigned
    assert len(split.train) + len(split.val) + len(split.test) == 10015
    assert len(split.test) / 10015 == pytest.approx(0.2, abs=0.01)
    assert len(split.val) / 10015 == pytest.approx(0.1, abs=0.01)
    for part in PARTS:
        counts = dataset.subset(split.ids(part)).class_counts()
        assert min(counts.values()) >= 10, (part, counts)

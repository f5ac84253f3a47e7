"""Several sources in one run: data TOML, label maps, namespaced groups, duplicates, data check."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from zoo.cli.main import main
from zoo.data import load_dataset
from zoo.data.combined import UNKNOWN_CLASS, join_specs
from zoo.data.demo import demo_folder
from zoo.data.duplicates import (
    altered_copy,
    duplicate_report,
    image_hashes,
    merge_duplicates,
    near_pairs,
)
from zoo.data.sources import HAM10000_CLASSES
from zoo.data.splits import keep_together, make_split
from zoo.errors import ZooError


def write_toml(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def two_sources(tmp_path, write_ham10000) -> dict:
    """Source A in HAM10000 classes; source B with its own label names and the same lesion ids."""
    a = write_ham10000(tmp_path / "a", classes=("mel", "nv", "bkl"), lesions=3)
    b = write_ham10000(tmp_path / "b", classes=("melanoma", "naevus"), lesions=3)
    meta = pd.read_csv(b / "HAM10000_metadata.csv")
    listing = meta.rename(columns={"image_id": "image", "dx": "label", "lesion_id": "group"})
    listing[["image", "label", "group"]].to_csv(b / "list.csv", index=False)
    label_map = tmp_path / "b.json"
    label_map.write_text(json.dumps({"melanoma": "mel", "naevus": "nv"}))
    return {"a": a, "b": b / "list.csv", "map": label_map, "root": tmp_path}


def test_data_toml_maps_labels_and_namespaces_ids_and_groups(two_sources, tmp_path):
    toml = write_toml(
        tmp_path / "data.toml",
        'classes = ["mel", "nv", "bkl"]\n'
        '[[sources]]\nname = "ham"\ndata = "ham10000:a"\n'
        '[[sources]]\nname = "other"\ndata = "csv:b/list.csv"\nlabel_map = "b.json"\nweight = 2\n',
    )
    dataset = load_dataset(str(toml), workspace=tmp_path)
    assert dataset.classes == ("mel", "nv", "bkl")
    assert len(dataset) == 9 + 6
    records = dataset.records
    assert set(records["source"]) == {"ham", "other"}
    assert all(i.startswith(("ham/", "other/")) for i in dataset.ids)
    assert all(
        g.split("/")[0] == s for g, s in zip(records["group"], records["source"], strict=True)
    )
    # both readers number their files alike: the ids and lesion ids collide until namespaced
    assert "ham/ISIC_0000000" in dataset.ids and "other/ISIC_0000000" in dataset.ids
    assert records.loc["other/ISIC_0000000", "label"] == "mel"
    assert set(records.loc[records["source"] == "other", "label"]) == {"mel", "nv"}
    ham, other = dataset.sources
    assert (
        ham["fingerprint"]
        == load_dataset(f"ham10000:{two_sources['a']}", workspace=tmp_path).fingerprint
    )
    assert other["weight"] == 2.0 and other["label_map"] == str(two_sources["map"])
    assert other["label_coverage"] == {
        "melanoma": {"class": "mel", "images": 3},
        "naevus": {"class": "nv", "images": 3},
    }
    assert dataset.describe()["sources"][1]["count"] == 6


def test_inline_label_map_and_ignore_unmapped(two_sources, tmp_path):
    toml = write_toml(
        tmp_path / "data.toml",
        '[[sources]]\ndata = "ham10000:a"\n'
        '[[sources]]\ndata = "csv:b/list.csv"\nignore_unmapped = true\n'
        '[sources.label_map]\nmelanoma = "mel"\n',
    )
    dataset = load_dataset(str(toml), workspace=tmp_path)
    names = [s["name"] for s in dataset.sources]
    assert names == ["ham10000", "list"]
    second = dataset.records[dataset.records["source"] == "list"]
    assert set(second["label"]) == {"mel"} and len(second) == 3
    assert dataset.sources[1]["label_coverage"]["naevus"] == {"class": None, "images": 3}


def test_repeated_data_takes_the_first_sources_classes(two_sources, tmp_path):
    a, b = f"ham10000:{two_sources['a']}", f"csv:{two_sources['b']}"
    assert join_specs([a]) == a
    dataset = load_dataset(join_specs([a, a]), workspace=tmp_path)
    assert len(dataset) == 18 and dataset.classes == HAM10000_CLASSES
    assert [s["name"] for s in dataset.sources] == ["ham10000", "ham10000-2"]  # made unique
    with pytest.raises(ZooError, match=r"source list .*'melanoma' \(3 images\).*label_map"):
        load_dataset(join_specs([a, b]), workspace=tmp_path)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", r"no \[\[sources\]\]"),
        ('[[sources]]\ndata = "demo"\nwieght = 2\n', "unknown key.*wieght"),
        ('[[sources]]\ndata = "demo"\nweight = -1\n', "weight must be a number above 0"),
        ('[[sources]]\ndata = "demo"\nunknown = "yes"\n', "unknown must be true or false"),
        ('[[sources]]\nname = "x"\n', "needs data = SPEC"),
        ('classes = "mel"\n[[sources]]\ndata = "demo"\n', "classes must be a list"),
        ('[[sources]]\ndata = "demo"\nlabel_map = "missing.json"\n', "cannot read it"),
        ("[[sources]\n", "not valid TOML"),
    ],
)
def test_bad_data_toml_is_one_clear_error(tmp_path, text, message):
    toml = write_toml(tmp_path / "bad.toml", text)
    with pytest.raises(ZooError, match=message):
        load_dataset(str(toml), workspace=tmp_path)


def test_unknown_source_trains_an_unk_class(two_sources, tmp_path):
    toml = write_toml(
        tmp_path / "data.toml",
        '[[sources]]\ndata = "ham10000:a"\n[[sources]]\ndata = "csv:b/list.csv"\nunknown = true\n',
    )
    dataset = load_dataset(str(toml), workspace=tmp_path)
    assert dataset.classes == (*HAM10000_CLASSES, UNKNOWN_CLASS)
    unknown = dataset.records[dataset.records["source"] == "list"]
    assert set(unknown["label"]) == {UNKNOWN_CLASS} and len(unknown) == 6
    assert dataset.sources[1]["unknown"] is True


# --- duplicates -----------------------------------------------------------------------------


def copies_source(folder: Path, originals: pd.DataFrame, *, seed: int = 0) -> Path:
    """A csv: source of resized (0.5–0.8×), re-encoded (JPEG q70–85) copies of ``originals``,
    each its own lesion."""
    rng = np.random.default_rng(seed)
    rows = []
    for k, (image_id, row) in enumerate(originals.iterrows()):
        target = folder / "images" / f"copy_{image_id}.jpg"
        scale, quality = rng.uniform(0.5, 0.8), int(rng.integers(70, 86))
        altered_copy(row["path"], target, scale=scale, quality=quality)
        rows.append({"image": f"copy_{image_id}", "label": row["label"], "group": f"copy{k}"})
    pd.DataFrame(rows).to_csv(folder / "copies.csv", index=False)
    return folder / "copies.csv"


@pytest.fixture
def demo_with_copies(tmp_path, demo_workspace) -> tuple[str, Path]:
    """The demo set plus altered copies of 60 of its images (a second source)."""
    demo = load_dataset("demo", workspace=demo_workspace)
    picked = demo.records.iloc[::7].iloc[:60]
    listing = copies_source(tmp_path / "copies", picked)
    spec = join_specs([f"ham10000:{demo_folder(demo_workspace)}", f"csv:{listing}"])
    return spec, demo_workspace


def test_copies_are_found_and_the_split_keeps_each_pair_together(demo_with_copies, tmp_path):
    spec, demo_workspace = demo_with_copies
    dataset = load_dataset(spec, workspace=demo_workspace)
    table = image_hashes(dataset, cache_dir=tmp_path / "cache")
    report = duplicate_report(dataset, table)
    assert report["across_sources"] == 60
    assert report["within_sources"] == 0  # no two demo images are alike
    assert report["label_conflicts"] == 0
    pairs = {(dataset.ids[i], dataset.ids[j]) for i, j, _ in report["index_pairs"]}
    assert all(b == f"copies/copy_{a.split('/')[1]}" for a, b in pairs)
    together = merge_duplicates(dataset, report).records["group"]
    for seed in (0, 1, 2):
        drawn = make_split(dataset, seed=seed)
        part = {i: p for p in ("train", "val", "test") for i in drawn.ids(p)}
        assert any(part[a] != part[b] for a, b in pairs)  # drawn alone, copies straddle it
        split = keep_together(drawn, together)
        part = {i: p for p in ("train", "val", "test") for i in split.ids(p)}
        assert all(part[a] == part[b] for a, b in pairs)
        assert sorted(part) == sorted(dataset.ids)
        assert set(drawn.test) <= set(split.test)  # only ever moved into test, never out


def test_split_without_duplicates_across_lesions_is_unchanged(demo_workspace):
    demo = load_dataset("demo", workspace=demo_workspace)
    drawn = make_split(demo, seed=0)
    assert keep_together(drawn, demo.records["group"]) is drawn


def test_hash_cache_is_reused(demo_workspace, tmp_path, monkeypatch):
    dataset = load_dataset("demo", workspace=demo_workspace).subset(
        load_dataset("demo", workspace=demo_workspace).ids[:20]
    )
    first = image_hashes(dataset, cache_dir=tmp_path)

    def fail(path):
        raise AssertionError(f"{path} hashed again")

    monkeypatch.setattr("zoo.data.duplicates.hash_image", fail)
    second = image_hashes(dataset, cache_dir=tmp_path)
    assert (second.hashes == first.hashes).all() and (second.sizes == first.sizes).all()


def test_unreadable_images_are_reported_not_hashed(tmp_path, write_ham10000):
    folder = write_ham10000(tmp_path / "h", classes=("mel", "nv"), lesions=3)
    (folder / "images" / "ISIC_0000001.jpg").write_bytes(b"not an image")
    dataset = load_dataset(f"ham10000:{folder}", workspace=tmp_path)
    table = image_hashes(dataset)
    assert list(table.problems) == ["ISIC_0000001"]
    assert table.ok.sum() == 5


def test_near_pairs_against_another_set():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 2**63, (5, 4), dtype=np.uint64)
    b = a.copy()
    b[:, 0] ^= np.uint64(0b111)  # three bits apart
    found = near_pairs(a, b, max_distance=3)
    assert sorted(map(tuple, found[:, :2].tolist())) == [(k, k) for k in range(5)]
    assert near_pairs(a, b, max_distance=2).shape == (0, 3)


# --- zoo data check -------------------------------------------------------------------------


def test_data_check_json_and_table(demo_with_copies, tmp_path, capsys):
    spec, demo_workspace = demo_with_copies
    a, b = spec.split(" + ")
    args = ["data", "check", a, b, "--workspace", str(tmp_path / "ws")]
    assert main([*args, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["images"] == 420 + 60
    assert [s["name"] for s in report["sources"]] == ["ham10000", "copies"]
    demo, copies = report["sources"]
    assert demo["images"] == 420 and demo["sizes"]["width"] == {
        "min": 120,
        "median": 120,
        "max": 120,
    }
    assert copies["sizes"]["width"]["max"] <= 96  # 0.8 × 120
    assert report["classes"]["nv"]["images"] == 150 + copies["class_counts"]["nv"]
    merged = sum(c["lesions_merged"] for c in report["classes"].values())
    assert merged == sum(c["lesions"] for c in report["classes"].values()) - 60
    assert report["duplicates"]["across_sources"] == 60
    assert report["unreadable"] == 0 and report["problems"] == []
    assert main(args) == 0
    table = capsys.readouterr().out
    for text in (
        "images per class",
        "after merging duplicates",
        "60 across sources",
        "copies/copy_",
    ):
        assert text in table


def test_data_check_reports_unreadable_files(tmp_path, write_ham10000, capsys):
    folder = write_ham10000(tmp_path / "h", classes=("mel", "nv"), lesions=3)
    (folder / "images" / "ISIC_0000002.jpg").write_bytes(b"broken")
    assert main(["data", "check", f"ham10000:{folder}", "--workspace", str(tmp_path / "ws")]) == 1
    assert "unreadable: ham10000 ISIC_0000002" in capsys.readouterr().out


# --- real data ------------------------------------------------------------------------------


@pytest.mark.realdata
def test_ham10000_copies_found_and_distinct_lesions_not_matched(ham10000_dir, tmp_path):
    ham = load_dataset(f"ham10000:{ham10000_dir}", workspace=tmp_path)
    one_per_lesion = ham.records.drop_duplicates("group").iloc[:400]
    originals = one_per_lesion.iloc[:50]
    listing = copies_source(tmp_path / "copies", originals, seed=1)
    copies = load_dataset(f"csv:{listing}", workspace=tmp_path)
    distinct = image_hashes(ham.subset(one_per_lesion.index), cache_dir=tmp_path / "cache")
    copied = image_hashes(copies, cache_dir=tmp_path / "cache")
    found = near_pairs(copied.hashes, distinct.hashes)
    matched = {(copied.ids[i], distinct.ids[j]) for i, j, _ in found}
    assert matched == {(f"copy_{i}", i) for i in originals.index}  # every copy, nothing else
    assert len(near_pairs(distinct.hashes)) == 0  # 400 different lesions: no false match


# --- training and evaluation ----------------------------------------------------------------


@pytest.mark.slow
def test_combined_training_records_sources_duplicates_and_priors(
    demo_with_copies, tmp_path, write_ham10000
):
    from zoo import console
    from zoo.data.duplicates import load_hashes
    from zoo.training.trainer import TrainOptions, train

    spec, demo_workspace = demo_with_copies
    a, b = spec.split(" + ")
    other = write_ham10000(tmp_path / "other", classes=("mel", "nv"), lesions=8)
    toml = write_toml(
        tmp_path / "both.toml",
        f'[[sources]]\nname = "demo"\ndata = "{a}"\n'
        f'[[sources]]\nname = "copies"\ndata = "{b}"\nweight = 2\n'
        f'[[sources]]\nname = "other"\ndata = "ham10000:{other}"\nunknown = true\n',
    )
    console.set_quiet(True)
    try:
        member = train(
            TrainOptions(
                recipe="small_cnn",
                workspace=tmp_path / "ws",
                data=str(toml),
                image_size=32,
                epochs=1,
                weights="none",
            )
        )
    finally:
        console.set_quiet(False)
    assert member.name == "small_cnn.both.s0"
    info = json.loads((member / "member.json").read_text())
    data = info["data"]
    demo, copies, other = data["sources"]
    assert (demo["count"], copies["count"], copies["weight"], other["count"]) == (420, 60, 2.0, 16)
    assert info["classes"][-1] == UNKNOWN_CLASS and data["class_counts"][UNKNOWN_CLASS] == 16
    assert other["unknown"] and other["split_counts"]["test"] > 0
    for source in (demo, copies, other):  # recounted from the split's ids, "<source>/<id>"
        assert sum(source["split_counts"].values()) == source["count"]
        for part, ids in info["split"]["ids"].items():
            mine = sum(i.startswith(f"{source['name']}/") for i in ids)
            assert source["split_counts"][part] == mine, (source["name"], part)
    assert data["duplicates"]["across_sources"] == 60
    part = {i: p for p, ids in info["split"]["ids"].items() for i in ids}
    for i in data["duplicates"]["examples"]:
        assert part[i["a"]] == part[i["b"]]
    train_ids = info["split"]["ids"]["train"]
    assert load_hashes(member / data["train_hashes"]["file"]).shape == (len(train_ids), 4)
    labels = load_dataset(str(toml), workspace=tmp_path / "ws").records.loc[train_ids]
    counts = [int((labels["label"] == c).sum()) for c in info["classes"]]
    assert info["priors"]["train_counts"] == counts  # the combined training split
    weighted = [
        float(
            (
                (labels["label"] == c) * labels["source"].map({"demo": 1, "copies": 2, "other": 1})
            ).sum()
        )
        for c in info["classes"]
    ]
    assert info["priors"]["source_weighted_counts"] == weighted


@pytest.mark.slow
def test_evaluate_warns_about_training_images_in_other_data(workspace, tmp_path, capsys):
    from conftest import DEMO_MEMBER

    info = json.loads((workspace / "members" / DEMO_MEMBER / "member.json").read_text())
    demo = load_dataset("demo", workspace=workspace)
    train = info["split"]["ids"]["train"][:12]
    test = info["split"]["ids"]["test"][:8]
    folder = tmp_path / "other"
    for k, image_id in enumerate(train + test):
        row = demo.records.loc[image_id]
        altered_copy(row["path"], folder / row["label"] / f"x{k}.jpg", scale=0.8, quality=85)
    out = tmp_path / "eval"
    args = ["evaluate", DEMO_MEMBER, "--data", f"folder:{folder}", "--bootstrap", "0"]
    assert main([*args, "--out", str(out), "--workspace", str(workspace)]) == 0
    assert "12 of 20 evaluated image(s) duplicate training images" in capsys.readouterr().err
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["training_duplicates"]["duplicates"] == 12
    assert any("duplicate training images" in n for n in metrics["notes"])


def test_members_without_training_hashes_are_not_checked(tmp_path):
    from zoo.data.leakage import training_hashes
    from zoo.inference.target import MemberTarget

    member = tmp_path / "old"
    member.mkdir()
    old = {"name": "old", "classes": ["a", "b"], "split": {"ids": {}}, "data": {"name": "x"}}
    (member / "member.json").write_text(json.dumps(old))
    assert training_hashes(MemberTarget.from_path(member)) is None


# --- the UNK class in scores ----------------------------------------------------------------

UNK_CLASSES = ["MEL", "NV", "BCC", "BKL", UNKNOWN_CLASS]


def test_unk_is_scored_as_the_isic_2019_scorer_does(tmp_path):
    from scoringkit import assert_same, make, official

    from zoo.scoring.metrics import score

    truth, predictions = make(300, seed=11, informative=0.5, classes=UNK_CLASSES)
    assert truth[UNKNOWN_CLASS].sum() > 0
    ours = score(truth, predictions)
    assert_same(official(tmp_path, truth, predictions), ours)
    assert ours["absent_classes"] == []


def test_unk_without_unk_images_is_left_out_of_balanced_accuracy():
    from scoringkit import make
    from sklearn.metrics import balanced_accuracy_score

    from zoo.scoring.metrics import score

    truth, predictions = make(300, seed=12, informative=0.3, classes=UNK_CLASSES)
    truth = truth[truth[UNKNOWN_CLASS] == 0]  # evaluated data without UNK images
    predictions = predictions.loc[truth.index]
    ours = score(truth, predictions)
    true, predicted = truth.to_numpy().argmax(1), predictions.to_numpy().argmax(1)
    assert (predicted == UNK_CLASSES.index(UNKNOWN_CLASS)).any()  # UNK answers still count wrong
    assert ours["absent_classes"] == [UNKNOWN_CLASS]
    assert ours["per_category"]["auc"][UNKNOWN_CLASS] is None
    with pytest.warns(UserWarning):  # sklearn: y_pred has a class y_true lacks
        expected = balanced_accuracy_score(true, predicted)
    assert ours["aggregate"]["balanced_accuracy"] == pytest.approx(expected)

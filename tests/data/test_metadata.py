"""Per-image metadata (sex, age, site, confirmation) kept by the readers, never fingerprinted."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from zoo.data.dataset import METADATA_COLUMNS
from zoo.data.label_maps import apply_label_map
from zoo.data.loading import load_dataset
from zoo.evaluation.subgroups import subgroup_labels
from zoo.store.hashes import labels_fingerprint

THREE = ("bcc", "mel", "nv")


def vary(folder: Path) -> pd.DataFrame:
    """Give the synthetic HAM10000 folder's images varied metadata (one value missing each)."""
    meta = pd.read_csv(folder / "HAM10000_metadata.csv", dtype=str, keep_default_na=False)
    meta["sex"] = ["male", "female", "unknown"] * (len(meta) // 3)
    meta["age"] = ["25.0", "", "80.0"] * (len(meta) // 3)
    meta["localization"] = ["back", "lower extremity", "unknown"] * (len(meta) // 3)
    meta["dx_type"] = ["histo", "follow_up", "consensus"] * (len(meta) // 3)
    meta.to_csv(folder / "HAM10000_metadata.csv", index=False)
    return meta.set_index("image_id")


def test_ham10000_metadata_columns_are_read_and_not_fingerprinted(tmp_path, write_ham10000):
    folder = write_ham10000(tmp_path / "ham", classes=THREE, images_per_lesion=2)
    before = load_dataset(f"ham10000:{folder}", workspace=tmp_path)
    meta = vary(folder)
    data = load_dataset(f"ham10000:{folder}", workspace=tmp_path)
    assert data.problems == []
    assert data.fingerprint == before.fingerprint == labels_fingerprint(meta.index, meta["dx"])
    frame = data.metadata()
    assert list(frame.columns) == list(METADATA_COLUMNS)
    assert (frame["sex"] == meta["sex"]).all() and (frame["age"] == meta["age"]).all()
    assert (frame["site"] == meta["localization"]).all()
    assert (frame["confirmation"] == meta["dx_type"]).all()
    assert data.metadata(["ISIC_0000001"]).loc["ISIC_0000001", "age"] == ""
    # the dataset operations keep the columns
    mapped = apply_label_map(data.subset(data.ids[:4]), {"mel": "nv"}, ("bcc", "nv"))
    assert list(mapped.metadata().columns) == list(METADATA_COLUMNS)
    assert (mapped.metadata()["sex"] == meta["sex"].iloc[:4].to_numpy()).all()
    groups = data.with_groups(data.ids).records
    assert set(METADATA_COLUMNS) <= set(groups.columns)


def test_without_metadata_columns_there_is_none(tmp_path, write_images):
    root = tmp_path / "folder"
    write_images(root / "mel", ["a"])
    write_images(root / "nv", ["b"])
    data = load_dataset(f"folder:{root}", workspace=tmp_path)
    assert data.metadata().shape == (2, 0)
    assert subgroup_labels(data.metadata(), pd.Series(data.ids, index=data.ids)) == ({}, {})


def _write_isic(folder: Path, write_images) -> Path:
    """An ISIC 2019 layout with training metadata (age_approx, anatom_site_general, sex) and
    a test metadata file that covers none of its images."""
    images = [f"ISIC_{k:07d}" for k in range(6)]
    folder.mkdir(parents=True)
    truth = pd.DataFrame(
        {"image": images, "MEL": [1.0, 0, 0, 1, 0, 0], "NV": [0, 1.0, 1, 0, 1, 1]},
    )
    truth.to_csv(folder / "ISIC_2019_Training_GroundTruth.csv", index=False)
    pd.DataFrame(
        {
            "image": images,
            "age_approx": ["45", "", "70", "30", "85", "55"],
            "anatom_site_general": ["anterior torso", "head/neck", "", "palms/soles", "x", "x"],
            "lesion_id": [f"IL_{k // 2}" for k in range(6)],
            "sex": ["male", "female"] * 3,
        }
    ).to_csv(folder / "ISIC_2019_Training_Metadata.csv", index=False)
    pd.DataFrame({"image": ["ISIC_9999999"], "age_approx": ["20"], "sex": ["male"]}).to_csv(
        folder / "ISIC_2019_Test_Metadata.csv", index=False
    )
    write_images(folder, images)
    return folder / "ISIC_2019_Training_GroundTruth.csv"


def test_isic_metadata_beside_the_ground_truth(tmp_path, write_images):
    csv = _write_isic(tmp_path / "isic", write_images)
    data = load_dataset(f"isic:{csv}", workspace=tmp_path)
    assert data.problems == []
    frame = data.metadata()
    assert list(frame.columns) == ["sex", "age", "site"]  # no confirmation column in the file
    assert frame.loc["ISIC_0000000"].tolist() == ["male", "45", "anterior torso"]
    assert frame.loc["ISIC_0000001", "age"] == ""
    assert frame.loc["ISIC_0000003", "site"] == "palms/soles"
    assert any("ISIC_2019_Training_Metadata.csv" in n and "age" in n for n in data.notes)
    assert data.records.loc["ISIC_0000001", "group"] == "IL_0"  # grouping as before


def test_csv_list_and_combined_sources_keep_metadata(tmp_path, write_ham10000, write_images):
    write_images(tmp_path / "list", ["a", "b"])
    listing = pd.DataFrame({"image": ["a", "b"], "label": ["mel", "nv"], "age_approx": [33, 66]})
    listing.to_csv(tmp_path / "list" / "labels.csv", index=False)
    listed = load_dataset(f"csv:{tmp_path / 'list' / 'labels.csv'}", workspace=tmp_path)
    assert listed.metadata()["age"].tolist() == ["33", "66"]
    write_ham10000(tmp_path / "ham", classes=("mel", "nv"))
    toml = tmp_path / "data.toml"
    toml.write_text(
        '[[sources]]\nname = "ham"\ndata = "ham10000:ham"\n'
        '[[sources]]\nname = "other"\ndata = "folder:pics"\n',
        encoding="utf-8",
    )
    write_images(tmp_path / "pics" / "mel", ["p"])
    combined = load_dataset(str(toml), workspace=tmp_path)
    frame = combined.metadata()
    assert frame.loc["ham/ISIC_0000000", "sex"] == "female"  # the fixture's value
    assert frame.loc["other/mel/p"].tolist() == ["", "", "", ""]  # a source without metadata


@pytest.mark.realdata
def test_real_ham10000_metadata(ham10000_dir, tmp_path):
    data = load_dataset(f"ham10000:{ham10000_dir}", workspace=tmp_path)
    frame = data.metadata()
    assert len(frame) == 10015 and list(frame.columns) == list(METADATA_COLUMNS)
    assert set(frame["confirmation"]) == {"histo", "follow_up", "consensus", "confocal"}
    assert {"male", "female"} <= set(frame["sex"])
    assert 0.5 < (frame["confirmation"] == "histo").mean() < 0.55  # about half (the card says so)
    labels, rare = subgroup_labels(frame, data.records["group"])
    assert set(labels) == set(METADATA_COLUMNS)
    assert set(labels["age"]) <= {"<30", "30-49", "50-69", ">=70", "unknown"}
    assert rare and set(rare) <= set(frame["site"]) and "other" in set(labels["site"])
    assert (labels["site"] == "other").sum() == sum(rare.values())

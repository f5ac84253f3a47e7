"""zoo.data.sources: every ``--data`` layout, read from small fixtures written here."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from zoo.data import demo
from zoo.data.loading import load_dataset
from zoo.data.sources import HAM10000_CLASSES, detect_kind
from zoo.errors import ZooError

THREE = ("bcc", "mel", "nv")


@pytest.mark.parametrize("layout", ["images", "parts", "flat"])
def test_ham10000_layouts(tmp_path, write_ham10000, layout):
    folder = write_ham10000(tmp_path / "ham", classes=THREE, images_per_lesion=2, layout=layout)
    data = load_dataset(f"ham10000:{folder}", workspace=tmp_path)
    assert data.name == "ham10000" and data.spec == f"ham10000:{folder}"
    assert data.problems == []
    assert data.classes == HAM10000_CLASSES  # the published label set, in its order
    assert len(data) == 18
    assert data.class_counts() == {c: (6 if c in THREE else 0) for c in HAM10000_CLASSES}
    meta = pd.read_csv(folder / "HAM10000_metadata.csv").set_index("image_id")
    assert list(data.records.index) == list(meta.index)
    assert (data.records["group"] == meta["lesion_id"]).all()
    assert (data.records["label"] == meta["dx"]).all()
    assert all(Path(p).is_file() for p in data.records["path"])
    if layout == "parts":
        assert {Path(p).parent.name for p in data.records["path"]} == {
            "HAM10000_images_part_1",
            "HAM10000_images_part_2",
        }


def test_ham10000_problems_are_collected_not_raised(tmp_path, write_ham10000):
    folder = write_ham10000(tmp_path / "ham", classes=THREE)
    meta = pd.read_csv(folder / "HAM10000_metadata.csv")
    meta.loc[1, "dx"] = "xyz"
    meta.loc[len(meta)] = meta.loc[2]  # duplicate image id (line 4 and the last line)
    meta.loc[len(meta)] = {**meta.loc[0].to_dict(), "image_id": "ISIC_missing"}
    meta.to_csv(folder / "HAM10000_metadata.csv", index=False)
    data = load_dataset(str(folder), workspace=tmp_path)
    text = "\n".join(data.problems)
    assert len(data.problems) == 3, text
    assert "line 3 (image ISIC_0000001): unknown label 'xyz'; expected one of akiec" in text
    assert f"duplicate image id 'ISIC_0000002' on lines 4, {len(meta)}" in text
    assert f"line {len(meta) + 1}: image 'ISIC_missing' not found" in text
    assert str(folder / "HAM10000_metadata.csv") in text
    assert data.records.index.is_unique


def test_ham10000_missing_column_and_missing_metadata(tmp_path, write_ham10000):
    folder = write_ham10000(tmp_path / "ham", classes=THREE)
    meta = pd.read_csv(folder / "HAM10000_metadata.csv").drop(columns=["dx"])
    meta.to_csv(folder / "HAM10000_metadata.csv", index=False)
    with pytest.raises(ZooError, match=r"HAM10000_metadata.csv is missing column\(s\) dx"):
        load_dataset(f"ham10000:{folder}", workspace=tmp_path)
    with pytest.raises(ZooError, match="no HAM10000_metadata.csv"):
        load_dataset(f"ham10000:{tmp_path}", workspace=tmp_path)


def _write_isic(folder: Path, write_images, *, metadata: bool = True, images_beside=True) -> Path:
    """ISIC 2019 style: one-hot MEL/NV/BCC + an all-zero UNK column + score_weight."""
    rows, meta = [], []
    for c in ("MEL", "NV", "BCC"):
        for lesion in range(3):
            for k in range(2 if lesion == 0 else 1):
                image = f"ISIC_{len(rows):07d}"
                rows.append(
                    {
                        "image": image,
                        **{x: float(x == c) for x in ("MEL", "NV", "BCC", "UNK")},
                        "score_weight": 0.5 if c == "NV" else 1.0,
                    }
                )
                meta.append({"image": image, "lesion_id": f"IL_{c}_{lesion}", "age": 40 + k})
    folder.mkdir(parents=True, exist_ok=True)
    csv = folder / "ISIC_2019_Training_GroundTruth.csv"
    pd.DataFrame(rows).to_csv(csv, index=False)
    if metadata:
        pd.DataFrame(meta).to_csv(folder / "ISIC_2019_Training_Metadata.csv", index=False)
    write_images(folder if images_beside else folder.parent / "pixels", [r["image"] for r in rows])
    return csv


def test_isic_csv(tmp_path, write_images):
    csv = _write_isic(tmp_path / "isic", write_images)
    data = load_dataset(f"isic:{csv}", workspace=tmp_path)
    assert data.name == "isic2019" and data.problems == []
    assert data.classes == ("MEL", "NV", "BCC")  # UNK has no image: dropped
    assert any("dropped class UNK" in n for n in data.notes)
    assert any("lesion_id" in n for n in data.notes)
    assert len(data) == 12
    assert data.records.loc["ISIC_0000000", "label"] == "MEL"
    assert data.records.loc["ISIC_0000004", "label"] == "NV"
    # grouped by the metadata's lesion_id: the two images of lesion 0 share a group
    assert data.records.loc["ISIC_0000000", "group"] == "IL_MEL_0"
    assert data.records.loc["ISIC_0000001", "group"] == "IL_MEL_0"
    assert data.records["group"].nunique() == 9
    assert data.weights is not None
    assert data.weights.loc["ISIC_0000004"] == 0.5 and data.weights.loc["ISIC_0000000"] == 1.0
    truth = data.truth()
    assert list(truth.columns) == ["MEL", "NV", "BCC"]
    assert (truth.sum(axis=1) == 1).all()


def test_isic_without_metadata_groups_by_image_and_images_dir(tmp_path, write_images):
    csv = _write_isic(tmp_path / "isic", write_images, metadata=False, images_beside=False)
    data = load_dataset(f"isic:{csv}", workspace=tmp_path)
    assert len(data.problems) == 12 and "not found" in data.problems[0]
    data = load_dataset(f"isic:{csv}", workspace=tmp_path, images=tmp_path / "pixels")
    assert data.problems == []
    assert (data.records["group"] == data.records.index).all()


def test_isic_row_without_exactly_one_class(tmp_path, write_images):
    csv = _write_isic(tmp_path / "isic", write_images)
    frame = pd.read_csv(csv)
    frame.loc[3, "NV"] = 1.0  # MEL and NV
    frame.loc[5, ["MEL", "NV", "BCC"]] = 0.0  # none
    frame.to_csv(csv, index=False)
    (csv.parent / "ISIC_0000007.jpg").unlink()
    data = load_dataset(str(csv), workspace=tmp_path)
    assert data.name == "isic2019"
    text = "\n".join(data.problems)
    assert len(data.problems) == 3, text
    assert "line 5 (image ISIC_0000003): expected exactly one class set to 1, got 2" in text
    assert "line 7 (image ISIC_0000005): expected exactly one class set to 1, got 0" in text
    # line numbers stay those of the CSV after the rows above were set aside
    assert "line 9: image 'ISIC_0000007' not found" in text
    assert "ISIC_0000003" not in data.records.index


def test_isic_duplicate_row_with_score_weight_is_a_problem_not_a_crash(tmp_path, write_images):
    csv = _write_isic(tmp_path / "isic", write_images)
    frame = pd.read_csv(csv)
    frame.loc[0, ["MEL", "NV"]] = [1.0, 1.0]  # set aside: weights must not shift
    frame = pd.concat([frame.iloc[:3], frame.iloc[[4]], frame.iloc[3:]], ignore_index=True)
    frame.to_csv(csv, index=False)
    data = load_dataset(f"isic:{csv}", workspace=tmp_path)
    assert any("duplicate image id 'ISIC_0000004' on lines 5, 7" in p for p in data.problems)
    assert data.weights is not None and list(data.weights.index) == data.ids
    expected = frame.drop_duplicates("image").set_index("image")["score_weight"]
    assert data.weights.to_dict() == expected.loc[data.ids].to_dict()


def test_folder_per_class(tmp_path, write_images):
    root = tmp_path / "derm"
    write_images(root / "nevus", ["a", "b", "c"])
    write_images(root / "melanoma", ["a.png", "x.jpeg", "y.JPG"])
    (root / "melanoma" / "notes.txt").write_text("not an image")
    (root / ".hidden").mkdir()
    data = load_dataset(f"folder:{root}", workspace=tmp_path)
    assert data.name == "derm" and data.problems == []
    assert data.classes == ("melanoma", "nevus")
    assert sorted(data.ids) == sorted(
        ["nevus/a", "nevus/b", "nevus/c", "melanoma/a", "melanoma/x", "melanoma/y"]
    )
    assert data.records.loc["melanoma/a", "label"] == "melanoma"
    assert (data.records["group"] == data.records.index).all()
    with pytest.raises(ZooError, match="no class sub-folders"):
        load_dataset(f"folder:{root / 'nevus'}", workspace=tmp_path)


def test_generic_csv_with_paths_ids_and_groups(tmp_path, write_images):
    root = tmp_path / "list"
    write_images(root / "pics", ["p1", "p2"])
    write_images(root / "images", ["id3", "id4.png"])
    pd.DataFrame(
        {
            "image": ["pics/p1.jpg", str(root / "pics" / "p2.jpg"), "id3", "id4"],
            "label": ["benign", "malignant", "benign", "malignant"],
            "group": ["g1", "g1", "", "g4"],
        }
    ).to_csv(root / "labels.csv", index=False)
    data = load_dataset(f"csv:{root / 'labels.csv'}", workspace=tmp_path)
    assert data.name == "labels" and data.problems == []
    assert data.classes == ("benign", "malignant")
    assert Path(data.records.loc["id3", "path"]) == root / "images" / "id3.jpg"
    assert Path(data.records.loc["pics/p1.jpg", "path"]) == root / "pics" / "p1.jpg"
    assert data.records.loc[str(root / "pics" / "p2.jpg"), "group"] == "g1"  # absolute path
    assert data.records.loc["id3", "group"] == "id3"  # an empty group falls back to the image
    assert data.records.loc["id4", "group"] == "g4"


def test_generic_csv_without_group_and_with_missing_files(tmp_path, write_images):
    root = tmp_path / "list"
    write_images(root, ["a", "b"])
    pd.DataFrame(
        {"image": ["a", "b.jpg", "gone.jpg", "gone"], "label": ["x", "y", "x", "y"]}
    ).to_csv(root / "l.csv", index=False)
    data = load_dataset(str(root / "l.csv"), workspace=tmp_path)
    assert data.spec == f"csv:{root / 'l.csv'}"
    assert (data.records["group"] == data.records.index).all()
    assert data.problems == [
        f"{root / 'l.csv'} line 4: image 'gone.jpg' not found",
        f"{root / 'l.csv'} line 5: image 'gone' not found",
    ]
    pd.DataFrame({"image": ["a"]}).to_csv(root / "nolabel.csv", index=False)
    with pytest.raises(ZooError, match=r"missing column\(s\) label"):
        load_dataset(f"csv:{root / 'nolabel.csv'}", workspace=tmp_path)


def test_demo(demo_workspace):
    data = load_dataset(None, workspace=demo_workspace)
    assert load_dataset("demo", workspace=demo_workspace).fingerprint == data.fingerprint
    assert data.is_demo and data.name == "demo" and data.spec == "demo"
    assert data.problems == []
    assert data.classes == HAM10000_CLASSES
    assert data.class_counts() == {c: demo.COUNTS[c] for c in HAM10000_CLASSES}
    assert len(data) == sum(demo.COUNTS.values()) == 420
    sizes = data.records.groupby("group").size()
    assert sizes.max() > 1 and sizes.min() == 1  # lesions with several images: splits must group
    assert data.defaults == demo.DEFAULTS


@pytest.mark.slow
def test_demo_is_deterministic(tmp_path, demo_workspace):
    first = demo.demo_folder(demo_workspace)
    again = demo.generate(tmp_path / "again")
    assert (first / "HAM10000_metadata.csv").read_bytes() == (
        again / "HAM10000_metadata.csv"
    ).read_bytes()
    for name in ("DEMO_00000.png", "DEMO_00419.png"):
        assert (first / "images" / name).read_bytes() == (again / "images" / name).read_bytes()


def test_detection_without_and_with_prefix(tmp_path, write_ham10000, write_images):
    ham = write_ham10000(tmp_path / "ham", classes=THREE)
    write_images(tmp_path / "folders" / "a", ["1"])
    isic = _write_isic(tmp_path / "isic", write_images)
    listing = tmp_path / "list.csv"
    pd.DataFrame({"image": ["folders/a/1.jpg"], "label": ["a"]}).to_csv(listing, index=False)
    expected = {ham: "ham10000", tmp_path / "folders": "folder", isic: "isic", listing: "csv"}
    for path, kind in expected.items():
        assert detect_kind(path) == kind
        plain = load_dataset(str(path), workspace=tmp_path)
        prefixed = load_dataset(f"{kind}:{path}", workspace=tmp_path)
        assert plain.spec == prefixed.spec == f"{kind}:{path}"
        assert plain.fingerprint == prefixed.fingerprint
    # a prefix forces the kind: a HAM10000 folder read as a folder of class folders
    forced = load_dataset(f"folder:{ham}", workspace=tmp_path)
    assert forced.classes == ("images",)


def test_unknown_kinds_and_paths_are_errors(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ZooError, match="cannot tell what kind.*ham10000:, isic:, folder:, csv:"):
        load_dataset(str(tmp_path / "notes.txt"), workspace=tmp_path)
    with pytest.raises(ZooError, match="does not exist"):
        load_dataset(f"ham10000:{tmp_path / 'nowhere'}", workspace=tmp_path)
    with pytest.raises(ZooError, match="unknown data kind 'hamm10000'.*Did you mean ham10000"):
        load_dataset(f"hamm10000:{tmp_path}", workspace=tmp_path)
    with pytest.raises(ZooError, match="does not exist"):
        load_dataset(str(tmp_path / "nothing.csv"), workspace=tmp_path)


def test_wrong_kind_of_path_and_unreadable_csvs_are_errors(tmp_path, write_ham10000):
    """folder:FILE used to raise NotADirectoryError; non-UTF-8 and empty CSVs a traceback."""
    listing = tmp_path / "list.csv"
    listing.write_text("image,label\na.jpg,x\n")
    with pytest.raises(ZooError, match=r"list.csv is a file, but folder: needs a folder"):
        load_dataset(f"folder:{listing}", workspace=tmp_path)
    with pytest.raises(ZooError, match=r"is a folder, but csv: needs a CSV file"):
        load_dataset(f"csv:{tmp_path}", workspace=tmp_path)
    ham = write_ham10000(tmp_path / "ham", classes=THREE)
    metadata = ham / "HAM10000_metadata.csv"
    metadata.write_bytes(metadata.read_bytes().replace(b"female", "f\xe9male".encode("latin-1")))
    with pytest.raises(ZooError, match=r"HAM10000_metadata.csv: it is not UTF-8 text"):
        load_dataset(f"ham10000:{ham}", workspace=tmp_path)
    metadata.write_bytes(b"")
    with pytest.raises(ZooError, match=r"HAM10000_metadata.csv: the file is empty"):
        load_dataset(str(ham), workspace=tmp_path)


def test_fingerprint_tracks_ids_and_labels(tmp_path, write_ham10000):
    folder = write_ham10000(tmp_path / "ham", classes=THREE)
    first = load_dataset(str(folder), workspace=tmp_path)
    again = load_dataset(str(folder), workspace=tmp_path)
    assert first.fingerprint == again.fingerprint
    meta = pd.read_csv(folder / "HAM10000_metadata.csv")
    meta = meta.iloc[::-1]  # order does not matter
    meta.to_csv(folder / "HAM10000_metadata.csv", index=False)
    assert load_dataset(str(folder), workspace=tmp_path).fingerprint == first.fingerprint
    meta.loc[0, "dx"] = "mel" if meta.loc[0, "dx"] != "mel" else "nv"
    meta.to_csv(folder / "HAM10000_metadata.csv", index=False)
    assert load_dataset(str(folder), workspace=tmp_path).fingerprint != first.fingerprint

"""A member whose head reads age, sex and site beside the image: training, member.json,
``zoo predict --metadata``, the Python API, evaluate, damaged records, the commands that
feed images only, and the cached-features head stage.

One tiny member (small_cnn, 8/16 filters, 32 px, 1 epoch, no pretrained weights) on a
HAM10000-shaped folder with missing values is trained once for the module."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from conftest import HAM_CLASSES, write_image
from PIL import Image

import zoo
from zoo import console
from zoo.cli.main import main
from zoo.data import load_dataset
from zoo.data.metadata import MetadataEncoding, read_metadata_csv, text_values
from zoo.errors import ZooError
from zoo.inference.members import Member
from zoo.inference.target import MemberTarget, clear_model_cache, load_model
from zoo.models.build import metadata_width
from zoo.recipes.recipe import get_recipe
from zoo.training.resolve import metadata_encoding
from zoo.training.trainer import TrainOptions, train

ALL = ["age", "sex", "site"]
METADATA = "metadata=['age','sex','site']"
SMALL = "backbone_options.widths=[8,16]"
SITES = ("back", "face", "lower extremity", "trunk")
CSV = "HAM10000_metadata.csv"


def write_ham_with_metadata(folder: Path, lesions: int = 10) -> Path:
    """HAM10000-shaped: 7 classes × ``lesions`` one-image lesions, 16 px; ages, sexes and
    sites with missing values in every column."""
    rows = []
    for c in HAM_CLASSES:
        for lesion in range(lesions):
            i = len(rows)
            rows.append(
                {
                    "lesion_id": f"HAM_{c}_{lesion}",
                    "image_id": f"ISIC_{i:07d}",
                    "dx": c,
                    "dx_type": "histo",
                    "age": ["35.0", "", "70.0", "55.0"][i % 4],
                    "sex": ["male", "female", "", "unknown"][i % 4],
                    "localization": SITES[i % 4] if i % 5 else "unknown",
                }
            )
            write_image(folder / "images" / f"ISIC_{i:07d}.jpg", seed=i)
    pd.DataFrame(rows).to_csv(folder / CSV, index=False)
    return folder


def _train(
    workspace: Path, folder: Path, recipe: str, *settings: str, epochs: int = 1, quiet=True
) -> Path:
    console.set_quiet(quiet)
    try:
        options = TrainOptions(
            recipe=recipe,
            workspace=workspace,
            data=f"ham10000:{folder}",
            image_size=32,
            epochs=epochs,
            weights="none",
            settings=[METADATA, *settings],
        )
        return Path(train(options))
    finally:
        console.set_quiet(False)


@pytest.fixture(scope="module")
def member(tmp_path_factory) -> SimpleNamespace:
    """The module's trained member: ``workspace``, ``name``, ``path``, ``folder`` (its data),
    ``test`` (its test images' files, by id)."""
    root = tmp_path_factory.mktemp("metadata-head")
    folder = write_ham_with_metadata(root / "ham")
    path = _train(root / "ws", folder, "small_cnn", SMALL)
    test = {i: folder / "images" / f"{i}.jpg" for i in Member(path).split_ids("test")}
    return SimpleNamespace(
        workspace=root / "ws", name=path.name, path=path, folder=folder, test=test
    )


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def predicted(stdout: str) -> pd.DataFrame:
    frame = pd.read_csv(io.StringIO(stdout), dtype={"image": str}).set_index("image")
    return frame[list(HAM_CLASSES)].sort_index()


def one_line_error(code: int, err: str) -> str:
    """The message of a command that failed with one error line on stderr (after any
    warnings)."""
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert all(line.startswith("warning: ") for line in lines[:-1]), err
    assert lines[-1].startswith("error: ") and "Traceback" not in err, err
    return lines[-1]


def predict_argv(member, workspace: Path) -> list:
    """``zoo predict`` of the member's test images with the data set's metadata."""
    files = member.test.values()
    return [
        "predict",
        member.name,
        *files,
        "--metadata",
        member.folder / CSV,
        "--workspace",
        workspace,
    ]


def copied_member(member, tmp_path: Path) -> Path:
    """A private copy of the member's workspace (members only); returns the member's folder."""
    shutil.copytree(member.path, tmp_path / "ws" / "members" / member.name)
    clear_model_cache()
    return tmp_path / "ws" / "members" / member.name


# --- what training writes ---------------------------------------------------------------


def test_member_records_its_metadata_inputs_and_the_model_reads_them(member):
    info = json.loads((member.path / "member.json").read_text())
    meta = pd.read_csv(member.folder / CSV, dtype=str, keep_default_na=False)
    train_sites = text_values(
        meta.set_index("image_id").loc[info["split"]["ids"]["train"]]["localization"]
    )
    sites = sorted(set(train_sites) - {"unknown"})
    assert sites and set(sites) <= set(SITES)
    assert info["metadata_inputs"] == {"fields": ALL, "sites": sites, "width": 4 + len(sites)}
    assert info["config"]["recipe"]["metadata"] == ALL
    encoding = Member(member.path).metadata_encoding
    assert encoding == MetadataEncoding(tuple(ALL), tuple(sites))

    model = load_model(Member(member.path))
    assert [t.name for t in model.inputs] == ["image", "metadata"]
    assert metadata_width(model) == encoding.width
    # the head reads the pooled image features and the metadata side by side
    head = model.get_layer("head")
    features = model.get_layer("features").output.shape[-1]
    assert head.input.shape[-1] == features + encoding.width


# --- zoo predict --metadata ------------------------------------------------------------------


def test_predict_reads_the_metadata_and_warns_without_it(member, capsys, tmp_path):
    base = ["predict", member.name, *member.test.values(), "--workspace", member.workspace]
    code, without, err = run(capsys, *base)
    assert code == 0, err
    assert f"member {member.name} reads age, sex, site beside the image; none given" in err
    out = tmp_path / "with.csv"
    code, _, err = run(capsys, *base, "--metadata", member.folder / CSV, "--out", out)
    assert code == 0, err
    assert "none given" not in err and "no metadata row" not in err
    given = predicted(out.read_text())
    assert given.index.tolist() == predicted(without).index.tolist() == sorted(member.test)
    assert np.abs(given.to_numpy() - predicted(without).to_numpy()).max() > 1e-4
    np.testing.assert_allclose(given.sum(axis=1), 1.0, atol=1e-6)
    assert json.loads((tmp_path / "with.csv.json").read_text())["metadata"] == str(
        member.folder / CSV
    )


def test_predict_reads_rows_it_lacks_and_unseen_sites_as_missing(member, capsys, tmp_path):
    """An image without a row gets what no metadata gives; an unseen site what ``unknown``
    gives; each is warned about once."""
    first, second, third = sorted(member.test)[:3]
    files = [member.test[i] for i in (first, second, third)]
    rows = "image,age,sex,site\n{}.jpg,60,male,{}\n" + f"{second},,,\n"
    base = [
        "predict",
        member.name,
        *files,
        "--no-prior-correction",
        "--workspace",
        member.workspace,
    ]
    outputs = {}
    for site in ("ear", "unknown"):
        (tmp_path / f"{site}.csv").write_text(rows.format(first, site))
        code, stdout, err = run(capsys, *base, "--metadata", tmp_path / f"{site}.csv")
        assert code == 0, err
        assert "1 image(s) have no metadata row: their age, sex, site read as missing" in err
        assert ("site(s) ear were not in member" in err) == (site == "ear")
        outputs[site] = predicted(stdout)
    pd.testing.assert_frame_equal(outputs["ear"], outputs["unknown"])
    code, stdout, err = run(capsys, *base)
    assert code == 0, err
    nothing = predicted(stdout)
    np.testing.assert_allclose(outputs["ear"].loc[[second, third]], nothing.loc[[second, third]])
    assert np.abs(outputs["ear"].loc[first] - nothing.loc[first]).max() > 0


def test_predict_with_a_bad_metadata_csv_is_one_line(member, capsys, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("name,age\na,3\n")
    argv = ["predict", member.name, *member.test.values(), "--workspace", member.workspace]
    message = one_line_error(*run(capsys, *argv, "--metadata", bad)[::2])
    assert f"--metadata {bad}: no image id column" in message


# --- the Python API -----------------------------------------------------------------------


def test_api_list_of_dicts_equals_the_csv_and_a_dataframe(member, tmp_path):
    ids = sorted(member.test)[:4]
    files = [str(member.test[i]) for i in ids]
    dicts = [
        {"age": 40, "sex": "male", "site": "back"},
        {"sex": "F", "site": "Face"},
        {"age": "", "sex": "unknown", "site": "ear"},
        {},
    ]
    csv = tmp_path / "meta.csv"
    pd.DataFrame(
        {
            "file": [Path(f).name for f in files[:3]],
            **{k: [d.get(k, "") for d in dicts[:3]] for k in ALL},
        }
    ).to_csv(csv, index=False)
    model = zoo.load(member.name, workspace=member.workspace)
    from_csv = model.predict(files, metadata=csv)
    assert from_csv.index.tolist() == ids
    pd.testing.assert_frame_equal(model.predict(files, metadata=dicts), from_csv)
    pd.testing.assert_frame_equal(model.predict(files, metadata=str(csv)), from_csv)
    pd.testing.assert_frame_equal(model.predict(files, metadata=read_metadata_csv(csv)), from_csv)
    different = model.predict(files, metadata=None)
    assert not np.allclose(different[list(HAM_CLASSES)], from_csv[list(HAM_CLASSES)])
    # images in memory are named image0, image1, …: a list of dicts follows the order
    pictures = [Image.open(f).convert("RGB") for f in files]
    in_memory = model.predict(pictures, metadata=dicts)
    assert in_memory.index.tolist() == [f"image{i}" for i in range(4)]
    np.testing.assert_allclose(in_memory[list(HAM_CLASSES)], from_csv[list(HAM_CLASSES)], atol=1e-6)

    with pytest.raises(ZooError, match=r"^metadata: 2 row\(s\) for 4 image\(s\)") as info:
        model.predict(files, metadata=dicts[:2])
    assert "\n" not in str(info.value)
    with pytest.raises(ZooError, match=r"^metadata: expected a list of dicts .*got int"):
        model.predict(files, metadata=3)


# --- evaluate and the prediction cache ------------------------------------------------------


def test_evaluate_equals_predict_with_the_data_sets_metadata(member, capsys, tmp_path):
    """The data set's metadata, read by evaluate, and its CSV given to zoo predict: the same
    numbers for the same images (prior correction and calibration as the member's)."""
    result = zoo.evaluate(member.name, workspace=member.workspace, bootstrap=0, out=tmp_path / "e")
    evaluated = pd.read_csv(result.path / "predictions.csv", dtype={"image": str})
    evaluated = evaluated.set_index("image")[list(HAM_CLASSES)].sort_index()
    assert evaluated.index.tolist() == sorted(member.test)
    code, stdout, err = run(
        capsys,
        *["predict", member.name, *member.test.values(), "--workspace", member.workspace],
        *["--metadata", member.folder / CSV],
    )
    assert code == 0, err
    np.testing.assert_allclose(predicted(stdout), evaluated, atol=1e-5)


def test_probabilities_read_the_trainers_cache_and_equal_predict_files(member):
    target = MemberTarget.from_path(member.path)
    dataset = load_dataset(f"ham10000:{member.folder}", workspace=member.workspace)
    ids = sorted(member.test)
    cached = target.probabilities(
        dataset, ids, tta="none", prior_correction=False, workspace=member.workspace
    )
    # the trainer keyed test.csv by the model and the encoded metadata: inference agrees
    assert cached.attrs["inference"]["cached"] is True
    files = target.predict_files(
        [member.test[i] for i in ids],
        prior_correction=False,
        metadata=read_metadata_csv(member.folder / CSV),
    )
    np.testing.assert_allclose(cached.loc[ids], files.loc[ids], atol=1e-5)


def test_changed_metadata_is_computed_again_not_read_from_the_cache(member, tmp_path):
    """Metadata is not part of the data's fingerprint, so the cache entry is the same; its
    digest of the encoded metadata keeps a stale entry from being read."""
    path = copied_member(member, tmp_path)
    folder = tmp_path / "ham"
    shutil.copytree(member.folder, folder)
    meta = pd.read_csv(folder / CSV, dtype=str, keep_default_na=False)
    meta["age"], meta["sex"] = "85", "female"
    meta.to_csv(folder / CSV, index=False)
    changed = load_dataset(f"ham10000:{folder}", workspace=tmp_path / "ws")
    original = load_dataset(f"ham10000:{member.folder}", workspace=tmp_path / "ws")
    assert changed.fingerprint == original.fingerprint
    target, ids = MemberTarget.from_path(path), sorted(member.test)
    options = {"tta": "none", "prior_correction": False, "workspace": tmp_path / "ws"}
    fresh = target.probabilities(changed, ids, **options)
    assert fresh.attrs["inference"]["cached"] is False
    files = [member.test[i] for i in ids]
    by_files = target.predict_files(
        files, prior_correction=False, metadata=read_metadata_csv(folder / CSV)
    )
    np.testing.assert_allclose(fresh.loc[ids], by_files.loc[ids], atol=1e-5)
    again = target.probabilities(changed, ids, **options)
    assert again.attrs["inference"]["cached"] is True
    back = target.probabilities(original, ids, **options)  # the original metadata: recomputed
    assert back.attrs["inference"]["cached"] is False
    assert np.abs(back.loc[ids].to_numpy() - fresh.loc[ids].to_numpy()).max() > 1e-4


# --- damaged records and image-only commands ---------------------------------------------------


@pytest.mark.parametrize(
    ("damage", "says"),
    [
        (lambda m: m | {"width": 99}, "metadata_inputs.width"),
        (lambda m: m | {"sites": "back"}, "metadata_inputs.sites"),
        (lambda m: m | {"fields": ["age", "height"]}, "metadata_inputs.fields"),
        (lambda m: [m], "'metadata_inputs' must be an object"),
    ],
)
def test_damaged_metadata_inputs_is_one_line(member, capsys, tmp_path, damage, says):
    path = copied_member(member, tmp_path)
    info = json.loads((path / "member.json").read_text())
    info["metadata_inputs"] = damage(info["metadata_inputs"])
    (path / "member.json").write_text(json.dumps(info))
    message = one_line_error(*run(capsys, *predict_argv(member, tmp_path / "ws"))[::2])
    assert f"{path / 'member.json'} is damaged (" in message and says in message


@pytest.mark.parametrize("change", ["one site fewer", "none recorded"])
def test_a_model_whose_metadata_input_differs_from_member_json_is_refused(
    member, capsys, tmp_path, change
):
    path = copied_member(member, tmp_path)
    info = json.loads((path / "member.json").read_text())
    width = info["metadata_inputs"]["width"]
    if change == "none recorded":
        del info["metadata_inputs"]
        expected = 0
    else:
        info["metadata_inputs"]["sites"].pop()
        expected = info["metadata_inputs"]["width"] = width - 1
    (path / "member.json").write_text(json.dumps(info))
    message = one_line_error(*run(capsys, *predict_argv(member, tmp_path / "ws"))[::2])
    assert str(path / "model.keras") in message
    assert f"its metadata input has {width} column(s) but member.json's metadata_inputs " in message
    assert f"describes {expected}" in message


@pytest.mark.parametrize(
    ("command", "extra"),
    [("export", []), ("serve", ["--port", "0"]), ("explain", ["IMAGE", "--out", "OUT"])],
)
def test_commands_that_feed_images_only_refuse_the_member(member, capsys, tmp_path, command, extra):
    image = str(next(iter(member.test.values())))
    extra = [image if a == "IMAGE" else str(tmp_path / "out") if a == "OUT" else a for a in extra]
    code, _, err = run(capsys, command, member.name, *extra, "--workspace", member.workspace)
    message = one_line_error(code, err)
    assert (
        f"member {member.name} reads age, sex, site beside the image, and zoo {command} " in message
    )
    assert "zoo predict --metadata FILE.csv" in message
    assert not (tmp_path / "out").exists() and not (member.workspace / "exports").exists()


# --- data without metadata ------------------------------------------------------------------


def test_metadata_recipe_on_data_without_metadata_columns_is_one_line(
    tmp_path, capsys, write_images
):
    folder = tmp_path / "folder"
    for c in ("mel", "nv"):
        write_images(folder / c, [f"{c}{i}" for i in range(10)], seed=len(c))
    argv = ["train", "small_cnn", "--data", f"folder:{folder}", "--image-size", "32"]
    argv += [
        "--epochs",
        "1",
        "--weights",
        "none",
        "--set",
        METADATA,
        "--workspace",
        tmp_path / "ws",
    ]
    message = one_line_error(*run(capsys, *argv)[::2])
    assert (
        f"recipe small_cnn reads metadata (age, sex, site) but data folder:{folder} has none"
        in message
    )
    assert "--set metadata=[]" in message
    assert not list((tmp_path / "ws").glob("members/*"))


def test_absent_columns_read_as_missing_and_a_site_only_head_needs_sites(
    tmp_path, capsys, write_ham10000
):
    folder = write_ham10000(tmp_path / "ham", lesions=2)
    meta = pd.read_csv(folder / CSV).drop(columns="sex")
    meta["localization"] = "unknown"
    meta.to_csv(folder / CSV, index=False)
    dataset = load_dataset(f"ham10000:{folder}", workspace=tmp_path)
    recipe = get_recipe("small_cnn")
    assert metadata_encoding(recipe, dataset, dataset.ids) is None  # metadata = [] by default
    encoding = metadata_encoding(recipe.with_settings([METADATA]), dataset, dataset.ids)
    assert encoding == MetadataEncoding(tuple(ALL), ()) and encoding.width == 4
    assert f"data ham10000:{folder} has no sex column: read as missing" in capsys.readouterr().err
    np.testing.assert_array_equal(
        encoding.encode(dataset.metadata(dataset.ids[:1])), np.float32([[0.5, 0, 0, 0]])
    )
    with pytest.raises(
        ZooError, match=r"reads only site, but no training image .* has a known site"
    ):
        metadata_encoding(recipe.with_settings(["metadata=['site']"]), dataset, dataset.ids)


# --- the cached-features head stage -----------------------------------------------------------


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:Skipping variable loading for optimizer")
def test_cached_feature_head_stage_trains_with_metadata(member, tmp_path, capsys):
    """efficientnet_lite0's first stage trains the head on cached features joined to the
    metadata; the second fine-tunes the whole two-input model."""
    path = _train(tmp_path / "ws", member.folder, "efficientnet_lite0", epochs=2, quiet=False)
    said = "".join(capsys.readouterr())
    assert "stage 1/2" in said and "features cached" in said and "stage 2/2" in said
    info = json.loads((path / "member.json").read_text())
    assert info["metadata_inputs"]["fields"] == ALL
    history = pd.read_csv(path / "history.csv")
    assert len(history) == 2 and np.isfinite(history.select_dtypes("number").to_numpy()).all()
    target = MemberTarget.from_path(path)
    dataset = load_dataset(f"ham10000:{member.folder}", workspace=tmp_path / "ws")
    ids = sorted(Member(path).split_ids("val"))
    cached = target.probabilities(
        dataset, ids, tta="none", prior_correction=False, workspace=tmp_path / "ws"
    )
    assert cached.attrs["inference"]["cached"] is True
    files = [member.folder / "images" / f"{i}.jpg" for i in ids]
    again = target.predict_files(
        files, prior_correction=False, metadata=read_metadata_csv(member.folder / CSV)
    )
    np.testing.assert_allclose(cached.loc[ids], again.loc[ids], atol=1e-5)

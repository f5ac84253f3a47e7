"""``python -m zoo``: listing, exit codes, --quiet, and bad input reported before training."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from zoo import __version__, console
from zoo.cli import recipes as commands
from zoo.cli.main import COMMANDS as COMMAND_MODULES
from zoo.cli.main import build_parser, main
from zoo.models import build
from zoo.recipes.recipe import load_registry

ROOT = Path(__file__).resolve().parents[2]


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def built(monkeypatch) -> list[str]:
    """Names of the recipes whose networks ``zoo recipes`` builds (faked: 1,234,567 each)."""
    seen = []

    def fake_counts(recipes, workspace):
        seen.extend(r.name for r in recipes)
        return {r.name: 1_234_567 for r in recipes}

    monkeypatch.setattr(commands, "parameter_counts", fake_counts)
    return seen


def test_recipes_lists_every_recipe_without_building_networks(tmp_path, built, capsys):
    code, out, err = run(["recipes", "--workspace", tmp_path], capsys)
    assert (code, err) == (0, "")
    registry = load_registry()
    assert built == []  # every count comes from the backbone table
    for name in registry.names():
        assert name in out
    assert f"{len(registry.names())} recipes" in out
    assert "Esteva et al. 2017" in out and "299 px" in out and "21.8 M" in out and "1.2 M" in out


def test_recipes_params_builds_every_network(tmp_path, built, capsys):
    code, out, _ = run(["recipes", "--params", "--workspace", tmp_path], capsys)
    assert code == 0 and sorted(built) == load_registry().names()
    assert "21.8 M" not in out and "1.2 M" in out  # the built (fake) counts, not the table's


@pytest.mark.parametrize(
    "name", ["mobilenet_v3_small", "efficientnet_b0", "efficientnet_lite0", "small_cnn"]
)
def test_known_parameters_match_a_built_network(name):
    """The backbone table gives what building gives (cheap backbones checked here)."""
    import keras

    recipe = load_registry().get(name)
    model, _ = build.build_model(recipe, num_classes=7, image_size=32, weights="none")
    assert commands.known_parameters(recipe) == model.count_params()
    keras.backend.clear_session()


def test_recipes_quiet_prints_nothing(tmp_path, built, capsys):
    assert run(["recipes", "--quiet", "--workspace", tmp_path], capsys) == (0, "", "")
    assert not console.is_quiet()  # --quiet holds for that one call


def test_recipes_json_lists_every_recipe(tmp_path, built, capsys):
    code, out, err = run(["recipes", "--json", "--quiet", "--workspace", tmp_path], capsys)
    assert (code, err) == (0, "")
    rows = {row["name"]: row for row in json.loads(out)}
    assert sorted(rows) == load_registry().names()
    assert rows["inception_v3"]["image_size"] == 299
    assert rows["inception_v3"]["parameters"] == 21_802_784 + 2049 * 7
    assert rows["small_cnn"]["parameters"] == 1_175_136 + 257 * 7  # counted from its options
    assert rows["inception_v3"]["stages"] == [{"trainable": "all", "epochs": 90}]


def test_tables_never_truncate_names_when_not_a_terminal(tmp_path, built, monkeypatch, capsys):
    """``zoo recipes | grep inception_v3``: a pipe gets every name and source whole, even
    when the terminal the command runs from is 80 columns wide."""
    monkeypatch.delenv("COLUMNS", raising=False)
    monkeypatch.setattr(
        "os.get_terminal_size", lambda fd=0: __import__("os").terminal_size((80, 24))
    )
    code, out, _ = run(["recipes", "--workspace", tmp_path], capsys)
    assert code == 0 and "…" not in out
    lines = {line.split("│")[1].strip(): line for line in out.splitlines() if "│" in line}
    for recipe in load_registry():
        assert recipe.name in lines and recipe.source in lines[recipe.name]


def test_recipes_include_workspace_recipes(tmp_path, built, capsys):
    (tmp_path / "recipes").mkdir()
    text = (ROOT / "recipes" / "small_cnn.toml").read_text().replace('"small_cnn"\n', '"mine"\n', 1)
    (tmp_path / "recipes" / "mine.toml").write_text(text)
    code, out, _ = run(["recipes", "--workspace", tmp_path], capsys)
    assert code == 0 and "mine" in out


def test_parameter_counts_are_counted_once(tmp_path, monkeypatch):
    registry = load_registry()
    recipes = [registry.get("small_cnn")]
    first = commands.parameter_counts(recipes, tmp_path)
    assert first == {"small_cnn": 1_176_935}  # 4 stages × 2 convs, BN, a 7-way head
    assert (tmp_path / "cache" / "parameters.json").is_file()

    def no_building(*args, **kwargs):
        raise AssertionError("parameter counts should come from the cache")

    monkeypatch.setattr("zoo.models.build.build_model", no_building)
    assert commands.parameter_counts(recipes, tmp_path) == first


@pytest.mark.parametrize("damage", ["-1", "true", '"many"', "1.5", "null"])
def test_a_damaged_parameter_count_is_counted_again(tmp_path, damage):
    recipes = [load_registry().get("small_cnn")]
    first = commands.parameter_counts(recipes, tmp_path)
    cache_file = tmp_path / "cache" / "parameters.json"
    cache = json.loads(cache_file.read_text())
    assert cache["format_version"] == 1 and list(cache["entries"].values()) == [1_176_935]
    (key,) = cache["entries"]
    cache_file.write_text(json.dumps({"format_version": 1, "entries": {key: json.loads(damage)}}))
    assert commands.parameter_counts(recipes, tmp_path) == first


# --- --workspace is the workspace, --out the output path, in every command -----------------

COMMANDS = {
    "recipes": ["recipes"],
    "train": ["train", "small_cnn"],
    "members": ["members"],
    "evaluate": ["evaluate", "m"],
    "predict": ["predict", "m", "x.jpg"],
    "explain": ["explain", "m", "x.jpg"],
    "ensemble": ["ensemble", "build", "e.toml"],
    "leaderboard": ["leaderboard"],
    "serve": ["serve", "m"],
}
WITH_OUT = {"evaluate": "DIR", "predict": "FILE.csv", "explain": "DIR", "leaderboard": "DIR"}


@pytest.fixture
def dispatched(monkeypatch) -> list[tuple]:
    """(command, workspace, out) of each dispatched command; nothing runs."""
    seen = []
    for name in COMMANDS:

        def handler(args, workspace, name=name):
            seen.append((name, workspace, getattr(args, "out", None)))

        monkeypatch.setattr(COMMAND_MODULES[name], "run", handler)
    return seen


@pytest.mark.parametrize("command", COMMANDS)
def test_workspace_option_then_zoo_home_then_zoo_runs(
    command, tmp_path, monkeypatch, dispatched, capsys
):
    argv = COMMANDS[command]
    monkeypatch.setenv("ZOO_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    assert main([*argv, "--workspace", str(tmp_path / "ws")]) == 0
    assert main(argv) == 0
    monkeypatch.delenv("ZOO_HOME")
    assert main(argv) == 0
    assert [w for _, w, _ in dispatched] == [
        tmp_path / "ws",
        tmp_path / "home",
        tmp_path / "zoo-runs",
    ]


@pytest.mark.parametrize("command", WITH_OUT)
def test_out_is_the_output_path_not_the_workspace(
    command, tmp_path, monkeypatch, dispatched, capsys
):
    monkeypatch.setenv("ZOO_HOME", str(tmp_path / "home"))
    assert main([*COMMANDS[command], "--out", str(tmp_path / "result")]) == 0
    assert dispatched == [(command, tmp_path / "home", str(tmp_path / "result"))]
    assert f"--out {WITH_OUT[command]}" in _help(command)


@pytest.mark.parametrize("command", sorted(set(COMMANDS) - set(WITH_OUT)))
def test_out_on_a_workspace_command_exits_2_pointing_to_workspace(
    command, tmp_path, dispatched, capsys
):
    with pytest.raises(SystemExit) as info:
        main([*COMMANDS[command], "--out", str(tmp_path / "ws")])
    err = capsys.readouterr().err
    assert info.value.code == 2 and dispatched == []
    assert err.startswith("error: zoo ") and err.count("\n") == 1
    assert f"--out {tmp_path / 'ws'}" in err and f"--workspace {tmp_path / 'ws'}" in err
    assert not (tmp_path / "ws").exists()


def test_a_workspace_that_cannot_be_a_folder_exits_2_naming_it(tmp_path, monkeypatch, capsys):
    (tmp_path / "file").write_text("")
    code, out, err = run(["members", "--workspace", tmp_path / "file"], capsys)
    assert code == 2 and err.count("\n") == 1
    assert err.startswith(f"error: --workspace {tmp_path / 'file'} cannot be the workspace")
    monkeypatch.setenv("ZOO_HOME", str(tmp_path / "file" / "below"))
    code, out, err = run(["members"], capsys)
    assert code == 2 and f"$ZOO_HOME={tmp_path / 'file' / 'below'}" in err


def _help(command: str) -> str:
    return dict(_subparsers(build_parser()))[command].format_help()


def _subparsers(parser: argparse.ArgumentParser):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield name, sub
                yield from _subparsers(sub)


def test_every_option_shows_its_default_in_help():
    """Options that take a value say their default (argparse's or the help's own words)."""
    missing = []
    for name, sub in _subparsers(build_parser()):
        formatter = sub._get_formatter()
        for action in sub._actions:
            if not action.option_strings or action.nargs == 0 or action.help == argparse.SUPPRESS:
                continue
            text = formatter._expand_help(action)
            if "default" not in text:
                missing.append(f"zoo {name} {action.option_strings[0]}")
    assert missing == []
    assert "(default: 1000)" in " ".join(_help("evaluate").split())
    assert "(default: $ZOO_HOME, else ./zoo-runs)" in " ".join(_help("members").split())


def test_version(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0 and capsys.readouterr().out == f"zoo {__version__}\n"


def test_unknown_recipe_exits_2_with_one_line(tmp_path, capsys):
    code, out, err = run(["train", "inceptoin_v3", "--workspace", tmp_path], capsys)
    assert code == 2
    assert err.startswith("error: unknown recipe 'inceptoin_v3'. Did you mean inception_v3")
    assert err.count("\n") == 1 and "Traceback" not in err


def test_bad_arguments_exit_2(tmp_path, capsys):
    for argv in (
        ["train", "small_cnn", "--epochs", "0"],
        ["train", "small_cnn", "--image-size", "big"],
        ["frobnicate"],
        [],
    ):
        with pytest.raises(SystemExit) as info:
            main([*argv, "--workspace", str(tmp_path)] if argv else argv)
        assert info.value.code == 2, argv
        assert "usage: zoo" in capsys.readouterr().err


def test_python_dash_m_exit_codes():
    env_python = [sys.executable, "-m", "zoo"]
    done = subprocess.run([*env_python, "--help"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0 and "recipes" in done.stdout and "train" in done.stdout
    done = subprocess.run([*env_python, "frobnicate"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 2 and "invalid choice" in done.stderr


def test_members_with_none_yet(tmp_path, capsys):
    code, out, _ = run(["members", "--workspace", tmp_path], capsys)
    assert code == 0 and "No members" in out and "zoo train" in out


def test_quiet_silences_information_not_errors(zoo_workspace, capsys):
    (zoo_workspace / "members" / "taken").mkdir(parents=True)
    argv = ["train", "small_cnn", "--name", "taken", "--workspace", zoo_workspace]
    code, out, err = run(argv, capsys)
    assert code == 2 and "Using the embedded demo data set" in out
    assert "error: member 'taken' already exists" in err
    code, out, err = run([*argv, "--quiet"], capsys)
    assert code == 2 and out == ""
    assert "error: member 'taken' already exists" in err and err.count("\n") == 1


def test_interrupt_exits_130_and_suggests_resume(tmp_path, monkeypatch, capsys):
    def interrupted(options):
        raise KeyboardInterrupt

    monkeypatch.setattr("zoo.training.trainer.train", interrupted)
    code, _, err = run(["train", "small_cnn", "--workspace", tmp_path], capsys)
    assert code == 130 and "--resume" in err


def test_imagenet_without_network_exits_2_with_one_line(zoo_workspace, monkeypatch, capsys):
    real = build.APPLICATIONS["InceptionV3"]

    def offline(**kwargs):
        if kwargs["weights"] == "imagenet":
            raise Exception(
                "URL fetch failure on https://storage.googleapis.com/tensorflow/keras-applications/"
                "inception_v3/inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5: None -- "
                "[Errno -2] Name or service not known"
            )
        return real(**kwargs)

    monkeypatch.setitem(build.APPLICATIONS, "InceptionV3", offline)

    def decode_many(*args, **kwargs):
        raise AssertionError("images decoded before the weights were checked")

    monkeypatch.setattr("zoo.data.images.decode_many", decode_many)  # fail fast: weights first
    argv = ["train", "inception_v3", "--weights", "imagenet", "--image-size", "75", "--epochs", "1"]
    code, _, err = run([*argv, "--workspace", zoo_workspace], capsys)
    assert code == 2
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err
    assert "--weights none" in err and "--weights PATH" in err
    assert not (zoo_workspace / "members").exists() or not any(
        (zoo_workspace / "members").iterdir()
    )


def _ham_with_every_problem(folder: Path, write_ham10000, write_images) -> dict[str, str]:
    """A HAM10000 folder (7 classes × 10 lesions) with one of each problem; returns what
    each reported line must mention."""
    write_ham10000(folder, lesions=10)
    meta = pd.read_csv(folder / "HAM10000_metadata.csv")
    images = folder / "images"
    ids = meta["image_id"].tolist()
    meta.loc[3, "dx"] = "xyz"  # unknown label (line 5)
    meta.loc[len(meta)] = meta.loc[7]  # duplicate image id
    meta.loc[len(meta)] = {**meta.loc[8].to_dict(), "image_id": "ISIC_gone"}  # missing image
    meta.to_csv(folder / "HAM10000_metadata.csv", index=False)
    (images / f"{ids[10]}.jpg").write_bytes(b"\x00\x01 definitely not a JPEG" * 20)
    (big,) = write_images(images, ["big.jpg"], size=96)
    data = big.read_bytes()
    big.unlink()
    (images / f"{ids[11]}.jpg").write_bytes(data[: len(data) // 2])  # truncated JPEG
    # other colour modes are converted, not rejected
    for k, (mode, suffix) in enumerate(
        [("L", ".jpg"), ("RGBA", ".png"), ("CMYK", ".jpg"), ("P", ".png")]
    ):
        (images / f"{ids[20 + k]}.jpg").unlink()
        # distinct pixels: identical images would be merged into one lesion as duplicates
        write_images(images, [f"{ids[20 + k]}{suffix}"], mode=mode, seed=1000 + k)
    return {
        "unknown label": f"line 5 (image {ids[3]}): unknown label 'xyz'",
        "duplicate": f"duplicate image id '{ids[7]}' on lines 9, {len(meta)}",
        "missing": f"line {len(meta) + 1}: image 'ISIC_gone' not found",
        "unreadable": f"image {ids[10]} ({images / ids[10]}.jpg): not a readable image",
        "truncated": f"image {ids[11]} ({images / ids[11]}.jpg): unreadable or truncated",
    }


def test_bad_data_is_reported_all_at_once_before_training(
    tmp_path, zoo_workspace, write_ham10000, write_images, capsys
):
    folder = tmp_path / "ham"
    expected = _ham_with_every_problem(folder, write_ham10000, write_images)
    argv = ["train", "small_cnn", "--data", folder, "--epochs", "1", "--image-size", "32"]
    code, out, err = run([*argv, "--workspace", zoo_workspace], capsys)
    assert code == 2, err
    assert "Traceback" not in err
    assert err.startswith("error: 5 problem(s) in data set ham10000:")
    lines = err.strip().splitlines()[1:]
    assert len(lines) == 5, err
    for what, text in expected.items():
        assert any(text in line for line in lines), (what, text, err)
    assert "epoch" not in out  # nothing trained
    assert not (zoo_workspace / "runs").exists() or not any((zoo_workspace / "runs").iterdir())


def test_bad_images_alone_are_reported_before_the_first_epoch(
    tmp_path, zoo_workspace, write_ham10000, write_images, capsys
):
    folder = write_ham10000(tmp_path / "ham", lesions=10)
    meta = pd.read_csv(folder / "HAM10000_metadata.csv")
    (folder / "images" / f"{meta['image_id'][0]}.jpg").write_bytes(b"junk")
    (folder / "images" / f"{meta['image_id'][5]}.jpg").unlink()
    argv = ["train", "small_cnn", "--data", f"ham10000:{folder}", "--epochs", "1"]
    code, out, err = run([*argv, "--image-size", "32", "--workspace", zoo_workspace], capsys)
    assert code == 2 and "Traceback" not in err
    assert err.startswith("error: 2 problem(s)")
    assert meta["image_id"][0] in err and f"image '{meta['image_id'][5]}' not found" in err
    assert "epoch 1" not in out


def test_missing_column_and_too_few_lesions_exit_2(tmp_path, zoo_workspace, write_ham10000, capsys):
    folder = write_ham10000(tmp_path / "ham", lesions=10)
    meta = pd.read_csv(folder / "HAM10000_metadata.csv")
    meta.drop(columns=["lesion_id"]).to_csv(folder / "HAM10000_metadata.csv", index=False)
    argv = ["train", "small_cnn", "--data", folder, "--epochs", "1", "--image-size", "32"]
    code, _, err = run([*argv, "--workspace", zoo_workspace], capsys)
    assert code == 2 and "missing column(s) lesion_id" in err and err.count("\n") == 1

    meta.loc[meta["dx"] == "df", "lesion_id"] = "HAM_df_only"  # one lesion of df
    meta.to_csv(folder / "HAM10000_metadata.csv", index=False)
    code, _, err = run([*argv, "--workspace", zoo_workspace], capsys)
    assert code == 2 and "Traceback" not in err
    assert err.startswith("error: 1 problem(s) in data set ham10000:")
    assert "class df has 1 lesion(s) (10 image(s)), fewer than the 3" in err
    assert err.count("\n") == 2  # the headline and one line per problem


def test_bad_inputs_exit_2_with_one_line_naming_them(tmp_path, zoo_workspace, capsys):
    """A file where a folder is expected, a folder where a CSV is expected, non-UTF-8 and
    empty CSVs: one line naming the option, the path, and what to pass instead."""
    (tmp_path / "list.csv").write_text("image,label\na.jpg,x\n")
    (tmp_path / "latin1.csv").write_bytes("image,label\ncafé.jpg,nævus\n".encode("latin-1"))
    (tmp_path / "empty.csv").write_bytes(b"")
    cases = {
        f"folder:{tmp_path / 'list.csv'}": "is a file, but folder: needs a folder",
        f"ham10000:{tmp_path / 'list.csv'}": "is a file, but ham10000: needs a folder",
        f"csv:{tmp_path}": "is a folder, but csv: needs a CSV file",
        f"isic:{tmp_path}": "is a folder, but isic: needs a CSV file",
        f"csv:{tmp_path / 'latin1.csv'}": "is not UTF-8 text (it holds byte 0xe9); save it as UTF-8",
        str(tmp_path / "latin1.csv"): "is not UTF-8 text",
        f"isic:{tmp_path / 'empty.csv'}": "the file is empty",
    }
    for spec, expected in cases.items():
        argv = ["train", "small_cnn", "--data", spec, "--workspace", zoo_workspace]
        code, _, err = run(argv, capsys)
        assert code == 2, (spec, err)
        assert err.startswith("error: ") and err.count("\n") == 1, (spec, err)
        assert expected in err and "Traceback" not in err, (spec, err)
        assert spec.partition(":")[2] in err or spec in err  # names the value received


@pytest.mark.parametrize("option", ["--seed", "--split-seed"])
def test_negative_seeds_are_rejected_by_the_parser(tmp_path, option, capsys):
    for value in ("-1", "x"):
        with pytest.raises(SystemExit) as info:
            main(["train", "small_cnn", option, value, "--workspace", str(tmp_path)])
        err = capsys.readouterr().err
        assert info.value.code == 2 and "Traceback" not in err
        assert f"argument {option}: expected a non-negative integer" in err and repr(value) in err


def test_crop_borders_option_reaches_the_trainer(tmp_path, monkeypatch, capsys):
    seen = []
    monkeypatch.setattr("zoo.training.trainer.train", seen.append)
    for flags in ([], ["--crop-borders"], ["--no-crop-borders"]):
        assert main(["train", "small_cnn", *flags, "--workspace", str(tmp_path)]) == 0
    assert [o.crop_borders for o in seen] == [None, True, False]


def test_corrupt_state_on_resume_exits_2_naming_the_file(zoo_workspace, capsys):
    run_dir = zoo_workspace / "runs" / "small_cnn.demo.s0"
    run_dir.mkdir(parents=True)
    argv = ["train", "small_cnn", "--resume", "--workspace", zoo_workspace]
    for content, expected in (
        (b'{"epochs_done": 1, "hist', "cannot read"),
        (b"\xff\xfe not json", "cannot read"),
        (b"[1, 2]", "holds a JSON list, not an object"),
        (b'{"epochs_done": 1}', "is damaged: no recipe, split, weights"),
    ):
        (run_dir / "state.json").write_bytes(content)
        code, _, err = run(argv, capsys)
        assert code == 2 and "Traceback" not in err and err.count("\n") == 1, err
        assert f"--resume: {run_dir / 'state.json'}" in err or str(run_dir / "state.json") in err
        assert expected in err and f"delete {run_dir}" in err, err


def _fake_member(folder: Path, name: str) -> None:
    import json
    import zipfile

    folder.mkdir(parents=True)
    metrics = {"balanced_accuracy": 0.5, "macro_auc": 0.75, "accuracy": 0.5, "n_images": 10}
    info = {
        "name": name,
        "classes": ["a", "b"],
        "split": {"ids": {"train": [], "val": [], "test": []}},
        "recipe": "small_cnn",
        "data": {"name": "demo"},
        "input": {"size": 32},
        "training": {"epochs_run": 1, "seconds": 60},
        "metrics": {"val": metrics, "test": metrics},
    }
    (folder / "member.json").write_text(json.dumps(info))
    with zipfile.ZipFile(folder / "model.keras", "w") as archive:  # passes the cheap check
        archive.writestr("config.json", "{}")
        archive.writestr("model.weights.h5", b"")


def test_members_shows_damaged_members_without_aborting(tmp_path, capsys):
    members = tmp_path / "members"
    _fake_member(members / "a.good", "a.good")
    _fake_member(members / "z.good", "z.good")
    (members / "b.not-json").mkdir()
    (members / "b.not-json" / "member.json").write_text("{ half")
    (members / "c.latin1").mkdir()
    (members / "c.latin1" / "member.json").write_bytes('{"name": "é"}'.encode("latin-1"))
    (members / "d.no-metrics").mkdir()
    (members / "d.no-metrics" / "member.json").write_text('{"name": "d.no-metrics"}')
    damaged = ("b.not-json", "c.latin1", "d.no-metrics")
    code, out, err = run(["members", "--workspace", tmp_path], capsys)
    assert code == 0 and "Traceback" not in out + err
    assert "5 members" in out
    rows = {}
    for line in out.splitlines():
        cells = line.replace("│", " ").split()
        if cells and cells[0] in ("a.good", "z.good", *damaged):
            rows[cells[0]] = line
    assert "0.500" in rows["a.good"] and "0.500" in rows["z.good"]
    for name in damaged:  # a row in the table, the reason as a warning on stderr
        assert "damaged" in rows[name], out
        assert f"{members / name / 'member.json'}" in err
    assert "no 'classes' entry" in err and "retrain" in err

    code, out, err = run(["members", "--json", "--workspace", tmp_path], capsys)
    records = {r["name"]: r for r in json.loads(out)}
    assert (code, err) == (0, "") and len(records) == 5
    assert records["a.good"]["val_macro_auc"] == 0.75 and records["a.good"]["epochs"] == 1
    assert "no 'classes' entry" in records["d.no-metrics"]["damaged"]

    code, out, err = run(["members", "--quiet", "--workspace", tmp_path], capsys)
    assert (code, out, err) == (0, "", "")


@pytest.mark.slow
def test_train_end_to_end_then_members_lists_it(zoo_workspace, capsys):
    """``zoo train`` on the demo set, its output in a log (not a terminal): one line per
    epoch, no progress-bar fragments, then where the member went; ``zoo members`` lists it;
    ``--no-crop-borders`` is recorded in member.json with the other overrides."""
    argv = ["train", "small_cnn", "--image-size", "32", "--epochs", "2", "--no-crop-borders"]
    code, out, err = run([*argv, "--workspace", zoo_workspace], capsys)
    path = zoo_workspace / "members" / "small_cnn.demo.s0"
    assert code == 0, err
    epochs = [line for line in out.splitlines() if line.lstrip().startswith("epoch ")]
    assert [line.split()[1] for line in epochs] == ["1/2", "2/2"]
    assert "\r" not in out + err and "\x1b[" not in out + err
    bars = [line for line in (out + err).splitlines() if "━" in line and set(line) - set("━╇ ")]
    assert bars == []  # the only heavy rule is the summary table's header line
    assert f"Saved member small_cnn.demo.s0 to {path}" in out
    info = json.loads((path / "member.json").read_text())
    assert info["config"]["options"]["crop_borders"] is False
    assert info["config"]["recipe"]["input"]["crop_borders"] is False
    assert info["input"]["crop_borders"] is False
    assert info["config"]["recipe"]["input"]["size"] == 32

    code, out, _ = run(["members", "--workspace", zoo_workspace], capsys)
    assert code == 0 and "1 members" in out and "small_cnn.demo.s0" in out
    code, out, _ = run(["members", "--json", "--workspace", zoo_workspace], capsys)
    assert [r["path"] for r in json.loads(out)] == [str(path)]


def test_members_json_is_valid_json_when_a_metric_is_nan(tmp_path, capsys):
    _fake_member(tmp_path / "members" / "m", "m")
    file = tmp_path / "members" / "m" / "member.json"
    file.write_text(file.read_text().replace('"macro_auc": 0.75', '"macro_auc": NaN', 1))
    code, out, _ = run(["members", "--json", "--workspace", tmp_path], capsys)

    def refuse(constant):
        raise ValueError(f"{constant} is not JSON")

    (record,) = json.loads(out, parse_constant=refuse)
    # a NaN figure is a damaged value (records are checked whole): listed as damaged, in JSON
    assert code == 0 and "macro_auc" in record["damaged"] and "NaN" not in out


@pytest.mark.parametrize(
    ("command", "argv", "says"),
    [
        ("train", ["train", "small_cnn"], "--resume"),
        ("evaluate", ["evaluate", "x"], "Nothing half-written was kept"),
        ("leaderboard", ["leaderboard"], "Nothing half-written was kept"),
    ],
)
def test_ctrl_c_says_what_it_left(tmp_path, monkeypatch, capsys, command, argv, says):
    """Only an interrupted training run talks about --resume."""
    from zoo.cli import main as cli

    def interrupted(args, workspace):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli.COMMANDS[command], "run", interrupted)
    monkeypatch.setattr(cli.COMMANDS[command], "NEEDS_TENSORFLOW", False)
    assert cli.main([*argv, "--workspace", str(tmp_path)]) == 130
    err = capsys.readouterr().err
    assert err.startswith("interrupted.") and says in err
    assert ("--resume" in err) == (command == "train")


def test_an_os_error_is_one_line(tmp_path, monkeypatch, capsys):
    from zoo.cli import main as cli

    def refused(args, workspace):
        raise PermissionError(13, "Permission denied", str(tmp_path / "x.csv"))

    monkeypatch.setattr(cli.COMMANDS["leaderboard"], "run", refused)
    assert cli.main(["leaderboard", "--workspace", str(tmp_path)]) == 2
    assert capsys.readouterr().err == f"error: Permission denied ({tmp_path / 'x.csv'}).\n"

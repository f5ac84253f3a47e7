"""Fault injection, table-driven: bad data, recipes, options, damaged members and ensembles.

Every case prepares one fault in a private copy of the session's demo workspace, runs one
command, and checks the answer: exit status 2, one ``error:`` line naming the file or option
(no traceback), and every file that was there before is still there, byte for byte, with no
temporary or lock file left behind.
"""

from __future__ import annotations

import json
import re
import shutil
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pytest
from faultkit import MEMBER, assert_refused, half_written, png_bomb, run_cli, snapshot

from zoo import console

TRAIN = ["train", "small_cnn", "--image-size", "32", "--epochs", "1", "--quiet"]
RECIPE = """source = "fault"
backbone = "small_cnn"
weights = "none"
{top}
[input]
size = 32
[[stages]]
trainable = "all"
epochs = 1
learning_rate = {lr}
"""


@dataclass
class Fault:
    """``setup(case)`` writes the fault and returns extra names for ``argv``; the command must
    be refused naming ``named`` (formatted like ``argv``) and matching ``pattern``."""

    setup: Callable[[Case], dict] | None
    argv: list[str]
    named: list[str] = field(default_factory=list)
    pattern: str | None = None


@dataclass
class Case:
    ws: Path
    tmp: Path
    write_images: Callable

    @property
    def member(self) -> Path:
        return self.ws / "members" / MEMBER

    def two_classes(self, extra: dict[str, bytes] | None = None) -> dict:
        """``folder:`` data with classes a and b (4 images each), plus ``extra`` files."""
        data = self.tmp / "data"
        self.write_images(data / "a", [f"a{i}" for i in range(4)])
        self.write_images(data / "b", [f"b{i}" for i in range(4)], seed=10)
        for name, content in (extra or {}).items():
            (data / name).write_bytes(content)
        return {"data": f"folder:{data}"}

    def ham(self, edit: Callable[[pd.DataFrame], pd.DataFrame]) -> dict:
        from conftest import write_image

        data = self.tmp / "ham"
        rows = []
        for label in ("mel", "nv"):
            for i in range(4):
                image = f"ISIC_{label}{i}"
                write_image(data / "images" / f"{image}.jpg", seed=len(rows))
                rows.append({"lesion_id": f"L_{label}{i}", "image_id": image, "dx": label})
        edit(pd.DataFrame(rows)).to_csv(data / "HAM10000_metadata.csv", index=False)
        return {"data": f"ham10000:{data}"}

    def recipe(self, text: str) -> dict:
        (self.ws / "recipes").mkdir(exist_ok=True)
        (self.ws / "recipes" / "fault.toml").write_text(text)
        return {"recipe": self.ws / "recipes" / "fault.toml"}

    def model(self, content: bytes) -> dict:
        (self.member / "model.keras").write_bytes(content)
        return {}

    def keras_config(self, edit: Callable[[str], str]) -> dict:
        """Rewrite the member's ``config.json`` inside its ``model.keras``."""
        file = self.member / "model.keras"
        with zipfile.ZipFile(file) as archive:
            parts = {n: archive.read(n) for n in archive.namelist()}
        parts["config.json"] = edit(parts["config.json"].decode()).encode()
        with zipfile.ZipFile(file, "w") as archive:
            for name, data in parts.items():
                archive.writestr(name, data)
        return {}

    def member_json(self, text: str) -> dict:
        (self.member / "member.json").write_text(text)
        return {}

    def ensemble(self, edit: Callable[[dict], object] | None = None, text: str | None = None):
        from zoo.ensembles.build import build_ensemble

        spec = self.tmp / "pair.toml"
        spec.write_text('members = ["*"]\ncombine = "weighted"\n')
        console.set_quiet(True)
        folder = build_ensemble(spec, workspace=self.ws)
        console.set_quiet(False)
        file = folder / "ensemble.json"
        if text is not None:
            file.write_text(text)
        else:
            info = json.loads(file.read_text())
            file.write_text(json.dumps(edit(info) or info))
        return {}


def _jpeg_half(case: Case) -> bytes:
    from conftest import write_image

    data = write_image(case.tmp / "whole.jpg", size=64).read_bytes()
    return data[: len(data) // 2]


def _without(key: str) -> Callable[[dict], dict]:
    return lambda info: {k: v for k, v in info.items() if k != key}


def _weights(values) -> Callable[[dict], dict]:
    def edit(info: dict) -> dict:
        info["combiner"]["weights"] = values
        return info

    return edit


def _lambda_layer(config: str) -> str:
    layer = {"module": "keras.layers", "class_name": "Lambda", "config": {"function": "x"}}
    data = json.loads(config)
    data["config"]["layers"].append(layer)
    return json.dumps(data)


def _print_activation(config: str) -> str:
    function = {
        "module": "builtins",
        "class_name": "function",
        "config": "print",
        "registered_name": "function",
    }
    activation = re.search(r'"activation": "\w+"', config)
    assert activation, "the demo member has no layer with a named activation"
    replaced = f'"activation": {json.dumps(function)}'
    return config[: activation.start()] + replaced + config[activation.end() :]


def _empty_a_test_image(case: Case) -> dict:
    """Empty one of the member's test images after its pixels were cached."""
    image = json.loads((case.member / "member.json").read_text())["split"]["ids"]["test"][0]
    (path,) = case.ws.glob(f"data/**/{image}.*")
    path.write_bytes(b"")
    return {"image": image}


def _bomb(case: Case) -> dict:
    spec = case.two_classes()
    png_bomb(case.tmp / "data" / "a" / "bomb.png")
    return spec


PREDICT = ["predict", MEMBER, "{tmp}/data/a/a0.jpg", "--quiet"]
EVALUATE = ["evaluate", MEMBER, "--bootstrap", "0", "--tta", "dihedral", "--quiet"]
ENSEMBLE_EVAL = ["evaluate", "pair", "--bootstrap", "0", "--quiet"]

FAULTS = {
    # --- data: every problem in one error naming its file --------------------------------
    "corrupt image": Fault(
        lambda c: c.two_classes({"a/bad.jpg": bytes(range(256)) * 8}),
        [*TRAIN, "--data", "{data}"],
        ["bad.jpg", "not a readable image"],
    ),
    "truncated image": Fault(
        lambda c: c.two_classes({"a/cut.jpg": _jpeg_half(c)}),
        [*TRAIN, "--data", "{data}"],
        ["cut.jpg", "truncated"],
    ),
    "zero-byte image": Fault(
        lambda c: c.two_classes({"a/empty.jpg": b""}),
        [*TRAIN, "--data", "{data}"],
        ["empty.jpg"],
    ),
    "text named .png": Fault(
        lambda c: c.two_classes({"b/notes.png": b"not an image\n"}),
        [*TRAIN, "--data", "{data}"],
        ["notes.png", "not a readable image"],
    ),
    "decompression bomb": Fault(
        _bomb, [*TRAIN, "--data", "{data}"], ["bomb.png", "DecompressionBombError"]
    ),
    "one class": Fault(
        lambda c: (
            c.write_images(c.tmp / "one" / "a", ["x", "y", "z"])
            and {"data": f"folder:{c.tmp / 'one'}"}
        ),
        [*TRAIN, "--data", "{data}"],
        ["at least two classes"],
    ),
    "csv without label column": Fault(
        lambda c: (
            c.two_classes()
            and (c.tmp / "list.csv").write_text("image,diagnosis\nx.jpg,a\n")
            and {"data": f"csv:{c.tmp / 'list.csv'}"}
        ),
        [*TRAIN, "--data", "{data}"],
        ["list.csv", "label"],
    ),
    "csv not UTF-8": Fault(
        lambda c: (
            (c.tmp / "latin.csv").write_bytes("image,label\nx.jpg,naevus é\n".encode("cp1252"))
            and {"data": f"csv:{c.tmp / 'latin.csv'}"}
        ),
        [*TRAIN, "--data", "{data}"],
        ["latin.csv", "UTF-8"],
    ),
    "duplicate image ids": Fault(
        lambda c: c.ham(lambda f: pd.concat([f, f.iloc[[0]]])),
        [*TRAIN, "--data", "{data}"],
        ["HAM10000_metadata.csv", "duplicate image id"],
    ),
    "unknown label": Fault(
        lambda c: c.ham(lambda f: f.assign(dx=["xyz", *f.dx[1:]])),
        [*TRAIN, "--data", "{data}"],
        ["unknown label 'xyz'"],
    ),
    # --- recipes: refused when the registry loads them ----------------------------------
    "recipe name escapes": Fault(
        lambda c: c.recipe(RECIPE.format(top='name = "../escaped"', lr=0.01)),
        ["recipes", "--workspace", "{ws}"],
        ["{recipe}", "'../escaped'"],
    ),
    "recipe learning rate inf": Fault(
        lambda c: c.recipe(RECIPE.format(top="", lr="inf")),
        ["recipes", "--workspace", "{ws}"],
        ["{recipe}", "stages[1].learning_rate must be a finite number"],
    ),
    "recipe optimizer nan": Fault(
        lambda c: c.recipe(RECIPE.format(top='[optimizer]\nname = "adam"\nepsilon = nan', lr=1)),
        ["recipes", "--workspace", "{ws}"],
        ["{recipe}", "optimizer.epsilon must be a finite number"],
    ),
    # --- options: checked where they enter --------------------------------------------
    "--name escapes": Fault(
        None, [*TRAIN, "--name", "../escaped", "--workspace", "{ws}"], ["--name", "'../escaped'"]
    ),
    "--name with a slash": Fault(
        None, [*TRAIN, "--name", "a/b", "--workspace", "{ws}"], ["--name", "'a/b'"]
    ),
    "--seed 2**32": Fault(None, [*TRAIN, "--seed", str(2**32)], ["--seed", "4294967296"]),
    "--split-seed 2**32": Fault(
        None, [*TRAIN, "--split-seed", str(2**32)], ["--split-seed", "4294967296"]
    ),
    "--workspace is a file": Fault(
        lambda c: (c.tmp / "file").write_text("x") and {},
        ["members", "--workspace", "{tmp}/file"],
        ["{tmp}/file", "is a file"],
    ),
    "--workspace under a file": Fault(
        lambda c: (c.tmp / "file").write_text("x") and {},
        ["members", "--workspace", "{tmp}/file/ws"],
        ["{tmp}/file/ws", "cannot be the workspace"],
    ),
    "--bootstrap negative": Fault(None, ["evaluate", MEMBER, "--bootstrap", "-1"], ["--bootstrap"]),
    "predict --out an input image": Fault(
        lambda c: c.two_classes(),
        [*PREDICT, "--out", "{tmp}/data/a/a0.jpg"],
        ["--out", "overwrite an image"],
    ),
    "predict --out a folder": Fault(
        lambda c: c.two_classes(), [*PREDICT, "--out", "{tmp}/data"], ["--out", "is a folder"]
    ),
    "predict --out under a file": Fault(
        lambda c: c.two_classes(),
        [*PREDICT, "--out", "{tmp}/data/a/a1.jpg/p.csv"],
        ["--out", "not a folder"],
    ),
    # --- damaged members ---------------------------------------------------------------
    "model truncated": Fault(
        lambda c: c.two_classes() | c.model((c.member / "model.keras").read_bytes()[:5000]),
        PREDICT,
        ["model.keras", "not a Keras archive"],
    ),
    "model random bytes": Fault(
        lambda c: c.two_classes() | c.model(bytes(range(256)) * 64),
        EVALUATE,
        ["model.keras", "not a Keras archive"],
    ),
    "model zero bytes": Fault(
        lambda c: c.two_classes() | c.model(b""), PREDICT, ["model.keras", "not a Keras archive"]
    ),
    "model with a Lambda layer": Fault(
        lambda c: c.two_classes() | c.keras_config(_lambda_layer),
        PREDICT,
        ["model.keras", "Lambda"],
    ),
    "model activation builtins.print": Fault(
        lambda c: c.two_classes() | c.keras_config(_print_activation),
        EVALUATE,
        ["model.keras", "builtins.print"],
    ),
    "member.json {}": Fault(lambda c: c.member_json("{}"), EVALUATE, ["member.json", "damaged"]),
    "member.json a list": Fault(
        lambda c: c.two_classes() | c.member_json("[1, 2]"), PREDICT, ["member.json", "list"]
    ),
    "member.json not JSON": Fault(
        lambda c: c.member_json('{"name": '), EVALUATE, ["member.json", "unreadable"]
    ),
    # --- damaged ensembles ----------------------------------------------------------------
    "ensemble weights negative": Fault(
        lambda c: c.ensemble(_weights([-1.0])), ENSEMBLE_EVAL, ["ensemble.json", "[-1.0]"]
    ),
    "ensemble weights NaN": Fault(
        lambda c: c.ensemble(_weights([float("nan")])), ENSEMBLE_EVAL, ["ensemble.json", "nan"]
    ),
    "ensemble without members": Fault(
        lambda c: c.ensemble(_without("members")), ENSEMBLE_EVAL, ["ensemble.json", "'members'"]
    ),
    "ensemble without combiner": Fault(
        lambda c: c.ensemble(_without("combiner")),
        ["predict", "pair", "{ws}/data", "--quiet"],
        ["ensemble.json", "'combiner'"],
    ),
    "ensemble.json a list": Fault(
        lambda c: c.ensemble(text="[]"), ENSEMBLE_EVAL, ["ensemble.json", "list"]
    ),
    "ensemble.json not JSON": Fault(
        lambda c: c.ensemble(text="{"), ENSEMBLE_EVAL, ["ensemble.json", "unreadable"]
    ),
    "image emptied after it was cached": Fault(
        _empty_a_test_image, EVALUATE, ["image {image}", "not a readable image"]
    ),
    "ensemble spec option nan": Fault(
        lambda c: (
            (c.tmp / "nan.toml").write_text(
                'members = ["*"]\ncombine = "weighted"\n[options]\nl2 = nan\n'
            )
            and {}
        ),
        ["ensemble", "build", "{tmp}/nan.toml"],
        ["nan.toml", "options.l2 must be a finite number"],
    ),
    "ensemble spec name escapes": Fault(
        lambda c: (
            (c.tmp / "bad.toml").write_text('name = "../up"\nmembers = ["*"]\ncombine = "mean"\n')
            and {}
        ),
        ["ensemble", "build", "{tmp}/bad.toml"],
        ["bad.toml", "'../up'"],
    ),
}


@pytest.fixture(autouse=True)
def _console(monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")
    monkeypatch.setattr(console, "_quiet", False)


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_fault_is_refused_in_one_line_and_nothing_is_lost(
    fault, workspace, tmp_path, write_images, capsys, monkeypatch
):
    spec = FAULTS[fault]
    case = Case(ws=workspace, tmp=tmp_path, write_images=write_images)
    names = {"ws": workspace, "tmp": tmp_path, **((spec.setup(case) if spec.setup else {}) or {})}
    capsys.readouterr()
    argv = [part.format(**names) for part in spec.argv]
    if "--workspace" not in argv:
        argv += ["--workspace", str(workspace)]
    before = snapshot(tmp_path)
    result = run_cli(argv, capsys)
    assert_refused(result, *(n.format(**names) for n in spec.named), pattern=spec.pattern)
    assert snapshot(tmp_path) == before
    assert half_written(tmp_path) == []


def test_the_table_covers_every_kind_of_fault():
    """Data, recipes, options, members and ensembles each have several cases."""
    kinds = ("image", "csv", "recipe", "--", "model", "member.json", "ensemble")
    for kind in kinds:
        assert sum(kind in name for name in FAULTS) >= 2, kind


def test_members_marks_a_damaged_model_without_aborting(workspace, capsys):
    """``zoo members`` checks each model.keras cheaply and names the damaged one."""
    other = workspace / "members" / "copy.s1"
    shutil.copytree(workspace / "members" / MEMBER, other)
    (other / "model.keras").write_bytes(b"PK\x03\x04 truncated")
    result = run_cli(["members", "--workspace", workspace], capsys)
    assert result.code == 0 and "Traceback" not in result.out + result.err
    rows = {line.split()[1]: line for line in result.out.splitlines() if "│" in line[:2]}
    assert "damaged" in rows["copy.s1"] and "damaged" not in rows[MEMBER]
    assert f"{other / 'model.keras'}" in " ".join(result.err.split())  # warnings go to stderr


def test_leaderboard_skips_a_damaged_metrics_json_with_a_warning(workspace, capsys):
    result = run_cli(["evaluate", MEMBER, "--bootstrap", "0", "--workspace", workspace], capsys)
    assert result.code == 0, result.err
    broken = workspace / "evaluations" / "broken"
    broken.mkdir()
    (broken / "metrics.json").write_text('{"aggregate": ')
    result = run_cli(["leaderboard", "--workspace", workspace], capsys)
    assert result.code == 0 and "Traceback" not in result.out + result.err
    assert f"skipping {broken / 'metrics.json'}" in " ".join(result.err.split())
    assert (workspace / "leaderboard" / "leaderboard.csv").is_file()


@pytest.mark.parametrize("damage", ['{"name": ', '{"format_version": 99}', "[]"])
def test_leaderboard_reports_a_damaged_member_in_one_line_and_goes_on(workspace, capsys, damage):
    """An evaluated member whose member.json broke afterwards: its row stays, with the
    facts member.json gave (parameters, training time) left blank, and one warning."""
    result = run_cli(["evaluate", MEMBER, "--bootstrap", "0", "--workspace", workspace], capsys)
    assert result.code == 0, result.err
    member_json = workspace / "members" / MEMBER / "member.json"
    member_json.write_text(damage)
    result = run_cli(["leaderboard", "--workspace", workspace], capsys)
    assert result.code == 0 and "Traceback" not in result.out + result.err
    warnings = [line for line in result.err.splitlines() if str(member_json) in line]
    assert len(warnings) == 1, result.err
    ranked = pd.read_csv(workspace / "leaderboard" / "leaderboard.csv")
    assert ranked["entry"].tolist() == [MEMBER] and ranked["parameters"].isna().all()

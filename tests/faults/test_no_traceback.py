"""Property: no command exits 1 on user input. Every subcommand, each option and positional
argument given each hostile value, answers with status 0 or 2 and never a traceback."""

from __future__ import annotations

import pytest
from faultkit import MEMBER, run_cli

from zoo import console
from zoo.cli import recipes as commands
from zoo.scoring import plots
from zoo.training import trainer

HOSTILE = [
    "",
    " ",
    "-1",
    "0",
    "nan",
    "inf",
    "1e999",
    str(2**32),
    "../escape",
    "a/b",
    "/dev/null",
    "{dir}",
    "{file}",
    "{image}",
    "é\u202e",
    "x" * 300,
    "bad\x00byte",
]

# subcommand → (valid arguments, the options that take a value, positional slots to replace)
COMMANDS = {
    "recipes": (["recipes"], [], []),
    "members": (["members"], [], []),
    "train": (
        ["train", "small_cnn", "--image-size", "32", "--epochs", "1"],
        [
            "--data",
            "--images",
            "--epochs",
            "--batch-size",
            "--image-size",
            "--weights",
            "--seed",
            "--split-seed",
            "--fold",
            "--folds",
            "--name",
            "--strategy",
            "--jit-compile",
        ],
        [1],
    ),
    "evaluate": (
        ["evaluate", MEMBER, "--bootstrap", "0"],
        [
            "--data",
            "--images",
            "--split",
            "--tta",
            "--target-priors",
            "--label-map",
            "--task",
            "--bootstrap",
            "--out",
        ],
        [1],
    ),
    "predict": (
        ["predict", MEMBER, "{image}"],
        ["--tta", "--target-priors", "--out"],
        [1, 2],
    ),
    "ensemble": (["ensemble", "build", "{spec}"], [], [2]),
    "leaderboard": (["leaderboard"], ["--data", "--out"], []),
}


@pytest.fixture
def hostile_places(workspace, tmp_path, monkeypatch, write_images):
    """Runs happen in an empty folder; training, parameter counting and plotting are stubbed:
    the property is about how input is checked, not about the work that follows."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COLUMNS", "250")
    monkeypatch.setattr(console, "_quiet", False)
    monkeypatch.setattr(trainer, "_train", lambda run: run.directory)  # accepted: no training
    monkeypatch.setattr(
        commands, "parameter_counts", lambda recipes, workspace: {r.name: 1 for r in recipes}
    )
    for name in ("plot_confusion", "plot_roc", "plot_sens_spec"):  # no input reaches them
        monkeypatch.setattr(plots, name, lambda *args, **kwargs: None)
    (tmp_path / "folder").mkdir()
    (tmp_path / "text.txt").write_text("not what anything expects\n")
    (tmp_path / "spec.toml").write_text('members = ["*"]\ncombine = "mean"\n')
    image = write_images(tmp_path / "images", ["lesion"])[0]
    return {
        "dir": str(tmp_path / "folder"),
        "file": str(tmp_path / "text.txt"),
        "image": str(image),
        "spec": str(tmp_path / "spec.toml"),
    }


def _variants(command: str, places: dict) -> list[list[str]]:
    base, options, positions = COMMANDS[command]
    base = [part.format(**places) for part in base]
    variants = []
    for value in (v.format(**places) for v in HOSTILE):
        variants += [[*base, option, value] for option in options]
        for position in positions:
            variant = list(base)
            variant[position] = value
            variants.append(variant)
        if not options and not positions:
            variants.append([*base, "--workspace", value])
    return variants


def _shown(argv: list[str]) -> str:
    """The command line, long values shortened, for the failure report."""
    return " ".join(repr(a) if len(a) < 60 else repr(a[:20]) + "…" for a in argv[:-2])


@pytest.mark.slow
@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_no_command_exits_1_on_user_input(command, hostile_places, workspace, capsys):
    failures = []
    for argv in _variants(command, hostile_places):
        if "--workspace" not in argv:
            argv = [*argv, "--workspace", str(workspace)]
        try:
            result = run_cli([*argv, "--quiet"], capsys)
        except Exception as exc:  # noqa: BLE001  the property under test: nothing escapes
            failures.append(f"{_shown(argv)}: {exc.__class__.__name__}: {str(exc)[:200]}")
            continue
        text = result.out + result.err
        if result.code not in (0, 2) or "Traceback" in text:
            failures.append(f"{_shown(argv)}: exit {result.code}: {text[-300:]}")
    assert not failures, "\n".join(failures)

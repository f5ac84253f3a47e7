"""Ensemble definition files: parsing, errors naming file and key, member globs."""

from __future__ import annotations

from pathlib import Path

import pytest

from zoo.ensembles.combine import GreedyCombiner, MeanCombiner
from zoo.ensembles.spec import EnsembleSpec, load_spec, resolve_members
from zoo.errors import ZooError

SHIPPED = Path(__file__).resolve().parents[2] / "ensembles"

MEMBERS = [
    "inception_v3.ham10000.s0",
    "efficientnet_b4.ham10000.s1",
    "efficientnet_b4.ham10000.s0",
    "efficientnet_b4.isic2019.s0",
    "resnet50.isic2019.s0",
]


def write(tmp_path, text, name="mine.toml"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def spec(members, name="e"):
    return EnsembleSpec(name=name, members=tuple(members), combine="mean")


@pytest.mark.parametrize(
    ("stem", "rule", "combiner"),
    [
        ("steppan2020", "mean", MeanCombiner),
        ("greedy", "greedy", GreedyCombiner),
        ("weighted", "weighted", None),
    ],
)
def test_shipped_definitions_load(stem, rule, combiner):
    s = load_spec(SHIPPED / f"{stem}.toml")
    assert s.name == stem and s.combine == rule
    assert s.members == ("*",) and s.prior_correction is True and s.tta == "steppan"
    assert s.description
    assert (SHIPPED / f"{stem}.toml").read_text().startswith("#")  # says what it reproduces
    if combiner:
        assert isinstance(s.make_combiner(), combiner)


def test_full_definition_and_defaults(tmp_path):
    full = load_spec(
        write(
            tmp_path,
            'name = "best3"\ndescription = "d"\nmembers = ["a", "b*"]\ncombine = "greedy"\n'
            'prior_correction = false\ntta = "flips"\n[options]\nmax_rounds = 7\n',
        )
    )
    assert full == EnsembleSpec(
        name="best3",
        description="d",
        members=("a", "b*"),
        combine="greedy",
        prior_correction=False,
        tta="flips",
        options={"max_rounds": 7},
    )
    assert full.make_combiner().max_rounds == 7
    bare = load_spec(write(tmp_path, 'members = ["a"]\ncombine = "mean"\n', name="plain.toml"))
    assert (bare.name, bare.prior_correction, bare.tta, bare.options) == ("plain", True, "none", {})


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        (
            'members = ["a"]\ncombine = "mean"\nmembrs = 1\n',
            r"mine.toml: unknown key 'membrs'.*allowed keys.*Did you mean members",
        ),
        (
            'members = ["a"]\ncombine = "mean"\nprior_correction = "yes"\n',
            r"mine.toml: key 'prior_correction' must be true or false; got 'yes' \(string\)",
        ),
        (
            'members = "a"\ncombine = "mean"\n',
            r"key 'members' must be an array.*got 'a' \(string\)",
        ),
        (
            'members = ["a", 3]\ncombine = "mean"\n',
            r"key 'members' must hold non-empty strings; got 3",
        ),
        ('members = []\ncombine = "mean"\n', r"mine.toml: key 'members' is empty"),
        ('combine = "mean"\n', r"missing required key 'members'"),
        ('members = ["a"]\n', r"missing required key 'combine'"),
        (
            'members = ["a"]\ncombine = "avg"\n',
            r"key 'combine' must be one of mean, rank, weighted, greedy; got 'avg'",
        ),
        ('members = ["a"]\ncombine = "mean"\ntta = 1\n', r"key 'tta' must be a string"),
        ('members = ["a"]\ncombine = "mean"\nname = "a b"\n', r"key 'name'.*got 'a b'"),
        ('members = ["a"]\ncombine = "greedy"\noptions = 3\n', r"key 'options' must be a table"),
        (
            'members = ["a"]\ncombine = "greedy"\n[options]\nrounds = 3\n',
            r"\[options\].*no option 'rounds'",
        ),
        ('members = ["a"\ncombine = "mean"\n', r"mine.toml: invalid TOML: .*line 2"),
    ],
)
def test_bad_definitions_name_file_and_key(tmp_path, text, pattern):
    with pytest.raises(ZooError, match=pattern):
        load_spec(write(tmp_path, text))


def test_missing_file_suggests_siblings(tmp_path):
    write(tmp_path, 'members = ["a"]\ncombine = "mean"\n', name="greedy.toml")
    with pytest.raises(ZooError, match=r"gredy.toml not found.*Did you mean greedy.toml"):
        load_spec(tmp_path / "gredy.toml")
    with pytest.raises(ZooError, match="is a directory"):
        load_spec(tmp_path)


def test_resolve_globs_in_stable_order_without_duplicates():
    assert resolve_members(spec(["*.ham10000.*"]), MEMBERS) == [
        "efficientnet_b4.ham10000.s0",
        "efficientnet_b4.ham10000.s1",
        "inception_v3.ham10000.s0",
    ]
    both = resolve_members(spec(["resnet50.isic2019.s0", "efficientnet_b4.*", "*.s0"]), MEMBERS)
    assert both == [
        "resnet50.isic2019.s0",
        "efficientnet_b4.ham10000.s0",
        "efficientnet_b4.ham10000.s1",
        "efficientnet_b4.isic2019.s0",
        "inception_v3.ham10000.s0",
    ]
    assert resolve_members(spec(["*"]), list(reversed(MEMBERS))) == sorted(MEMBERS)


def test_resolve_is_case_sensitive_and_names_the_empty_pattern():
    with pytest.raises(
        ZooError, match=r"ensemble 'e': member pattern '\*.HAM10000.\*' matched no saved member"
    ):
        resolve_members(spec(["*.ham10000.*", "*.HAM10000.*"]), MEMBERS)
    with pytest.raises(
        ZooError, match=r"'resnet50.isic2019.s1'.*Did you mean resnet50.isic2019.s0"
    ):
        resolve_members(spec(["resnet50.isic2019.s1"]), MEMBERS)
    with pytest.raises(ZooError, match="no saved members.*zoo train"):
        resolve_members(spec(["*"]), [])

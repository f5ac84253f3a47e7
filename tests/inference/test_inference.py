"""zoo.inference.target: cached member probabilities, cache keys and invalidation, MemberTarget."""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pytest

from zoo.data import Dataset, load_dataset
from zoo.ensembles.targets import Target, resolve_target
from zoo.errors import ZooError
from zoo.inference import target as inference
from zoo.inference.members import Member
from zoo.inference.target import (
    MemberTarget,
    cache_key,
    cache_part,
    image_names,
    load_model,
    member_probabilities,
)
from zoo.inference.tta import parse_tta
from zoo.scoring.priors import PriorCorrection
from zoo.store import ids_sha256, read_predictions

NAME = "small_cnn.demo.s0"


@pytest.fixture
def member(workspace) -> Member:
    return Member(workspace / "members" / NAME)


@pytest.fixture
def demo(workspace) -> Dataset:
    return load_dataset("demo", workspace=workspace)


def forbid_model(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("the model ran although the cache should have answered")

    monkeypatch.setattr(inference, "run_model", fail)


REAL_RUN_MODEL = inference.run_model


def count_model_runs(monkeypatch) -> list[int]:
    calls, real = [], REAL_RUN_MODEL

    def counting(model, pixels, scheme, **kwargs):
        calls.append(len(pixels))
        return real(model, pixels, scheme, **kwargs)

    monkeypatch.setattr(inference, "run_model", counting)
    return calls


def perturb_model(member: Member) -> None:
    """Save model.keras again with slightly different weights (its sha256 changes)."""
    model = member.load_model()
    last = model.layers[-1]
    rng = np.random.default_rng(0)
    last.set_weights([w + rng.normal(0, 0.5, w.shape) for w in last.get_weights()])
    path = member.path / "model.keras"
    tmp = path.with_name("new.keras")
    model.save(tmp)
    os.replace(tmp, path)


# --- no model needed ------------------------------------------------------------------------


def test_image_names_are_stems_unless_they_collide(tmp_path):
    files = [tmp_path / "a" / "x.jpg", tmp_path / "b" / "x.jpg", tmp_path / "a" / "y.png"]
    assert image_names(files[2:]) == ["y"]
    assert image_names(files) == ["a/x", "b/x", "y"]
    same_stem = [tmp_path / "a" / "x.jpg", tmp_path / "a" / "x.png"]
    assert image_names(same_stem) == ["x.jpg", "x.png"]


def test_ids_hash_ignores_order():
    assert ids_sha256(["b", "a"]) == ids_sha256(["a", "b"])
    assert ids_sha256(["a"]) != ids_sha256(["a", "b"])


# --- with the tiny member -------------------------------------------------------------------


def test_resolve_target_gives_a_member_target(workspace):
    target = resolve_target(NAME, workspace)
    assert isinstance(target, MemberTarget)
    assert isinstance(target, Target)
    assert target.kind == "member" and target.name == NAME
    assert target.classes == ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]
    assert target.default_tta == "none" and target.default_prior_correction is True
    assert len(target.split_ids("test")) == 84
    with pytest.raises(ZooError, match="unknown part"):
        target.split_ids("holdout")


def test_cache_keys(member, demo):
    test_ids = member.split_ids("test")
    assert cache_part(member, demo, test_ids[:5]) == ("test", test_ids)
    assert cache_part(member, demo, member.split_ids("val"))[0] == "val"
    mixed = test_ids[:2] + member.split_ids("val")[:2]
    assert cache_part(member, demo, mixed) == ("all", demo.ids)
    assert cache_key(member, demo, "test", parse_tta("none")) == "test"
    assert cache_key(member, demo, "test", parse_tta("rotations:8")) == "test.rotations-8"
    other = demo.subset(demo.ids[:50])
    other.name = "ext set"
    assert cache_part(member, other, other.ids[:3]) == ("all", other.ids)
    key = cache_key(member, other, "all", parse_tta("steppan"))
    assert key == f"ext-set-{other.fingerprint[:8]}-all.steppan"


def test_trainer_predictions_are_reused_through_their_sidecar(member, demo, workspace, monkeypatch):
    """The trainer writes val/test through the prediction cache, sidecar included."""
    sidecar = json.loads((member.path / "predictions" / "test.json").read_text())
    forbid_model(monkeypatch)
    ids = member.split_ids("test")[::-1]
    frame = member_probabilities(member, demo, ids, tta="none", workspace=workspace)
    assert list(frame.index) == ids
    trainer = read_predictions(member.predictions_file("test"))
    pd.testing.assert_frame_equal(frame.sort_index(), trainer.sort_index())
    assert frame.attrs["inference"]["cached"] is True
    assert sidecar["tta"] == "none" and sidecar["origin"] == "trainer"
    assert sidecar["format_version"] == 1 and sidecar["seconds"] > 0
    assert sidecar["model_sha256"] == inference.model_sha256(member)


def test_recomputed_raw_probabilities_match_the_trainer(member, demo, workspace, monkeypatch):
    trainer = read_predictions(member.predictions_file("test"))
    member.predictions_file("test").unlink()
    calls = count_model_runs(monkeypatch)
    frame = member_probabilities(
        member, demo, member.split_ids("test"), tta="none", workspace=workspace
    )
    assert calls == [84]
    assert frame.attrs["inference"]["cached"] is False
    np.testing.assert_allclose(frame.loc[trainer.index], trainer, atol=2e-6)
    assert np.allclose(frame.sum(axis=1), 1.0, atol=1e-5)


def test_touched_model_invalidates_a_legacy_trainer_file(member, demo, workspace, monkeypatch):
    """A member from before format_version has no sidecar: a model.keras newer than its
    test.csv means the file is stale."""
    info = json.loads((member.path / "member.json").read_text())
    del info["format_version"]
    (member.path / "member.json").write_text(json.dumps(info))
    (member.path / "predictions" / "test.json").unlink()
    member = Member(member.path)
    model = member.path / "model.keras"
    later = member.predictions_file("test").stat().st_mtime + 10
    os.utime(model, (later, later))
    calls = count_model_runs(monkeypatch)
    member_probabilities(member, demo, member.split_ids("test"), tta="none", workspace=workspace)
    assert calls == [84]


@pytest.mark.slow
def test_tta_cache_hit_and_invalidation(member, demo, workspace, monkeypatch):
    ids = member.split_ids("test")
    calls = count_model_runs(monkeypatch)
    first = member_probabilities(member, demo, ids, tta="dihedral", workspace=workspace)
    assert calls == [84]
    assert member.predictions_file("test.dihedral").is_file()
    meta = json.loads((member.path / "predictions" / "test.dihedral.json").read_text())
    assert meta["tta"] == "dihedral" and meta["ids_sha256"] == ids_sha256(ids)
    assert meta["seconds"] > 0

    forbid_model(monkeypatch)  # a hit: a subset in another order, no model call
    again = member_probabilities(member, demo, ids[:10][::-1], tta="dihedral", workspace=workspace)
    pd.testing.assert_frame_equal(again, first.loc[ids[:10][::-1]])

    perturb_model(member)  # same key, new model: recomputed
    calls = count_model_runs(monkeypatch)
    changed = member_probabilities(member, demo, ids, tta="dihedral", workspace=workspace)
    assert calls == [84]
    assert not np.allclose(changed.to_numpy(), first.to_numpy())


def test_model_is_loaded_once_per_process(member, monkeypatch):
    inference.clear_model_cache()
    loads, real = [], Member.load_model

    def counting(self):
        loads.append(self.path)
        return real(self)

    monkeypatch.setattr(Member, "load_model", counting)
    assert load_model(member) is load_model(Member(member.path))
    assert len(loads) == 1


def test_prior_correction_of_the_target(workspace, demo, monkeypatch):
    forbid_model(monkeypatch)
    target = resolve_target(NAME, workspace)
    ids = target.split_ids("test")
    raw = target.probabilities(demo, ids, tta="none", prior_correction=False, workspace=workspace)
    fixed = target.probabilities(demo, ids, tta="none", prior_correction=True, workspace=workspace)
    priors = pd.Series(target.member.effective_priors, index=target.classes)
    expected = PriorCorrection().fit(priors).transform(raw)
    pd.testing.assert_frame_equal(fixed, expected)
    manual = raw.to_numpy() / priors.to_numpy()
    np.testing.assert_allclose(fixed, manual / manual.sum(axis=1, keepdims=True), rtol=1e-12)


def test_unknown_ids_are_an_error(member, demo, workspace):
    with pytest.raises(ZooError, match="not in data set demo"):
        member_probabilities(member, demo, ["nope"], tta="none", workspace=workspace)


@pytest.mark.parametrize(
    ("n", "n_views", "expected"),
    [(64, 9, 8), (64, 8, 16), (64, 1, 64), (256, 9, 8), (2004, 9, 12), (1, 9, 1), (84, 9, 14)],
)
def test_originals_per_call_wastes_fewest_views(n, n_views, expected):
    per_call = inference.originals_per_call(n, n_views=n_views, batch_size=128)
    assert per_call == expected
    assert n_views * per_call <= 128 and 2 * per_call >= min(128 // n_views, n)
    padded = -(-n // per_call) * per_call
    most = min(128 // n_views, n)
    assert all(padded <= -(-n // p) * p for p in range((most + 1) // 2, most + 1))

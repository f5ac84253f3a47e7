"""Building ensembles from hand-made member directories (member.json + cached predictions).

No model ever runs: members are fake directories whose predictions CSVs are written by
hand, so the effect of every step (prior correction, combining, fitting) is known.
Where a step needs a model (a missing TTA variant, predict_files), a fake ``zoo.inference.target``
stands in and records how it was called.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from zoo.cli.main import main
from zoo.data import load_dataset
from zoo.ensembles.build import build_ensemble
from zoo.ensembles.combine import Combiner, PredictionSet
from zoo.ensembles.spec import find_spec, load_spec, resolve_members
from zoo.ensembles.target import EnsembleTarget
from zoo.ensembles.targets import resolve_target
from zoo.errors import ZooError
from zoo.recipes.recipe import builtin_folder
from zoo.store import (
    prediction_key,
    predictions_frame,
    read_predictions,
    tta_name,
    write_predictions,
)

CLASSES = ["mel", "nv", "bcc"]
TRAIN = [f"r{i}" for i in range(6)]
VAL = [f"v{i}" for i in range(6)]
TEST = [f"t{i}" for i in range(4)]
VAL_LABELS = ["mel", "nv", "bcc", "mel", "nv", "bcc"]
LABELS = {
    **dict(zip(TRAIN, ["mel", "nv", "bcc"] * 2, strict=True)),
    **dict(zip(VAL, VAL_LABELS, strict=True)),
    **dict(zip(TEST, ["mel", "nv", "bcc", "nv"], strict=True)),
}

# Two members with known outputs: rows are images, columns CLASSES.
M1_VAL = np.array(
    [
        [0.6, 0.3, 0.1],
        [0.2, 0.7, 0.1],
        [0.3, 0.3, 0.4],
        [0.5, 0.4, 0.1],
        [0.1, 0.8, 0.1],
        [0.2, 0.5, 0.3],
    ]
)
M2_VAL = np.array(
    [
        [0.4, 0.4, 0.2],
        [0.3, 0.6, 0.1],
        [0.1, 0.2, 0.7],
        [0.2, 0.6, 0.2],
        [0.2, 0.6, 0.2],
        [0.1, 0.3, 0.6],
    ]
)
M1_TEST = np.array([[0.7, 0.2, 0.1], [0.3, 0.6, 0.1], [0.2, 0.5, 0.3], [0.1, 0.8, 0.1]])
M2_TEST = np.array([[0.5, 0.3, 0.2], [0.2, 0.7, 0.1], [0.1, 0.3, 0.6], [0.3, 0.5, 0.2]])
M1_PRIORS = [0.2, 0.6, 0.2]
M2_PRIORS = [0.25, 0.5, 0.25]


def frame(values, ids, classes=CLASSES):
    return predictions_frame(ids, values, classes)


def write_dataset(ws: Path, labels: dict[str, str] = LABELS) -> dict:
    """A ``csv:`` data set (ids and labels; the images need not exist) and its data block."""
    csv = ws / "data.csv"
    pd.DataFrame({"image": list(labels), "label": list(labels.values())}).to_csv(csv, index=False)
    source = f"csv:{csv}"
    dataset = load_dataset(source, workspace=ws)
    return {
        "name": "data",
        "source": source,
        "count": len(dataset),
        "fingerprint": dataset.fingerprint,
    }


def make_member(
    ws: Path,
    name: str,
    *,
    data: dict,
    val: np.ndarray,
    test: np.ndarray,
    priors=(1 / 3, 1 / 3, 1 / 3),
    classes=CLASSES,
    val_ids=VAL,
    test_ids=TEST,
    extra: dict[str, pd.DataFrame] | None = None,
) -> Path:
    folder = ws / "members" / name
    (folder / "predictions").mkdir(parents=True)
    info = {
        "name": name,
        "recipe": "fake",
        "classes": list(classes),
        "priors": {"effective": list(priors)},
        "data": data,
        "split": {
            "seed": 0,
            "ids": {"train": TRAIN, "val": list(val_ids), "test": list(test_ids)},
        },
    }
    (folder / "member.json").write_text(json.dumps(info, indent=2))
    (folder / "model.keras").write_bytes(f"fake model {name}".encode() * 10)
    write_predictions(folder / "predictions" / "val.csv", frame(val, val_ids, classes))
    write_predictions(folder / "predictions" / "test.csv", frame(test, test_ids, classes))
    for key, extra_frame in (extra or {}).items():
        write_predictions(folder / "predictions" / f"{key}.csv", extra_frame)
        write_sidecar(folder, key, list(extra_frame.index))
    return folder


def write_sidecar(folder: Path, key: str, ids: list[str], **override) -> None:
    """The sidecar zoo.inference.target writes beside a cached TTA variant (its validity record)."""
    meta = {
        "key": key,
        "model_sha256": hashlib.sha256((folder / "model.keras").read_bytes()).hexdigest(),
        "ids_sha256": hashlib.sha256("\n".join(sorted(ids)).encode()).hexdigest(),
        "tta": key.split(".", 1)[1] if "." in key else "none",
        **override,
    }
    (folder / "predictions" / f"{key}.json").write_text(json.dumps(meta))


def write_spec(ws: Path, text: str, name: str = "e") -> Path:
    path = ws / f"{name}.toml"
    path.write_text(f'name = "{name}"\n' + text)
    return path


def corrected(p, priors):
    q = p / np.asarray(priors)
    return q / q.sum(axis=1, keepdims=True)


@pytest.fixture
def ws(tmp_path):
    ws = tmp_path / "ws"
    ws.mkdir()
    data = write_dataset(ws)
    make_member(ws, "m1", data=data, val=M1_VAL, test=M1_TEST, priors=M1_PRIORS)
    make_member(ws, "m2", data=data, val=M2_VAL, test=M2_TEST, priors=M2_PRIORS)
    return ws


@pytest.fixture
def fake_inference(monkeypatch):
    """A stand-in ``zoo.inference.target`` that records calls; register outputs in ``outputs``."""
    module = types.ModuleType("zoo.inference.target")
    module.calls, module.metadata_given = [], []
    module.outputs = {}  # (member name, tta) -> DataFrame over all ids it may be asked for

    def member_probabilities(member, dataset, ids, *, tta, workspace):
        module.calls.append((member.path.name, tuple(ids), tta))
        return module.outputs[(member.path.name, tta)].loc[list(ids)]

    class MemberTarget:
        def __init__(self, path):
            self.path = path

        @classmethod
        def from_path(cls, path):
            return cls(Path(path))

        def predict_files(self, paths, *, tta, prior_correction, metadata=None):
            module.calls.append((self.path.name, tuple(map(str, paths)), tta, prior_correction))
            module.metadata_given.append(metadata)
            return module.outputs[(self.path.name, tta)]

    module.member_probabilities = member_probabilities
    module.MemberTarget = MemberTarget
    monkeypatch.setitem(sys.modules, "zoo.inference.target", module)
    return module


def info_of(path: Path) -> dict:
    return json.loads((path / "ensemble.json").read_text())


# --- the mean ensemble, by hand ------------------------------------------------------------------


def test_mean_equals_hand_computed_mean_of_prior_corrected_members(ws):
    from sklearn.metrics import roc_auc_score

    spec = write_spec(ws, 'members = ["m*"]\ncombine = "mean"\nprior_correction = true\n')
    out = build_ensemble(spec, workspace=ws)
    assert out == ws / "ensembles" / "e"

    expected_test = (corrected(M1_TEST, M1_PRIORS) + corrected(M2_TEST, M2_PRIORS)) / 2
    expected_val = (corrected(M1_VAL, M1_PRIORS) + corrected(M2_VAL, M2_PRIORS)) / 2
    test = read_predictions(out / "predictions" / "test.csv")
    val = read_predictions(out / "predictions" / "val.csv")
    assert list(test.index) == TEST and list(test.columns) == CLASSES
    np.testing.assert_allclose(test.to_numpy(), expected_test, atol=1e-7)
    np.testing.assert_allclose(val.to_numpy(), expected_val, atol=1e-7)

    info = info_of(out)
    assert info["name"] == "e" and info["rule"] == "mean" and info["tta"] == "none"
    assert info["prior_correction"] is True and info["classes"] == CLASSES
    assert info["spec"]["text"] == spec.read_text()
    assert info["weights"] == {"m1": 0.5, "m2": 0.5}
    assert info["combiner"]["rule"] == "mean" and info["combiner"]["members"] == ["m1", "m2"]
    assert info["split"]["ids"] == {"val": VAL, "test": TEST}
    assert (
        info["data"]["fingerprint"]
        == load_dataset(info["data"]["source"], workspace=ws).fingerprint
    )
    for record in info["members"]:
        folder = ws / "members" / record["name"]
        for file in ("model.keras", "member.json"):
            assert (
                record["sha256"][file] == hashlib.sha256((folder / file).read_bytes()).hexdigest()
            )
    # validation metrics of the ensemble and of each member (after prior correction)
    y = np.array([CLASSES.index(label) for label in VAL_LABELS])
    recall = [np.mean(expected_val.argmax(1)[y == c] == c) for c in range(3)]
    assert info["metrics"]["val"]["balanced_accuracy"] == pytest.approx(np.mean(recall))
    macro_auc = np.mean([roc_auc_score(y == c, expected_val[:, c]) for c in range(3)])
    assert info["metrics"]["val"]["macro_auc"] == pytest.approx(macro_auc, abs=1e-12)
    m1 = corrected(M1_VAL, M1_PRIORS).argmax(1)
    m1_recall = np.mean([np.mean(m1[y == c] == c) for c in range(3)])
    assert info["members"][0]["metrics"]["val"]["balanced_accuracy"] == pytest.approx(m1_recall)
    assert info["build_seconds"] > 0
    card = (out / "card.md").read_text()
    assert "Not for diagnosis" in card
    front = yaml.safe_load(card.split("---\n")[1])  # Hugging Face model-card front matter
    assert front["pipeline_tag"] == "image-classification" and "ensemble" in front["tags"]
    assert front["license"] and front["datasets"]
    assert [m["name"] for m in front["zoo"]["members"]] == [m["name"] for m in info["members"]]
    (result,) = [r for r in front["model-index"][0]["results"] if r["dataset"]["split"] == "val"]
    values = {m["type"]: m["value"] for m in result["metrics"]}
    assert values["balanced_accuracy"] == round(info["metrics"]["val"]["balanced_accuracy"], 4)


def test_macro_auc_matches_scikit_learn(ws):
    from sklearn.metrics import roc_auc_score

    spec = write_spec(ws, 'members = ["m1", "m2"]\ncombine = "mean"\nprior_correction = false\n')
    info = info_of(build_ensemble(spec, workspace=ws))
    y = np.array([CLASSES.index(label) for label in VAL_LABELS])
    mean = (M1_VAL + M2_VAL) / 2
    auc = np.mean([roc_auc_score(y == c, mean[:, c]) for c in range(3)])
    assert info["metrics"]["val"]["macro_auc"] == pytest.approx(auc)


def test_cached_tta_variant_is_read_and_a_missing_one_computed(tmp_path, fake_inference):
    ws = tmp_path / "ws"
    ws.mkdir()
    data = write_dataset(ws)
    m1_val_tta, m1_test_tta = M1_VAL[::-1].copy(), M1_TEST[::-1].copy()
    extra = {"val.steppan": frame(m1_val_tta, VAL), "test.steppan": frame(m1_test_tta, TEST)}
    make_member(ws, "m1", data=data, val=M1_VAL, test=M1_TEST, extra=extra)
    make_member(ws, "m2", data=data, val=M2_VAL, test=M2_TEST)
    m2_tta = frame(np.vstack([M2_VAL, M2_TEST]) ** 2 / 2 + 0.1, VAL + TEST)
    fake_inference.outputs[("m2", "steppan")] = m2_tta
    spec = write_spec(
        ws, 'members = ["*"]\ncombine = "mean"\nprior_correction = false\ntta = "steppan"\n'
    )
    out = build_ensemble(spec, workspace=ws)

    assert fake_inference.calls == [("m2", tuple(VAL), "steppan"), ("m2", tuple(TEST), "steppan")]
    expected = (m1_test_tta + m2_tta.loc[TEST].to_numpy()) / 2
    test = read_predictions(out / "predictions" / "test.csv")
    np.testing.assert_allclose(test.to_numpy(), expected, atol=1e-7)
    assert info_of(out)["tta"] == "steppan"


@pytest.mark.parametrize("stale", ["model", "ids", "no sidecar", "trainer file older"])
def test_stale_cached_predictions_are_recomputed(ws, fake_inference, stale):
    folder = ws / "members" / "m1"
    if stale == "trainer file older":
        key, tta = "test", "none"
        (folder / "model.keras").touch()  # newer than the trainer's test.csv
        import os

        old = (folder / "model.keras").stat().st_mtime_ns - 10**9
        os.utime(folder / "predictions" / "test.csv", ns=(old, old))
    else:
        key, tta = "test.steppan", "steppan"
        write_predictions(folder / "predictions" / "val.steppan.csv", frame(M1_VAL, VAL))
        write_sidecar(folder, "val.steppan", VAL)
        write_predictions(folder / "predictions" / f"{key}.csv", frame(M1_TEST, TEST))
        if stale == "model":
            write_sidecar(folder, key, TEST, model_sha256="0" * 64)
        elif stale == "ids":
            write_sidecar(folder, key, TEST[:3])
        for part, values in (("val", M2_VAL), ("test", M2_TEST)):  # m2 is current
            write_predictions(
                ws / "members" / "m2" / "predictions" / f"{part}.steppan.csv",
                frame(values, VAL if part == "val" else TEST),
            )
            write_sidecar(ws / "members" / "m2", f"{part}.steppan", VAL if part == "val" else TEST)
    fake_inference.outputs[("m1", tta)] = frame(np.full((10, 3), 1 / 3), VAL + TEST)
    spec = write_spec(
        ws, f'members = ["*"]\ncombine = "mean"\nprior_correction = false\ntta = "{tta}"\n'
    )
    out = build_ensemble(spec, workspace=ws)
    expected_calls = [("m1", tuple(TEST), tta)]
    if stale == "trainer file older":  # the model is newer than both trainer files
        expected_calls.insert(0, ("m1", tuple(VAL), tta))
    assert fake_inference.calls == expected_calls
    test = read_predictions(out / "predictions" / "test.csv")
    np.testing.assert_allclose(test.to_numpy(), (1 / 3 + M2_TEST) / 2, atol=1e-7)


def test_tta_names_and_cache_keys():
    assert tta_name("steppan") == "steppan" and tta_name("Rotations:08") == "rotations-8"
    assert prediction_key("test", "none") == "test"
    assert prediction_key("val", "rotations:4") == "val.rotations-4"
    with pytest.raises(ZooError, match="unknown TTA scheme 'flips'"):
        tta_name("flips")


# --- fitting only ever sees the validation split -----------------------------------------------


def noisy_workspace(tmp_path, n_val=30):
    """Three members on 3 classes: a good, b weaker, c noise; val and test of n_val images."""
    rng = np.random.default_rng(0)
    val_ids = [f"v{i}" for i in range(n_val)]
    test_ids = [f"t{i}" for i in range(n_val)]
    y = np.arange(n_val) % 3
    labels = {i: CLASSES[c] for i, c in zip(val_ids, y, strict=True)}
    labels.update({i: CLASSES[c] for i, c in zip(test_ids, y, strict=True)})
    labels.update(dict(zip(TRAIN, CLASSES * 2, strict=True)))
    ws = tmp_path / "ws"
    ws.mkdir()
    data = write_dataset(ws, labels)
    onehot = np.eye(3)[y]
    quality = {"a": 0.7, "b": 0.35, "c": 0.0}
    for name, q in quality.items():
        val = q * onehot + (1 - q) * rng.dirichlet(np.ones(3), n_val)
        test = q * onehot + (1 - q) * rng.dirichlet(np.ones(3), n_val)
        make_member(ws, name, data=data, val=val, test=test, val_ids=val_ids, test_ids=test_ids)
    return ws, test_ids


@pytest.mark.parametrize("rule", ["greedy", "weighted"])
def test_test_predictions_cannot_influence_the_fitted_weights(tmp_path, monkeypatch, rule):
    ws, test_ids = noisy_workspace(tmp_path)
    fitted_on = []
    original_fit = Combiner.fit

    def spy(self, val):
        fitted_on.append(val.split)
        return original_fit(self, val)

    monkeypatch.setattr(Combiner, "fit", spy)
    spec = write_spec(ws, f'members = ["*"]\ncombine = "{rule}"\n')
    first = info_of(build_ensemble(spec, workspace=ws))
    first_test = read_predictions(ws / "ensembles" / "e" / "predictions" / "test.csv")

    # corrupt every member's test predictions: the worst member becomes perfect on test,
    # the best one confidently wrong, and the rows are permuted
    rng = np.random.default_rng(1)
    for name in ("a", "b", "c"):
        path = ws / "members" / name / "predictions" / "test.csv"
        values = np.roll(np.eye(3), 1 if name == "a" else 0, axis=1)[np.arange(len(test_ids)) % 3]
        values = 0.98 * values + 0.01
        write_predictions(path, frame(values[rng.permutation(len(values))], test_ids))
    second = info_of(build_ensemble(spec, workspace=ws))
    second_test = read_predictions(ws / "ensembles" / "e" / "predictions" / "test.csv")

    assert fitted_on == ["val", "val"]
    assert second["combiner"] == first["combiner"]
    assert second["weights"] == first["weights"]
    assert second["metrics"]["val"] == first["metrics"]["val"]
    assert not np.allclose(first_test.to_numpy(), second_test.to_numpy())  # test did change
    assert first["weights"]["a"] > first["weights"]["c"]


@pytest.mark.parametrize("rule", ["mean", "greedy", "weighted"])
def test_fitting_on_the_test_split_raises(ws, rule):
    spec = write_spec(ws, f'members = ["*"]\ncombine = "{rule}"\n')
    test_set = PredictionSet(
        split="test",
        ids=tuple(TEST),
        classes=tuple(CLASSES),
        members=("m1", "m2"),
        probabilities=np.stack([M1_TEST, M2_TEST]),
        labels=np.array([0, 1, 2, 1]),
    )
    with pytest.raises(ZooError, match="only be fitted on split 'val'"):
        load_spec(spec).make_combiner().fit(test_set)


# --- members that do not belong together -------------------------------------------------------


def two_members(tmp_path, **second):
    ws = tmp_path / "ws"
    ws.mkdir()
    data = write_dataset(ws)
    make_member(ws, "alpha", data=data, val=M1_VAL, test=M1_TEST)
    make_member(ws, "beta", **{"data": data, "val": M2_VAL, "test": M2_TEST, **second})
    return ws


@pytest.mark.parametrize(
    ("second", "message"),
    [
        ({"classes": ["nv", "mel", "bcc"]}, "the same classes in a different order"),
        ({"classes": ["mel", "nv", "scc"]}, "different classes"),
        ({"test_ids": TEST[:3] + ["t9"]}, "different test splits"),
        (
            {"data": {"source": "csv:other.csv", "fingerprint": "0123456789abcdef"}},
            "different data",
        ),
    ],
)
def test_mismatch_names_both_members(tmp_path, second, message):
    ws = two_members(tmp_path, **second)
    spec = write_spec(ws, 'members = ["alpha", "beta"]\ncombine = "mean"\n')
    with pytest.raises(ZooError, match=message) as error:
        build_ensemble(spec, workspace=ws)
    text = str(error.value)
    assert "alpha" in text and "beta" in text and "\n" not in text
    assert main(["ensemble", "build", str(spec), "--workspace", str(ws), "--quiet"]) == 2


@pytest.mark.parametrize("rule", ["weighted", "greedy"])
def test_fitted_rules_need_a_shared_val_split(tmp_path, rule):
    ws = two_members(tmp_path, val_ids=VAL[::-1][:5] + ["v9"], val=M2_VAL)
    spec = write_spec(ws, f'members = ["*"]\ncombine = "{rule}"\n')
    with pytest.raises(ZooError, match="different val splits") as error:
        build_ensemble(spec, workspace=ws)
    assert "alpha" in str(error.value) and "beta" in str(error.value)


def test_mean_accepts_members_with_different_val_folds(tmp_path):
    labels = {**LABELS, "v9": "mel"}
    ws = tmp_path / "ws"
    ws.mkdir()
    data = write_dataset(ws, labels)
    make_member(ws, "alpha", data=data, val=M1_VAL, test=M1_TEST)
    make_member(ws, "beta", data=data, val=M2_VAL[::-1], test=M2_TEST, val_ids=VAL[:0:-1] + ["v9"])
    spec = write_spec(ws, 'members = ["*"]\ncombine = "mean"\nprior_correction = false\n')
    info = info_of(build_ensemble(spec, workspace=ws))
    assert info["split"]["ids"]["val"] == VAL[1:] and info["split"]["val_shared"] is False
    val = read_predictions(ws / "ensembles" / "e" / "predictions" / "val.csv")
    # beta's rows are reversed and its first row is v9: v1..v5 sit at rows 4..0
    np.testing.assert_allclose(val.to_numpy(), (M1_VAL[1:] + M2_VAL[::-1][4::-1]) / 2, atol=1e-7)


# --- the built ensemble as a target -------------------------------------------------------------


@pytest.fixture
def built(ws):
    spec = write_spec(ws, 'members = ["m*"]\ncombine = "mean"\nprior_correction = true\n')
    return build_ensemble(spec, workspace=ws)


def test_target_reuses_the_build_predictions(ws, built, fake_inference):
    target = resolve_target("e", ws)
    assert isinstance(target, EnsembleTarget)
    assert (target.name, target.kind, target.path) == ("e", "ensemble", built)
    assert target.classes == CLASSES and target.split_ids("test") == TEST
    assert target.split_ids("val") == VAL and target.split_ids("train") == TRAIN
    assert target.default_tta == "none" and target.default_prior_correction is True
    assert target.data_info["fingerprint"] == info_of(built)["data"]["fingerprint"]
    dataset = load_dataset(target.data_info["source"], workspace=ws)

    ids = TEST[::-1]
    got = target.probabilities(dataset, ids, tta="none", prior_correction=True, workspace=ws)
    assert fake_inference.calls == []  # nothing recomputed
    assert got.attrs["inference"]["cached"] is True
    expected = (corrected(M1_TEST, M1_PRIORS) + corrected(M2_TEST, M2_PRIORS)) / 2
    assert list(got.index) == ids
    np.testing.assert_allclose(got.to_numpy(), expected[::-1], atol=1e-7)


def test_target_recomputes_for_other_settings(ws, built, fake_inference):
    target = EnsembleTarget.from_path(built, workspace=ws)
    dataset = load_dataset(target.data_info["source"], workspace=ws)
    for name, values in (("m1", M1_TEST), ("m2", M2_TEST)):
        fake_inference.outputs[(name, "dihedral")] = frame(values, TEST)
    got = target.probabilities(dataset, TEST, tta="dihedral", prior_correction=False, workspace=ws)
    assert [c[0] for c in fake_inference.calls] == ["m1", "m2"]
    assert all(c[2] == "dihedral" for c in fake_inference.calls)
    np.testing.assert_allclose(got.to_numpy(), (M1_TEST + M2_TEST) / 2)


def test_target_predict_files_corrects_each_member_then_combines(ws, built, fake_inference):
    target = EnsembleTarget.from_path(built, workspace=ws)
    files = [Path("x/one.jpg"), Path("x/two.jpg")]
    for name, values in (("m1", M1_TEST[:2]), ("m2", M2_TEST[:2])):
        fake_inference.outputs[(name, "steppan")] = frame(values, ["one", "two"])
    metadata = pd.DataFrame({"age": ["60", ""]}, index=["one", "two"])
    got = target.predict_files(files, tta="steppan", prior_correction=True, metadata=metadata)
    assert [c[3] for c in fake_inference.calls] == [False, False]  # raw from each member
    assert all(m is metadata for m in fake_inference.metadata_given)  # each member gets it
    expected = (corrected(M1_TEST[:2], M1_PRIORS) + corrected(M2_TEST[:2], M2_PRIORS)) / 2
    assert list(got.index) == ["one", "two"]
    np.testing.assert_allclose(got.to_numpy(), expected)


def test_zero_weight_members_are_not_run(tmp_path, fake_inference):
    ws, test_ids = noisy_workspace(tmp_path)
    spec = write_spec(ws, 'members = ["*"]\ncombine = "greedy"\n')
    built = build_ensemble(spec, workspace=ws)
    target = EnsembleTarget.from_path(built, workspace=ws)
    weights = target.weights
    assert weights["c"] == 0
    for name in "abc":
        cached = read_predictions(ws / "members" / name / "predictions" / "test.csv")
        fake_inference.outputs[(name, "none")] = cached
    dataset = load_dataset(target.data_info["source"], workspace=ws)
    got = target.probabilities(dataset, test_ids, tta="none", prior_correction=False, workspace=ws)
    assert "c" not in [c[0] for c in fake_inference.calls]
    stored = read_predictions(built / "predictions" / "test.csv")  # built with prior correction
    assert got.shape == stored.shape


@pytest.mark.parametrize("file", ["member.json", "model.keras"])
def test_target_refuses_a_tampered_member(ws, built, file):
    path = ws / "members" / "m2" / file
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    for open_it in (
        lambda: EnsembleTarget.from_path(built, workspace=ws),
        lambda: resolve_target("e", ws),
    ):
        with pytest.raises(ZooError, match="member m2 has changed") as error:
            open_it()
        assert "\n" not in str(error.value) and "rebuild the ensemble" in str(error.value)
        assert file in str(error.value)


def test_target_refuses_a_deleted_member(ws, built):
    shutil.rmtree(ws / "members" / "m1")
    with pytest.raises(ZooError, match="member m1 is missing") as error:
        EnsembleTarget.from_path(built, workspace=ws)
    assert "\n" not in str(error.value) and "rebuild the ensemble" in str(error.value)


# --- the command line -----------------------------------------------------------------------------


def test_cli_builds_and_prints_the_table(ws, capsys):
    spec = write_spec(ws, 'members = ["m1", "m*"]\ncombine = "weighted"\n', name="blend")
    assert main(["ensemble", "build", str(spec), "--workspace", str(ws)]) == 0
    out = ws / "ensembles" / "blend"
    for file in ("ensemble.json", "predictions/val.csv", "predictions/test.csv", "card.md"):
        assert (out / file).is_file()
    printed = capsys.readouterr().out
    assert "m1" in printed and "m2" in printed and "blend" in printed
    assert not list((ws / "ensembles").glob(".*"))  # no temporary left behind
    info = info_of(out)
    assert [m["name"] for m in info["members"]] == ["m1", "m2"]
    assert sum(info["weights"].values()) == pytest.approx(1)


def good_and_poor(tmp_path) -> tuple[Path, Path]:
    """A member perfect on validation and a poor one, and a greedy definition of both."""
    ws = tmp_path / "ws"
    ws.mkdir()
    data = write_dataset(ws)
    perfect = 0.7 * np.eye(3)[[CLASSES.index(label) for label in VAL_LABELS]] + 0.1
    make_member(ws, "good", data=data, val=perfect, test=M1_TEST)
    make_member(ws, "poor", data=data, val=M2_VAL, test=M2_TEST)
    spec = write_spec(ws, 'members = ["*"]\ncombine = "greedy"\nprior_correction = false\n')
    return ws, spec


def test_an_ensemble_that_reduces_to_one_member_says_so(tmp_path, capsys):
    """Greedy selection keeps only a member that is perfect on validation: the build prints
    one note naming it, ensemble.json and the card record it, and the predictions are its."""
    ws, spec = good_and_poor(tmp_path)
    assert main(["ensemble", "build", str(spec), "--workspace", str(ws)]) == 0
    notes = [line for line in capsys.readouterr().out.splitlines() if "all its weight" in line]
    assert notes == [
        "note: ensemble e puts all its weight on member good: it predicts what good does "
        "with TTA none and prior correction off"
    ]
    info = info_of(ws / "ensembles" / "e")
    assert info["reduces_to"] == "good" and info["weights"] == {"good": 1.0, "poor": 0.0}
    assert "Reduces to one member" in (ws / "ensembles" / "e" / "card.md").read_text()
    test = read_predictions(ws / "ensembles" / "e" / "predictions" / "test.csv")
    np.testing.assert_allclose(test.to_numpy(), M1_TEST, atol=1e-9)
    mean = write_spec(ws, 'members = ["*"]\ncombine = "mean"\n', name="both")
    assert info_of(build_ensemble(mean, workspace=ws))["reduces_to"] is None


def test_members_of_weight_0_are_listed_but_not_counted(tmp_path):
    """ensemble.json keeps the candidate greedy dropped (weight 0); the members the ensemble
    uses, and the count its card gives, leave it out."""
    ws, spec = good_and_poor(tmp_path)
    built = build_ensemble(spec, workspace=ws)
    record = EnsembleTarget.from_path(built, workspace=ws).record
    assert record.member_names == ["good", "poor"] and record.weights["poor"] == 0
    assert record.used_member_names == ["good"]
    card = (built / "card.md").read_text()
    assert "A greedy ensemble of 1 member; poor got weight 0." in card


def test_cli_glob_matching_nothing_exits_2(ws, capsys):
    spec = write_spec(ws, 'members = ["resnet*"]\ncombine = "mean"\n')
    assert main(["ensemble", "build", str(spec), "--workspace", str(ws)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "resnet*" in err and "\n" not in err
    assert not (ws / "ensembles" / "e").exists()


@pytest.mark.slow  # a fresh interpreter: a few seconds of imports
def test_cached_build_never_imports_tensorflow(ws):
    spec = write_spec(ws, 'members = ["*"]\ncombine = "greedy"\n')
    code = (
        "import sys\nfrom zoo.cli.main import main\n"
        f"assert main(['ensemble', 'build', {str(spec)!r}, '--workspace', {str(ws)!r}, '--quiet']) == 0\n"
        "heavy = [m for m in ('tensorflow', 'keras') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


# --- labels: from the members' data set, cached by its fingerprint ------------------------------


def test_labels_are_cached_by_fingerprint_and_checked(ws):
    spec = write_spec(ws, 'members = ["*"]\ncombine = "mean"\n')
    fingerprint = info_of(build_ensemble(spec, workspace=ws))["data"]["fingerprint"]
    cache = ws / "cache" / "labels" / f"{fingerprint}.csv"
    assert dict(pd.read_csv(cache, dtype=str).itertuples(index=False)) == LABELS

    # a tampered cache is not trusted: the labels are read again from the data set
    cache.write_text(cache.read_text().replace("v0,mel", "v0,nv"))
    first = info_of(build_ensemble(spec, workspace=ws))["metrics"]["val"]
    assert "v0,mel" in cache.read_text()

    # with the data set changed and no cache, the build refuses
    cache.unlink()
    data = ws / "data.csv"
    data.write_text(data.read_text().replace("v0,mel", "v0,bcc"))
    with pytest.raises(ZooError, match="has changed since the members were trained"):
        build_ensemble(spec, workspace=ws)
    assert first["n_images"] == len(VAL)


def test_unknown_tta_is_refused_before_any_work(ws):
    spec = write_spec(ws, 'members = ["*"]\ncombine = "mean"\ntta = "flips"\n')
    with pytest.raises(ZooError, match="unknown TTA scheme 'flips'"):
        build_ensemble(spec, workspace=ws)


def test_members_without_shared_val_images(tmp_path):
    labels = {**LABELS, **{f"w{i}": CLASSES[i % 3] for i in range(6)}}
    ws = tmp_path / "ws"
    ws.mkdir()
    data = write_dataset(ws, labels)
    make_member(ws, "alpha", data=data, val=M1_VAL, test=M1_TEST)
    make_member(ws, "beta", data=data, val=M2_VAL, test=M2_TEST, val_ids=list(labels)[-6:])
    spec = write_spec(ws, 'members = ["*"]\ncombine = "mean"\n')
    info = info_of(build_ensemble(spec, workspace=ws))  # disjoint folds: a mean still builds
    assert info["split"]["ids"]["val"] == [] and info["metrics"]["val"]["balanced_accuracy"] is None
    assert not (ws / "ensembles" / "e" / "predictions" / "val.csv").exists()
    assert all(m["metrics"]["val"]["n_images"] == 6 for m in info["members"])

    empty = tmp_path / "empty"
    empty.mkdir()
    data = write_dataset(empty)
    for name in ("alpha", "beta"):
        make_member(empty, name, data=data, val=np.zeros((0, 3)), test=M1_TEST, val_ids=[])
    spec = write_spec(empty, 'members = ["*"]\ncombine = "weighted"\n')
    with pytest.raises(ZooError, match="have no validation images"):
        build_ensemble(spec, workspace=empty)


# --- definitions by name, members by selection ---------------------------------------------------


def selection_workspace(tmp_path) -> Path:
    """Four members that differ in recipe, input size and seed (one data set)."""
    ws = tmp_path / "ws"
    ws.mkdir()
    data = write_dataset(ws)
    for name, recipe, size, seed in (
        ("a.s0", "alpha", 64, 0),
        ("a.s1", "alpha", 64, 1),
        ("a32.s0", "alpha", 32, 0),
        ("b.s0", "beta", 64, 0),
    ):
        folder = make_member(ws, name, data=data, val=M1_VAL, test=M1_TEST, priors=M1_PRIORS)
        info = json.loads((folder / "member.json").read_text())
        info.update(recipe=recipe, input={"size": size}, config={"options": {"seed": seed}})
        (folder / "member.json").write_text(json.dumps(info))
    return ws


def test_members_selected_by_recipe_data_size_and_seeds_are_recorded(tmp_path, capsys):
    ws = selection_workspace(tmp_path)
    (ws / "ensemble-specs").mkdir()
    (ws / "ensemble-specs" / "alphas.toml").write_text(
        'combine = "mean"\n\n[members]\nrecipes = ["alph*"]\ndata = "data"\n'
        "image_size = 64\nseeds = [0, 1]\n"
    )
    assert main(["ensemble", "build", "alphas", "--workspace", str(ws), "--quiet"]) == 0
    info = info_of(ws / "ensembles" / "alphas")
    assert info["spec"]["resolved_members"] == ["a.s0", "a.s1"]
    assert [m["name"] for m in info["members"]] == ["a.s0", "a.s1"]
    assert "recipes = [" in info["spec"]["text"]
    # names and criteria together: both must hold
    spec = write_spec(ws, 'combine = "mean"\n[members]\nnames = ["*.s0"]\nimage_size = [64]\n')
    assert resolve_members(load_spec(spec), {m: info_of_member(ws, m) for m in MEMBER_NAMES}) == [
        "a.s0",
        "b.s0",
    ]


MEMBER_NAMES = ("a.s0", "a.s1", "a32.s0", "b.s0")


def info_of_member(ws: Path, name: str) -> dict:
    return json.loads((ws / "members" / name / "member.json").read_text())


def test_selection_matching_nothing_is_one_line_listing_the_members(tmp_path, capsys):
    ws = selection_workspace(tmp_path)
    spec = write_spec(ws, 'combine = "mean"\n[members]\nrecipes = ["gamma"]\nseeds = 3\n')
    assert main(["ensemble", "build", str(spec), "--workspace", str(ws)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "recipes = ['gamma'], seeds = [3] matched no saved member" in err
    assert "a32.s0 (alpha, data, 32 px, seed 0)" in err and "b.s0 (beta" in err


@pytest.mark.parametrize(
    ("members", "pattern"),
    [
        ('[members]\nrecipe = ["a"]\n', r"unknown key 'members.recipe'.*Did you mean recipes"),
        ("[members]\nseeds = [0.5]\n", r"members.seeds must be an integer or an array of integers"),
        ('[members]\nimage_size = "64"\n', r"members.image_size must be an integer.*got '64'"),
    ],
)
def test_bad_selection_names_file_and_key(tmp_path, members, pattern):
    path = write_spec(tmp_path, 'combine = "mean"\n' + members)
    with pytest.raises(ZooError, match=pattern) as info:
        load_spec(path)
    assert str(path) in str(info.value)


def test_definitions_found_by_name_in_each_folder(tmp_path, monkeypatch):
    monkeypatch.delenv("ZOO_ENSEMBLE_PATH", raising=False)
    ws = tmp_path / "ws"
    assert find_spec("steppan2020").path == builtin_folder("ensembles") / "steppan2020.toml"
    (ws / "ensemble-specs").mkdir(parents=True)
    (ws / "ensemble-specs" / "mine.toml").write_text('members = ["*"]\ncombine = "mean"\n')
    assert find_spec("mine", workspace=ws).combine == "mean"
    extra = tmp_path / "extra"
    extra.mkdir()
    (extra / "theirs.toml").write_text('members = ["x*"]\ncombine = "rank"\n')
    monkeypatch.setenv("ZOO_ENSEMBLE_PATH", str(extra))
    assert find_spec("theirs", workspace=ws).members == ("x*",)
    assert find_spec(str(extra / "theirs.toml")).combine == "rank"  # a path
    with pytest.raises(ZooError, match=r"unknown ensemble 'stepan2020'\. Did you mean steppan2020"):
        find_spec("stepan2020", workspace=ws)
    (extra / "copy.toml").write_text('name = "mine"\nmembers = ["*"]\ncombine = "mean"\n')
    with pytest.raises(ZooError, match="ensemble 'mine' is defined twice"):
        find_spec("mine", workspace=ws)


@pytest.mark.slow  # a fresh interpreter: a few seconds of imports
def test_cached_build_by_name_and_selection_never_imports_tensorflow(tmp_path):
    ws = selection_workspace(tmp_path)
    (ws / "ensemble-specs").mkdir()
    (ws / "ensemble-specs" / "sel.toml").write_text('combine = "mean"\n[members]\nseeds = 1\n')
    code = (
        "import sys\nfrom zoo.cli.main import main\n"
        f"assert main(['ensemble', 'build', 'sel', '--workspace', {str(ws)!r}, '--quiet']) == 0\n"
        "heavy = [m for m in ('tensorflow', 'keras') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert info_of(ws / "ensembles" / "sel")["spec"]["resolved_members"] == ["a.s1"]

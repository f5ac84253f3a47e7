"""zoo.store: the versioned records round-trip, damaged or too-new files are one line, the
prediction cache's rules, the one CSV writer and headline metrics, and no Keras anywhere."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from zoo.errors import ZooError
from zoo.scoring.headline import headline_metrics
from zoo.store import (
    CacheRecord,
    EnsembleRecord,
    EvaluationRecord,
    Layout,
    MemberRecord,
    PredictionCache,
    predictions_frame,
    read_predictions,
    tta_name,
    write_predictions,
)

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "v1-member" / "small_cnn.demo.s0"
CLASSES = ["mel", "nv", "bcc"]

ENSEMBLE = {
    "name": "e",
    "kind": "ensemble",
    "description": None,
    "rule": "mean",
    "options": {},
    "prior_correction": True,
    "tta": "none",
    "members": [{"name": "m1", "sha256": {"model.keras": "0" * 64}, "weight": 1.0}],
    "weights": {"m1": 1.0},
    "combiner": {"rule": "mean"},
    "classes": CLASSES,
    "data": {"fingerprint": "f"},
    "split": {"val_shared": True, "ids": {"val": ["v"], "test": ["t"]}},
}
EVALUATION = {
    "target": {"name": "m1", "kind": "member", "path": "/ws/members/m1"},
    "data": {"name": "demo", "fingerprint": "f", "spec": "demo"},
    "split": "test",
    "classes": CLASSES,
    "aggregate": {"balanced_accuracy": 0.5},
    "per_category": {},
    "macro_average": {},
    "tta": "none",
    "prior_correction": True,
    "n_images": 3,
    "task": None,
}
SIDECAR = {"key": "test", "model_sha256": "a" * 64, "ids_sha256": "b" * 64, "tta": "none"}


# --- records -------------------------------------------------------------------------------


def test_member_json_written_before_format_version_is_version_1_and_round_trips(tmp_path):
    original = json.loads((FIXTURE / "member.json").read_text())
    record = MemberRecord.load(FIXTURE / "member.json")
    assert record.format_version == 1 and record.versioned is False
    assert record.name == "small_cnn.demo.s0" and len(record.split_ids("test")) == 84
    assert {k: v for k, v in record.to_dict().items() if k != "format_version"} == original

    record.write(tmp_path / "member.json")
    again = MemberRecord.load(tmp_path / "member.json")
    assert again.versioned is True and again == record
    assert json.loads((tmp_path / "member.json").read_text())["format_version"] == 1


@pytest.mark.parametrize(
    ("kind", "data"),
    [(EnsembleRecord, ENSEMBLE), (EvaluationRecord, EVALUATION), (CacheRecord, SIDECAR)],
)
def test_records_round_trip_and_carry_unknown_keys(tmp_path, kind, data):
    """Entries another zoo part (or a newer zoo) adds are kept, untouched, in ``extra``."""
    data = {**data, "sources": [{"name": "isic2019", "count": 3}], "extra": {"x": 1}}
    record = kind.from_dict(data)
    assert record.extra["sources"] == data["sources"]
    record.write(tmp_path / "r.json")
    loaded = kind.load(tmp_path / "r.json")
    assert loaded == record and loaded.to_dict() == {"format_version": 1, **data}


def test_absent_optional_entries_stay_absent():
    out = EnsembleRecord.from_dict({k: v for k, v in ENSEMBLE.items() if k != "description"})
    assert "description" not in out.to_dict() and out.to_dict()["kind"] == "ensemble"


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("{", ["unreadable"]),
        ("[1, 2]", ["damaged", "list"]),
        ('{"format_version": 2, "name": "x"}', ["format_version 2", "upgrade zoo"]),
        ('{"format_version": "one"}', ["damaged", "format_version"]),
        (json.dumps({**ENSEMBLE, "members": []}), ["damaged", "'members' is empty"]),
        (json.dumps({**ENSEMBLE, "tta": 3}), ["damaged", "'tta' must be a string; got 3"]),
        (json.dumps({k: v for k, v in ENSEMBLE.items() if k != "combiner"}), ["'combiner'"]),
    ],
)
def test_damaged_unreadable_or_too_new_files_are_one_line_naming_them(tmp_path, text, words):
    file = tmp_path / "ensemble.json"
    file.write_bytes(text.encode())
    with pytest.raises(ZooError) as caught:
        EnsembleRecord.load(file)
    message = str(caught.value)
    assert "\n" not in message and message.startswith(str(file))
    assert all(w in message for w in words), message


def test_missing_file_and_damaged_member_split(tmp_path):
    with pytest.raises(ZooError, match=r"member\.json is missing or unreadable"):
        MemberRecord.load(tmp_path / "member.json")
    (tmp_path / "member.json").write_text('{"name": "m", "classes": [], "split": {"ids": 3}}')
    with pytest.raises(ZooError, match=r"damaged \('split.ids' must be .*retrain the member"):
        MemberRecord.load(tmp_path / "member.json")


# --- layout, names, CSVs -------------------------------------------------------------------


def test_layout_names_every_place(tmp_path):
    layout = Layout(tmp_path)
    assert layout.member("m") == tmp_path / "members" / "m"
    assert layout.ensemble("e") == tmp_path / "ensembles" / "e"
    assert layout.run("m") == tmp_path / "runs" / "m"
    assert layout.evaluation("x") == tmp_path / "evaluations" / "x"
    assert layout.labels_cache("f") == tmp_path / "cache" / "labels" / "f.csv"
    (layout.member("m")).mkdir(parents=True)
    (layout.member("m") / "member.json").write_text("{}")
    (layout.members / ".half-written").mkdir()
    assert layout.member_folders() == [layout.member("m")]
    assert Layout.of_item(layout.member("m")).root == tmp_path.resolve()


def test_tta_names():
    assert tta_name("Rotations:08") == "rotations-8" and tta_name("rotations-8") == "rotations-8"
    with pytest.raises(ZooError, match="unknown TTA scheme 'flips'"):
        tta_name("flips")
    with pytest.raises(ZooError, match="1 <= N <= 64"):
        tta_name("rotations:65")


@pytest.mark.parametrize("ids", [["ISIC_0000001", "x-2", "3"], ["a,b", 'q"uote', "c"]])
def test_prediction_csv_is_pandas_text_and_reads_back(tmp_path, ids):
    values = np.array([[0.1, 0.2, 0.7], [1 / 3, 2e-9, 1 - 1 / 3 - 2e-9], [0.0, 1.0, 0.0]])
    frame = predictions_frame(ids, values, CLASSES)
    write_predictions(tmp_path / "p.csv", frame)
    expected = frame.to_csv(float_format="%.8g")
    assert (tmp_path / "p.csv").read_text() == expected
    back = read_predictions(tmp_path / "p.csv")
    assert list(back.index) == ids and np.allclose(back.to_numpy(), values, atol=1e-8)


@pytest.mark.parametrize("value", ["not-a-number", "nan", "inf", "-inf"])
def test_a_damaged_prediction_csv_is_one_line(tmp_path, value):
    (tmp_path / "p.csv").write_text(f"image,mel\na,{value}\n")
    with pytest.raises(ZooError, match=r"p\.csv is not a predictions file") as caught:
        read_predictions(tmp_path / "p.csv")
    assert "\n" not in str(caught.value)


# --- the prediction cache ------------------------------------------------------------------


def cache_member(tmp_path, *, legacy: bool) -> PredictionCache:
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "model.keras").write_bytes(b"model")
    return PredictionCache(folder, CLASSES, legacy=legacy)


def test_cache_entry_is_used_only_while_model_ids_and_tta_match(tmp_path):
    cache = cache_member(tmp_path, legacy=False)
    frame = predictions_frame(["a", "b"], [[0.2, 0.3, 0.5], [1, 0, 0]], CLASSES)
    cache.write("test", frame, tta="none", model_sha256="m1", seconds=2.0, origin="trainer")
    hit = cache.read("test", ["b", "a"], tta="none", model_sha256="m1")
    pd.testing.assert_frame_equal(hit, read_predictions(cache.file("test")))
    assert hit.attrs["inference"] == {"cached": True, "seconds": 2.0, "images_per_second": 1.0}
    assert cache.read("test", ["a", "b"], tta="none", model_sha256="m2") is None
    assert cache.read("test", ["a"], tta="none", model_sha256="m1") is None
    assert cache.read("test", ["a", "b"], tta="steppan", model_sha256="m1") is None
    (cache.folder / "predictions" / "test.json").write_text("{")  # damaged sidecar: a miss
    assert cache.read("test", ["a", "b"], tta="none", model_sha256="m1") is None


def test_a_sidecarless_trainer_file_counts_only_for_a_member_from_before_versions(tmp_path):
    frame = predictions_frame(["a", "b"], [[0.2, 0.3, 0.5], [1, 0, 0]], CLASSES)
    caches = {}
    for legacy in (False, True):
        (tmp_path / str(legacy)).mkdir()
        caches[legacy] = cache = cache_member(tmp_path / str(legacy), legacy=legacy)
        write_predictions(cache.file("val"), frame)
        os.utime(cache.folder / "model.keras", ns=(1, 1))  # older than val.csv
        found = cache.read("val", ["a", "b"], tta="none", model_sha256="m1")
        assert (found is not None) is legacy
    cache = caches[True]
    sidecar = cache.folder / "predictions" / "val.json"
    record = CacheRecord.load(sidecar)  # adopted, and recorded for next time
    assert record.origin == "trainer" and record.model_sha256 == "m1"
    sidecar.unlink()
    later = cache.file("val").stat().st_mtime_ns + 10**9
    os.utime(cache.folder / "model.keras", ns=(later, later))  # the model is newer: stale
    assert cache.read("val", ["a", "b"], tta="none", model_sha256="m1") is None
    assert not sidecar.exists()


# --- headline metrics, Keras-free ----------------------------------------------------------


def test_headline_metrics_match_scikit_learn_with_and_without_ties():
    from sklearn.metrics import balanced_accuracy_score, roc_auc_score

    rng = np.random.default_rng(3)
    y = rng.integers(0, 4, 300)
    scores = rng.dirichlet(np.ones(4), 300)
    for p in (scores, np.round(scores, 1)):  # rounded: many ties
        got = headline_metrics(y, p)
        auc = np.mean([roc_auc_score(y == c, p[:, c]) for c in range(4)])
        assert got["macro_auc"] == pytest.approx(auc)
        assert got["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y, p.argmax(1)))


def test_the_store_imports_no_keras_or_tensorflow():
    code = (
        "import sys, zoo.store, zoo.scoring.headline, zoo.inference.members, zoo.ensembles.build, zoo.publish.leaderboard\n"
        "heavy = [m for m in ('tensorflow', 'keras') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr


# --- every value is checked at load ----------------------------------------------------------


@pytest.mark.parametrize(
    ("edit", "field"),
    [
        ({"input": {"size": -5}}, "'input.size' must be a whole number from 1 to 8192; got -5"),
        ({"input": {"size": "big"}}, "'input.size' must be a whole number"),
        ({"priors": {"effective": [0.5, 0.5]}}, "'priors.effective' must hold 7 entries"),
        ({"priors": {"effective": [float("nan")] * 7}}, "'priors.effective[0]'"),
        ({"classes": []}, "'classes' must be at least two class names; got []"),
        ({"name": "/etc/x"}, "'name' must be letters, digits"),
        ({"name": "../../x"}, "got '../../x'"),
    ],
)
def test_member_json_is_checked_whole_naming_the_field(tmp_path, edit, field):
    info = json.loads((FIXTURE / "member.json").read_text()) | edit
    file = tmp_path / "member.json"
    file.write_text(json.dumps(info))
    with pytest.raises(ZooError) as caught:
        MemberRecord.load(file)
    message = str(caught.value)
    assert "\n" not in message and message.startswith(f"{file} is damaged"), message
    assert field in message, message


@pytest.mark.parametrize(
    ("kind", "data", "field"),
    [
        (EvaluationRecord, {**EVALUATION, "aggregate": {"balanced_accuracy": "high"}}, "aggregate"),
        (EvaluationRecord, {**EVALUATION, "n_images": -3}, "'n_images'"),
        (
            EvaluationRecord,
            {**EVALUATION, "target": {**EVALUATION["target"], "name": ".."}},
            "target.name",
        ),
        (
            EvaluationRecord,
            {
                **EVALUATION,
                "operating_points": [
                    {
                        "class": "mel",
                        "metric": "sensitivity",
                        "target": 0.9,
                        "threshold": float("nan"),
                    }
                ],
            },
            "'operating_points[0].threshold'",
        ),
        (
            EvaluationRecord,
            {**EVALUATION, "class_counts": {"mel": 1}},
            "'class_counts' has no entry",
        ),
        (
            EnsembleRecord,
            {**ENSEMBLE, "operating_point": {"class": "mel", "threshold": -1}},
            "operating_point.threshold",
        ),
        (EnsembleRecord, {**ENSEMBLE, "weights": {"m1": float("nan")}}, "'weights.m1'"),
        (
            EnsembleRecord,
            {**ENSEMBLE, "members": [{"name": "/abs", "sha256": {}}]},
            "members[0].name",
        ),
        (CacheRecord, {**SIDECAR, "key": "../up"}, "'key'"),
        (CacheRecord, {**SIDECAR, "tta": "flips"}, "'tta' must be a TTA scheme"),
    ],
)
def test_records_are_checked_whole_naming_the_field(tmp_path, kind, data, field):
    file = tmp_path / "r.json"
    file.write_text(json.dumps(data))
    with pytest.raises(ZooError) as caught:
        kind.load(file)
    assert "\n" not in str(caught.value) and field in str(caught.value), str(caught.value)


@pytest.mark.parametrize("pid", [2**70, 0, -1, "1", 1.5, float("nan")])
def test_a_lock_with_an_impossible_pid_is_refused_naming_it(tmp_path, pid):
    from zoo.store import locks

    folder = tmp_path / "evaluation"
    lock = locks.lock_file(folder)
    lock.write_text(json.dumps({"pid": pid, "host": "h"}))
    with pytest.raises(ZooError) as caught:
        locks.acquire(folder, what="test")
    message = str(caught.value)
    assert "\n" not in message and str(lock) in message and "'pid'" in message, message
    assert lock.exists()  # a fresh lock may be one being written: left alone

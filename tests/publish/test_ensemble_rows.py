"""Ensembles on the leaderboard, from hand-made evaluation folders (no model runs): an entry
identical to another shares its row, and every ensemble shows its gain over its best member
with a paired lesion-bootstrap interval."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import balanced_accuracy_score

from zoo.data import load_dataset
from zoo.publish.leaderboard import publish_leaderboard
from zoo.scoring.metrics import argmax_labels, bootstrap_ci, group_codes, resample_counts, score

CLASSES = ["mel", "nv", "bcc"]
N = 30
IDS = [f"ISIC_{i:07d}" for i in range(N)]
Y = np.arange(N) % 3
RESAMPLES = 200


def probabilities(seed: int, quality: float) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return quality * np.eye(3)[Y] + (1 - quality) * rng.dirichlet(np.ones(3), N)


A, B = probabilities(1, 0.4), probabilities(2, 0.25)
MEAN = (A + B) / 2


def write_evaluation(ws: Path, folder: str, target: str, kind: str, probs, *, prior=True) -> None:
    """An evaluation folder as ``zoo evaluate`` writes it: truth, predictions, metrics.json."""
    out = ws / "evaluations" / folder
    out.mkdir(parents=True)
    truth = pd.DataFrame(np.eye(3)[Y], index=pd.Index(IDS, name="image"), columns=CLASSES)
    predictions = pd.DataFrame(probs, index=truth.index, columns=CLASSES)
    truth.to_csv(out / "truth.csv")
    predictions.to_csv(out / "predictions.csv")
    dataset = load_dataset(f"csv:{ws / 'data.csv'}", workspace=ws)
    metrics = score(truth, predictions)
    metrics["class_counts"] = {c: int(v) for c, v in truth.sum(axis=0).items()}
    metrics["ci95"] = bootstrap_ci(
        truth, predictions, groups=dataset.lesion_groups(truth.index), n_resamples=RESAMPLES
    )
    metrics.update(
        target={"name": target, "kind": kind, "path": str(ws / f"{kind}s" / target)},
        data={"spec": dataset.spec, "name": "data", "fingerprint": dataset.fingerprint},
        split="test",
        tta="none",
        prior_correction=prior,
        bootstrap={"n_resamples": RESAMPLES, "seed": 0},
    )
    (out / "metrics.json").write_text(json.dumps(metrics))


def write_member(ws: Path, name: str, **extra) -> None:
    folder = ws / "members" / name
    folder.mkdir(parents=True)
    split = {"ids": {"train": [], "val": [], "test": IDS}}
    (folder / "member.json").write_text(
        json.dumps({"name": name, "classes": CLASSES, "split": split, **extra})
    )


def write_ensemble(ws: Path, name: str, weights: dict[str, float]) -> None:
    folder = ws / "ensembles" / name
    folder.mkdir(parents=True)
    sole = [m for m, w in weights.items() if w == 1.0]
    record = {
        "name": name,
        "rule": "greedy",
        "prior_correction": True,
        "tta": "none",
        "members": [{"name": m, "sha256": {"model.keras": "0" * 64}} for m in weights],
        "weights": weights,
        "combiner": {},
        "classes": CLASSES,
        "data": {},
        "split": {"ids": {"val": [], "test": IDS}},
        "reduces_to": sole[0] if sole else None,
    }
    (folder / "ensemble.json").write_text(json.dumps(record))


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    """Members a and b; greedy and weighted reduce to a (weighted within 1e-11); mean
    averages both; a also evaluated without prior correction (perfect: another setting)."""
    ws = tmp_path / "ws"
    ws.mkdir()
    pd.DataFrame(
        {"image": IDS, "label": [CLASSES[c] for c in Y], "group": [f"L{i // 2}" for i in range(N)]}
    ).to_csv(ws / "data.csv", index=False)
    for name in ("a", "b"):
        write_member(ws, name)
    write_ensemble(ws, "greedy", {"a": 1.0, "b": 0.0})
    write_ensemble(ws, "weighted", {"a": 1.0, "b": 0.0})
    write_ensemble(ws, "mean", {"a": 0.5, "b": 0.5})
    write_evaluation(ws, "a-test", "a", "member", A)
    write_evaluation(ws, "a-test-raw", "a", "member", 0.9 * np.eye(3)[Y] + 0.1 / 3, prior=False)
    write_evaluation(ws, "b-test", "b", "member", B)
    write_evaluation(ws, "greedy-test", "greedy", "ensemble", A)
    nudged = A + 1e-11 * np.roll(np.eye(3), 1, axis=1)[Y] - 1e-11 * np.eye(3)[Y]
    write_evaluation(ws, "weighted-test", "weighted", "ensemble", nudged)
    write_evaluation(ws, "mean-test", "mean", "ensemble", MEAN)
    return ws


def ba(probs: np.ndarray, weights=None) -> float:
    return balanced_accuracy_score(Y, argmax_labels(probs), sample_weight=weights)


def test_identical_entries_share_one_row(workspace: Path):
    out = publish_leaderboard(workspace, out=workspace / "board")
    table = pd.read_csv(out / "leaderboard.csv", keep_default_na=False)
    assert sorted(table["entry"]) == ["a", "a = greedy = weighted", "b", "mean"]
    shared = table.set_index("entry").loc["a = greedy = weighted"]
    assert shared["kind"] == "member" and shared["same_as"] == "greedy;weighted"
    assert shared["step"] == "+ prior correction"  # the member's own row, named with both
    assert set(table.loc[table["entry"] != "a = greedy = weighted", "same_as"]) == {""}
    markdown = (out / "leaderboard.md").read_text()
    ranking = markdown.split("## Ranking")[1].split("## Members")[0]
    assert ranking.count("| a = greedy = weighted |") == 1 and "| greedy |" not in ranking
    ensembles = markdown.split("## Ensembles")[1].split("## Plots")[0]
    assert "| a = greedy = weighted |" in ensembles and "| mean |" in ensembles
    page = (out / "index.html").read_text()
    ranking_html = page.split('<table id="ranking"')[1].split("</table>")[0]
    assert ranking_html.count("<tr data-step") == 4
    assert ranking_html.count("a = greedy = weighted") == 1
    assert "all weight on a" in page  # each ensemble's members: greedy and weighted say so


def test_ensemble_gain_by_hand(workspace: Path):
    out = publish_leaderboard(workspace, out=workspace / "board")
    table = pd.read_csv(out / "leaderboard.csv").set_index("entry")
    best = max(ba(A), ba(B))  # not the perfect raw a: another setting
    assert table.loc["mean", "ensemble_gain"] == pytest.approx(ba(MEAN) - best)
    assert table.loc["mean", "best_member"] == ("a" if ba(A) >= ba(B) else "b")
    assert table.loc[["a", "b"], "ensemble_gain"].isna().all()  # empty for members
    assert table.loc[["a", "b"], "ensemble_gain_low"].isna().all()
    shared = table.loc["a = greedy = weighted"]
    assert shared["ensemble_gain"] == 0 and shared["best_member"] == "a"
    assert (shared["ensemble_gain_low"], shared["ensemble_gain_high"]) == (0, 0)  # paired

    # the interval by hand: the same lesion resamples as the entries' own intervals, both
    # balanced accuracies scored on each (a weighted sample), the 2.5 and 97.5 percentiles
    groups = pd.Series([f"L{i // 2}" for i in range(N)], index=IDS)
    draws = resample_counts(
        group_codes(pd.Index(IDS), groups), n_resamples=RESAMPLES, rng=np.random.default_rng(0)
    )
    counts = np.vstack([c for _, c in draws])
    best_probs = A if ba(A) >= ba(B) else B
    gains = [ba(MEAN, w) - ba(best_probs, w) for w in counts]
    low, high = np.percentile(gains, [2.5, 97.5])
    assert table.loc["mean", "ensemble_gain_low"] == pytest.approx(low, abs=1e-6)
    assert table.loc["mean", "ensemble_gain_high"] == pytest.approx(high, abs=1e-6)
    assert low < high
    markdown = (out / "leaderboard.md").read_text()
    assert f"{ba(MEAN) - best:+.3f} [{low:+.3f}–{high:+.3f}]" in markdown
    assert "ensemble gain (95 % CI)" in (out / "index.html").read_text()


def test_gain_without_its_data_set_has_no_interval(workspace: Path, capsys):
    (workspace / "data.csv").unlink()
    out = publish_leaderboard(workspace, out=workspace / "board")
    table = pd.read_csv(out / "leaderboard.csv").set_index("entry")
    assert table.loc["mean", "ensemble_gain"] == pytest.approx(ba(MEAN) - max(ba(A), ba(B)))
    assert np.isnan(table.loc["mean", "ensemble_gain_low"])
    err = " ".join(capsys.readouterr().err.split())
    assert "the gain interval of mean over" in err and "cannot read data set" in err


def test_a_runs_extra_members_share_its_training_minutes():
    """Snapshots and the weight average of one run count its training time once."""
    from types import SimpleNamespace

    from zoo.publish.leaderboard import _run_of

    def record(name: str, **extra):
        return SimpleNamespace(name=name, extra=extra)

    assert _run_of(record("a.snap2", snapshot={"run": "a"})) == "a"
    assert _run_of(record("a.swa", swa={"run": "a"})) == "a"
    assert _run_of(record("b")) == "b"
    assert _run_of(record("c", snapshot="damaged")) == "c"


def test_an_ensembles_cost_is_over_the_members_of_weight_above_0(workspace: Path):
    """Greedy keeps every candidate in ensemble.json, the dropped ones with weight 0: they
    add no parameters, training minutes or inference time (b.snap shares run b's minutes)."""
    costs = {  # member: parameters, training seconds, images/s
        "u": (1000, 600, 100.0),
        "v": (2000, 1200, 50.0),
        "v.snap": (2000, 1200, 50.0),
        "unused": (9000, 6000, 10.0),
    }
    for seed, (name, (parameters, seconds, speed)) in enumerate(costs.items(), start=3):
        training = {"parameters": parameters, "seconds": seconds}
        training["inference_images_per_second"] = speed
        snapshot = {"snapshot": {"run": "v"}} if name == "v.snap" else {}
        write_member(workspace, name, training=training, **snapshot)
        write_evaluation(workspace, f"{name}-test", name, "member", probabilities(seed, 0.3))
    weights = {"u": 0.5, "v": 0.25, "v.snap": 0.25, "unused": 0.0}
    write_ensemble(workspace, "sparse", weights)
    write_evaluation(workspace, "sparse-test", "sparse", "ensemble", (2 * A + B) / 3)

    out = publish_leaderboard(workspace, out=workspace / "board")
    sparse = pd.read_csv(out / "leaderboard.csv").set_index("entry").loc["sparse"]
    assert sparse["parameters"] == 1000 + 2000 + 2000
    assert sparse["train_minutes"] == pytest.approx((600 + 1200) / 60)
    assert sparse["images_per_second"] == pytest.approx(1 / (1 / 100 + 1 / 50 + 1 / 50))

"""Combination rules on small hand-made predictions (3 members, ~20 images, 3 classes)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from zoo.ensembles.combine import (
    COMBINE_RULES,
    GreedyCombiner,
    MeanCombiner,
    PredictionSet,
    RankCombiner,
    WeightedCombiner,
    combiner_from_dict,
    make_combiner,
)
from zoo.errors import ZooError

CLASSES = ("mel", "nv", "bcc")
MEMBERS = ("a", "b", "c")


def make_set(probabilities, labels=None, *, split="val", members=MEMBERS, classes=CLASSES):
    probabilities = np.asarray(probabilities, dtype=float)
    ids = tuple(f"ISIC_{i:07d}" for i in range(probabilities.shape[1]))
    return PredictionSet(
        split=split,
        ids=ids,
        classes=classes,
        members=members,
        probabilities=probabilities,
        labels=None if labels is None else np.asarray(labels),
    )


def noisy_members(seed=0, n=21):
    """Member a is good, b is worse, c is noise; labels balanced over 3 classes."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    onehot = np.eye(3)[y]
    a = 0.7 * onehot + 0.3 * rng.dirichlet(np.ones(3), n)
    b = 0.3 * onehot + 0.7 * rng.dirichlet(np.ones(3), n)
    c = rng.dirichlet(np.ones(3), n)
    return np.stack([a, b, c]), y


def greedy_case():
    """A case where the best bag is (2a + b) / 3, so greedy must pick member a twice.

    For an image of class y with competitor k = y+1 and third class 0.1, a member with
    margin d scores p_y = 0.45 + 0.15 d and p_k = 0.45 - 0.15 d, so the mixture with
    weight w on a is right iff w d_a + (1 - w) d_b > 0. Per class: one image right only
    for w > 0.6 (P), two right only for w < 0.71 (Q), two right for w > 0.29 (R), one
    always right (S). Alone a gets 4/6, alone b 3/6, (a+b)/2 5/6, (2a+b)/3 6/6. Member c
    is confidently wrong.
    """
    kinds = {"P": (1.0, -1.5), "Q": (-1.0, 2.5), "R": (1.0, -0.4), "S": (1.0, 1.0)}
    per_class = ["P", "Q", "Q", "R", "R", "S"]
    probs, labels = np.zeros((3, 18, 3)), []
    for i, (y, kind) in enumerate((y, kind) for y in range(3) for kind in per_class):
        k, t = (y + 1) % 3, (y + 2) % 3
        for m, d in enumerate(kinds[kind]):
            probs[m, i, [y, k, t]] = [0.45 + 0.15 * d, 0.45 - 0.15 * d, 0.1]
        probs[2, i, [y, k, t]] = [0.1, 0.8, 0.1]
        labels.append(y)
    return probs, np.array(labels)


# --- greedy -------------------------------------------------------------------


def test_greedy_picks_a_member_twice():
    probs, y = greedy_case()
    greedy = GreedyCombiner().fit(make_set(probs, y))
    assert greedy.counts_.tolist() == [2, 1, 0]
    np.testing.assert_allclose(greedy.weights_, [2 / 3, 1 / 3, 0])
    np.testing.assert_allclose(greedy.history_, [4 / 6, 5 / 6, 1.0])
    out = greedy.predict(make_set(probs, split="test"))
    np.testing.assert_allclose(out, (2 * probs[0] + probs[1]) / 3)
    assert (out.argmax(axis=1) == y).all()


def test_greedy_starts_from_best_single_member_and_respects_max_rounds():
    probs, y = greedy_case()
    greedy = GreedyCombiner(max_rounds=1).fit(make_set(probs, y))
    assert greedy.counts_.tolist() == [1, 0, 0]
    assert greedy.history_ == [pytest.approx(4 / 6)]


def test_greedy_history_strictly_increases():
    probs, y = noisy_members(seed=3, n=30)
    greedy = GreedyCombiner(max_rounds=20).fit(make_set(probs, y))
    assert np.all(np.diff(greedy.history_) > 0)
    assert greedy.counts_.sum() == len(greedy.history_)
    assert greedy.weights_.sum() == pytest.approx(1.0)


@pytest.mark.parametrize("options", [{"metric": "auc"}, {"max_rounds": 0}, {"max_rounds": 2.5}])
def test_greedy_bad_options_raise_at_fit(options):
    probs, y = greedy_case()
    combiner = GreedyCombiner(**options)  # __init__ only stores
    with pytest.raises(ZooError, match="greedy combiner"):
        combiner.fit(make_set(probs, y))


# --- weighted -----------------------------------------------------------------


def test_weighted_prefers_the_better_member():
    probs, y = noisy_members()
    weighted = WeightedCombiner(l2=0.0).fit(make_set(probs, y))
    w = weighted.weights_
    assert (w >= 0).all()
    assert w.sum() == pytest.approx(1.0)
    assert w[0] > w[1] and w[0] > w[2]
    uniform_loss = -np.mean(np.log(probs.mean(axis=0)[np.arange(len(y)), y]))
    assert weighted.loss_ <= uniform_loss + 1e-9


def test_weighted_strong_l2_pulls_towards_uniform():
    probs, y = noisy_members()
    w = WeightedCombiner(l2=1e3).fit(make_set(probs, y)).weights_
    np.testing.assert_allclose(w, 1 / 3, atol=1e-3)


@pytest.mark.parametrize("l2", [-1.0, "0.1", float("nan")])
def test_weighted_bad_l2_raises_at_fit(l2):
    probs, y = noisy_members()
    with pytest.raises(ZooError, match="l2"):
        WeightedCombiner(l2=l2).fit(make_set(probs, y))


# --- mean and rank ------------------------------------------------------------


def test_mean_is_the_arithmetic_mean():
    probs, y = noisy_members()
    mean = MeanCombiner().fit(make_set(probs, y))
    np.testing.assert_allclose(mean.weights_, 1 / 3)
    np.testing.assert_allclose(mean.predict(make_set(probs, split="test")), probs.mean(axis=0))


def test_rank_depends_on_ranks_only():
    probs, y = noisy_members()
    rank = RankCombiner().fit(make_set(probs, y))
    before = rank.predict(make_set(probs, split="test"))
    warped = probs.copy()
    warped[1, :, 2] = np.exp(5 * warped[1, :, 2]) - 7  # monotone, not a probability any more
    after = rank.predict(make_set(warped, split="test"))
    np.testing.assert_allclose(after, before)
    np.testing.assert_allclose(before.sum(axis=1), 1.0)


def test_rank_without_normalisation_is_the_mean_percentile_rank():
    probs = np.zeros((2, 4, 3))
    probs[0, :, 0] = [0.1, 0.4, 0.3, 0.2]  # ranks 1 4 3 2
    probs[1, :, 0] = [0.9, 0.5, 0.6, 0.7]  # ranks 4 1 2 3
    members = ("a", "b")
    rank = RankCombiner(normalize=False).fit(make_set(probs, [0, 1, 2, 0], members=members))
    out = rank.predict(make_set(probs, split="test", members=members))
    np.testing.assert_allclose(out[:, 0], [5 / 8] * 4)
    np.testing.assert_allclose(out[:, 1], 2.5 / 4)  # all tied


@pytest.mark.parametrize("rule", COMBINE_RULES)
def test_every_rule_returns_rows_that_sum_to_one(rule):
    probs, y = noisy_members()
    out = make_combiner(rule).fit(make_set(probs, y)).predict(make_set(probs, split="test"))
    assert out.shape == (21, 3)
    np.testing.assert_allclose(out.sum(axis=1), 1.0)


# --- never fit on test; predict must match the fit ----------------------------


@pytest.mark.parametrize("rule", COMBINE_RULES)
@pytest.mark.parametrize("split", ["test", "all", "train"])
def test_fitting_outside_the_validation_split_raises(rule, split):
    probs, y = noisy_members()
    with pytest.raises(ZooError, match=f"split {split!r}"):
        make_combiner(rule).fit(make_set(probs, y, split=split))


@pytest.mark.parametrize("rule", COMBINE_RULES)
def test_fitting_without_labels_raises(rule):
    probs, _ = noisy_members()
    with pytest.raises(ZooError, match="labels"):
        make_combiner(rule).fit(make_set(probs))


def test_predict_checks_members_classes_and_fit():
    probs, y = noisy_members()
    with pytest.raises(ZooError, match="not fitted"):
        MeanCombiner().predict(make_set(probs, split="test"))
    mean = MeanCombiner().fit(make_set(probs, y))
    with pytest.raises(ZooError, match="members"):
        mean.predict(make_set(probs, split="test", members=("a", "c", "b")))
    with pytest.raises(ZooError, match="classes"):
        mean.predict(make_set(probs, split="test", classes=("nv", "mel", "bcc")))


# --- PredictionSet.from_frames ------------------------------------------------


def frames_for(probs, ids=None, classes=CLASSES):
    ids = ids or [f"ISIC_{i:07d}" for i in range(probs.shape[1])]
    return {
        m: pd.DataFrame(p, index=ids, columns=list(classes))
        for m, p in zip(MEMBERS, probs, strict=True)
    }


def test_from_frames_aligns_rows_by_id_and_maps_label_names():
    probs, y = noisy_members()
    frames = frames_for(probs)
    frames["b"] = frames["b"].iloc[::-1]
    labels = pd.Series([CLASSES[k] for k in y], index=frames["a"].index).sample(
        frac=1, random_state=0
    )
    s = PredictionSet.from_frames("val", frames, labels)
    assert s.members == MEMBERS and s.classes == CLASSES and s.n_images == 21
    np.testing.assert_allclose(s.probabilities, probs)
    assert s.labels.tolist() == y.tolist()
    s_int = PredictionSet.from_frames("val", frames, pd.Series(y, index=frames["a"].index))
    assert s_int.labels.tolist() == y.tolist()


def test_from_frames_class_mismatch_names_both_members():
    probs, _ = noisy_members()
    frames = frames_for(probs)
    frames["c"] = frames["c"].rename(columns={"bcc": "akiec"})
    with pytest.raises(ZooError, match=r"members a and c have different classes.*akiec"):
        PredictionSet.from_frames("val", frames)
    frames = frames_for(probs)
    frames["b"] = frames["b"][["nv", "mel", "bcc"]]
    with pytest.raises(
        ZooError, match="members a and b have the same classes in a different order"
    ):
        PredictionSet.from_frames("val", frames)


def test_from_frames_id_mismatch_names_both_members():
    probs, _ = noisy_members()
    frames = frames_for(probs)
    frames["b"] = frames["b"].rename(index={"ISIC_0000003": "ISIC_9999999"})
    with pytest.raises(ZooError, match=r"members a and b predict different images.*ISIC_9999999"):
        PredictionSet.from_frames("test", frames)


def test_from_frames_rejects_unknown_labels_and_missing_ids():
    probs, _ = noisy_members()
    frames = frames_for(probs)
    index = frames["a"].index
    with pytest.raises(ZooError, match="scc"):
        PredictionSet.from_frames("val", frames, pd.Series(["scc"] * 21, index=index))
    with pytest.raises(ZooError, match="lack 1 image id"):
        PredictionSet.from_frames("val", frames, pd.Series(["nv"] * 20, index=index[:20]))


def test_prediction_set_checks_shape():
    with pytest.raises(ZooError, match="shape"):
        make_set(np.zeros((2, 5, 3)))  # three member names, two matrices


# --- factory and persistence --------------------------------------------------


def test_make_combiner_unknown_rule_suggests_close_matches():
    with pytest.raises(ZooError, match="Did you mean greedy"):
        make_combiner("gready")
    with pytest.raises(ZooError, match="no option 'max_round'.*max_rounds"):
        make_combiner("greedy", max_round=3)


def test_to_dict_round_trips_through_json():
    probs, y = greedy_case()
    greedy = make_combiner("greedy", max_rounds=10).fit(make_set(probs, y))
    state = json.loads(json.dumps(greedy.to_dict()))
    again = combiner_from_dict(state)
    assert again.get_params() == {"max_rounds": 10, "metric": "balanced_accuracy"}
    assert again.counts_.tolist() == [2, 1, 0]
    test = make_set(probs, split="test")
    np.testing.assert_allclose(again.predict(test), greedy.predict(test))

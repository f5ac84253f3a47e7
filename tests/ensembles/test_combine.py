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
from zoo.scoring.headline import balanced_accuracy

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


def trap_case():
    """Three members whose pairs are worse than the best one alone, and whose mean is perfect.

    Each member puts 0.8 on its answer and 0.15 on the other of the image's two classes:
    a is wrong on 1 image per class, b on 2 and c on 2 others (disjoint). A pair where one
    member is wrong ties (undecided, wrong); the three together outvote every error. Alone
    a gets 5/6, b and c 4/6; a + b and a + c 3/6; a + b + c 6/6.
    """
    wrong = {0: [0], 1: [1, 2], 2: [3, 4]}  # member -> wrong images (of 6 per class)
    probs, labels = np.zeros((3, 18, 3)), []
    for i, (y, j) in enumerate((y, j) for y in range(3) for j in range(6)):
        k, t = (y + 1) % 3, (y + 2) % 3
        for m in range(3):
            right, other = (0.15, 0.8) if j in wrong[m] else (0.8, 0.15)
            probs[m, i, [y, k, t]] = [right, other, 0.05]
        labels.append(y)
    return probs, np.array(labels)


OLD_RULE = {"init_members": 1, "early_stop": True, "tie_break": "none"}


def test_greedy_picks_a_member_twice():
    probs, y = greedy_case()
    for options in ({}, {"tie_break": "none"}, {"init_members": 1}, OLD_RULE):
        greedy = GreedyCombiner(**options).fit(make_set(probs, y))
        assert greedy.counts_.tolist() == [2, 1, 0], options
        np.testing.assert_allclose(greedy.weights_, [2 / 3, 1 / 3, 0])
        assert greedy.history_[greedy.best_round_] == pytest.approx(1.0)
    out = greedy.predict(make_set(probs, split="test"))
    np.testing.assert_allclose(out, (2 * probs[0] + probs[1]) / 3)
    assert (out.argmax(axis=1) == y).all()


def test_greedy_sorted_initialisation_and_all_rounds():
    """Sorted initialisation takes a and b (their mean beats a alone); every round runs."""
    probs, y = greedy_case()
    greedy = GreedyCombiner(max_rounds=20).fit(make_set(probs, y))
    assert greedy.n_init_ == 2 and greedy.best_round_ == 1
    assert len(greedy.history_) == 20 - 2 + 1  # the initial bag, then 18 rounds
    np.testing.assert_allclose(greedy.history_[:2], [5 / 6, 1.0])
    fixed = GreedyCombiner(init_members=3, tie_break="none").fit(make_set(probs, y))
    assert fixed.n_init_ == 3 and fixed.history_[0] < 1.0  # c is confidently wrong


def test_the_old_rule_stays_reachable():
    probs, y = greedy_case()
    greedy = GreedyCombiner(**OLD_RULE).fit(make_set(probs, y))
    np.testing.assert_allclose(greedy.history_, [4 / 6, 5 / 6, 1.0])  # stopped after round 3
    greedy = GreedyCombiner(max_rounds=1).fit(make_set(probs, y))
    assert greedy.counts_.tolist() == [1, 0, 0]
    assert greedy.history_ == [pytest.approx(4 / 6)]


def test_greedy_no_longer_stops_at_one_member():
    """The old rule keeps a alone (no single addition improves it); sorted initialisation
    finds the perfect mean of all three."""
    probs, y = trap_case()
    old = GreedyCombiner(**OLD_RULE).fit(make_set(probs, y))
    assert old.counts_.tolist() == [1, 0, 0] and old.sole_member() == "a"
    assert old.history_ == [pytest.approx(5 / 6)]
    new = GreedyCombiner(tie_break="none").fit(make_set(probs, y))
    assert new.counts_.tolist() == [1, 1, 1] and new.n_init_ == 3
    assert new.history_[new.best_round_] == 1.0 and new.sole_member() is None
    default = GreedyCombiner().fit(make_set(probs, y))
    assert (default.counts_ > 0).all() and default.history_[default.best_round_] == 1.0
    out = default.predict(make_set(probs, split="test"))
    assert (out.argmax(axis=1) == y).all()


@pytest.mark.parametrize("seed", range(5))
def test_greedy_keeps_the_bag_of_the_best_round(seed):
    """Running every round and keeping the best bag never ends below stopping at the first
    round without improvement, and the kept bag scores what history_ says."""
    rng = np.random.default_rng(seed)
    y = np.arange(18) % 3
    probs = np.stack([0.35 * np.eye(3)[y] + 0.65 * rng.dirichlet(np.ones(3), 18) for _ in "abc"])
    old = GreedyCombiner(**OLD_RULE).fit(make_set(probs, y))
    new = GreedyCombiner(init_members=1, tie_break="none").fit(make_set(probs, y))
    assert max(new.history_) == new.history_[new.best_round_] >= old.history_[-1]
    assert new.history_[: len(old.history_)] == old.history_  # the same path until it stopped
    kept = np.tensordot(new.counts_ / new.counts_.sum(), probs, axes=(0, 0))
    assert balanced_accuracy(y, kept.argmax(axis=1)) == pytest.approx(max(new.history_))


def test_greedy_log_loss_breaks_ties():
    """Two members right on every image: the better calibrated one wins with the tie-break;
    without it, the one listed first."""
    y = np.arange(6) % 3
    onehot = np.eye(3)[y]
    probs = np.stack([0.4 * onehot + 0.2, 0.7 * onehot + 0.1])
    members = ("a", "b")
    tied = GreedyCombiner(tie_break="none").fit(make_set(probs, y, members=members))
    assert tied.counts_.tolist() == [1, 0] and tied.sole_member() == "a"
    broken = GreedyCombiner().fit(make_set(probs, y, members=members))
    assert broken.counts_.tolist() == [0, 1] and broken.sole_member() == "b"
    scored = GreedyCombiner(metric="neg_log_loss").fit(make_set(probs, y, members=members))
    assert scored.counts_.tolist() == [0, 1]


@pytest.mark.parametrize(
    "options",
    [
        {"metric": "auc"},
        {"max_rounds": 0},
        {"max_rounds": 2.5},
        {"init_members": 0},
        {"init_members": "all"},
        {"init_members": 60},
        {"tie_break": "log_loss"},
        {"early_stop": "yes"},
    ],
)
def test_greedy_bad_options_raise_at_fit(options):
    probs, y = greedy_case()
    combiner = GreedyCombiner(**options)  # __init__ only stores
    name, value = next(iter(options.items()))
    with pytest.raises(ZooError, match=f"greedy combiner: .*{name}.*{value!r}"):
        combiner.fit(make_set(probs, y))


def test_sole_member():
    state = {"params": {}, "members": list(MEMBERS), "classes": list(CLASSES)}
    one = combiner_from_dict({**state, "rule": "weighted", "weights": [0.0, 1.0, 0.0]})
    assert one.sole_member() == "b"
    almost = combiner_from_dict({**state, "rule": "weighted", "weights": [1e-6, 1 - 1e-6, 0.0]})
    assert almost.sole_member() is None
    ranks = combiner_from_dict({**state, "rule": "rank", "weights": [0.0, 1.0, 0.0]})
    assert ranks.sole_member() is None  # ranks are not the member's probabilities
    probs, y = noisy_members()
    alone = MeanCombiner().fit(make_set(probs[:1], y, members=("a",)))
    assert alone.sole_member() == "a"


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
    assert again.get_params() == {
        "max_rounds": 10,
        "metric": "balanced_accuracy",
        "init_members": "auto",
        "tie_break": "neg_log_loss",
        "early_stop": False,
    }
    assert again.counts_.tolist() == [2, 1, 0]
    assert (again.n_init_, again.best_round_) == (greedy.n_init_, greedy.best_round_)
    test = make_set(probs, split="test")
    np.testing.assert_allclose(again.predict(test), greedy.predict(test))

"""Combination rules: turn several members' class probabilities into one prediction.

Every rule is a small estimator (``__init__`` stores, ``fit`` learns, learned values
end in ``_``) working on a :class:`PredictionSet`, the probabilities of all members
of an ensemble on one split, aligned by image id.

Nothing is ever fitted or selected on the test split: ``fit`` accepts only a
``PredictionSet`` whose ``split`` is ``"val"`` and which carries labels. Fit on the
validation predictions after the same test-time augmentation and prior correction
that will be applied to the test predictions.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from zoo.errors import ZooError, close_matches
from zoo.scoring.headline import balanced_accuracy
from zoo.scoring.metrics import argmax_labels
from zoo.store import positions

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "COMBINE_RULES",
    "combiner_class",
    "Combiner",
    "GreedyCombiner",
    "MeanCombiner",
    "PredictionSet",
    "RankCombiner",
    "WeightedCombiner",
    "combiner_from_dict",
    "make_combiner",
]


def _preview(values, limit: int = 5) -> str:
    values = [str(v) for v in values]
    shown = ", ".join(values[:limit])
    return shown + (f", … ({len(values)} in all)" if len(values) > limit else "")


@dataclass(frozen=True, eq=False)
class PredictionSet:
    """Class probabilities of several members on one split, aligned by image id.

    ``probabilities`` has shape ``(n_members, n_images, n_classes)``; ``labels``
    (optional) holds the true class index of each image, for fitting and scoring.
    """

    split: str
    ids: tuple[str, ...]
    classes: tuple[str, ...]
    members: tuple[str, ...]
    probabilities: np.ndarray
    labels: np.ndarray | None = None

    def __post_init__(self) -> None:
        for name in ("ids", "classes", "members"):
            object.__setattr__(self, name, tuple(str(v) for v in getattr(self, name)))
        p = np.asarray(self.probabilities)
        if not np.issubdtype(p.dtype, np.floating):
            p = p.astype(np.float64)
        expected = (len(self.members), len(self.ids), len(self.classes))
        if p.shape != expected:
            raise ZooError(
                f"probabilities have shape {p.shape}, expected (members, images, classes) = "
                f"{expected}; pass one (images × classes) matrix per member"
            )
        if not self.members:
            raise ZooError("a prediction set needs at least one member; got none")
        if not np.isfinite(p).all():
            raise ZooError(
                f"probabilities on split {self.split!r} contain NaN or infinite values; "
                "recompute the member predictions"
            )
        object.__setattr__(self, "probabilities", p)
        for kind, values in (("member", self.members), ("class", self.classes)):
            dupes = sorted({v for v in values if values.count(v) > 1})
            if dupes:
                raise ZooError(f"duplicate {kind} name(s) {_preview(dupes)}; names must be unique")
        if self.labels is not None:
            y = np.asarray(self.labels)
            if y.shape != (len(self.ids),) or not np.issubdtype(y.dtype, np.integer):
                raise ZooError(
                    f"labels must be one integer class index per image, shape ({len(self.ids)},); "
                    f"got dtype {y.dtype} with shape {y.shape}"
                )
            if y.size and (y.min() < 0 or y.max() >= len(self.classes)):
                raise ZooError(
                    f"labels must lie in 0..{len(self.classes) - 1} (one per class); "
                    f"got values from {y.min()} to {y.max()}"
                )
            object.__setattr__(self, "labels", y)

    @property
    def n_members(self) -> int:
        return len(self.members)

    @property
    def n_images(self) -> int:
        return len(self.ids)

    @classmethod
    def from_frames(
        cls,
        split: str,
        frames: Mapping[str, pd.DataFrame],
        labels: pd.Series | None = None,
    ) -> PredictionSet:
        """Stack per-member frames (index: image id, columns: classes) into one set.

        Every member must have the same classes in the same order and the same image
        ids; rows are aligned on the first member's order. ``labels`` is a Series
        indexed by image id holding class names or class indices.
        """
        if not frames:
            raise ZooError(f"no member predictions given for split {split!r}; pass at least one")
        names = [str(n) for n in frames]
        first, ref = names[0], next(iter(frames.values()))
        classes = [str(c) for c in ref.columns]
        ids = [str(i) for i in ref.index]
        id_set = set(ids)
        stacked = []
        for name, frame in zip(names, frames.values(), strict=True):
            cols = [str(c) for c in frame.columns]
            if cols != classes:
                if set(cols) == set(classes):
                    what = f"the same classes in a different order: {first} has {classes}, {name} has {cols}"
                else:
                    what = (
                        f"different classes: {first} has {classes}, {name} has {cols} "
                        f"(only in {first}: {sorted(set(classes) - set(cols))}, "
                        f"only in {name}: {sorted(set(cols) - set(classes))})"
                    )
                raise ZooError(
                    f"members {first} and {name} have {what}; "
                    "an ensemble needs members trained on one class list"
                )
            index = [str(i) for i in frame.index]
            if len(set(index)) != len(index):
                dupes = sorted({i for i in index if index.count(i) > 1})
                raise ZooError(
                    f"member {name} lists image id(s) {_preview(dupes)} more than once on split "
                    f"{split!r}; recompute its predictions"
                )
            if set(index) != id_set:
                missing, extra = sorted(id_set - set(index)), sorted(set(index) - id_set)
                raise ZooError(
                    f"members {first} and {name} predict different images on split {split!r}: "
                    f"{len(missing)} only in {first} ({_preview(missing, 3)}), "
                    f"{len(extra)} only in {name} ({_preview(extra, 3)}); "
                    "an ensemble needs members that share one data split"
                )
            values = frame.to_numpy(dtype=np.float64)
            if index != ids:
                values = values[positions(index, ids)]
            stacked.append(values)
        y = None if labels is None else _label_indices(labels, ids, classes, split)
        return cls(
            split=split,
            ids=tuple(ids),
            classes=tuple(classes),
            members=tuple(names),
            probabilities=np.stack(stacked),
            labels=y,
        )


def _label_indices(labels: pd.Series, ids: list[str], classes: list[str], split: str) -> np.ndarray:
    by_id = {str(k): v for k, v in labels.items()}
    missing = [i for i in ids if i not in by_id]
    if missing:
        raise ZooError(
            f"labels lack {len(missing)} image id(s) of split {split!r} ({_preview(missing, 3)}); "
            "pass one label per predicted image"
        )
    raw = [by_id[i] for i in ids]
    if all(isinstance(v, (int, np.integer)) for v in raw):
        return np.asarray(raw, dtype=np.intp)
    position = {c: k for k, c in enumerate(classes)}
    unknown = sorted({str(v) for v in raw if str(v) not in position})
    if unknown:
        raise ZooError(
            f"label(s) {_preview(unknown)} are not among the members' classes {classes}; "
            "map them with --label-map"
        )
    return np.asarray([position[str(v)] for v in raw], dtype=np.intp)


def _weighted_mean(probabilities: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Σ_m w_m P_m over the member axis; one BLAS call, milliseconds for 10 × 10⁴ × 8."""
    return np.tensordot(weights, probabilities, axes=(0, 0))


def _balanced_accuracy(y: np.ndarray, scores: np.ndarray) -> float:
    """As the official scorer counts it: a row whose maximum is shared is wrong."""
    return balanced_accuracy(y, argmax_labels(scores))


def _accuracy(y: np.ndarray, scores: np.ndarray) -> float:
    return float(np.mean(argmax_labels(scores) == y))


def _neg_log_loss(y: np.ndarray, scores: np.ndarray) -> float:
    p = scores[np.arange(len(y)), y] / scores.sum(axis=1)
    return float(np.mean(np.log(np.clip(p, 1e-15, 1.0))))


# Weight the other members may share when one member "gets all the weight" (sole_member):
# the combined probabilities then differ from that member's by at most this much.
SOLE_TOLERANCE = 1e-9

# name -> score of (labels, combined probabilities); greater is better.
METRICS = {
    "balanced_accuracy": _balanced_accuracy,
    "accuracy": _accuracy,
    "neg_log_loss": _neg_log_loss,
}


class Combiner:
    """Base of all rules: parameters from ``__init__``, checked ``fit``/``predict``.

    Subclasses set ``rule`` and override ``_fit`` (default: uniform ``weights_``) and
    ``_predict`` (default: the ``weights_``-weighted mean of the members). Their traits are
    class attributes, read wherever a rule's kind matters: whether fitting needs validation
    labels (``fits_on_validation``; without, an ensemble of members without a shared
    validation split can still be built), whether a member of weight 0 can go unrun
    (``skips_zero_weights``), and whether the rule works image by image, so that it can run
    inside an exported graph (``works_per_image``).
    """

    rule: str = ""
    fits_on_validation: bool = True
    skips_zero_weights: bool = True
    works_per_image: bool = True

    def get_params(self) -> dict[str, Any]:
        names = [p for p in inspect.signature(type(self).__init__).parameters if p != "self"]
        return {name: getattr(self, name) for name in names}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"

    def fit(self, val: PredictionSet) -> Combiner:
        self._check_fit_set(val)
        self._fit(val)
        self.members_ = val.members
        self.classes_ = val.classes
        return self

    def predict(self, s: PredictionSet) -> np.ndarray:
        """Combined scores, shape ``(n_images, n_classes)``; each row sums to 1."""
        self._check_predict_set(s)
        return self._predict(s)

    def sole_member(self, tolerance: float = SOLE_TOLERANCE) -> str | None:
        """The member that gets all the weight (the others together at most ``tolerance``),
        when the prediction is then that member's own probabilities; else ``None``."""
        self._check_fitted()
        if type(self)._predict is not Combiner._predict:
            return None  # not a weighted mean of the members' probabilities
        weights = np.asarray(self.weights_, dtype=float)
        top = int(np.argmax(weights))
        return self.members_[top] if weights.sum() - weights[top] <= tolerance else None

    def _fit(self, val: PredictionSet) -> None:
        self.weights_ = np.full(val.n_members, 1.0 / val.n_members)

    def _predict(self, s: PredictionSet) -> np.ndarray:
        return _weighted_mean(s.probabilities, self.weights_)

    def _check_fit_set(self, val: PredictionSet) -> None:
        if not isinstance(val, PredictionSet):
            raise ZooError(f"fit needs a PredictionSet; got {type(val).__name__}")
        if val.split != "val":
            raise ZooError(
                f"{self.rule} combiner can only be fitted on split 'val'; got split {val.split!r}. "
                "Fit on the validation predictions — never on the test split"
            )
        if val.labels is None:
            raise ZooError(
                f"{self.rule} combiner needs labels on the validation split to fit; got none. "
                "Pass labels to PredictionSet.from_frames"
            )
        if val.n_images == 0:
            raise ZooError("the validation split has no images; cannot fit a combiner")

    def _check_fitted(self) -> None:
        if not hasattr(self, "weights_"):
            raise ZooError(
                f"this {type(self).__name__} is not fitted yet; call fit(val) on the "
                "validation predictions first"
            )

    def _check_predict_set(self, s: PredictionSet) -> None:
        self._check_fitted()
        if s.members != self.members_:
            raise ZooError(
                f"predict got members {list(s.members)} but the combiner was fitted on "
                f"{list(self.members_)}; pass the same members in the same order"
            )
        if s.classes != self.classes_:
            raise ZooError(
                f"predict got classes {list(s.classes)} but the combiner was fitted on "
                f"{list(self.classes_)}; pass predictions with the fitted class order"
            )

    def to_dict(self) -> dict[str, Any]:
        """Rule, parameters and learned values as JSON-ready data."""
        self._check_fitted()
        state = {
            "rule": self.rule,
            "params": self.get_params(),
            "members": list(self.members_),
            "classes": list(self.classes_),
        }
        for name, value in vars(self).items():
            if name.endswith("_") and name not in ("members_", "classes_"):
                state[name[:-1]] = value.tolist() if isinstance(value, np.ndarray) else value
        return state


class MeanCombiner(Combiner):
    """Arithmetic mean of the members' probabilities (fit records uniform ``weights_``)."""

    rule = "mean"
    fits_on_validation = False

    def __init__(self) -> None:
        pass


class RankCombiner(Combiner):
    """Mean of per-class percentile ranks across images (SIIM-ISIC 2020 winners' blend).

    For each member and class, images are ranked by that class's score and the rank
    divided by the number of images (ties share their average rank); the ranks are
    averaged across members. The result depends on the members' scores only through
    their within-class orderings, so members with different calibration blend fairly.

    These are scores, not probabilities: what matters is the per-class ranking (AUC).
    With ``normalize=True`` (default) each row is divided by its sum so the output
    can be written in the ISIC prediction format; this keeps each row's argmax but
    reorders images within a class column, so per-class AUC can differ slightly from
    the raw rank average — use ``normalize=False`` to score that exactly. Argmax of
    ranks is a different decision rule from argmax of probabilities (it favours the
    class an image is most unusual for), and prior correction does not apply to ranks.
    """

    rule = "rank"
    fits_on_validation = False
    works_per_image = False  # ranks images across the batch

    def __init__(self, *, normalize: bool = True) -> None:
        self.normalize = normalize

    def _predict(self, s: PredictionSet) -> np.ndarray:
        from scipy.stats import rankdata

        ranks = rankdata(s.probabilities, axis=1) / s.n_images
        scores = _weighted_mean(ranks, self.weights_)
        if self.normalize:
            scores = scores / scores.sum(axis=1, keepdims=True)
        return scores


class WeightedCombiner(Combiner):
    """Weighted mean with non-negative weights summing to 1, fitted on validation.

    The weights minimise the multiclass log-loss of the weighted mean plus
    ``l2 * Σ w²`` (which pulls towards uniform weights) with SLSQP on the simplex;
    the problem is convex, so the optimum is unique up to ties. Learned: ``weights_``,
    ``loss_`` (validation log-loss of the fitted blend), ``n_iter_``.
    """

    rule = "weighted"

    def __init__(self, *, l2: float = 1e-2) -> None:
        self.l2 = l2

    def _fit(self, val: PredictionSet) -> None:
        from scipy.optimize import minimize

        l2 = self.l2
        if (
            isinstance(l2, bool)
            or not isinstance(l2, (int, float))
            or not np.isfinite(l2)
            or l2 < 0
        ):
            raise ZooError(f"weighted combiner: l2 must be a number ≥ 0; got {l2!r}")
        m = val.n_members
        # probability each member gives the true class, shape (images, members)
        truth = val.probabilities[:, np.arange(val.n_images), val.labels].T

        def objective(w: np.ndarray) -> tuple[float, np.ndarray]:
            q = np.clip(truth @ w, 1e-15, None)
            loss = -np.mean(np.log(q)) + l2 * (w @ w)
            grad = -(truth / q[:, None]).mean(axis=0) + 2 * l2 * w
            return loss, grad

        if m == 1:
            w, n_iter = np.ones(1), 0
        else:
            result = minimize(
                objective,
                np.full(m, 1.0 / m),
                jac=True,
                method="SLSQP",
                bounds=[(0.0, 1.0)] * m,
                constraints=[
                    {"type": "eq", "fun": lambda w: w.sum() - 1, "jac": lambda w: np.ones_like(w)}
                ],
                options={"maxiter": 500, "ftol": 1e-10},
            )
            if not result.success:
                warnings.warn(
                    f"weighted combiner: SLSQP did not converge ({result.message}); "
                    "using its last weights",
                    RuntimeWarning,
                    stacklevel=3,
                )
            w, n_iter = np.clip(result.x, 0.0, None), int(result.nit)
            w = w / w.sum()
        self.weights_ = w
        self.loss_ = float(-np.mean(np.log(np.clip(truth @ w, 1e-15, None))))
        self.n_iter_ = n_iter


class GreedyCombiner(Combiner):
    """Ensemble selection from a library of members (Caruana et al. 2004, 2006).

    Sorted initialisation puts the ``init_members`` best single members in the bag once
    each (``"auto"``: the number whose mean scores best on validation; an integer: that
    many). Each later round adds the member — possibly one already in the bag — whose
    addition gives the best validation score of the bag's mean, until the bag holds
    ``max_rounds`` members; the bag of the best round is kept (ties: the earlier, smaller
    bag). ``metric`` scores the bags; ``tie_break`` (a metric, or ``"none"``) orders bags
    of equal ``metric``; ties left go to the member listed first. ``early_stop=True`` stops
    at the first round without strict improvement instead; with ``init_members=1`` and
    ``tie_break="none"`` that is the earlier rule of zoo, which often stops at one member.
    Learned: ``counts_`` (times each member is in the kept bag), ``weights_`` = counts /
    total, ``history_`` (validation ``metric`` after the initialisation and after each
    later round), ``n_init_`` (members of the initialisation) and ``best_round_`` (the
    kept bag's place in ``history_``).
    """

    rule = "greedy"

    def __init__(
        self,
        *,
        max_rounds: int = 50,
        metric: str = "balanced_accuracy",
        init_members: int | str = "auto",
        tie_break: str = "neg_log_loss",
        early_stop: bool = False,
    ) -> None:
        self.max_rounds = max_rounds
        self.metric = metric
        self.init_members = init_members
        self.tie_break = tie_break
        self.early_stop = early_stop

    def _fit(self, val: PredictionSet) -> None:
        self._check_options()
        y, p = val.labels, val.probabilities
        bag = self._initial_bag(y, p)
        n_init = int(bag.sum())
        total = np.tensordot(bag.astype(float), p, axes=(0, 0))
        history, best, kept = [self._score(y, total / n_init)], 0, bag.copy()
        for _ in range(self.max_rounds - n_init):
            candidates = (total[None] + p) / (bag.sum() + 1)
            scores = [self._score(y, c) for c in candidates]
            pick = max(range(len(scores)), key=scores.__getitem__)  # the first of the best
            if self.early_stop and not scores[pick] > history[-1]:
                break
            bag[pick] += 1
            total += p[pick]
            history.append(scores[pick])
            if history[-1] > history[best]:
                best, kept = len(history) - 1, bag.copy()
        self.counts_ = kept
        self.weights_ = kept / kept.sum()
        self.history_ = [primary for primary, _ in history]
        self.n_init_ = n_init
        self.best_round_ = best

    def _score(self, y: np.ndarray, scores: np.ndarray) -> tuple[float, float]:
        """``(metric, tie_break)`` of one combined prediction; tuples compare in that order."""
        tie = 0.0 if self.tie_break == "none" else METRICS[self.tie_break](y, scores)
        # rounded: a bag and its double (a, 2a) must score the same despite float rounding
        return round(METRICS[self.metric](y, scores), 12), round(tie, 12)

    def _initial_bag(self, y: np.ndarray, p: np.ndarray) -> np.ndarray:
        """Counts of the sorted initialisation: the best single members, once each."""
        singles = [self._score(y, member) for member in p]
        ranked = sorted(range(len(p)), key=singles.__getitem__, reverse=True)  # stable
        limit = min(len(p), self.max_rounds)
        if self.init_members == "auto":
            means = np.cumsum(p[ranked[:limit]], axis=0)
            means /= np.arange(1, limit + 1)[:, None, None]
            keys = [self._score(y, mean) for mean in means]
            n = 1 + max(range(limit), key=keys.__getitem__)
        else:
            n = min(int(self.init_members), limit)
        bag = np.zeros(len(p), dtype=np.int64)
        bag[ranked[:n]] = 1
        return bag

    def _check_options(self) -> None:
        for name, allowed in (("metric", [*METRICS]), ("tie_break", [*METRICS, "none"])):
            value = getattr(self, name)
            if value not in allowed:
                raise ZooError(
                    f"greedy combiner: unknown {name} {value!r}; choose one of "
                    f"{', '.join(allowed)}.{close_matches(str(value), allowed)}"
                )
        rounds, init = self.max_rounds, self.init_members
        if not _is_count(rounds):
            raise ZooError(f"greedy combiner: max_rounds must be an integer ≥ 1; got {rounds!r}")
        if init != "auto" and not (_is_count(init) and init <= rounds):
            raise ZooError(
                'greedy combiner: init_members must be "auto" or an integer from 1 to '
                f"max_rounds ({rounds}); got {init!r}"
            )
        if not isinstance(self.early_stop, bool):
            raise ZooError(
                f"greedy combiner: early_stop must be true or false; got {self.early_stop!r}"
            )


def _is_count(value: Any) -> bool:
    """An integer ≥ 1 (not a boolean)."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value >= 1


_RULES: dict[str, type[Combiner]] = {
    c.rule: c for c in (MeanCombiner, RankCombiner, WeightedCombiner, GreedyCombiner)
}
COMBINE_RULES: tuple[str, ...] = tuple(_RULES)


def combiner_class(rule: str) -> type[Combiner]:
    """The class of ``rule`` (mean, rank, weighted, greedy), its traits included."""
    if rule not in _RULES:
        raise ZooError(
            f"unknown combine rule {rule!r}; choose one of {', '.join(COMBINE_RULES)}."
            f"{close_matches(str(rule), list(COMBINE_RULES))}"
        )
    return _RULES[rule]


def make_combiner(rule: str, **options: Any) -> Combiner:
    """A fresh combiner for ``rule`` (mean, rank, weighted, greedy) with its options."""
    cls = combiner_class(rule)
    allowed = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    unknown = [k for k in options if k not in allowed]
    if unknown:
        hint = close_matches(unknown[0], allowed) if allowed else ""
        raise ZooError(
            f"combine rule {rule!r} has no option {unknown[0]!r}; "
            f"its options are: {', '.join(allowed) or 'none'}.{hint}"
        )
    return cls(**options)


def combiner_from_dict(state: Mapping[str, Any]) -> Combiner:
    """Rebuild a fitted combiner from :meth:`to_dict` output (e.g. a built ensemble's JSON)."""
    combiner = make_combiner(state["rule"], **state.get("params", {}))
    combiner.members_ = tuple(state["members"])
    combiner.classes_ = tuple(state["classes"])
    for key, value in state.items():
        if key not in ("rule", "params", "members", "classes"):
            setattr(
                combiner, f"{key}_", np.asarray(value) if key in ("weights", "counts") else value
            )
    return combiner

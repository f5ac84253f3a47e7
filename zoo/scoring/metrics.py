"""Scores for ``zoo evaluate``: the official ISIC classification metrics, bootstrap intervals
and ROC tables.

The numbers match ``isic-challenge-scoring==5.6.0`` (``ClassificationScore``) to floating-point
precision, computed independently with scikit-learn. Conventions of the official scorer that
this module follows:

- per-class binary metrics threshold both truth and prediction at ``> 0.5`` (strictly
  greater: a probability of exactly 0.5 is a negative prediction);
- balanced accuracy is the mean per-class recall of argmax predictions; a row whose maximum is
  shared by several classes is "undecided" and counts as wrong; classes with no truth images
  are left out of the mean;
- ``score_weight`` weights every count (confusion matrices, ROC, AP, balanced accuracy);
- ``auc_sens_80`` is the unnormalised area under the ROC curve over the part of the curve
  with sensitivity >= 0.80 (from the false-positive rate at which the curve reaches 80 %
  sensitivity, linearly interpolated, to 1); a perfect classifier scores 1.0;
- ``ppv`` / ``npv`` / ``dice`` are 1.0 when their denominator is empty (the scorer's
  "freebie"), as are sensitivity and specificity;
- the image ``ISIC_0035068`` (ISIC 2018 test set) always gets weight 0.

Where the official scorer cannot score a class (no positive or no negative truth images),
it crashes (scikit-learn >= 1.6 returns NaN for the AUC, then ``auc_sens_80`` fails with
``ValueError: array of sample points is empty``; older scikit-learn raises on the AUC).
Here such a class gets ``None`` for every metric that is undefined for it, and an *absent*
class (no positive truth images) is listed in ``absent_classes`` and left out of every macro
average.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from sklearn.metrics import auc as curve_area
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from zoo.errors import ZooError
from zoo.scoring.headline import balanced_accuracy

METRIC_NAMES = (
    "accuracy",
    "sensitivity",
    "specificity",
    "dice",
    "ppv",
    "npv",
    "auc",
    "auc_sens_80",
    "ap",
)
THRESHOLD = 0.5
SENSITIVITY_FLOOR = 0.80
# The official scorer (load_csv.parse_truth_csv) zeroes both weights of this image.
OFFICIAL_ZERO_WEIGHT_IMAGES = ("ISIC_0035068",)


def _shown(values: Sequence, limit: int = 5) -> str:
    values = list(values)
    text = ", ".join(repr(v) for v in values[:limit])
    if len(values) > limit:
        text += f", … ({len(values)} in all)"
    return f"[{text}]"


def align(truth: pd.DataFrame, predictions: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Check truth (one-hot) and predictions (probabilities in [0, 1]) and align them.

    Both are indexed by image id with one column per class. Returns float copies with the
    predictions in the truth's row and column order.
    """
    for name, frame in (("truth", truth), ("predictions", predictions)):
        if not isinstance(frame, pd.DataFrame):
            raise ZooError(
                f"{name} must be a pandas DataFrame indexed by image id with one column per "
                f"class; received {type(frame).__name__}."
            )
        if not frame.index.is_unique:
            dup = frame.index[frame.index.duplicated()].unique()
            raise ZooError(f"{name} has duplicate image ids {_shown(dup)}; keep one row per image.")
    if len(truth) == 0:
        raise ZooError("truth has no images; score at least one image.")
    missing_cols = [c for c in truth.columns if c not in predictions.columns]
    extra_cols = [c for c in predictions.columns if c not in truth.columns]
    if missing_cols or extra_cols:
        raise ZooError(
            f"predictions columns differ from truth classes {list(truth.columns)}: "
            f"missing {missing_cols}, extra {extra_cols}; predict exactly the truth's classes."
        )
    missing = truth.index.difference(predictions.index)
    extra = predictions.index.difference(truth.index)
    if len(missing) or len(extra):
        raise ZooError(
            f"predictions and truth cover different images: {len(missing)} missing from "
            f"predictions {_shown(missing)}, {len(extra)} extra {_shown(extra)}; "
            "predict exactly the truth's images."
        )
    try:
        t = truth.astype(float)
        p = predictions.loc[truth.index, list(truth.columns)].astype(float)
    except (TypeError, ValueError) as exc:
        raise ZooError(f"truth and predictions must be numeric: {exc}.") from None
    tv, pv = t.to_numpy(), p.to_numpy()
    bad = ~(np.isfinite(pv) & (pv >= 0.0) & (pv <= 1.0)).all(axis=1)
    if bad.any():
        raise ZooError(
            f"predictions must be probabilities in [0, 1]; rows {_shown(p.index[bad])} "
            "have values outside it or missing; write softmax outputs."
        )
    bad = ~(np.isin(tv, (0.0, 1.0)).all(axis=1) & (tv.sum(axis=1) == 1.0))
    if bad.any():
        raise ZooError(
            f"truth must be one-hot (one 1.0 per row, else 0.0); rows {_shown(t.index[bad])} "
            "are not; fix the ground-truth file."
        )
    return t, p


def _weights(truth: pd.DataFrame, weights: pd.Series | None) -> np.ndarray:
    if weights is None:
        w = np.ones(len(truth))
    else:
        if not isinstance(weights, pd.Series):
            raise ZooError(
                f"weights must be a pandas Series indexed by image id; received "
                f"{type(weights).__name__}."
            )
        missing = truth.index.difference(weights.index)
        if len(missing):
            raise ZooError(
                f"weights lack {len(missing)} image id(s) {_shown(missing)}; give one "
                "score_weight per truth image."
            )
        w = weights.loc[truth.index].to_numpy(dtype=float)
        if not (np.isfinite(w) & (w >= 0)).all() or w.sum() <= 0:
            raise ZooError(
                f"weights must be finite, >= 0 and not all 0; received {_shown(np.unique(w))}."
            )
        w = w.copy()
    w[truth.index.isin(OFFICIAL_ZERO_WEIGHT_IMAGES)] = 0.0
    return w


def argmax_labels(probabilities: np.ndarray) -> np.ndarray:
    """Column index of each row's maximum, or -1 where the maximum is shared ("undecided")."""
    probabilities = np.asarray(probabilities, dtype=float)
    is_max = probabilities == probabilities.max(axis=1, keepdims=True)
    labels = probabilities.argmax(axis=1)
    labels[is_max.sum(axis=1) > 1] = -1
    return labels


def partial_auc(fpr: np.ndarray, tpr: np.ndarray, floor: float = SENSITIVITY_FLOOR) -> np.ndarray:
    """Unnormalised ROC area over the part of the curve with sensitivity >= ``floor``.

    ``fpr``/``tpr`` are ROC points from (0, 0) to (1, 1) along the last axis (any leading
    axes are batches). Between the point where the curve first reaches ``floor`` (linearly
    interpolated) and fpr = 1, integrates tpr d(fpr) with the trapezoid rule.
    """
    fpr, tpr = np.asarray(fpr, dtype=float), np.asarray(tpr, dtype=float)
    t0, t1 = tpr[..., :-1], tpr[..., 1:]
    df = np.diff(fpr, axis=-1)
    whole = np.where(t0 >= floor, df * (t0 + t1) / 2, 0.0)
    crossing = (t0 < floor) & (t1 >= floor)
    with np.errstate(invalid="ignore", divide="ignore"):
        lam = np.where(crossing, (floor - t0) / (t1 - t0), 1.0)
    part = np.where(crossing, (1 - lam) * df * (floor + t1) / 2, 0.0)
    return (whole + part).sum(axis=-1)


def _ratio(num: float, den: float, *, freebie: bool) -> float | None:
    if den > 0:
        return float(num / den)
    return 1.0 if freebie else None


def _class_metrics(y: np.ndarray, s: np.ndarray, w: np.ndarray) -> dict[str, float | None]:
    pred = s > THRESHOLD
    tp, fn = w[y & pred].sum(), w[y & ~pred].sum()
    fp, tn = w[~y & pred].sum(), w[~y & ~pred].sum()
    n_pos, n_neg = tp + fn, fp + tn
    # Both kinds present: exactly the official scorer, its 1.0 "freebies" included.
    # Otherwise (the official scorer crashes): None wherever a value would be 0/0.
    ok = n_pos > 0 and n_neg > 0
    out: dict[str, float | None] = {
        "accuracy": _ratio(tp + tn, n_pos + n_neg, freebie=False),
        "sensitivity": _ratio(tp, n_pos, freebie=ok),
        "specificity": _ratio(tn, n_neg, freebie=ok),
        "dice": _ratio(2 * tp, 2 * tp + fp + fn, freebie=ok),
        "ppv": _ratio(tp, tp + fp, freebie=ok),
        "npv": _ratio(tn, tn + fn, freebie=ok),
        "auc": None,
        "auc_sens_80": None,
        "ap": None,
    }
    if ok:
        out["auc"] = float(roc_auc_score(y, s, sample_weight=w))
        keep = w != 0
        fpr, tpr, _ = roc_curve(y[keep], s[keep], sample_weight=w[keep], drop_intermediate=False)
        out["auc_sens_80"] = float(partial_auc(fpr, tpr))
    if n_pos > 0:
        out["ap"] = float(average_precision_score(y, s, sample_weight=w))
    return out


def score(
    truth: pd.DataFrame, predictions: pd.DataFrame, *, weights: pd.Series | None = None
) -> dict:
    """Official ISIC classification scores, shaped like ``ClassificationScore.to_dict(rocs=False)``.

    ``truth``: one-hot, indexed by image id, one column per class; ``predictions``: class
    probabilities for the same images and classes; ``weights``: optional ``score_weight`` per
    image id. Returns ``overall`` (= balanced accuracy), ``validation`` (balanced accuracy with
    unit weights, as the scorer computes it for a truth file without ``validation_weight``),
    ``per_category.<metric>.<class>``, ``macro_average.<metric>``,
    ``aggregate.balanced_accuracy``, plus ``n_images``, ``classes``, ``absent_classes`` (no
    positive truth image: undefined metrics are ``None`` and the class is left out of macro
    averages; the official scorer crashes on them) and ``zero_weight_images``. Plain floats or
    ``None`` throughout.
    """
    t, p = align(truth, predictions)
    w = _weights(t, weights)
    classes = [str(c) for c in t.columns]
    tv, pv = t.to_numpy(), p.to_numpy()
    true_labels, pred_labels = tv.argmax(axis=1), argmax_labels(pv)
    k = len(classes)

    per_class = {
        c: _class_metrics(tv[:, j] > THRESHOLD, pv[:, j], w) for j, c in enumerate(classes)
    }
    absent = [c for j, c in enumerate(classes) if w[tv[:, j] > THRESHOLD].sum() <= 0]
    macro: dict[str, float | None] = {}
    for m in METRIC_NAMES:
        vals = [per_class[c][m] for c in classes if c not in absent and per_class[c][m] is not None]
        macro[m] = float(np.mean(vals)) if vals else None

    unit = _weights(t, None)
    balanced = balanced_accuracy(true_labels, pred_labels, w, k)
    return {
        "overall": balanced,
        "validation": balanced_accuracy(true_labels, pred_labels, unit, k),
        "per_category": {m: {c: per_class[c][m] for c in classes} for m in METRIC_NAMES},
        "macro_average": macro,
        "aggregate": {"balanced_accuracy": balanced},
        "n_images": len(t),
        "classes": classes,
        "absent_classes": absent,
        "zero_weight_images": [str(i) for i in t.index[w == 0]],
    }


def _interval(samples: np.ndarray, level: float) -> list[float] | None:
    samples = samples[~np.isnan(samples)]
    if samples.size == 0:
        return None
    tail = (1 - level) / 2 * 100
    lo, hi = np.percentile(samples, [tail, 100 - tail])
    return [float(lo), float(hi)]


def _resampled_rocs(counts: np.ndarray, y: np.ndarray, s: np.ndarray):
    """AUC and auc_sens_80 of one class for each row of image ``counts`` (NaN if undefined)."""
    order = np.argsort(-s, kind="stable")
    s_sorted = s[order]
    starts = np.flatnonzero(np.r_[True, s_sorted[1:] != s_sorted[:-1]])
    c = counts[:, order]
    pos = c * y[order]
    tp = np.add.reduceat(pos, starts, axis=1).cumsum(axis=1)
    fp = np.add.reduceat(c - pos, starts, axis=1).cumsum(axis=1)
    n_pos, n_neg = tp[:, -1:], fp[:, -1:]
    with np.errstate(invalid="ignore", divide="ignore"):
        tpr = np.concatenate([np.zeros_like(n_pos), tp / n_pos], axis=1)
        fpr = np.concatenate([np.zeros_like(n_neg), fp / n_neg], axis=1)
    auc = (np.diff(fpr, axis=1) * (tpr[:, 1:] + tpr[:, :-1]) / 2).sum(axis=1)
    pauc = partial_auc(fpr, tpr)
    valid = (n_pos[:, 0] > 0) & (n_neg[:, 0] > 0)
    return np.where(valid, auc, np.nan), np.where(valid, pauc, np.nan)


def _binary_inputs(
    binary: Mapping[str, pd.DataFrame] | None, index: pd.Index
) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """``{name: (row positions in the truth, 0/1 truth, score)}`` of ``bootstrap_ci(binary=)``."""
    extra = {}
    for name, frame in (binary or {}).items():
        if not isinstance(frame, pd.DataFrame) or not {"truth", "score"} <= set(frame.columns):
            raise ZooError(
                f"binary[{name!r}] must be a DataFrame with columns 'truth' and 'score' indexed "
                f"by image id; received {type(frame).__name__}."
            )
        rows = index.get_indexer(frame.index)
        if (rows < 0).any():
            raise ZooError(
                f"binary[{name!r}] has image ids that the truth lacks "
                f"{_shown(frame.index[rows < 0])}; score a subset of the truth's images."
            )
        y = frame["truth"].to_numpy(dtype=float)
        s = frame["score"].to_numpy(dtype=float)
        if not np.isin(y, (0.0, 1.0)).all() or not np.isfinite(s).all():
            raise ZooError(
                f"binary[{name!r}] needs truth 0/1 and finite scores; fix the task scores."
            )
        extra[str(name)] = (rows, y, s)
    return extra


def group_codes(index: pd.Index, groups: pd.Series | None) -> np.ndarray:
    """Group number of each image of ``index`` (each image its own group without ``groups``;
    an image missing from ``groups`` is a group of its own)."""
    if groups is None:
        return np.arange(len(index))
    if not isinstance(groups, pd.Series):
        raise ZooError(
            f"groups must be a pandas Series of group ids indexed by image id; received "
            f"{type(groups).__name__}."
        )
    missing = index.difference(groups.index)
    if len(missing):
        raise ZooError(f"groups lack {len(missing)} image id(s) {_shown(missing)}.")
    group_of, uniques = pd.factorize(groups.loc[index])
    lonely = group_of < 0
    group_of[lonely] = len(uniques) + np.arange(lonely.sum())
    return group_of


def resample_counts(group_of: np.ndarray, *, n_resamples: int, rng: np.random.Generator):
    """Yield ``(start, counts)``: per resample (rows) how often each image is drawn, when the
    groups (lesions) are drawn with replacement; in chunks that bound the memory used."""
    n_groups = int(group_of.max()) + 1
    chunk = max(1, min(n_resamples, 2_000_000 // max(len(group_of), 1)))
    for start in range(0, n_resamples, chunk):
        b = min(chunk, n_resamples - start)
        draws = rng.integers(0, n_groups, size=(b, n_groups))
        flat = (draws + n_groups * np.arange(b)[:, None]).ravel()
        counts = np.bincount(flat, minlength=b * n_groups).reshape(b, n_groups)
        yield start, counts[:, group_of].astype(float)


def bootstrap_statistics(
    index: pd.Index,
    statistic,
    *,
    groups: pd.Series | None = None,
    n_resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, list[float] | None]:
    """Percentile intervals of weighted statistics on the lesion bootstrap of :func:`bootstrap_ci`.

    ``statistic(counts)`` takes a ``(b, n_images)`` array of draw counts (images in ``index``
    order) and returns ``{name: (b,) values}`` (NaN where undefined in a resample).
    """
    if isinstance(n_resamples, bool) or not isinstance(n_resamples, int) or n_resamples < 1:
        raise ZooError(f"n_resamples must be a positive integer; received {n_resamples!r}.")
    group_of = group_codes(pd.Index(index), groups)
    rng = np.random.default_rng(seed)
    values: dict[str, np.ndarray] = {}
    for start, counts in resample_counts(group_of, n_resamples=n_resamples, rng=rng):
        for name, v in statistic(counts).items():
            values.setdefault(name, np.full(n_resamples, np.nan))[start : start + len(counts)] = v
    return {name: _interval(v, level) for name, v in values.items()}


def resampled_balanced_accuracy(counts: np.ndarray, truth: np.ndarray, hits: np.ndarray):
    """Balanced accuracy of each resample (rows of image draw ``counts``): ``truth`` one-hot
    ``(n, k)``, ``hits`` the same where the argmax is right (0 elsewhere)."""
    denom, num = counts @ truth, counts @ hits
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = np.where(denom > 0, num / denom, np.nan)
    return np.nanmean(recall, axis=1)


def argmax_rates(
    truth: pd.DataFrame,
    predictions: pd.DataFrame,
    *,
    groups: pd.Series | None = None,
    n_resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, dict[str, float | list[float] | None]]:
    """Per class, the sensitivity and specificity of the argmax decision — the rows and columns
    of the confusion matrix, counted unweighted (a tie, "undecided", misses its true class and
    is a positive of none) — with percentile intervals on the resamples of :func:`bootstrap_ci`
    (same ``groups``, ``n_resamples`` and ``seed``; ``n_resamples=0``: no intervals).

    Returns ``{"sensitivity": {class: v}, "specificity": …, "sensitivity_ci95": {class:
    [low, high]}, "specificity_ci95": …}`` (``None`` where a class has no positives or no
    negatives)."""
    t, p = align(truth, predictions)
    classes = [str(c) for c in t.columns]
    tv = t.to_numpy().astype(float)
    predicted = argmax_labels(p.to_numpy())
    chosen = (predicted[:, None] == np.arange(len(classes))[None, :]).astype(float)
    hits, false_positives, negatives = tv * chosen, (1 - tv) * chosen, 1 - tv

    def rates(counts: np.ndarray) -> dict[str, np.ndarray]:
        positives, wrong = counts @ tv, counts @ negatives
        with np.errstate(invalid="ignore", divide="ignore"):
            sensitivity = np.where(positives > 0, (counts @ hits) / positives, np.nan)
            specificity = np.where(wrong > 0, 1 - (counts @ false_positives) / wrong, np.nan)
        return {"sensitivity": sensitivity, "specificity": specificity}

    point = rates(np.ones((1, len(t))))
    out: dict = {
        name: {
            c: (None if np.isnan(v) else float(v)) for c, v in zip(classes, values[0], strict=True)
        }
        for name, values in point.items()
    }
    for name in ("sensitivity", "specificity"):
        out[f"{name}_ci95"] = dict.fromkeys(classes)
    if n_resamples:

        def statistic(counts: np.ndarray) -> dict[str, np.ndarray]:
            values = rates(counts)
            return {f"{n}:{j}": values[n][:, j] for n in values for j in range(len(classes))}

        intervals = bootstrap_statistics(
            t.index, statistic, groups=groups, n_resamples=n_resamples, seed=seed, level=level
        )
        for key, interval in intervals.items():
            name, j = key.split(":")
            out[f"{name}_ci95"][classes[int(j)]] = interval
    return out


def paired_difference_ci(
    truth: pd.DataFrame,
    predictions: pd.DataFrame,
    baseline: pd.DataFrame,
    *,
    groups: pd.Series | None = None,
    n_resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> list[float] | None:
    """Percentile interval of balanced accuracy of ``predictions`` minus that of ``baseline``,
    both scored on each resample: a paired bootstrap on the resamples of :func:`bootstrap_ci`
    (same ``groups``, ``n_resamples`` and ``seed``: the same lesions drawn)."""
    t, p = align(truth, predictions)
    _, q = align(truth, baseline)
    tv = t.to_numpy()
    right = tv.argmax(axis=1)
    hits_p = tv * (argmax_labels(p.to_numpy()) == right)[:, None]
    hits_q = tv * (argmax_labels(q.to_numpy()) == right)[:, None]

    def statistic(counts: np.ndarray) -> dict[str, np.ndarray]:
        gain = resampled_balanced_accuracy(counts, tv, hits_p)
        return {"difference": gain - resampled_balanced_accuracy(counts, tv, hits_q)}

    return bootstrap_statistics(
        t.index, statistic, groups=groups, n_resamples=n_resamples, seed=seed, level=level
    )["difference"]


def bootstrap_ci(
    truth: pd.DataFrame,
    predictions: pd.DataFrame,
    *,
    groups: pd.Series | None = None,
    n_resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    binary: Mapping[str, pd.DataFrame] | None = None,
) -> dict:
    """Percentile bootstrap intervals (unweighted) for balanced accuracy and every AUC-type
    metric of :func:`score`: per-class and macro ``auc`` and ``auc_sens_80``.

    Resamples groups (lesions, ``groups``: group id per image id; a missing id makes the image
    its own group) with replacement when given, else images. A resample that lacks a class's
    positives or negatives is skipped for that class's AUCs; macro values average the classes
    defined in each resample, balanced accuracy the classes present in it. ``n_valid`` counts
    the resamples behind each per-class interval.

    ``binary``: extra binary scores to bootstrap on the same resamples, ``{name: frame}`` with
    columns ``truth`` (0/1) and ``score`` indexed by image id (a subset of the truth's images,
    e.g. an Esteva task); their intervals are under ``binary.<name>.auc`` / ``auc_sens_80``.
    """
    t, p = align(truth, predictions)
    extra = _binary_inputs(binary, t.index)
    if isinstance(n_resamples, bool) or not isinstance(n_resamples, int) or n_resamples < 1:
        raise ZooError(f"n_resamples must be a positive integer; received {n_resamples!r}.")
    if not (isinstance(level, float | int) and 0 < level < 1):
        raise ZooError(f"level must be between 0 and 1 (e.g. 0.95); received {level!r}.")
    group_of = group_codes(t.index, groups)

    classes = [str(c) for c in t.columns]
    tv, pv = t.to_numpy(), p.to_numpy()
    k = len(classes)
    true_labels = tv.argmax(axis=1)
    hits = tv * (argmax_labels(pv) == true_labels)[:, None]
    present = [j for j in range(k) if tv[:, j].any()]

    rng = np.random.default_rng(seed)
    balanced = np.empty(n_resamples)
    auc = np.full((n_resamples, k), np.nan)
    pauc = np.full((n_resamples, k), np.nan)
    extra_auc = {name: np.full((n_resamples, 2), np.nan) for name in extra}
    for start, counts in resample_counts(group_of, n_resamples=n_resamples, rng=rng):
        b = len(counts)
        denom, num = counts @ tv, counts @ hits
        with np.errstate(invalid="ignore", divide="ignore"):
            recall = np.where(denom > 0, num / denom, np.nan)
        balanced[start : start + b] = np.nanmean(recall, axis=1)
        for j in present:
            a, pa = _resampled_rocs(counts, tv[:, j], pv[:, j])
            auc[start : start + b, j], pauc[start : start + b, j] = a, pa
        for name, (rows, y, s) in extra.items():
            extra_auc[name][start : start + b] = np.stack(
                _resampled_rocs(counts[:, rows], y, s), axis=1
            )

    def macro(values: np.ndarray) -> np.ndarray:
        sub = values[:, present]
        defined = (~np.isnan(sub)).sum(axis=1)
        total = np.nansum(sub, axis=1)
        return np.where(defined > 0, total / np.maximum(defined, 1), np.nan)

    binary_intervals = {
        name: {
            "auc": _interval(values[:, 0], level),
            "auc_sens_80": _interval(values[:, 1], level),
            "n_valid": int((~np.isnan(values[:, 0])).sum()),
        }
        for name, values in extra_auc.items()
    }
    return {
        "balanced_accuracy": _interval(balanced, level),
        "auc": {c: _interval(auc[:, j], level) for j, c in enumerate(classes)},
        "macro_auc": _interval(macro(auc), level),
        "auc_sens_80": {c: _interval(pauc[:, j], level) for j, c in enumerate(classes)},
        "macro_auc_sens_80": _interval(macro(pauc), level),
        "n_valid": {c: int((~np.isnan(auc[:, j])).sum()) for j, c in enumerate(classes)},
        **({"binary": binary_intervals} if extra else {}),
        "n_resamples": n_resamples,
        "level": float(level),
        "seed": seed,
        "unit": "image" if groups is None else "lesion",
    }


def roc_table(truth: pd.DataFrame, predictions: pd.DataFrame) -> pd.DataFrame:
    """ROC curves in long format: columns ``class, fpr, tpr, threshold`` (unweighted).

    Classes without both positive and negative truth images have no curve and are left out.
    The first point of each curve has threshold ``inf`` (nothing predicted positive).
    """
    t, p = align(truth, predictions)
    frames = []
    for c in t.columns:
        y = t[c].to_numpy() > THRESHOLD
        if y.all() or not y.any():
            continue
        fpr, tpr, thr = roc_curve(y, p[c].to_numpy())
        frames.append(pd.DataFrame({"class": str(c), "fpr": fpr, "tpr": tpr, "threshold": thr}))
    if not frames:
        return pd.DataFrame({"class": [], "fpr": [], "tpr": [], "threshold": []})
    return pd.concat(frames, ignore_index=True)


def sens_spec_curves(truth: pd.DataFrame, predictions: pd.DataFrame) -> dict[str, tuple]:
    """Per class ``(sensitivity, specificity, auc)`` arrays, the input of ``plots.plot_sens_spec``."""
    table = roc_table(truth, predictions)
    curves = {}
    for c, g in table.groupby("class", sort=False):
        fpr, tpr = g["fpr"].to_numpy(), g["tpr"].to_numpy()
        curves[str(c)] = (tpr, 1 - fpr, float(curve_area(fpr, tpr)))
    return curves


def operating_points(
    truth: pd.DataFrame, predictions: pd.DataFrame, *, threshold: float = THRESHOLD
) -> dict[str, tuple[float, float]]:
    """Per class ``(sensitivity, specificity)`` at ``score > threshold`` (unweighted).

    Classes without both positive and negative truth images are left out.
    """
    t, p = align(truth, predictions)
    points = {}
    for c in t.columns:
        y, pred = t[c].to_numpy() > THRESHOLD, p[c].to_numpy() > threshold
        if y.all() or not y.any():
            continue
        points[str(c)] = (float((pred & y).sum() / y.sum()), float((~pred & ~y).sum() / (~y).sum()))
    return points

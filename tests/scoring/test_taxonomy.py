"""zoo.scoring.taxonomy: Esteva-style binary tasks on a hand-made example."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from zoo.errors import ZooError
from zoo.scoring.taxonomy import TASKS, score_task, task_scores

HAM = ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]


def ham_example():
    rows = {  # image: (true class, predicted probabilities)
        "i1": ("mel", {"mel": 0.5, "nv": 0.25, "bkl": 0.25}),
        "i2": ("nv", {"mel": 0.1, "nv": 0.6, "df": 0.3}),
        "i3": ("bcc", {"bcc": 0.4, "bkl": 0.4, "akiec": 0.2}),
        "i4": ("bkl", {"bkl": 0.7, "mel": 0.3}),
        "i5": ("df", {"df": 0.9, "nv": 0.1}),
        "i6": ("vasc", {"vasc": 1.0}),
    }
    truth = pd.DataFrame(0.0, index=list(rows), columns=HAM)
    predictions = pd.DataFrame(0.0, index=list(rows), columns=HAM)
    for image, (label, probs) in rows.items():
        truth.loc[image, label] = 1.0
        for cls, p in probs.items():
            predictions.loc[image, cls] = p
    return truth, predictions


def test_tasks():
    assert set(TASKS) == {"melanocytic", "epidermal", "malignant"}
    assert set(TASKS["epidermal"].malignant) == {"bcc", "akiec", "ak", "scc"}
    assert "unk" not in TASKS["malignant"].classes


@pytest.mark.parametrize(
    ("task", "ids", "y", "scores"),
    [
        ("melanocytic", ["i1", "i2"], [1, 0], [2 / 3, 1 / 7]),
        ("epidermal", ["i3", "i4"], [1, 0], [0.6, 0.0]),
        (
            "malignant",
            ["i1", "i2", "i3", "i4", "i5", "i6"],
            [1, 0, 1, 0, 0, 0],
            [0.5, 0.1, 0.6, 0.3, 0.0, 0.0],
        ),
    ],
)
def test_task_scores_sum_over_descendants(task, ids, y, scores):
    truth, predictions = ham_example()
    y_true, score, kept = task_scores(truth, predictions, task)
    assert list(kept) == ids
    np.testing.assert_array_equal(y_true, y)
    np.testing.assert_allclose(score, scores)


def test_score_task():
    truth, predictions = ham_example()
    result = score_task(truth, predictions, "malignant")
    assert result["n_positive"] == 2 and result["n_negative"] == 4
    assert result["auc"] == 1.0
    assert result["sensitivity"] == 0.5  # i1 scores exactly 0.5: not > 0.5
    assert result["specificity"] == 1.0
    curve = result["curve"]
    assert len(curve["sensitivity"]) == len(curve["specificity"]) == len(curve["threshold"])
    assert curve["threshold"][0] is None
    json.dumps(result, allow_nan=False)


def test_isic2019_columns_match_case_insensitively():
    columns = ["MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC", "UNK"]
    labels = ["SCC", "AK", "BKL", "UNK", "MEL"]
    truth = pd.DataFrame(0.0, index=[f"x{i}" for i in range(5)], columns=columns)
    for i, label in enumerate(labels):
        truth.iloc[i, columns.index(label)] = 1.0
    predictions = pd.DataFrame(0.0, index=truth.index, columns=columns)
    predictions["SCC"] = [0.5, 0.1, 0.2, 0.0, 0.0]
    predictions["BKL"] = [0.5, 0.3, 0.2, 0.0, 0.0]
    predictions["UNK"] = [0.0, 0.6, 0.6, 1.0, 1.0]  # x4: no mass on any task class
    y, score, kept = task_scores(truth, predictions, "epidermal")
    assert list(kept) == ["x0", "x1", "x2"]  # UNK and MEL are not epidermal
    np.testing.assert_array_equal(y, [1, 1, 0])
    np.testing.assert_allclose(score, [0.5, 0.25, 0.5])
    y, score, kept = task_scores(truth, predictions, "malignant")
    assert "x3" not in kept  # UNK belongs to no task
    assert score[list(kept).index("x4")] == 0.5  # zero mass on the task: no preference


def test_missing_kind_gives_none():
    truth, predictions = ham_example()
    only_nv = truth.index[truth["nv"] == 1]
    result = score_task(truth.loc[only_nv], predictions.loc[only_nv], "melanocytic")
    assert result["n_positive"] == 0 and result["auc"] is None and result["sensitivity"] is None
    assert result["specificity"] == 1.0


def test_errors():
    truth, predictions = ham_example()
    with pytest.raises(
        ZooError, match="unknown task 'melanoma'.*melanocytic, epidermal, malignant"
    ):
        task_scores(truth, predictions, "melanoma")
    other = pd.DataFrame({"cat": [1.0, 0.0], "dog": [0.0, 1.0]}, index=["a", "b"])
    with pytest.raises(ZooError, match=r"task 'epidermal' needs some of the classes.*'cat'"):
        task_scores(other, other, "epidermal")

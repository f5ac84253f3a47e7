"""zoo.scoring.priors: prior correction and effective training priors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone

from zoo.errors import ZooError
from zoo.scoring.priors import PriorCorrection, effective_priors, load_target_priors

PROBS = np.array([[0.6, 0.3, 0.1], [0.2, 0.2, 0.6]])


def test_hand_computed_three_classes():
    # Training priors 0.5, 0.3, 0.2 (given as counts: fit normalises).
    corrected = PriorCorrection().fit([50, 30, 20]).transform(PROBS)
    # Row 1: 0.6/0.5, 0.3/0.3, 0.1/0.2 = 1.2, 1.0, 0.5 -> / 2.7
    # Row 2: 0.4, 0.666.., 3.0 -> / 4.0666..
    expected = np.array([[1.2, 1.0, 0.5], [0.4, 2 / 3, 3.0]])
    expected /= expected.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(corrected, expected, rtol=1e-12)
    np.testing.assert_allclose(corrected[0], [4 / 9, 10 / 27, 5 / 27], rtol=1e-12)


def test_target_priors():
    est = PriorCorrection(target_priors=[2, 3, 5]).fit([0.5, 0.3, 0.2])
    # 1.2*0.2, 1.0*0.3, 0.5*0.5 = 0.24, 0.30, 0.25 -> / 0.79
    np.testing.assert_allclose(est.transform(PROBS)[0], [0.24 / 0.79, 0.30 / 0.79, 0.25 / 0.79])
    np.testing.assert_allclose(est.target_, [0.2, 0.3, 0.5])


def test_uniform_priors_are_identity():
    np.testing.assert_allclose(PriorCorrection().fit([1, 1, 1]).transform(PROBS), PROBS)
    est = PriorCorrection(target_priors=[0.5, 0.3, 0.2])
    np.testing.assert_allclose(est.fit_transform(PROBS, [0.5, 0.3, 0.2]), PROBS)


def test_dataframe_keeps_index_and_matches_columns_by_name():
    frame = pd.DataFrame(PROBS, index=["a", "b"], columns=["MEL", "NV", "BCC"])
    priors = pd.Series({"NV": 0.3, "BCC": 0.2, "MEL": 0.5})
    out = PriorCorrection().fit(priors).transform(frame)
    assert list(out.index) == ["a", "b"] and list(out.columns) == ["MEL", "NV", "BCC"]
    np.testing.assert_allclose(out.loc["a"], [4 / 9, 10 / 27, 5 / 27])
    np.testing.assert_allclose(out.sum(axis=1), 1.0)
    with pytest.raises(ZooError, match="differ from the fitted classes"):
        PriorCorrection().fit(priors).transform(frame.rename(columns={"BCC": "DF"}))


def test_estimator_habits():
    est = PriorCorrection(target_priors=[1, 2])
    assert est.get_params() == {"target_priors": [1, 2]}
    assert not hasattr(est, "priors_")
    assert clone(est).target_priors == [1, 2]
    with pytest.raises(ZooError, match="call fit"):
        est.transform(PROBS)


@pytest.mark.parametrize(
    ("priors", "match"),
    [
        ([0.5, 0.0, 0.5], r"> 0; received \[0.5, 0.0, 0.5\]"),
        ([0.5, np.nan, 0.5], "finite"),
        ([[0.5, 0.5]], "flat list"),
        (["a", "b"], "received"),
    ],
)
def test_bad_priors_name_the_value(priors, match):
    with pytest.raises(ZooError, match=match):
        PriorCorrection().fit(priors)


def test_wrong_lengths():
    with pytest.raises(ZooError, match=r"shape \(n_images, 2\); received shape \(2, 3\)"):
        PriorCorrection().fit([1, 1]).transform(PROBS)
    with pytest.raises(ZooError, match="target_priors has 2 values but priors has 3"):
        PriorCorrection(target_priors=[1, 1]).fit([1, 1, 1])


def test_effective_priors():
    counts = np.array([600, 300, 100])
    np.testing.assert_allclose(effective_priors(counts), [0.6, 0.3, 0.1])
    inverse = 1 / counts
    np.testing.assert_allclose(effective_priors(counts, inverse), [1 / 3] * 3)
    np.testing.assert_allclose(effective_priors(counts, "balanced"), [1 / 3] * 3)
    np.testing.assert_allclose(effective_priors(counts, [1, 2, 3]), [0.4, 0.4, 0.2])
    series = effective_priors(pd.Series(counts, index=["nv", "mel", "df"]))
    assert list(series.index) == ["nv", "mel", "df"]
    # Balanced sampling cannot draw a class without images.
    np.testing.assert_allclose(effective_priors([5, 0, 5], "balanced"), [0.5, 0, 0.5])
    with pytest.raises(ZooError, match="'uniform'"):
        effective_priors(counts, "uniform")
    with pytest.raises(ZooError, match="class_weights has 2 values"):
        effective_priors(counts, [1, 2])
    with pytest.raises(ZooError, match=r"class_counts must be finite, >= 0.*\[-1.0, 2.0\]"):
        effective_priors([-1, 2])


def test_effective_priors_feed_correction():
    counts = pd.Series({"MEL": 100, "NV": 700, "BCC": 200})
    priors = effective_priors(counts, [2.0, 1.0, 1.0])
    frame = pd.DataFrame([[0.2, 0.7, 0.1]], columns=["MEL", "NV", "BCC"])
    out = PriorCorrection().fit(priors).transform(frame)
    np.testing.assert_allclose(out.iloc[0], np.array([0.2 / 0.2, 0.7 / 0.7, 0.1 / 0.2]) / 2.5)


def test_zero_target_prior_never_predicts_that_class():
    out = PriorCorrection(target_priors=[0, 1, 1]).fit([1, 1, 1]).transform(PROBS)
    np.testing.assert_allclose(out[:, 0], 0.0)
    np.testing.assert_allclose(out.sum(axis=1), 1.0)
    with pytest.raises(ZooError, match="not all 0"):
        PriorCorrection(target_priors=[0, 0, 0]).fit([1, 1, 1])


CLASSES3 = ["mel", "nv", "bcc"]


def test_load_target_priors_uniform_and_file(tmp_path):
    priors, notes = load_target_priors("uniform", CLASSES3)
    assert list(priors.index) == CLASSES3 and notes == []
    np.testing.assert_allclose(priors, 1 / 3)
    file = tmp_path / "priors.json"
    file.write_text('{"nv": 6, "bcc": 0, "mel": 2}')
    priors, notes = load_target_priors(str(file), CLASSES3)
    assert priors.to_dict() == {"mel": 0.25, "nv": 0.75, "bcc": 0.0}
    assert len(notes) == 1 and "summed to 8; normalised to 1" in notes[0] and str(file) in notes[0]
    file.write_text('{"nv": 0.5, "bcc": 0.25, "mel": 0.25}')
    assert load_target_priors(str(file), CLASSES3)[1] == []


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ('{"mel": 0.5, "nv": 0.5, "bcc": 0, "melanoma": 0}', "unknown class 'melanoma'"),
        ('{"mel": 0.5, "nv": -0.5, "bcc": 1}', "class 'nv' has prior -0.5"),
        ('{"mel": 0.5, "nv": "high", "bcc": 1}', "class 'nv' has prior 'high'"),
        ('{"mel": 0.5, "nv": NaN, "bcc": 1}', "class 'nv' has prior nan"),
        ('{"mel": 0.5, "nv": 0.5}', r"no prior for class\(es\) bcc"),
        ('{"mel": 0, "nv": 0, "bcc": 0}', "every prior is 0"),
        ("[0.2, 0.3, 0.5]", "must be a JSON object"),
        ("{not json", "not valid JSON"),
    ],
    ids=["unknown", "negative", "text", "nan", "missing", "zeros", "list", "json"],
)
def test_bad_target_priors_name_file_class_and_value(tmp_path, text, match):
    file = tmp_path / "p.json"
    file.write_text(text)
    with pytest.raises(ZooError, match=match) as info:
        load_target_priors(str(file), CLASSES3)
    message = str(info.value)
    assert message.startswith(f"--target-priors {file}") and "\n" not in message
    with pytest.raises(ZooError, match="cannot read it"):
        load_target_priors(str(tmp_path / "missing.json"), CLASSES3)

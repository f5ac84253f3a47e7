"""zoo.recipes.schedules and zoo.training.class_weights."""

from __future__ import annotations

import numpy as np
import pytest

from zoo.errors import ZooError
from zoo.recipes.schedules import check_schedule, cycle_ends, learning_rate
from zoo.scoring.priors import effective_priors
from zoo.training.class_weights import class_weights


def lr(schedule: dict, epoch: float, *, base: float = 0.001, epochs: int = 90) -> float:
    return learning_rate(schedule, base=base, epoch=epoch, epochs=epochs)


def test_constant():
    for epoch in (0, 1.5, 89):
        assert lr({"name": "constant"}, epoch) == 0.001
    assert lr({}, 3) == 0.001


def test_step_divides_by_16_every_30_epochs():
    """Esteva et al. 2017: RMSprop at 0.001, decayed by a factor of 16 every 30 epochs."""
    step = {"name": "step", "every": 30, "factor": 0.0625}
    assert lr(step, 0) == pytest.approx(0.001)
    assert lr(step, 29.99) == pytest.approx(0.001)
    assert lr(step, 30) == pytest.approx(0.001 / 16)
    assert lr(step, 59.5) == pytest.approx(0.001 / 16)
    assert lr(step, 60) == pytest.approx(0.001 / 256)
    assert lr(step, 89.9) == pytest.approx(0.001 / 256)
    assert lr({"name": "step"}, 30) == pytest.approx(0.0001)  # defaults: × 0.1 every 30


def test_cosine_warms_up_then_decays_to_zero():
    cosine = {"name": "cosine", "warmup": 1}
    rates = [lr(cosine, e, epochs=20) for e in np.linspace(0, 20, 401)]
    assert rates[0] < 0.001 * 0.01
    assert lr(cosine, 0.5, epochs=20) == pytest.approx(0.0005, rel=0.01)
    assert lr(cosine, 1, epochs=20) == pytest.approx(0.001)
    assert lr(cosine, 10.5, epochs=20) == pytest.approx(0.0005)  # half-way through the decay
    assert lr(cosine, 20, epochs=20) == pytest.approx(0.0, abs=1e-12)
    peak = int(np.argmax(rates))
    assert np.all(np.diff(rates[: peak + 1]) >= 0) and np.all(np.diff(rates[peak:]) <= 1e-15)
    assert lr({"name": "cosine"}, 0, epochs=10) == pytest.approx(0.001)  # no warm-up


def test_one_cycle_rises_then_anneals():
    cycle = {"name": "one_cycle", "warmup": 0.3}
    epochs = 30
    grid = np.linspace(0, epochs, 601)
    rates = np.array([lr(cycle, e, epochs=epochs) for e in grid])
    assert rates[0] == pytest.approx(0.001 / 25)
    assert lr(cycle, 9, epochs=epochs) == pytest.approx(0.001)  # peak at 30 % of the stage
    assert rates[-1] == pytest.approx(0.001 / 1e4)
    peak = int(np.argmax(rates))
    assert grid[peak] == pytest.approx(9, abs=0.1)
    assert np.all(np.diff(rates[: peak + 1]) >= 0) and np.all(np.diff(rates[peak:]) <= 1e-15)
    custom = {"name": "one_cycle", "warmup": 0.5, "div": 10, "final_div": 100}
    assert lr(custom, 0, epochs=10) == pytest.approx(0.0001)
    assert lr(custom, 5, epochs=10) == pytest.approx(0.001)
    assert lr(custom, 10, epochs=10) == pytest.approx(0.00001)


def test_cosine_restarts_decays_to_zero_in_each_cycle_and_restarts():
    """SGDR as snapshot ensembles use it (Huang et al. 2017): 3 cycles of 2 epochs."""
    restarts = {"name": "cosine_restarts", "cycles": 3}
    for start in (0, 2, 4):
        assert lr(restarts, start, epochs=6) == pytest.approx(0.001)
        assert lr(restarts, start + 1, epochs=6) == pytest.approx(0.0005)
        assert lr(restarts, start + 1.999, epochs=6) < 1e-8
    assert lr(restarts, 6, epochs=6) == pytest.approx(0.0, abs=1e-12)
    assert lr({"name": "cosine_restarts", "cycles": 1}, 2.5, epochs=10) == pytest.approx(
        lr({"name": "cosine"}, 2.5, epochs=10)
    )


def test_cycle_ends_are_whole_epochs():
    assert cycle_ends(6, 3) == [2, 4, 6]
    assert cycle_ends(4, 3) == [1, 2, 4]
    assert cycle_ends(5, 1) == [5]
    assert cycle_ends(3, 3) == [1, 2, 3]
    uneven = {"name": "cosine_restarts", "cycles": 3}  # cycles of 1, 1 and 2 epochs
    assert lr(uneven, 1, epochs=4) == pytest.approx(0.001)
    assert lr(uneven, 2, epochs=4) == pytest.approx(0.001)
    assert lr(uneven, 3, epochs=4) == pytest.approx(0.0005)


def test_bad_schedules_are_errors():
    with pytest.raises(ZooError, match="schedule name must be one of .*got 'linear'"):
        lr({"name": "linear"}, 0)
    with pytest.raises(
        ZooError, match=r"schedule 'step' takes \['every', 'factor'\]; got \['warmup'\]"
    ):
        lr({"name": "step", "warmup": 1}, 0)
    with pytest.raises(ZooError, match="no options"):
        lr({"name": "constant", "every": 3}, 0)


@pytest.mark.parametrize(
    ("schedule", "pattern"),
    [
        ({"name": "step", "every": "30"}, r"option 'every' must be a number; got '30'"),
        ({"name": "step", "factor": True}, r"option 'factor' must be a number; got True"),
        ({"name": "step", "every": 0}, r"option 'every' must be > 0; got 0"),
        ({"name": "one_cycle", "div": -5}, r"option 'div' must be > 0"),
        ({"name": "one_cycle", "warmup": 1.5}, r"'warmup' must be between 0 and 1"),
        ({"name": "cosine", "warmup": -1}, r"'warmup' must be ≥ 0"),
        ({"name": ["step"]}, r"schedule name must be one of"),
        ("step", r"a schedule must be a table"),
        ({"name": "cosine_restarts"}, r"schedule 'cosine_restarts' needs cycles"),
        ({"name": "cosine_restarts", "cycles": 1.5}, r"'cycles' must be a positive integer"),
        ({"name": "cosine_restarts", "cycles": 0}, r"'cycles' must be a positive integer"),
        (
            {"name": "cosine", "cycles": 2},
            r"schedule 'cosine' takes \['warmup'\]; got \['cycles'\]",
        ),
    ],
)
def test_bad_schedule_options_are_errors_before_any_arithmetic(schedule, pattern):
    with pytest.raises(ZooError, match=pattern):
        check_schedule(schedule)
    with pytest.raises(ZooError, match=pattern):
        lr(schedule, 0)


COUNTS = np.array([6705, 1113, 1099, 514, 327, 142, 115])  # HAM10000 (nv, mel, bkl, …)


def test_no_weights():
    np.testing.assert_array_equal(class_weights(COUNTS), np.ones(7))
    np.testing.assert_allclose(
        effective_priors(COUNTS, class_weights(COUNTS)), COUNTS / COUNTS.sum()
    )


def test_inverse_weights_give_a_uniform_effective_prior():
    weights = class_weights(COUNTS, scheme="inverse")
    np.testing.assert_allclose(weights, COUNTS.sum() / (7 * COUNTS))
    np.testing.assert_allclose(effective_priors(COUNTS, weights), np.full(7, 1 / 7))
    np.testing.assert_allclose((weights * COUNTS).sum(), COUNTS.sum())


def test_effective_number_weights_match_the_formula():
    """Cui et al. 2019: w_c ∝ (1 − β) / (1 − β^n_c), here with β = 0.999 (Steppan & Hanke)."""
    beta = 0.999
    weights = class_weights(COUNTS, scheme="effective", beta=beta)
    raw = (1 - beta) / (1 - beta**COUNTS)
    np.testing.assert_allclose(weights / weights[0], raw / raw[0], rtol=1e-12)
    # scaled so that the weighted number of images is the real one
    np.testing.assert_allclose((weights * COUNTS).sum(), COUNTS.sum())
    # by hand for two classes: effective numbers (1 − β^n)/(1 − β)
    two = class_weights([1000, 100], scheme="effective", beta=beta)
    e1, e2 = (1 - beta**1000) / (1 - beta), (1 - beta**100) / (1 - beta)
    assert two[1] / two[0] == pytest.approx(e1 / e2)
    assert e1 == pytest.approx(632.3, abs=0.1) and e2 == pytest.approx(95.2, abs=0.1)
    # between no weighting (β → 0) and inverse frequency (β → 1)
    prior = effective_priors(COUNTS, weights)
    assert prior.max() < COUNTS.max() / COUNTS.sum() and prior.max() > 1 / 7
    near_zero = class_weights(COUNTS, scheme="effective", beta=1e-9)
    np.testing.assert_allclose(near_zero, np.ones(7), rtol=1e-6)
    near_one = class_weights(COUNTS, scheme="effective", beta=1 - 1e-9)
    np.testing.assert_allclose(near_one, class_weights(COUNTS, scheme="inverse"), rtol=1e-4)


def test_bad_class_weight_settings():
    with pytest.raises(ZooError, match=r"class_weight_beta must be in \(0, 1\); got 1.0"):
        class_weights(COUNTS, scheme="effective", beta=1.0)
    with pytest.raises(ZooError, match="class_weight must be one of none, inverse, effective"):
        class_weights(COUNTS, scheme="sqrt")

import math

import numpy as np
import pytest

from sgmcmc.schedules import Constant, Cyclical, Polynomial, as_schedule


def test_constant_values_and_robbins_monro():
    schedule = Constant(0.01)
    assert schedule(0) == schedule(10**6) == 0.01
    assert not schedule.satisfies_robbins_monro()


def test_polynomial_values_at_hand_computed_points():
    schedule = Polynomial(a=2.0, b=1.0, gamma=0.5)
    assert schedule(0) == pytest.approx(2.0)
    assert schedule(3) == pytest.approx(2.0 / 2.0)  # 2 * 4^(-1/2)
    assert schedule(8) == pytest.approx(2.0 / 3.0)  # 2 * 9^(-1/2)
    np.testing.assert_allclose(Polynomial(a=1.0, b=10.0, gamma=1.0).values(3), [0.1, 1 / 11, 1 / 12])


@pytest.mark.parametrize(
    ("gamma", "expected"),
    [(0.0, False), (0.3, False), (0.5, False), (0.51, True), (0.55, True), (1.0, True), (1.01, False), (2.0, False)],
)
def test_polynomial_robbins_monro_iff_half_to_one(gamma, expected):
    assert Polynomial(a=1.0, b=1.0, gamma=gamma).satisfies_robbins_monro() is expected


def test_as_schedule():
    assert as_schedule(0.5) == Constant(0.5)
    assert as_schedule(np.float32(0.5)) == Constant(0.5)  # numpy scalars, as every other hyperparameter
    assert as_schedule(np.int64(1)) == Constant(1.0)
    schedule = Polynomial(a=1.0)
    assert as_schedule(schedule) is schedule


@pytest.mark.parametrize("bad", [0.0, -1.0, math.nan, math.inf])
def test_bad_step_sizes_are_value_errors(bad):
    with pytest.raises(ValueError, match="step_size"):
        Constant(bad)
    with pytest.raises(ValueError, match="a must be"):
        Polynomial(a=bad)


def test_bad_polynomial_arguments():
    with pytest.raises(ValueError, match="b must be"):
        Polynomial(a=1.0, b=0.0)
    with pytest.raises(ValueError, match="gamma"):
        Polynomial(a=1.0, gamma=-0.5)
    with pytest.raises(ValueError, match=r"first step .* is inf; it must be a finite number > 0"):
        Polynomial(a=1.0, b=1e-200, gamma=2.0)  # 1e400 overflows
    with pytest.raises(ValueError, match="first step .* is inf"):
        Polynomial(a=1e300, b=1e-10, gamma=2.0)
    with pytest.raises(ValueError, match=r"first step .* is 0.0; it must be a finite number > 0"):
        Polynomial(a=1e-300, b=1e300, gamma=1.0)  # 1e-600 underflows: a sampler that never moves
    with pytest.raises(TypeError, match="step_size"):
        as_schedule("0.1")


@pytest.mark.parametrize("schedule", [Constant(0.1), Polynomial(a=1.0), Cyclical(0.1, num_cycles=2, total_steps=10)])
def test_a_step_that_is_not_a_count_is_refused_by_name(schedule):
    """Before, Polynomial(1.0)(-5) was the complex number (−0.07−0.46j), values(-1) an empty array, and a
    float step Python's own TypeError from range()."""
    for step in (-1, -5):
        with pytest.raises(ValueError, match=f"step must be >= 0, got {step}"):
            schedule(step)
    with pytest.raises(TypeError, match="step must be an integer, got float"):
        schedule(2.5)
    with pytest.raises(ValueError, match="num_steps must be >= 0, got -1"):
        schedule.values(-1)
    with pytest.raises(TypeError, match="num_steps must be an integer, got float"):
        schedule.values(2.5)
    assert schedule.values(0).shape == (0,)

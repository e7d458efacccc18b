"""SGNHT: the thermostat rule, adaptation to unknown gradient noise, known posteriors."""

import numpy as np
import pytest
import torch

import sgmcmc
from targets import (
    ConjugateLinearRegression,
    DoubleWell,
    assert_moments,
    assert_within_budget,
    correlated_gaussian,
    standard_normal_log_posterior,
)


def test_thermostat_integrates_the_kinetic_temperature_gap():
    """ξ_N − ξ_0 = h Σ_{t=1..N} (p_t⊤p_t/n − T) exactly, the rule of Algorithm 2."""
    step_size, temperature, dimension, num_steps = 0.1, 0.7, 3, 400
    trace = sgmcmc.SGNHT(
        standard_normal_log_posterior, step_size=step_size, diffusion=2.0, temperature=temperature
    ).sample(torch.zeros(dimension, dtype=torch.float64), num_chains=2, num_steps=num_steps, seed=0, progress=False)
    kinetic = trace.sample_stats["kinetic_energy"]  # p_t⊤p_t/2 for t = 0 … N − 1
    final_momentum = trace.final_state["momentum"]["theta"].numpy()
    squared_norms = np.concatenate([2 * kinetic[:, 1:], (final_momentum**2).sum(axis=1, keepdims=True)], axis=1)
    integral = step_size * (squared_norms / dimension - temperature).sum(axis=1)
    thermostat = trace.sample_stats["thermostat"]
    np.testing.assert_allclose(thermostat[:, 0], 2.0)
    np.testing.assert_allclose(trace.final_state["thermostat"].numpy() - thermostat[:, 0], integral, rtol=1e-10)


def test_adapts_to_unknown_gradient_noise_on_figure_1():
    """Noisy gradients ∇U + N(0, 4) that SGNHT is not told about: the draws match exp(−U)/Z."""
    well = DoubleWell()
    trace = sgmcmc.SGNHT(well.noisy_log_posterior, step_size=0.1, diffusion=1.0).sample(
        torch.zeros(1, dtype=torch.float64),
        well.noisy_gradients,
        num_chains=8,
        num_steps=8000,
        burn_in=1000,
        seed=1,
        progress=False,
    )
    well.assert_matches_exact_density(trace.posterior["theta"][..., 0])
    # the thermostat settled above A = 1: it absorbed the extra (gradient-noise) heat
    assert trace.sample_stats["thermostat"][:, -2000:].mean() > 1.1


def test_correlated_gaussian_mean_and_covariance():
    log_posterior, mean, covariance = correlated_gaussian()
    trace = sgmcmc.SGNHT(log_posterior, step_size=0.03, diffusion=1.0).sample(
        torch.tensor(mean), num_chains=8, num_steps=8000, burn_in=500, seed=2, progress=False
    )
    assert_moments(trace.posterior["theta"], mean, covariance, relative_bias=0.01)


def test_conjugate_linear_regression_with_minibatches():
    model = ConjugateLinearRegression.make(num_data=1000, dim=3, seed=0)
    mean, covariance = model.posterior()
    data = sgmcmc.Minibatches(model.features, model.targets, batch_size=100)
    # Started at the least-squares fit, as after an optimizer warm-up: from far away the
    # thermostat overshoots and then needs about ξ/h steps to cool down (see the SGNHT docstring).
    least_squares = torch.linalg.lstsq(model.features, model.targets[:, None]).solution[:, 0]
    trace = sgmcmc.SGNHT(model.log_posterior(), step_size=2e-3, diffusion=1.0).sample(
        least_squares, data, num_chains=8, num_steps=6000, burn_in=1000, seed=3, progress=False
    )
    assert_within_budget(trace.posterior["theta"], mean, covariance, budget=0.1)


def test_each_parameter_keeps_its_dtype():
    init = {"wide": torch.zeros(2, dtype=torch.float64), "narrow": torch.zeros(3, dtype=torch.float32)}
    trace = sgmcmc.SGNHT(lambda params: -0.5 * sum((value**2).sum() for value in params.values()), 0.01).sample(
        init, num_chains=2, num_steps=5, seed=0, progress=False
    )
    for name, value in init.items():
        assert trace.final_state["params"][name].dtype == value.dtype
        assert trace.final_state["momentum"][name].dtype == value.dtype
    assert trace.final_state["thermostat"].dtype == torch.float64


def test_errors():
    with pytest.raises(ValueError, match="diffusion must be a finite number > 0"):
        sgmcmc.SGNHT(standard_normal_log_posterior, step_size=0.1, diffusion=0.0)
    with pytest.raises(ValueError, match="step_size"):
        sgmcmc.SGNHT(standard_normal_log_posterior, step_size=-0.1)

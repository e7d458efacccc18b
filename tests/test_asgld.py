"""ASGLD follows Algorithm 1 of seed 003 exactly: closed-form moments of the first updates, ψ = 0 is SGD."""

import numpy as np
import pytest
import torch

import sgmcmc
from sgmcmc.asgld import asgld_step
from targets import K_SIGMA

CURVATURE, STEP, RHO, PSI = 2.0, 0.1, 0.9, 3.0


def quadratic(theta: torch.Tensor) -> torch.Tensor:
    """log p = −a θ²/2, so the loss gradient is g = a θ."""
    return -0.5 * CURVATURE * (theta**2).sum()


def algorithm_1_moments(theta_1: float) -> list[tuple[float, float]]:
    """Mean and variance of θ_2 and θ_3 implied by Algorithm 1 (μ_0 = C_0 = 0) on the quadratic."""
    a, eta, rho, psi = CURVATURE, STEP, RHO, PSI
    g_1 = a * theta_1
    mu_1, c_1 = (1 - rho) * g_1, rho * (1 - rho) * g_1**2
    mean_2, var_2 = theta_1 - eta * (g_1 + psi * mu_1), eta**2 * psi**2 * c_1
    contraction = 1 - eta * a * (1 + psi * (1 - rho))
    mean_3 = contraction * mean_2 - eta * psi * rho * mu_1
    expected_c_2 = rho * c_1 + (1 - rho) * rho * (a**2 * var_2 + (a * mean_2 - mu_1) ** 2)
    var_3 = contraction**2 * var_2 + eta**2 * psi**2 * expected_c_2
    return [(mean_2, var_2), (mean_3, var_3)]


def test_first_two_updates_match_algorithm_1_in_distribution():
    num_chains = 20_000
    trace = sgmcmc.ASGLD(quadratic, step_size=STEP, momentum=RHO, noise=PSI).sample(
        torch.ones(1, dtype=torch.float64), num_chains=num_chains, num_steps=3, seed=0, progress=False
    )
    draws = trace.posterior["theta"][..., 0]  # θ_1 (the start), θ_2, θ_3
    assert (draws[:, 0] == 1.0).all()
    for column, (mean, variance) in zip((1, 2), algorithm_1_moments(1.0), strict=True):
        values = draws[:, column]
        assert abs(values.mean() - mean) < K_SIGMA * np.sqrt(variance / num_chains), (column, values.mean(), mean)
        # s.e. of a sample variance: sqrt((m4 − σ⁴)/n), with the sample's own fourth moment
        fourth = ((values - values.mean()) ** 4).mean()
        assert abs(values.var() - variance) < K_SIGMA * np.sqrt((fourth - variance**2) / num_chains), column


def test_zero_noise_is_plain_sgd():
    trace = sgmcmc.ASGLD(quadratic, step_size=STEP, momentum=RHO, noise=0.0).sample(
        torch.ones(1, dtype=torch.float64), num_chains=2, num_steps=5, seed=0, progress=False
    )
    np.testing.assert_allclose(trace.posterior["theta"][0, :, 0], (1 - STEP * CURVATURE) ** np.arange(5), rtol=1e-12)


def test_errors():
    with pytest.raises(ValueError, match="momentum must be in"):
        sgmcmc.ASGLD(quadratic, step_size=0.1, momentum=1.0)
    with pytest.raises(ValueError, match="noise must be a finite number >= 0"):
        sgmcmc.ASGLD(quadratic, step_size=0.1, noise=-1.0)


def test_the_step_is_elementwise():
    """asgld_step on (2 chains, 3 elements) with different g, μ, C and z in every element equals Algorithm 1
    element by element (found by mutation testing: every other test used 1-element params, so a C averaged over
    a parameter's elements went unseen), and the trace keeps ρ and ψ under their own names."""
    generator = torch.Generator().manual_seed(0)
    gradient, mean, noise = (torch.randn(2, 3, generator=generator, dtype=torch.float64) for _ in range(3))
    variance = torch.rand(2, 3, generator=generator, dtype=torch.float64)
    momentum, step_size, noise_scale = 0.9, 0.1, 3.0
    params, new_mean, new_variance = asgld_step(
        {"w": torch.zeros(2, 3, dtype=torch.float64)},
        {"w": mean},
        {"w": variance},
        {"w": gradient},
        {"w": noise},
        step_size,
        momentum,
        noise_scale,
    )
    g, m, c, z = (value.numpy() for value in (gradient, mean, variance, noise))
    expected_mean = momentum * m + (1 - momentum) * g
    expected_variance = momentum * c + (1 - momentum) * (g - expected_mean) * (g - m)
    np.testing.assert_allclose(new_mean["w"].numpy(), expected_mean, rtol=1e-12)
    np.testing.assert_allclose(new_variance["w"].numpy(), expected_variance, rtol=1e-12)
    expected_params = -step_size * (g + noise_scale * (expected_mean + np.sqrt(np.maximum(expected_variance, 0)) * z))
    np.testing.assert_allclose(params["w"].numpy(), expected_params, rtol=1e-12)

    trace = sgmcmc.ASGLD(lambda theta: -0.5 * (theta**2).sum(), step_size=0.1, momentum=0.9, noise=3.0).sample(
        torch.zeros(1), num_steps=2, progress=False
    )
    assert trace.attrs["noise"] == 3.0 and trace.attrs["momentum"] == 0.9

"""SGLD: the update rule pinned by its exact discrete-time stationary law, and a conjugate posterior."""

import numpy as np
import pytest
import torch

import sgmcmc
from sgmcmc.sgld import langevin_step
from targets import (
    K_SIGMA,
    GaussianMean,
    assert_exact_law,
    mean_and_se,
    minibatch_stationary_covariance,
    standard_normal_log_posterior,
    variance_about_and_se,
)


@pytest.mark.parametrize("sampler_class", [sgmcmc.LD, sgmcmc.SGLD])
@pytest.mark.parametrize("step_size", [0.2, 0.8])
def test_stationary_variance_is_the_discrete_time_value(sampler_class, step_size):
    """θ ← (1 − η)θ + sqrt(2η)ξ on N(0, I) is AR(1) with variance 1/(1 − η/2), not 1."""
    trace = sampler_class(standard_normal_log_posterior, step_size=step_size).sample(
        torch.zeros(2, dtype=torch.float64), num_chains=8, num_steps=4000, burn_in=200, seed=1, progress=False
    )
    exact = 1.0 / (1.0 - step_size / 2.0)
    for dim in range(2):
        draws = trace.posterior["theta"][:, :, dim]
        variance, se = variance_about_and_se(draws, center=0.0)
        assert abs(variance - exact) < K_SIGMA * se, (variance, exact, se)
        assert abs(variance - 1.0) > K_SIGMA * se, "the test cannot tell the discrete-time law from N(0, 1)"
        mean, mean_se = mean_and_se(draws)
        assert abs(mean) < K_SIGMA * mean_se


def test_zero_temperature_is_gradient_descent():
    trace = sgmcmc.SGLD(standard_normal_log_posterior, step_size=0.1, temperature=0.0).sample(
        torch.ones(3), num_chains=2, num_steps=4, seed=0, progress=False
    )
    expected = 0.9 ** np.arange(4)
    np.testing.assert_allclose(trace.posterior["theta"][0, :, 0], expected, rtol=1e-6)


def test_temperature_scales_the_stationary_variance():
    """The stationary law of θ ← θ − ηθ + sqrt(2ηT)ξ has variance T/(1 − η/2)."""
    temperature, step_size = 0.25, 0.2
    trace = sgmcmc.SGLD(standard_normal_log_posterior, step_size=step_size, temperature=temperature).sample(
        torch.zeros(1, dtype=torch.float64), num_chains=8, num_steps=4000, burn_in=200, seed=2, progress=False
    )
    variance, se = variance_about_and_se(trace.posterior["theta"][..., 0], center=0.0)
    assert abs(variance - temperature / (1 - step_size / 2)) < K_SIGMA * se


def test_minibatch_chain_has_the_exact_law_with_gradient_noise():
    """N = 1000 observations of a 3-D Gaussian mean, batches of 100, ηh = 0.1: θ − μ ← (1 − ηh)(θ − μ) + η c
    + sqrt(2η) ξ, c the minibatch gradient's error. Mean and covariance are that chain's exact law, with
    the epoch's errors summing to 0; the test tells it from the posterior, exact gradients and
    independent batches."""
    model = GaussianMean.make(num_data=1000, dim=3, seed=0)
    mean, covariance = model.posterior()
    step_size, batch_size = 0.1 / model.precision, 100
    identity = np.eye(len(mean))
    gradient_noise = model.gradient_noise_covariance(batch_size)

    def law(gradient_noise, batches_per_epoch):
        transition = (1 - step_size * model.precision) * identity
        return minibatch_stationary_covariance(
            transition, step_size * identity, 2 * step_size * identity, gradient_noise, batches_per_epoch
        )

    trace = sgmcmc.SGLD(model.log_posterior(), step_size=step_size).sample(
        torch.as_tensor(mean),
        sgmcmc.Minibatches(model.observations, batch_size=batch_size),
        num_chains=16,
        num_steps=4200,
        burn_in=200,
        seed=3,
        progress=False,
    )
    assert_exact_law(
        trace.posterior["theta"],
        mean,
        law(gradient_noise, batches_per_epoch=10),
        others={
            "the posterior": covariance,
            "exact gradients": law(0 * gradient_noise, batches_per_epoch=10),
            "independent batches": law(gradient_noise, batches_per_epoch=None),
        },
    )


def test_float16_params_move_by_small_step_sizes():
    """foreach's alpha is rounded to the params' dtype: in float16 η = 2e-8 became 0 and η = 1e-7 1.19e-7, so
    a float16 chain silently took no drift, or 19% too much (found by a review); the default now adds in the
    plain form, whose scalar product is taken before the rounding."""
    zeros = {"theta": torch.zeros(1, 3, dtype=torch.float16)}
    gradient = {"theta": torch.full((1, 3), 1e4, dtype=torch.float16)}
    for step_size in (2e-8, 1e-7):
        moved = langevin_step(zeros, gradient, zeros, step_size, temperature=0.0)["theta"]
        torch.testing.assert_close(moved.float(), torch.full((1, 3), 1e4 * step_size), rtol=2**-10, atol=0)
    trace = sgmcmc.SGLD(lambda theta: 1e4 * theta.sum(), step_size=2e-8, temperature=0.0).sample(
        torch.zeros(3, dtype=torch.float16), num_chains=1, num_steps=4, seed=0, progress=False
    )
    np.testing.assert_allclose(trace.posterior["theta"][0, :, 0], 2e-4 * np.arange(4), rtol=2**-9)


def test_float16_params_beside_float32_ones_move_by_small_step_sizes():
    params = {"half": torch.zeros(1, 3, dtype=torch.float16), "single": torch.zeros(1, 3)}
    gradient = {name: torch.full_like(value, 1e4) for name, value in params.items()}
    moved = langevin_step(params, gradient, params, 2e-8, temperature=0.0)
    torch.testing.assert_close(moved["half"].float(), torch.full((1, 3), 2e-4), rtol=2**-10, atol=0)
    torch.testing.assert_close(moved["single"], torch.full((1, 3), 2e-4))


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_foreach_update_equals_the_plain_update(temperature):
    generator = torch.Generator().manual_seed(0)
    shapes = {"weight": (4, 3, 2), "bias": (4, 2), "scale": (4,)}
    params, gradient, noise = (
        {name: torch.randn(shape, generator=generator) for name, shape in shapes.items()} for _ in range(3)
    )
    fused = langevin_step(params, gradient, noise, 0.01, temperature, foreach=True)
    plain = langevin_step(params, gradient, noise, 0.01, temperature, foreach=False)
    assert list(fused) == list(plain)
    for name in shapes:
        torch.testing.assert_close(fused[name], plain[name])
    assert all(params[name] is not fused[name] for name in shapes)

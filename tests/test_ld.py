"""LD with and without the Metropolis correction (MALA)."""

import numpy as np
import pytest
import torch

import sgmcmc
from targets import (
    K_SIGMA,
    ConjugateLinearRegression,
    mean_and_se,
    standard_normal_log_posterior,
    variance_about_and_se,
)

LARGE_STEP = 1.5  # plain LD's stationary variance is 1/(1 − 0.75) = 4 here


def _run(metropolis: bool) -> sgmcmc.Trace:
    return sgmcmc.LD(standard_normal_log_posterior, step_size=LARGE_STEP, metropolis=metropolis).sample(
        torch.zeros(2, dtype=torch.float64), num_chains=8, num_steps=3000, burn_in=200, seed=4, progress=False
    )


def exact_mala_acceptance_rate(step_size: float, dim: int, num_samples: int = 2_000_000) -> tuple[float, float]:
    """E[min(1, r)] for MALA on N(0, I) at stationarity, θ ~ N(0, I), θ' = (1 − η)θ + sqrt(2η)ξ, by
    Monte Carlo with independent draws (its value, s.e.); log r = log π(θ') − log π(θ) + log q(θ | θ')
    − log q(θ' | θ) with q(y | x) = N(y; (1 − η)x, 2η I)."""
    generator = np.random.default_rng(0)
    theta = generator.standard_normal((num_samples, dim))
    proposal = (1 - step_size) * theta + np.sqrt(2 * step_size) * generator.standard_normal((num_samples, dim))

    def log_proposal(to, start):
        return -(((to - (1 - step_size) * start) ** 2).sum(-1)) / (4 * step_size)

    log_ratio = (
        -0.5 * (proposal**2).sum(-1)
        + 0.5 * (theta**2).sum(-1)
        + log_proposal(theta, proposal)
        - log_proposal(proposal, theta)
    )
    rate = np.exp(np.minimum(log_ratio, 0.0))
    return float(rate.mean()), float(rate.std() / np.sqrt(num_samples))


def test_mala_is_exact_at_a_step_where_plain_ld_is_far_off():
    adjusted, plain = _run(metropolis=True), _run(metropolis=False)
    for dim in range(2):
        variance, se = variance_about_and_se(adjusted.posterior["theta"][..., dim], center=0.0)
        assert abs(variance - 1.0) < K_SIGMA * se, (variance, se)
        plain_variance, plain_se = variance_about_and_se(plain.posterior["theta"][..., dim], center=0.0)
        assert abs(plain_variance - 4.0) < K_SIGMA * plain_se
        assert abs(plain_variance - 1.0) > K_SIGMA * (se + plain_se)
    acceptance = adjusted.sample_stats["acceptance_rate"]
    assert acceptance.shape == adjusted.sample_stats["lp"].shape
    rate, rate_se = mean_and_se(acceptance)
    exact, exact_se = exact_mala_acceptance_rate(LARGE_STEP, dim=2)
    assert abs(rate - exact) < K_SIGMA * np.hypot(rate_se, exact_se), (rate, exact)
    assert "acceptance_rate" not in plain.sample_stats


def test_mala_is_exact_at_a_temperature():
    """At T = 0.5 the target is N(0, T I). In u = θ/√T the chain is the T = 1 chain (θ' = (1 − η)θ +
    sqrt(2ηT)ξ), so the acceptance rate is the T = 1 value; T entering the ratio as ×T instead of /T,
    or the proposal density without T, breaks both the variance and the rate."""
    temperature = 0.5
    sampler = sgmcmc.LD(standard_normal_log_posterior, step_size=LARGE_STEP, temperature=temperature, metropolis=True)
    trace = sampler.sample(
        torch.zeros(2, dtype=torch.float64), num_chains=8, num_steps=3000, burn_in=200, seed=5, progress=False
    )
    for dim in range(2):
        variance, se = variance_about_and_se(trace.posterior["theta"][..., dim], center=0.0)
        assert abs(variance - temperature) < K_SIGMA * se, (variance, se)
        assert abs(variance - 1.0) > K_SIGMA * se and abs(variance - temperature**2) > K_SIGMA * se
    rate, rate_se = mean_and_se(trace.sample_stats["acceptance_rate"])
    exact, exact_se = exact_mala_acceptance_rate(LARGE_STEP, dim=2)
    assert abs(rate - exact) < K_SIGMA * np.hypot(rate_se, exact_se), (rate, exact)


@pytest.mark.parametrize("metropolis", [True, False], ids=["MALA", "plain LD"])
def test_lp_stat_is_the_exact_log_posterior_of_the_draw(metropolis):
    """Plain LD's too (found by mutation testing: its lp of the proposal, one step ahead of the draw, went unseen)."""
    trace = _run(metropolis=metropolis)
    theta = trace.posterior["theta"]
    np.testing.assert_allclose(trace.sample_stats["lp"], -0.5 * (theta**2).sum(axis=-1), rtol=1e-12)


def test_ld_uses_the_full_data():
    """Full-batch LD with MALA on the conjugate regression recovers the exact posterior (no bias budget),
    and its lp stat is the full-data log posterior of each draw, not a minibatch estimate."""
    model = ConjugateLinearRegression.make(num_data=200, dim=2, seed=5)
    mean, covariance = model.posterior()
    data = sgmcmc.Minibatches(model.features, model.targets, batch_size=20)
    trace = sgmcmc.LD(model.log_posterior(), step_size=2e-3, metropolis=True).sample(
        torch.tensor(mean), data, num_chains=8, num_steps=1500, burn_in=100, seed=6, progress=False
    )
    for dim in range(2):
        draws = trace.posterior["theta"][..., dim]
        draws_mean, se = mean_and_se(draws)
        assert abs(draws_mean - mean[dim]) < K_SIGMA * se
        variance, variance_se = variance_about_and_se(draws, center=mean[dim])
        assert abs(variance - covariance[dim, dim]) < K_SIGMA * variance_se
    theta = torch.as_tensor(trace.posterior["theta"]).reshape(-1, 2)
    full = (model.features, model.targets)
    exact_lp = torch.stack([model.log_posterior()(point, full) for point in theta]).reshape(8, -1)
    np.testing.assert_allclose(trace.sample_stats["lp"], exact_lp.numpy(), rtol=1e-12)


def test_mala_needs_positive_temperature():
    with pytest.raises(ValueError, match="temperature > 0"):
        sgmcmc.LD(standard_normal_log_posterior, step_size=0.1, temperature=0.0, metropolis=True)


def test_metropolis_must_be_a_bool():
    with pytest.raises(TypeError, match="metropolis must be True or False, got str 'False'"):
        sgmcmc.LD(standard_normal_log_posterior, step_size=0.1, metropolis="False")  # bool("False") is True


def test_a_proposal_outside_the_support_is_rejected_with_acceptance_rate_zero():
    """log p = −θ²/2 + log(1 − 10¹²θ²) is NaN outside |θ| < 10⁻⁶, where every proposal from 0 lands (found by
    mutation testing: a NaN log acceptance counted as 0 recorded such rejections as acceptance_rate 1)."""

    def log_posterior(theta):
        return -0.5 * (theta**2).sum() + torch.log(1 - 1e12 * (theta**2).sum())

    trace = sgmcmc.LD(log_posterior, step_size=0.5, metropolis=True).sample(
        torch.zeros(1, dtype=torch.float64), num_chains=2, num_steps=20, seed=0, progress=False
    )
    assert (trace.posterior["theta"] == 0).all()
    np.testing.assert_array_equal(trace.sample_stats["acceptance_rate"], 0.0)


def test_acceptance_rate_is_the_metropolis_probability_of_each_move():
    """On N(0, I) at T = 1 the proposal from a is N((1 − η) a, 2η I), so every accepted move a → b had
    α = min(1, p(b) q(a | b) / (p(a) q(b | a))) in closed form; the stat is α, not the 0/1 outcome (found by
    mutation testing: the outcome has the same mean, which the rate test alone cannot tell)."""
    step_size = 1.5
    trace = sgmcmc.LD(standard_normal_log_posterior, step_size=step_size, metropolis=True).sample(
        torch.zeros(2, dtype=torch.float64), num_chains=4, num_steps=300, seed=4, progress=False
    )
    draws, rates = trace.posterior["theta"], trace.sample_stats["acceptance_rate"]
    before, after = draws[:, :-1], draws[:, 1:]  # the stat of draw t is that of the move from it

    def log_proposal(to, start):
        return -((to - (1 - step_size) * start) ** 2).sum(-1) / (4 * step_size)

    log_ratio = (before**2 - after**2).sum(-1) / 2 + log_proposal(before, after) - log_proposal(after, before)
    moved = (before != after).any(-1)
    assert 0.1 < moved.mean() < 0.99
    np.testing.assert_allclose(rates[:, :-1][moved], np.exp(np.minimum(log_ratio, 0))[moved], rtol=1e-10)
    assert trace.attrs["metropolis"] in (True, 1)  # the trace says which sampler made it (a checkpoint compares it)

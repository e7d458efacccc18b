"""pSGLD: the update of Li et al. (2016), Alg. 1, in our convention; the Γ term against autograd."""

import math
import warnings

import numpy as np
import pytest
import torch

import sgmcmc
from sgmcmc.chains import ChainGenerators
from sgmcmc.psgld import psgld_step
from targets import K_SIGMA, standard_normal_log_posterior, variance_about_and_se

ALPHA, EPS = 0.9, 1e-3
SCALES = torch.tensor([0.5, 3.0], dtype=torch.float64)


def separable(theta: torch.Tensor) -> torch.Tensor:
    """A non-Gaussian separable log density: −Σ (θ/s)⁴/4 − (θ/s)²/2 (its Hessian is diagonal)."""
    scaled = theta / SCALES
    return -(scaled**4 / 4 + scaled**2 / 2).sum()


def test_zero_temperature_step_is_rmsprop_ascent():
    trace = sgmcmc.PSGLD(separable, step_size=0.01, alpha=ALPHA, eps=EPS, temperature=0.0).sample(
        torch.ones(2, dtype=torch.float64), num_chains=1, num_steps=3, seed=0, progress=False
    )
    theta, square_average = torch.ones(2, dtype=torch.float64), torch.zeros(2, dtype=torch.float64)
    for step in range(3):
        np.testing.assert_allclose(trace.posterior["theta"][0, step], theta.numpy(), rtol=1e-12)
        gradient = torch.func.grad(separable)(theta)
        square_average = ALPHA * square_average + (1 - ALPHA) * gradient**2
        theta = theta + 0.01 * gradient / (EPS + square_average.sqrt())


def test_gamma_is_the_divergence_of_the_preconditioner():
    """Γ_i = ∂G_i/∂θ_i with G(θ) = 1/(λ + sqrt(αV + (1−α) g(θ)²)); for a separable target Hutchinson's
    estimate z ⊙ Hz of the Hessian diagonal is exact, so one step must match autograd."""
    theta = torch.tensor([0.7, -1.3], dtype=torch.float64)
    previous = torch.tensor([0.2, 0.05], dtype=torch.float64)

    def preconditioner(point):
        gradient = torch.func.grad(separable)(point)
        return 1 / (EPS + torch.sqrt(ALPHA * previous + (1 - ALPHA) * gradient**2))

    gamma = torch.diagonal(torch.func.jacrev(preconditioner)(theta))
    gradient = torch.func.grad(separable)(theta)
    hessian_diagonal = torch.diagonal(torch.func.hessian(separable)(theta))
    step, temperature = 0.01, 0.7
    zero_noise = {"x": torch.zeros(1, 2, dtype=torch.float64)}
    with_gamma, _ = psgld_step(
        {"x": theta[None]},
        {"x": previous[None]},
        {"x": gradient[None]},
        zero_noise,
        step,
        ALPHA,
        EPS,
        temperature,
        {"x": hessian_diagonal[None]},
    )
    expected = theta + step * (preconditioner(theta) * gradient + temperature * gamma)
    torch.testing.assert_close(with_gamma["x"][0], expected)


def test_the_sampler_estimates_the_hessian_diagonal_with_rademacher_probes():
    """On a separable target z ⊙ Hz with z = ±1 is the exact Hessian diagonal, so the sampler's first step
    is psgld_step with the exact diagonal and the chain's noise (the draws replayed: the probe, then ξ)."""
    theta, step_size, temperature = torch.tensor([0.7, -1.3], dtype=torch.float64), 0.01, 0.7
    sampler = sgmcmc.PSGLD(
        separable, step_size=step_size, alpha=ALPHA, eps=EPS, temperature=temperature, gamma_correction=True
    )
    trace = sampler.sample(theta, num_chains=1, num_steps=2, seed=[123], progress=False)
    replayed = ChainGenerators([123], torch.device("cpu"))
    replayed.normal_like({"x": theta[None]})  # the probe's draw, whose signs the exact diagonal does not need
    expected, _ = psgld_step(
        {"x": theta[None]},
        {"x": torch.zeros(1, 2, dtype=torch.float64)},
        {"x": torch.func.grad(separable)(theta)[None]},
        replayed.normal_like({"x": theta[None]}),
        step_size,
        ALPHA,
        EPS,
        temperature,
        {"x": torch.diagonal(torch.func.hessian(separable)(theta))[None]},
    )
    np.testing.assert_allclose(trace.posterior["theta"][0, 1], expected["x"][0].numpy(), rtol=1e-12)


def _law_run(variances, alpha, temperature=1.0, seed=1, step_size=0.03):
    """pSGLD (no Γ, ε = 1e-5) on N(0, diag(variances)) from 0 ± 0.5, 16 chains × 6000 steps (1000 burn-in).

    Returns, per coordinate, θ's variance about 0, its s.e., and θ's variance under SGLD with this run's
    own final preconditioner G held fixed, T σ²/(1 − ηG/(2σ²)), averaged over the chains."""

    def log_posterior(theta):
        return -0.5 * (theta**2 / variances).sum()

    trace = sgmcmc.PSGLD(log_posterior, step_size=step_size, alpha=alpha, eps=1e-5, temperature=temperature).sample(
        torch.zeros(len(variances), dtype=torch.float64),
        num_chains=16,
        num_steps=6000,
        burn_in=1000,
        seed=seed,
        init_jitter=0.5,
        progress=False,
    )
    variance, se = np.array(
        [variance_about_and_se(trace.posterior["theta"][..., index], center=0.0) for index in range(len(variances))]
    ).T
    preconditioner = 1 / (trace.final_state["square_average"]["theta"].sqrt() + 1e-5)  # (chain, coordinate)
    law = (temperature * variances / (1 - step_size * preconditioner / (2 * variances))).mean(dim=0).numpy()
    return variance, se, law


def test_a_preconditioner_that_follows_the_gradient_biases_the_law():
    """Without Γ the stationary variance is inflated, the more the faster V follows g (small α); with
    α → 1 the preconditioner G = 1/(√V + ε) is nearly constant and the law is that of SGLD with the
    fixed preconditioner G: θ ← (1 − ηG/σ²) θ + sqrt(2ηG) ξ, variance σ²/(1 − ηG/(2σ²)) (ratio about
    1.03 here). The remaining bias without Γ (+0.41 at α = 0.9, +0.07 at 0.99, seeds 1 to 3) is about
    0.01 at α = 0.999, half the s.e. of 0.02 (which is too large to tell the O(η) term 0.03 from 0). Both
    coordinates, σ² = 0.25 and 4 (G about 0.5 and 2), are checked: z-scores of the α = 0.999 law from
    −0.8 to 2.4 over seeds 1-6; at α = 0.9 the σ² = 4 coordinate is 7.4 against 4.0 (5.8 s.e.)."""
    variances = torch.tensor([0.25, 4.0], dtype=torch.float64)
    (fast, fast_se, fast_law), (slow, slow_se, slow_law) = (_law_run(variances, alpha) for alpha in (0.9, 0.999))
    assert (fast - fast_law > K_SIGMA * fast_se).all(), (fast, fast_se, fast_law)  # biased
    assert (abs(slow - slow_law) < K_SIGMA * slow_se).all(), (slow, slow_se, slow_law)


def test_the_noise_scales_with_the_temperature():
    """At α = 0.999 (a nearly fixed preconditioner G) and T = 0.5 each coordinate's variance (σ² = 0.25
    and 4) is the fixed-preconditioner law of this run's own G, T σ²/(1 − ηG/(2σ²)), told apart from the
    same law at T = 1."""
    temperature = 0.5
    variance, se, law = _law_run(torch.tensor([0.25, 4.0], dtype=torch.float64), 0.999, temperature, seed=2)
    assert (abs(variance - law) < K_SIGMA * se).all(), (variance, law, se)
    assert (abs(variance - law / temperature) > K_SIGMA * se).all()


def test_a_start_where_the_gradient_vanishes_is_warned():
    """A weight of an all-zero feature, started at 0, has g = 0 there: with V_0 = 0 its first step's noise has
    sd sqrt(2η/λ) (14 here). Measured: the weight's draws then have sd 7-8 against the prior's 1 (1.3-1.4
    with init_jitter=0.5, the bias of a G that varies with θ)."""
    features = torch.randn(100, 2, generator=torch.Generator().manual_seed(0))
    features[:, 1] = 0
    labels = (features[:, 0] > 0).double()
    log_posterior = sgmcmc.minibatch_log_posterior(
        lambda w: -(w**2).sum() / 2,
        lambda w, batch: (
            -torch.nn.functional.binary_cross_entropy_with_logits(batch[0].double() @ w, batch[1], reduction="none")
        ),
        num_data=100,
    )
    data = sgmcmc.Minibatches(features, labels, batch_size=20)
    options = dict(num_chains=3, num_steps=2, seed=0, progress=False)
    sampler = sgmcmc.PSGLD(log_posterior, step_size=1e-3)
    with pytest.warns(
        RuntimeWarning, match=r"gradient at the initial params is about 0 .* 'theta' in chains \[0, 1, 2\]"
    ) as record:
        sampler.sample(torch.zeros(2, dtype=torch.float64), data, **options)
    assert [warning.filename for warning in record] == [__file__]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sampler.sample(torch.zeros(2, dtype=torch.float64), data, init_jitter=0.5, **options)


def test_errors():
    with pytest.raises(ValueError, match="alpha must be in"):
        sgmcmc.PSGLD(separable, step_size=0.1, alpha=1.0)
    with pytest.raises(ValueError, match="eps must be a finite number > 0"):
        sgmcmc.PSGLD(separable, step_size=0.1, eps=0.0)
    with pytest.raises(TypeError, match="gamma_correction must be True or False, got str 'False'"):
        sgmcmc.PSGLD(separable, step_size=0.1, gamma_correction="False")  # bool("False") would switch Γ on


def test_a_gradient_entry_of_exactly_zero_with_the_gamma_correction_does_not_divide_by_zero():
    """At θ = 0 of N(0, I) every entry of the first gradient is 0, where the correction's 1/√V would be 0/0
    (found by mutation testing: dividing there froze the chain as diverged at step 0)."""
    with pytest.warns(RuntimeWarning, match="gradient at the initial params is about 0"):
        trace = sgmcmc.PSGLD(standard_normal_log_posterior, step_size=0.01, gamma_correction=True).sample(
            torch.zeros(2, dtype=torch.float64), num_chains=2, num_steps=5, progress=False
        )
    assert (trace.diverged_at_step == -1).all() and np.isfinite(trace.posterior["theta"]).all()


@pytest.mark.parametrize("scale, warns", [(0.99, True), (1.01, False)])
def test_the_vanishing_first_gradient_warning_is_at_eps_over_sqrt_of_1_minus_alpha(scale, warns):
    """√(1 − α)|g| ≤ λ makes the first step's G near its cap 1/λ: at α = 0.75, λ = 0.01 the threshold is 0.02
    (found by mutation testing: λ / (1 − α) = 0.04 went unseen)."""
    gradient = scale * 0.01 / math.sqrt(1 - 0.75)

    def log_posterior(theta):  # ∇ = gradient everywhere
        return gradient * theta.sum()

    sampler = sgmcmc.PSGLD(log_posterior, step_size=1e-6, alpha=0.75, eps=0.01)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sampler.sample(torch.zeros(2, dtype=torch.float64), num_chains=1, num_steps=1, progress=False)
    assert any("gradient at the initial params is about 0" in str(warning.message) for warning in caught) == warns

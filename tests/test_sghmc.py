"""SGHMC: the update pinned by its exact discrete-time law, the paper's Figure 1, the high-friction limit."""

import math

import numpy as np
import pytest
import torch
from scipy import linalg, stats

import sgmcmc
from sgmcmc.sghmc import cancelled_gradient_noise, refreshed_momentum
from targets import (
    K_SIGMA,
    DoubleWell,
    GaussianMean,
    assert_exact_law,
    assert_moments,
    correlated_gaussian,
    ess,
    ks_bound,
    mean_and_se,
    minibatch_stationary_covariance,
    sghmc_linear_chain,
    standard_normal_log_posterior,
    variance_about_and_se,
)


def exact_stationary_covariance(step_size, friction, noise_estimate=0.0, temperature=1.0):
    """Stationary covariance of (θ, v) for SGHMC on N(0, 1): the discrete Lyapunov equation Σ = AΣA⊤ + Q."""
    transition, _, injected = sghmc_linear_chain(step_size, friction, 1.0, noise_estimate, temperature)
    return linalg.solve_discrete_lyapunov(transition, injected)


@pytest.mark.parametrize(("step_size", "friction"), [(0.3, 0.1), (0.5, 0.3)])
def test_stationary_law_is_the_exact_discrete_time_one(step_size, friction):
    covariance = exact_stationary_covariance(step_size, friction)
    trace = sgmcmc.SGHMC(standard_normal_log_posterior, step_size=step_size, friction=friction).sample(
        torch.zeros(2, dtype=torch.float64), num_chains=8, num_steps=6000, burn_in=500, seed=0, progress=False
    )
    for dim in range(2):
        variance, se = variance_about_and_se(trace.posterior["theta"][..., dim], center=0.0)
        assert abs(variance - covariance[0, 0]) < K_SIGMA * se, (variance, covariance[0, 0], se)
        assert abs(variance - 1.0) > K_SIGMA * se, "the test cannot tell the discrete-time law from N(0, 1)"
    kinetic, kinetic_se = mean_and_se(trace.sample_stats["kinetic_energy"])
    assert abs(kinetic - 2 * covariance[1, 1] / (2 * step_size)) < K_SIGMA * kinetic_se


def test_high_friction_limit_is_sgld():
    """friction → 1 with the SGLD step η/α: the discrete law converges to SGLD's, and equals it at α = 1."""
    sgld_step = 0.4
    sgld_variance = 1 / (1 - sgld_step / 2)
    gaps = [
        abs(exact_stationary_covariance(friction * sgld_step, friction)[0, 0] - sgld_variance)
        for friction in (0.3, 0.6, 0.9, 1.0)
    ]
    assert all(later < earlier for earlier, later in zip(gaps, gaps[1:], strict=False)) and gaps[-1] < 1e-12

    well = DoubleWell()
    runs = {}
    for name, sampler in [
        ("sghmc", sgmcmc.SGHMC(well.noisy_log_posterior, step_size=0.05, friction=1.0)),
        ("sgld", sgmcmc.SGLD(well.noisy_log_posterior, step_size=0.05)),
    ]:
        runs[name] = sampler.sample(
            torch.zeros(1, dtype=torch.float64),
            well.noisy_gradients,
            num_chains=8,
            num_steps=5000,
            burn_in=500,
            seed=1 if name == "sgld" else 2,
            progress=False,
        ).posterior["theta"][..., 0]
    first, second = ess(runs["sghmc"]), ess(runs["sgld"])
    distance = stats.ks_2samp(runs["sghmc"].ravel(), runs["sgld"].ravel()).statistic
    assert distance < ks_bound(first * second / (first + second)), distance


def test_figure_1_friction_matches_the_exact_density_naive_drifts_away():
    well = DoubleWell()
    step_size = 0.01
    noise_estimate = step_size * well.gradient_noise_variance / 2  # β̂ = ηV/2
    trace = sgmcmc.SGHMC(
        well.noisy_log_posterior, step_size=step_size, friction=0.1, noise_estimate=noise_estimate
    ).sample(
        torch.zeros(1, dtype=torch.float64),
        well.noisy_gradients,
        num_chains=8,
        num_steps=8000,
        burn_in=1000,
        seed=3,
        progress=False,
    )
    well.assert_matches_exact_density(trace.posterior["theta"][..., 0])

    # Naive SGHMC: no friction (1e-6) and no injected noise (noise_estimate = friction).
    naive = sgmcmc.SGHMC(well.noisy_log_posterior, step_size=step_size, friction=1e-6, noise_estimate=1e-6).sample(
        torch.zeros(1, dtype=torch.float64),
        well.noisy_gradients,
        num_chains=8,
        num_steps=2000,
        seed=3,
        progress=False,
    )
    naive_draws = naive.posterior["theta"][..., 0]
    assert well.ks_distance(naive_draws) > 3 * ks_bound(ess(naive_draws))
    kinetic = naive.sample_stats["kinetic_energy"]
    stationary_kinetic = 0.5  # d T / 2
    assert kinetic[:, -500:].mean() > 2 * kinetic[:, :500].mean() and kinetic[:, -500:].mean() > 20 * stationary_kinetic


def test_correlated_gaussian_mean_and_covariance():
    """Exact gradients on a 2-D Gaussian of correlation 0.9: θ's covariance is the exact law of the linear
    chain (targets.sghmc_linear_chain with the precision matrix), which here differs from the posterior's
    by at most 0.05%, within Monte Carlo error alone (no allowance for discretisation)."""
    log_posterior, mean, covariance = correlated_gaussian()
    step_size, friction = 2e-3, 0.05
    transition, _, injected = sghmc_linear_chain(step_size, friction, np.linalg.inv(covariance))
    exact = linalg.solve_discrete_lyapunov(transition, injected)[: len(mean), : len(mean)]
    trace = sgmcmc.SGHMC(log_posterior, step_size=step_size, friction=friction).sample(
        torch.tensor(mean), num_chains=8, num_steps=8000, burn_in=500, seed=4, progress=False
    )
    assert_moments(trace.posterior["theta"], mean, exact, relative_bias=0.0)


def test_minibatch_chain_has_the_exact_law_with_gradient_noise():
    """N = 1000 observations of a 3-D Gaussian mean, batches of 100, ηh = 0.05, α = 0.3: θ's mean and
    covariance and the mean kinetic energy are the exact law of the linear chain (targets.sghmc_linear_chain), with
    the epoch's gradient errors summing to 0; the test tells it from the posterior, exact gradients and
    independent batches."""
    model = GaussianMean.make(num_data=1000, dim=3, seed=0)
    mean, covariance = model.posterior()
    step_size, friction, batch_size = 0.05 / model.precision, 0.3, 100
    identity = np.eye(len(mean))
    per_coordinate = sghmc_linear_chain(step_size, friction, model.precision)
    transition, gradient_input, injected = (np.kron(matrix, identity) for matrix in per_coordinate)
    gradient_noise = model.gradient_noise_covariance(batch_size)

    def law(gradient_noise, batches_per_epoch):
        return minibatch_stationary_covariance(transition, gradient_input, injected, gradient_noise, batches_per_epoch)

    trace = sgmcmc.SGHMC(model.log_posterior(), step_size=step_size, friction=friction).sample(
        torch.as_tensor(mean),
        sgmcmc.Minibatches(model.observations, batch_size=batch_size),
        num_chains=16,
        num_steps=4200,
        burn_in=200,
        seed=5,
        progress=False,
    )
    exact = law(gradient_noise, batches_per_epoch=10)
    position = slice(0, len(mean))
    assert_exact_law(
        trace.posterior["theta"],
        mean,
        exact[position, position],
        others={
            "the posterior": covariance,
            "exact gradients": law(0 * gradient_noise, batches_per_epoch=10)[position, position],
            "independent batches": law(gradient_noise, batches_per_epoch=None)[position, position],
        },
    )
    kinetic, kinetic_se = mean_and_se(trace.sample_stats["kinetic_energy"])  # Σ v²/(2η)
    assert abs(kinetic - np.trace(exact[len(mean) :, len(mean) :]) / (2 * step_size)) < K_SIGMA * kinetic_se


def test_mass_m_is_step_size_over_m():
    """v' = (1 − α)v + (η/M)∇log p + N(0, 2αηT/M): mass M and step η move θ as mass 1 and step η/M."""
    common = dict(num_chains=3, num_steps=50, seed=6, progress=False)
    # M = 0.3 is not a float32 number: a float mass must reach float64 params unrounded
    heavy = sgmcmc.SGHMC(standard_normal_log_posterior, step_size=0.06, friction=0.3, mass=0.3).sample(
        torch.ones(2, dtype=torch.float64), **common
    )
    light = sgmcmc.SGHMC(standard_normal_log_posterior, step_size=0.2, friction=0.3).sample(
        torch.ones(2, dtype=torch.float64), **common
    )
    np.testing.assert_allclose(heavy.posterior["theta"], light.posterior["theta"], rtol=1e-10)
    # the same v and M v²/(2η) = v²/(2η/M): the kinetic energy of the two runs is the same too
    np.testing.assert_allclose(heavy.sample_stats["kinetic_energy"], light.sample_stats["kinetic_energy"], rtol=1e-10)
    per_element = sgmcmc.SGHMC(
        standard_normal_log_posterior, step_size=0.06, friction=0.3, mass=torch.full((2,), 0.3, dtype=torch.float64)
    ).sample(torch.ones(2, dtype=torch.float64), **common)
    np.testing.assert_allclose(per_element.posterior["theta"], heavy.posterior["theta"], rtol=1e-12)


def test_a_mass_that_requires_grad_is_taken_as_a_constant():
    """Before, such a mass (say, one made from a module's weights) chained every step's momentum into one
    autograd graph, which grew by each step's tensors for the whole run and came back in the final state."""
    mass = torch.full((2,), 0.3, dtype=torch.float64, requires_grad=True)
    trace = sgmcmc.SGHMC(standard_normal_log_posterior, step_size=0.06, friction=0.3, mass=mass).sample(
        torch.ones(2, dtype=torch.float64), num_chains=3, num_steps=5, seed=6, progress=False
    )
    assert not any(leaf.requires_grad for leaf in trace.final_state["momentum"].values())
    assert not any(leaf.requires_grad for leaf in trace.final_state["params"].values())


def _resampling_sghmc_variance(step_size, friction, every, temperature=1.0):
    trace = sgmcmc.SGHMC(
        standard_normal_log_posterior,
        step_size=step_size,
        friction=friction,
        temperature=temperature,
        resample_momentum_every=every,
    ).sample(torch.zeros(2, dtype=torch.float64), num_chains=8, num_steps=6000, burn_in=500, seed=3, progress=False)
    assert trace.attrs["resample_momentum_every"] == every
    return [variance_about_and_se(trace.posterior["theta"][..., dim], center=0.0) for dim in range(2)]


def test_momentum_resampling_leaves_the_exact_discrete_law_as_it_was(monkeypatch):
    """A refresh every 5 steps draws v from its law given θ under the chain, which on N(0, 1) is the exact
    conditional of the discrete chain's stationary (θ, v) law, so θ keeps that law. Before, v was drawn
    from N(0, ηT/M) independently of θ, as in the paper's Algorithm 2: θ's variance fell well below it
    (that refresh, patched back in below, fails the same check: 0.86 and 0.88 against 1.013, s.e. 0.02)."""
    step_size, friction, every = 0.05, 0.1, 5
    exact = exact_stationary_covariance(step_size, friction)[0, 0]
    for variance, se in _resampling_sghmc_variance(step_size, friction, every):
        assert abs(variance - exact) < K_SIGMA * se, (variance, exact, se)
    monkeypatch.setattr(
        sgmcmc.sghmc,
        "refreshed_momentum",
        lambda mass, gradient, noise, step_size, friction, temperature: {
            name: np.sqrt(step_size * temperature) * torch.rsqrt(mass[name]) * noise[name] for name in mass
        },
    )
    for variance, se in _resampling_sghmc_variance(step_size, friction, every):
        assert exact - variance > K_SIGMA * se, (variance, exact, se)


def test_momentum_resampling_at_a_temperature_keeps_the_tempered_law():
    """At T = 0.25 the law is N(0, T) (its exact discrete variance): a refresh that drew at T = 1, found by
    mutation testing (every refresh test ran at T = 1), gave 0.717."""
    step_size, friction, temperature = 0.05, 0.1, 0.25
    exact = exact_stationary_covariance(step_size, friction, temperature=temperature)[0, 0]
    for variance, se in _resampling_sghmc_variance(step_size, friction, 5, temperature):
        assert abs(variance - exact) < K_SIGMA * se, (variance, exact, se)


def test_the_momentum_is_refreshed_and_the_cancelled_noise_restored_at_steps_n_2n_only(monkeypatch):
    """With the restored gradient noise patched to a huge constant and friction 1 (the momentum forgotten at every
    step), θ jumps exactly at the refreshes: steps 5 and 10 of 12 for every 5, not at step 0 (found by mutation
    testing: the refresh mask inverted for the restored noise, or the refreshes moved a step, went unseen)."""
    monkeypatch.setattr(
        sgmcmc.sghmc,
        "cancelled_gradient_noise",
        lambda mass, noise, step_size, friction, noise_estimate, temperature: {
            name: 1e6 + 0 * noise[name] for name in mass
        },
    )
    trace = sgmcmc.SGHMC(
        standard_normal_log_posterior, step_size=0.01, friction=1.0, noise_estimate=0.01, resample_momentum_every=5
    ).sample(torch.ones(1, dtype=torch.float64), num_chains=1, num_steps=12, progress=False)
    moves = np.abs(np.diff(trace.posterior["theta"][0, :, 0]))  # move k: the update of step k
    assert np.flatnonzero(moves > 1e3).tolist() == [5, 10]


def test_the_cancelled_gradient_noise_has_the_variance_a_refresh_takes_out_and_none_at_zero_temperature():
    """a(2 − a) V with a = (1 − α)/(2 − α), V = 2β̂M/η: at α = 0.5, β̂ = 0.01, η = 0.02, M = 4, a = 1/3 and the
    scale is sqrt(5/9 · 1 · 4)."""
    mass, noise = (
        {"theta": torch.full((1, 3), 4.0, dtype=torch.float64)},
        {"theta": torch.ones(1, 3, dtype=torch.float64)},
    )
    restored = cancelled_gradient_noise(mass, noise, 0.02, 0.5, 0.01, 1.0)["theta"]
    torch.testing.assert_close(restored, torch.full((1, 3), math.sqrt(5 / 9 * 4), dtype=torch.float64))
    assert (cancelled_gradient_noise(mass, noise, 0.02, 0.5, 0.01, 0.0)["theta"] == 0).all()


def _variance_under_gradient_noise(step_size, friction, gradient_noise, num_chains, num_steps, **options):
    """θ's variance and its s.e. from SGHMC on N(0, 1) whose gradient is −θ + z, z one of 10⁵ rows of mean 0 and
    variance ``gradient_noise`` (V) exactly, with noise_estimate β̂ = ηV/2 and ``options`` for the sampler."""
    rows = torch.randn(100_000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    rows = (rows - rows.mean()) / rows.std(correction=0) * np.sqrt(gradient_noise)

    def log_posterior(theta, batch):
        return -0.5 * (theta**2).sum() + theta.sum() * batch.sum()

    sampler = sgmcmc.SGHMC(
        log_posterior, step_size=step_size, friction=friction, noise_estimate=step_size * gradient_noise / 2, **options
    )
    trace = sampler.sample(
        torch.zeros(1, dtype=torch.float64),
        sgmcmc.Minibatches(rows, batch_size=1),
        num_chains=num_chains,
        num_steps=num_steps,
        burn_in=num_steps // 10,
        seed=3,
        progress=False,
    )
    return variance_about_and_se(trace.posterior["theta"][..., 0], center=0.0)


def test_momentum_resampling_with_minibatch_gradients_keeps_the_law_noise_estimate_gives():
    """Gradient noise of variance V = 3.9, β̂ = ηV/2: without refreshes θ has the noise-free exact law. A
    refresh's mean takes this step's z, which the kick then adds again, so z entered that kick with weight
    η(1 − a) instead of η: without the independent noise that puts the missing a(2 − a)V back, θ's variance
    was 0.909 (exact covariance propagation) against 1.013, a review found."""
    step_size, friction = 0.05, 0.1
    variance, se = _variance_under_gradient_noise(step_size, friction, 3.9, 8, 20_000, resample_momentum_every=5)
    exact = exact_stationary_covariance(step_size, friction)[0, 0]
    assert abs(variance - exact) < K_SIGMA * se, (variance, exact, se)
    assert exact - 0.909 > K_SIGMA * se, "the test cannot tell the law without the restored noise from the exact one"


def test_the_refreshed_momentum_is_the_exact_conditional_law_of_v_given_theta():
    """On N(0, 1) (∇log p = −θ) the discrete chain's stationary covariance Σ of (θ, v) gives
    v | θ ~ N(Σ_vθ/Σ_θθ θ, Σ_vv − Σ_vθ²/Σ_θθ); :func:`refreshed_momentum` draws that, for several (η, α)."""
    theta = torch.tensor([[-1.5], [0.5], [2.0]], dtype=torch.float64).repeat_interleave(20_000, dim=0)
    mass = {"theta": torch.ones_like(theta)}
    for step_size, friction, temperature in [(0.3, 0.1, 1.0), (0.1, 0.5, 0.3), (0.3, 1.0, 2.0)]:
        covariance = exact_stationary_covariance(step_size, friction, temperature=temperature)
        slope = covariance[0, 1] / covariance[0, 0]
        variance = covariance[1, 1] - covariance[0, 1] ** 2 / covariance[0, 0]
        noise = {"theta": torch.randn(theta.shape, generator=torch.Generator().manual_seed(0), dtype=theta.dtype)}
        momentum = refreshed_momentum(mass, {"theta": -theta}, noise, step_size, friction, temperature)["theta"]
        standardised = ((momentum - slope * theta) / np.sqrt(variance)).numpy().ravel()
        assert stats.kstest(standardised, "norm").pvalue > 1e-4, (step_size, friction)


@pytest.mark.parametrize("temperature, friction", [(1.0, 0.5), (0.6, 0.5), (2.0, 0.2)])
def test_noise_estimate_cancels_a_known_gradient_noise(temperature, friction):
    """β̂ = ηV/2 takes out the η²V that a gradient noise of variance V adds to the momentum (the
    paper's eq. (15)): 2(αT − β̂)η + η²V = 2αηT, so θ keeps the noise-free exact discrete law at T.
    Left out, the momentum noise would be 1.5× larger at T = 1, and so would θ's variance; at
    T = 0.6, taking β̂ out of αT's noise 2(α − β̂)ηT instead of 2(αT − β̂)η makes it 1.33× larger.
    At T = 2, β̂ = 0.25 > α = 0.2 but ≤ αT: before, it was refused for β̂ > α."""
    step_size = 0.1
    variance, se = _variance_under_gradient_noise(step_size, friction, 5.0, 16, 5000, temperature=temperature)
    exact = exact_stationary_covariance(step_size, friction, temperature=temperature)[0, 0]
    assert abs(variance - exact) < K_SIGMA * se, (variance, exact, se)


@pytest.mark.parametrize("mass", [1.0, 4.0])
def test_the_first_momentum_is_drawn_at_the_temperature(mass):
    """v_0 ~ N(0, ηT/M): the first draw's kinetic energy Σ M v²/(2η) has mean dT/2 and variance dT²/2 per chain,
    whatever the mass (found by mutation testing: v_0 = 0 went unseen by this file's tests)."""
    dimension, temperature, num_chains = 10, 0.25, 64
    trace = sgmcmc.SGHMC(
        standard_normal_log_posterior, step_size=0.01, friction=0.1, mass=mass, temperature=temperature
    ).sample(torch.zeros(dimension, dtype=torch.float64), num_chains=num_chains, num_steps=1, seed=0, progress=False)
    first = trace.sample_stats["kinetic_energy"][:, 0]
    se = np.sqrt(dimension / 2) * temperature / np.sqrt(num_chains)
    assert abs(first.mean() - dimension * temperature / 2) < K_SIGMA * se, (first.mean(), se)
    wrong = [0.0, dimension / 2] + ([dimension * temperature * mass / 2] if mass != 1 else [])
    for other in wrong:  # v_0 = 0; v_0 at T = 1; v_0 ~ N(0, ηT), the mass left out
        assert abs(first.mean() - other) > K_SIGMA * se


def test_the_mass_is_held_once_not_once_per_chain():
    """Before, the state held a copy per chain (at K = 32 and 10⁶ parameters, 128 MB of ones)."""
    mass = torch.full((1000,), 2.0, dtype=torch.float64)
    trace = sgmcmc.SGHMC(standard_normal_log_posterior, step_size=0.01, friction=0.1, mass=mass).sample(
        torch.zeros(1000, dtype=torch.float64), num_chains=16, num_steps=3, progress=False
    )
    held = trace.final_state["mass"]["theta"]
    assert held.shape == (16, 1000) and held.untyped_storage().nbytes() == 1000 * 8
    mass += 1.0  # the caller's tensor, changed later, is not the sampler's
    assert (held == 2.0).all()


def test_momentum_is_in_the_final_state():
    trace = sgmcmc.SGHMC(lambda p: -(p["w"] ** 2).sum(), step_size=0.1, friction=0.5).sample(
        {"w": torch.zeros(2, 3)}, num_chains=2, num_steps=3, progress=False
    )
    assert trace.final_state["momentum"]["w"].shape == (2, 2, 3)


def _error(match, sample=False, **kwargs):
    options = dict(log_posterior=standard_normal_log_posterior, step_size=0.1, friction=0.1)
    options.update(kwargs)
    with pytest.raises(ValueError, match=match):
        sgmcmc.SGHMC(**options).sample(torch.zeros(2), num_chains=2, num_steps=2, progress=False)


def test_errors():
    _error("friction must be a finite number > 0", friction=0.0)
    _error("friction must be a finite number > 0", friction=-0.1)
    _error("friction must be <= 1", friction=1.5)
    _error(r"noise_estimate \(0.2\) > friction × temperature \(0.1 × 1.0\)", noise_estimate=0.2)
    _error(r"noise_estimate \(0.2\) > friction \(0.1\): at T = 0", noise_estimate=0.2, temperature=0.0)
    _error(r"noise_estimate \(0.06\) > friction × temperature \(0.1 × 0.5\)", noise_estimate=0.06, temperature=0.5)
    _error("noise_estimate must be a finite number >= 0", noise_estimate=-0.1)
    _error("mass must be a finite number > 0", mass=0.0)
    _error("mass of 'theta' has shape \\(3,\\); need \\(2,\\)", mass=torch.ones(3))
    _error("mass of 'theta' must hold finite floating values > 0", mass=torch.tensor([1.0, -1.0]))
    _error("resample_momentum_every must be >= 1", resample_momentum_every=0)


@pytest.mark.parametrize(
    ("mass", "error", "match"),
    [
        ("0.1", TypeError, "mass must be a real number, got str"),
        (None, TypeError, "mass must be a real number, got NoneType"),
        (True, TypeError, "mass must be a real number, got bool"),
        ({"theta": -1.0}, ValueError, "mass of 'theta' must be a finite number > 0, got -1.0"),
    ],
)
def test_a_bad_mass_is_refused_when_the_sampler_is_made(mass, error, match):
    with pytest.raises(error, match=match):
        sgmcmc.SGHMC(standard_normal_log_posterior, step_size=0.1, friction=0.1, mass=mass)


def test_a_mass_dict_with_other_names_is_refused_naming_both():
    """Before, a key that is not a string failed in sorting the names for this message."""
    sampler = sgmcmc.SGHMC(standard_normal_log_posterior, step_size=0.1, friction=0.1, mass={0: 1.0, "theta": 1.0})
    with pytest.raises(ValueError, match=r"mass must give every parameter: params \['theta'\], mass \[0, 'theta'\]"):
        sampler.sample(torch.zeros(2), num_chains=1, num_steps=2, progress=False)


def test_a_noise_estimate_equal_to_the_friction_is_allowed_at_zero_temperature():
    """β̂ ∈ [0, α] at T = 0, both ends included (found by mutation testing: refusing β̂ = α went unseen)."""
    sampler = sgmcmc.SGHMC(
        standard_normal_log_posterior, step_size=0.01, friction=0.2, noise_estimate=0.2, temperature=0
    )
    assert sampler.noise_estimate == 0.2

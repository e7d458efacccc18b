"""SGLD-CV: the exact discrete-time law on a conjugate regression, the same posterior as SGLD on a
logistic regression at a far lower gradient variance, the estimator at the mode, find_mode, bad modes."""

import math
import warnings

import numpy as np
import pytest
import torch
from scipy import linalg

import sgmcmc
from sgmcmc.chains import ChainGenerators
from sgmcmc.log_density import BoundPotential, ChainPotential
from targets import (
    K_SIGMA,
    ConjugateLinearRegression,
    LogisticRegression,
    assert_exact_law,
    mean_and_se,
    minibatch_gradient_noise,
    minibatch_stationary_covariance,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def regression_data(model, batch_size):
    return sgmcmc.Minibatches(model.features, model.targets, batch_size=batch_size)


def stationary_covariance(
    model: ConjugateLinearRegression, step_size: float, batch_size: int, temperature: float = 1.0
) -> np.ndarray:
    """Covariance of the SGLD-CV chain's stationary law on the conjugate regression, θ̂ = posterior mean.

    There ĝ(θ) = −H_B (θ − μ), H_B = I/σ_0² + (N/n) Σ_{i∈B} A_i, A_i = x_i x_iᵀ/σ², so e = θ − μ
    follows e ← (I − η H_B) e + sqrt(2ηT) ξ and, for batches drawn afresh each step, Σ solves
    Σ = (I − ηH) Σ (I − ηH) + η² E[(H_B − H) Σ (H_B − H)] + 2ηT I, with
    E[(H_B − H) Σ (H_B − H)] = (N²/n) (N − n)/(N − 1) · mean_i (A_i − Ā) Σ (A_i − Ā)
    (n rows without replacement). Solved exactly as a linear system in vec(Σ).
    """
    features = model.features.numpy() / model.noise_sd
    num_data, dim = features.shape
    outer = np.einsum("ni,nj->nij", features, features)
    centred = outer - outer.mean(axis=0)
    precision = outer.sum(axis=0) + np.eye(dim) / model.prior_sd**2
    contraction = np.eye(dim) - step_size * precision
    scale = num_data**2 / batch_size * (num_data - batch_size) / (num_data - 1)
    noise = scale * np.einsum("nij,nkl->ikjl", centred, centred).reshape(dim * dim, dim * dim) / num_data
    system = np.eye(dim * dim) - np.kron(contraction, contraction) - step_size**2 * noise
    return np.linalg.solve(system, 2 * step_size * temperature * np.eye(dim).ravel()).reshape(dim, dim)


@pytest.mark.parametrize("temperature", [1.0, 0.5])
def test_conjugate_regression_matches_the_exact_discrete_time_law(temperature):
    """N = 1000, batches of 100, η = 3e-4 (ηλ_max/2 ≈ 0.16): mean exact, covariance the discrete-time value,
    18% wider than the (tempered) posterior's, which the draws tell apart (before, at η = 1e-4, the law was
    only 5.5% wider and the draws were within the tolerance of both). At T = 0.5 the draws also tell apart
    the law of T = 1 (found by mutation testing: no test ran SGLD-CV at a temperature other than 0 and 1)."""
    model = ConjugateLinearRegression.make(num_data=1000, dim=3, seed=0)
    mean, covariance = model.posterior()
    step_size, batch_size = 3e-4, 100
    exact = stationary_covariance(model, step_size, batch_size, temperature)
    without_gradient_noise = stationary_covariance(model, step_size, model.features.shape[0], temperature)
    others = {"the posterior": temperature * covariance}
    if temperature != 1.0:
        others["the law at T = 1"] = stationary_covariance(model, step_size, batch_size)
    mode = torch.as_tensor(mean)
    trace = sgmcmc.SGLDCV(model.log_posterior(), step_size=step_size, mode=mode, temperature=temperature).sample(
        mode, regression_data(model, batch_size), num_chains=16, num_steps=3000, burn_in=100, seed=3, progress=False
    )
    # Consecutive batches of an epoch are disjoint rather than independent, which the formula ignores;
    # allow the whole gradient-noise share of the covariance (a few 1e-4 here) for that.
    gradient_noise_share = np.abs(exact - without_gradient_noise).max() / np.abs(np.diag(exact)).min()
    assert gradient_noise_share < 0.01
    assert_exact_law(trace.posterior["theta"], mean, exact, others, relative_bias=gradient_noise_share)


def test_logistic_regression_same_mean_as_sgld_each_at_its_law_at_a_far_lower_gradient_variance():
    """N = 10 000, d = 3, batches of 100, same step: SGLD-CV and SGLD means agree within Monte Carlo
    error; each covariance is the stationary law of its chain linearised at the mode (Hessian H): SGLD-CV
    that of exact gradients, e ← (I − ηH) e + sqrt(2η) ξ, 3.5-5% wider than the Laplace posterior H⁻¹
    (its own gradient noise, (H_B − H) e, adds 0.1%, left out); SGLD's adds the minibatch gradient's noise
    at the mode, with the epoch's errors summing to 0 (targets.minibatch_stationary_covariance), which
    makes it 3.6-4.8 times wider (independent batches would make it 20% wider still, which the draws tell
    apart). z-scores over seeds 1-8: from −1.9 to 2.8. At SGLD-CV's draws the variance of its gradient
    estimate over minibatches is < 1 % of SGLD's.

    Theory for the ratio: the per-example difference ∇ℓ_i(θ) − ∇ℓ_i(θ̂) ≈ ∇²ℓ_i (θ − θ̂), so the ratio
    is about E‖∇²ℓ_i (θ − θ̂)‖² / E‖∇ℓ_i − ∇ℓ̄‖² ≈ (d + 2) σ_post² · E[σ(1 − σ)] ≈ 1e-3 here (θ − θ̂
    is of the posterior's spread, σ_post ≈ 0.026); it shrinks as 1/N, SGLD's variance does not.
    """
    model = LogisticRegression.make(num_data=10_000, dim=3, seed=0)
    batch_size, step_size = 100, 5e-5
    data = sgmcmc.Minibatches(model.features, model.labels, batch_size=batch_size)
    log_posterior = model.log_posterior()
    start = torch.zeros(3, dtype=torch.float64)
    mode = sgmcmc.find_mode(log_posterior, start, data, num_steps=300, step_size=step_size, num_full_batch_steps=20)
    options = dict(num_chains=16, num_steps=2000, burn_in=200, progress=False)
    control_variate = sgmcmc.SGLDCV(log_posterior, step_size=step_size, mode=mode)
    traces = {
        "SGLD-CV": control_variate.sample(mode, data, seed=1, **options),
        "SGLD": sgmcmc.SGLD(log_posterior, step_size=step_size).sample(mode, data, seed=2, **options),
    }
    for dim in range(3):
        (cv_mean, cv_se), (sgld_mean, sgld_se) = (
            mean_and_se(trace.posterior["theta"][..., dim]) for trace in traces.values()
        )
        assert abs(cv_mean - sgld_mean) < K_SIGMA * np.hypot(cv_se, sgld_se), dim

    features, labels = model.features.numpy(), model.labels.numpy()
    probabilities = 1 / (1 + np.exp(-features @ mode.numpy()))
    dim = features.shape[1]
    hessian = np.einsum("n,ni,nj->ij", probabilities * (1 - probabilities), features, features)
    contraction = np.eye(dim) - step_size * (hessian + np.eye(dim) / model.prior_sd**2)
    per_example_gradients = (labels - probabilities)[:, None] * features
    gradient_noise = minibatch_gradient_noise(per_example_gradients, batch_size)

    def sgld_law(batches_per_epoch):
        return minibatch_stationary_covariance(
            contraction, step_size * np.eye(dim), 2 * step_size * np.eye(dim), gradient_noise, batches_per_epoch
        )

    laws = {"SGLD-CV": linalg.solve_discrete_lyapunov(contraction, 2 * step_size * np.eye(dim)), "SGLD": sgld_law(100)}
    for name, trace in traces.items():
        draws = trace.posterior["theta"]
        others = {other: law for other, law in laws.items() if other != name}
        if name == "SGLD":
            others["independent batches"] = sgld_law(None)
        # about the draws' own mean: the means were compared above, and θ̂ is neither the posterior mean nor exact
        assert_exact_law(draws, draws.mean(axis=(0, 1)), laws[name], others)

    offsets = traces["SGLD-CV"].posterior["theta"] - mode.numpy()
    np.testing.assert_allclose(
        traces["SGLD-CV"].sample_stats["distance_to_mode"], np.linalg.norm(offsets, axis=-1), rtol=1e-10
    )

    draws = torch.as_tensor(traces["SGLD-CV"].posterior["theta"][:, -1])  # one posterior draw per chain
    num_batches = 64
    params = {"theta": draws.repeat_interleave(num_batches, dim=0)}
    generators = ChainGenerators(sgmcmc.chain_seeds(4, len(params["theta"])), "cpu")
    rows = generators.permutations(len(model.labels))[:, :100]
    potential = BoundPotential(
        ChainPotential(log_posterior, lambda named: named["theta"], has_data=True, batch_per_chain=True),
        (model.features[rows], model.labels[rows]),
    )
    full_data = BoundPotential(
        ChainPotential(log_posterior, lambda named: named["theta"], has_data=True, batch_per_chain=False),
        (model.features, model.labels),
    )
    full_gradient = full_data(params)[1]["theta"]
    variances = {}
    for name, sampler in (("SGLD-CV", control_variate), ("SGLD", sgmcmc.SGLD(log_posterior, step_size=1.0))):
        state = sampler.init(dict(params), full_data, generators)
        # At T = 0 and η = 1 a step moves θ by exactly the gradient estimate.
        new_state, _ = sampler.step(state, potential, 1.0, 0.0, generators)
        estimates = (new_state["params"]["theta"] - params["theta"]).reshape(len(draws), num_batches, 3)
        errors = estimates - full_gradient.reshape(len(draws), num_batches, 3)
        # Unbiased: the mean error over all draws and batches is within Monte Carlo error of 0.
        assert (
            errors.mean(dim=(0, 1)).abs() < K_SIGMA * errors.std(dim=(0, 1)) / np.sqrt(errors[..., 0].numel())
        ).all()
        variances[name] = float((errors**2).sum(-1).mean())
    assert variances["SGLD-CV"] < 0.01 * variances["SGLD"], variances


def test_zero_temperature_at_the_exact_mode_stays_there():
    """At θ = θ̂ both minibatch terms cancel exactly, whatever the batch: the step is full-batch gradient descent,
    and at the posterior mode (∇log p = 0) the chain does not move."""
    model = ConjugateLinearRegression.make(num_data=500, dim=3, seed=1)
    mean, _ = model.posterior()
    data = regression_data(model, batch_size=50)
    exact_mode = torch.as_tensor(mean)
    trace = sgmcmc.SGLDCV(model.log_posterior(), step_size=1e-4, mode=exact_mode, temperature=0.0).sample(
        exact_mode, data, num_chains=4, num_steps=50, seed=0, progress=False
    )
    np.testing.assert_allclose(trace.posterior["theta"], np.broadcast_to(mean, (4, 50, 3)), rtol=0, atol=1e-10)

    off_mode = exact_mode + 0.1
    first_step = sgmcmc.SGLDCV(model.log_posterior(), step_size=1e-4, mode=off_mode, temperature=0.0).sample(
        off_mode, data, num_chains=4, num_steps=1, seed=0, progress=False
    )
    descent = sgmcmc.LD(model.log_posterior(), step_size=1e-4, temperature=0.0).sample(
        off_mode, data, num_chains=1, num_steps=1, progress=False
    )
    torch.testing.assert_close(
        first_step.final_state["params"]["theta"],
        descent.final_state["params"]["theta"].expand(4, 3),
        rtol=1e-12,
        atol=0,
    )
    assert not torch.equal(first_step.final_state["params"]["theta"][0], off_mode), "the step moved"


@pytest.mark.parametrize("compile", [False, True], ids=["eager", "compiled"])
def test_the_centre_and_its_gradient_stay_one_copy_for_all_chains(compile):
    """θ̂ and ∇log p(θ̂) are constants of the state: after sampling they are still the (num_chains, d)
    stride-0 views of one (d,) tensor made at the start, not num_chains copies."""
    model = ConjugateLinearRegression.make(num_data=200, dim=3, seed=0)
    mode = torch.as_tensor(model.posterior()[0])
    trace = sgmcmc.SGLDCV(model.log_posterior(), step_size=1e-4, mode=mode).sample(
        mode, regression_data(model, batch_size=20), num_chains=8, num_steps=20, seed=0, progress=False, compile=compile
    )
    for name in ("mode", "mode_gradient"):
        value = trace.final_state[name]["theta"]
        assert value.shape == (8, 3) and value.stride(0) == 0, name
    torch.testing.assert_close(trace.final_state["mode"]["theta"][3], mode)


def test_named_params_keep_their_structure_and_dtype():
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(200, 2, generator=generator)
    targets = features @ torch.tensor([1.0, -1.0]) + 0.5 + 0.1 * torch.randn(200, generator=generator)

    def log_likelihood(params, batch):
        x, y = batch
        return -0.5 * (y - x @ params["weights"] - params["bias"]) ** 2

    log_posterior = sgmcmc.minibatch_log_posterior(
        lambda params: -0.5 * sum((value**2).sum() for value in params.values()), log_likelihood, num_data=200
    )
    init = {"weights": torch.zeros(2), "bias": torch.zeros(())}
    mode = {"weights": torch.tensor([1.0, -1.0], dtype=torch.float64), "bias": torch.tensor(0.5, dtype=torch.float64)}
    trace = sgmcmc.SGLDCV(log_posterior, step_size=1e-3, mode=mode).sample(
        init, sgmcmc.Minibatches(features, targets, batch_size=20), num_chains=3, num_steps=5, seed=0, progress=False
    )
    state = trace.final_state
    assert set(state) == {"params", "mode", "mode_gradient"}
    for group in state.values():
        assert {name: (value.shape, value.dtype) for name, value in group.items()} == {
            "weights": ((3, 2), torch.float32),
            "bias": ((3,), torch.float32),
        }
    assert set(trace.sample_stats) >= {"lp", "distance_to_mode", "step_size", "diverging"}


def test_find_mode_reaches_the_map_of_a_conjugate_regression():
    """The MAP is the posterior mean; 200 SGD steps then 30 full-batch steps (contraction ≤ 0.6 each) reach it."""
    model = ConjugateLinearRegression.make(num_data=1000, dim=3, seed=0)
    mean, covariance = model.posterior()
    data = regression_data(model, batch_size=100)
    mode = sgmcmc.find_mode(
        model.log_posterior(),
        torch.zeros(3, dtype=torch.float64),
        data,
        num_steps=200,
        step_size=5e-4,
        num_full_batch_steps=30,
    )
    assert isinstance(mode, torch.Tensor) and mode.shape == (3,)
    assert np.all(np.abs(mode.numpy() - mean) < 1e-3 * np.sqrt(np.diag(covariance)))

    sgd_only = sgmcmc.find_mode(
        model.log_posterior(), torch.zeros(3, dtype=torch.float64), data, num_steps=200, step_size=5e-4
    )
    assert np.all(np.abs(sgd_only.numpy() - mean) < 3 * np.sqrt(np.diag(covariance))), "SGD ends near the MAP"

    named = sgmcmc.find_mode(
        lambda params, batch: model.log_posterior()(params["w"], batch),
        {"w": torch.zeros(3, dtype=torch.float64)},
        data,
        num_steps=10,
        step_size=5e-4,
    )
    assert set(named) == {"w"}


def test_find_mode_lbfgs_reaches_the_map_of_a_badly_scaled_regression_where_gradient_descent_cannot():
    """Features scaled by 1, 100 and 0.01 make the Hessian's condition number about 1e8: gradient
    descent at step 1/λ_max (stable up to 2/λ_max) is still tens of posterior sds away after 50 steps,
    L-BFGS (no step size, no SGD stage) is at the MAP, the posterior mean, within 1e-3 sd."""
    model = ConjugateLinearRegression.make(num_data=1000, dim=3, seed=0).with_feature_scales([1.0, 100.0, 0.01])
    mean, covariance = model.posterior()
    sd = np.sqrt(np.diag(covariance))
    largest_curvature = float(torch.linalg.eigvalsh(model.features.T @ model.features).max())
    start, data = torch.zeros(3, dtype=torch.float64), regression_data(model, batch_size=100)
    full_batch_only = dict(num_steps=0, num_full_batch_steps=50)
    lbfgs = sgmcmc.find_mode(model.log_posterior(), start, data, full_batch_method="lbfgs", **full_batch_only)
    assert np.all(np.abs(lbfgs.numpy() - mean) < 1e-3 * sd)
    descent = sgmcmc.find_mode(
        model.log_posterior(), start, data, full_batch_step_size=1 / largest_curvature, **full_batch_only
    )
    assert np.abs(descent.numpy() - mean).max() > 10 * sd.max()
    named = sgmcmc.find_mode(
        lambda params, batch: model.log_posterior()(params["w"], batch),
        {"w": start},
        data,
        num_steps=5,
        step_size=1e-9,
        full_batch_method="lbfgs",
        num_full_batch_steps=50,
    )
    np.testing.assert_allclose(named["w"].numpy(), lbfgs.numpy(), atol=1e-3 * sd.min())


@pytest.mark.parametrize("full_batch_method", ["gradient", "lbfgs"])
def test_find_mode_inside_torch_no_grad_equals_find_mode_outside_it(full_batch_method):
    model = ConjugateLinearRegression.make(num_data=200, dim=3, seed=0)
    arguments = (model.log_posterior(), torch.zeros(3, dtype=torch.float64), regression_data(model, 20))
    options = dict(num_steps=20, step_size=5e-4, num_full_batch_steps=5, full_batch_method=full_batch_method)
    with torch.no_grad():
        inside = sgmcmc.find_mode(*arguments, **options)
    np.testing.assert_array_equal(inside.numpy(), sgmcmc.find_mode(*arguments, **options).numpy())


@pytest.mark.parametrize(
    "stages",
    [
        dict(num_steps=3, step_size=1e-4),
        dict(num_steps=0, num_full_batch_steps=2, full_batch_step_size=1e-4),
        dict(num_steps=0, num_full_batch_steps=2, full_batch_method="lbfgs"),
    ],
    ids=["sgd", "gradient", "lbfgs"],
)
def test_find_mode_warns_once_of_a_wrong_num_data_at_the_callers_line(stages):
    """Before, the warning pointed into sgldcv.py, and the L-BFGS stage alone gave none."""
    model = ConjugateLinearRegression.make(num_data=100, dim=3, seed=0)
    log_posterior = sgmcmc.minibatch_log_posterior(model.log_prior, model.log_likelihood, num_data=10)
    with pytest.warns(RuntimeWarning) as record:
        sgmcmc.find_mode(log_posterior, torch.zeros(3, dtype=torch.float64), regression_data(model, 10), **stages)
    about_num_data = [warning for warning in record if "num_data=10 but the data holds 100" in str(warning.message)]
    assert [warning.filename for warning in about_num_data] == [__file__]


def test_find_mode_refuses_settings_that_do_not_fit_its_stages():
    model = ConjugateLinearRegression.make(num_data=100, dim=3, seed=0)
    arguments = (model.log_posterior(), torch.zeros(3, dtype=torch.float64), regression_data(model, 10))
    with pytest.raises(ValueError, match="full_batch_method must be 'gradient' or 'lbfgs', got 'newton'"):
        sgmcmc.find_mode(*arguments, num_steps=0, num_full_batch_steps=5, full_batch_method="newton")
    with pytest.raises(ValueError, match="full_batch_step_size is for gradient steps"):
        sgmcmc.find_mode(
            *arguments, num_steps=0, num_full_batch_steps=5, full_batch_method="lbfgs", full_batch_step_size=0.1
        )
    with pytest.raises(ValueError, match="needs a step_size for its SGD stage"):
        sgmcmc.find_mode(*arguments, num_steps=10)
    with pytest.raises(ValueError, match="needs a step_size for its SGD stage and, by default, its full-batch"):
        sgmcmc.find_mode(*arguments, num_steps=0, num_full_batch_steps=5)
    with pytest.raises(ValueError, match="num_steps must be >= 1"):
        sgmcmc.find_mode(*arguments, num_steps=0, step_size=1e-3)
    # before, "step_size must be a finite number > 0, got -1.0", of a valid step_size
    for bad in (-1.0, math.nan):
        with pytest.raises(ValueError, match=f"full_batch_step_size must be a finite number > 0, got {bad}"):
            sgmcmc.find_mode(*arguments, num_steps=5, step_size=1e-3, num_full_batch_steps=5, full_batch_step_size=bad)


@pytest.mark.parametrize("stage", ["minibatch SGD stage", "full-batch gradient stage"])
def test_find_mode_stops_at_ctrl_c_in_either_stage(stage):
    """Before, an interrupt in the SGD stage only stopped that stage: the full-batch stage then ran in full and
    a "mode" came back; sample keeps an interrupted run's draws, but find_mode has no mode to return."""
    model = ConjugateLinearRegression.make(num_data=100, dim=3, seed=0)
    log_posterior, calls = model.log_posterior(), []

    def interrupted(params, *batch):
        calls.append(None)
        if len(calls) == (20 if stage.startswith("minibatch") else 520):  # Ctrl-C inside the user's code
            raise KeyboardInterrupt
        return log_posterior(params, *batch)

    init = torch.zeros(3, dtype=torch.float64)
    with pytest.warns(RuntimeWarning, match="sampling interrupted"):
        with pytest.raises(KeyboardInterrupt, match=f"find_mode, in the {stage}: interrupted after"):
            sgmcmc.find_mode(
                interrupted, init, regression_data(model, 10), num_steps=500, step_size=1e-4, num_full_batch_steps=500
            )
    assert len(calls) < 540  # neither the rest of the SGD stage nor the full-batch stage ran


def test_find_mode_reports_divergence():
    model = ConjugateLinearRegression.make(num_data=1000, dim=3, seed=0)
    arguments = (model.log_posterior(), torch.zeros(3, dtype=torch.float64), regression_data(model, 100))
    with pytest.raises(ValueError, match="minibatch SGD stage diverged; use a smaller step size"):
        sgmcmc.find_mode(
            *arguments,
            num_steps=200,
            step_size=0.1,
        )
    # the largest curvature is about 1060 (X^T X): a step of 3e-3 multiplies the error by about -2.2 a
    # step, which 20 steps take to about 1e6 (lp about -1e16), not yet to inf
    with pytest.warns(RuntimeWarning, match="find_mode: the log posterior on all the data is .* below .* at init"):
        sgmcmc.find_mode(
            *arguments,
            num_steps=20,
            step_size=3e-3,
        )
    with pytest.warns(RuntimeWarning, match="lower full_batch_step_size or add steps"):
        sgmcmc.find_mode(
            *arguments,
            num_steps=0,
            num_full_batch_steps=20,
            full_batch_step_size=3e-3,
        )
    # without data too: −(θ − 1)² at step 1.5 doubles the error every step
    with pytest.warns(RuntimeWarning, match="below .* at init: the descent did not converge .*; lower step_size or"):
        sgmcmc.find_mode(
            lambda theta: -((theta - 1.0) ** 2).sum(),
            torch.zeros(2, dtype=torch.float64),
            None,
            num_steps=5,
            step_size=1.5,
        )


@pytest.mark.parametrize(
    ("mode", "init", "error", "match"),
    [
        (
            {"w": torch.zeros(3)},
            {"v": torch.zeros(3)},
            ValueError,
            r"mode names \['w'\] but init has parameters \['v'\]",
        ),
        (torch.zeros(3), {"w": torch.zeros(3)}, ValueError, "mode is a bare tensor but init is a dict"),
        ({"w": torch.zeros(3)}, torch.zeros(3), ValueError, "mode is a dict of .* but init is a bare tensor"),
        (torch.zeros(4), torch.zeros(3), ValueError, r"mode has shape \(4,\), the parameter has shape \(3,\)"),
        ({"w": torch.zeros(2, 3)}, {"w": torch.zeros(3)}, ValueError, r"mode\['w'\] has shape \(2, 3\)"),
        (torch.tensor([0.0, float("nan"), 0.0]), torch.zeros(3), ValueError, "mode holds non-finite values"),
        (torch.zeros(3, dtype=torch.long), torch.zeros(3), TypeError, "floating point"),
        ([0.0, 0.0, 0.0], torch.zeros(3), TypeError, "mode must be a tensor or a non-empty dict"),
        ({}, torch.zeros(3), TypeError, "mode must be a tensor or a non-empty dict"),
        ({"w": [0.0]}, {"w": torch.zeros(3)}, TypeError, r"mode\['w'\] is a list, not a torch.Tensor"),
    ],
)
def test_bad_mode_is_rejected_with_a_clear_message(mode, init, error, match):
    def log_posterior(params, batch):
        weights = params if isinstance(params, torch.Tensor) else next(iter(params.values()))
        return -0.5 * (weights**2).sum() - 0.5 * ((batch - weights.sum()) ** 2).sum()

    data = sgmcmc.Minibatches(torch.randn(20), batch_size=5)
    with pytest.raises(error, match=match):
        sgmcmc.SGLDCV(log_posterior, step_size=1e-2, mode=mode).sample(init, data, num_steps=2, progress=False)


def test_non_finite_gradient_at_the_mode_is_rejected():
    data = sgmcmc.Minibatches(torch.ones(10), batch_size=5)
    sampler = sgmcmc.SGLDCV(
        lambda theta, batch: (theta.abs().sqrt() * batch.sum()).sum(), step_size=1e-2, mode=torch.zeros(1)
    )
    with pytest.raises(ValueError, match="full-data gradient of log_posterior at mode is non-finite in 'theta'"):
        sampler.sample(torch.ones(1), data, num_steps=2, progress=False)


def test_find_mode_sgd_stage_is_noise_free_gradient_descent():
    """The SGD stage adds no noise: on −½|θ − 1|² without data, step 0.1, GD gives θ_k = 1 − 0.9^k exactly.
    Deterministic; T = 1 adds noise of sd ≈ sqrt(0.2/(1 − 0.81)) ≈ 1 per coordinate."""
    mode = sgmcmc.find_mode(
        lambda theta: -0.5 * ((theta - 1.0) ** 2).sum(),
        torch.zeros(2, dtype=torch.float64),
        None,
        num_steps=50,
        step_size=0.1,
    )
    np.testing.assert_allclose(mode.numpy(), 1 - 0.9**50, rtol=1e-12)


def test_find_mode_warns_when_the_result_is_only_slightly_worse_than_init():
    """−(θ − 1)² from 0.9 at η = 1.01 multiplies the error by −1.02 a step:
    after 5 steps lp = −0.0122 < −0.01 at init. Deterministic."""
    with pytest.warns(RuntimeWarning, match="below .* at init"):
        sgmcmc.find_mode(
            lambda theta: -((theta - 1.0) ** 2).sum(),
            torch.full((1,), 0.9, dtype=torch.float64),
            None,
            num_steps=5,
            step_size=1.01,
        )


def test_find_mode_full_batch_steps_default_to_the_first_step_size_of_the_schedule():
    model = ConjugateLinearRegression.make(num_data=200, dim=3, seed=0)
    arguments = (model.log_posterior(), torch.zeros(3, dtype=torch.float64), regression_data(model, 20))
    schedule = sgmcmc.schedules.Polynomial(a=5e-4, b=1.0, gamma=1.0)  # η_k = 5e-4 / (1 + k): 20 times smaller at 19
    options = dict(num_steps=20, step_size=schedule, num_full_batch_steps=5)
    default = sgmcmc.find_mode(*arguments, **options)
    np.testing.assert_array_equal(default.numpy(), sgmcmc.find_mode(*arguments, **options, full_batch_step_size=5e-4))
    assert not np.array_equal(default.numpy(), sgmcmc.find_mode(*arguments, **options, full_batch_step_size=2.5e-5))


def test_find_mode_seed_orders_the_minibatches():
    model = ConjugateLinearRegression.make(num_data=200, dim=3, seed=0)
    arguments = (model.log_posterior(), torch.zeros(3, dtype=torch.float64), regression_data(model, 20))
    runs = [sgmcmc.find_mode(*arguments, num_steps=20, step_size=5e-4, seed=seed).numpy() for seed in (0, 0, 1)]
    np.testing.assert_array_equal(runs[0], runs[1])
    assert not np.array_equal(runs[0], runs[2])


def test_find_mode_lbfgs_goes_on_from_where_the_sgd_stage_ended():
    """One L-BFGS iteration after 200 SGD steps: from the SGD result (well inside a posterior sd of the MAP) it
    only gets nearer; one iteration from init (0, many sds away) would not get there."""
    model = ConjugateLinearRegression.make(num_data=1000, dim=3, seed=0)
    mean, covariance = model.posterior()
    arguments = (model.log_posterior(), torch.zeros(3, dtype=torch.float64), regression_data(model, 100))
    sgd = sgmcmc.find_mode(*arguments, num_steps=200, step_size=5e-4)
    both = sgmcmc.find_mode(
        *arguments, num_steps=200, step_size=5e-4, num_full_batch_steps=1, full_batch_method="lbfgs"
    )
    from_init = sgmcmc.find_mode(*arguments, num_steps=0, num_full_batch_steps=1, full_batch_method="lbfgs")
    distance = {
        name: np.abs(value.numpy() - mean).max() / np.sqrt(np.diag(covariance)).min()
        for name, value in (("sgd", sgd), ("both", both), ("from_init", from_init))
    }
    assert distance["both"] <= distance["sgd"] < 1 < distance["from_init"], distance


def test_find_mode_lbfgs_names_a_line_search_that_failed_outside_the_support():
    """log p = 10 log s + log(1 − s) from s = 0.5: the line search tries s > 1, where log p is NaN, and torch's
    zoom then fails with a bare IndexError; a user's own IndexError, with every value finite, is not renamed."""
    with pytest.raises(ValueError, match="line search tried points where log_posterior is nan .outside its support"):
        sgmcmc.find_mode(
            lambda s: (10 * torch.log(s) + torch.log1p(-s)).sum(),
            torch.tensor([0.5]),
            None,
            num_steps=0,
            num_full_batch_steps=20,
            full_batch_method="lbfgs",
        )
    calls = []

    def failing(theta):
        calls.append(None)
        if len(calls) > 3:
            raise IndexError("the user's own")
        return -theta.square().sum()

    with pytest.raises(IndexError, match="the user's own"):
        sgmcmc.find_mode(failing, torch.ones(2), None, num_steps=0, num_full_batch_steps=5, full_batch_method="lbfgs")


def test_find_mode_lbfgs_refuses_a_result_outside_the_support():
    """log p = Σ log θ − 100 θ (mode 0.01) from θ = 2: the line search steps to θ < 0, where log p is NaN but θ
    finite; before, that point came back as the mode with only a warning."""
    with pytest.raises(ValueError, match="the L-BFGS stage ended where log_posterior is nan .outside its support"):
        sgmcmc.find_mode(
            lambda theta: (torch.log(theta) - 100.0 * theta).sum(),
            torch.full((2,), 2.0, dtype=torch.float64),
            None,
            num_steps=0,
            num_full_batch_steps=20,
            full_batch_method="lbfgs",
        )


@pytest.mark.parametrize(
    ("log_posterior", "error", "match"),
    [
        (lambda theta: -0.5 * theta**2, ValueError, "must return a 0-dim tensor, got shape \\(2,\\) at the start of"),
        (
            lambda theta: -0.5 * (theta**2).sum().detach(),
            ValueError,
            "does not depend on the params at the start of find_mode's L-BFGS stage: it has no gradient",
        ),
        (lambda theta: float(-0.5 * (theta**2).sum().detach()), TypeError, "must return a torch.Tensor, got float"),
        (lambda theta: (theta * float("nan")).sum(), ValueError, "returned a non-finite value \\(nan\\) at the start"),
        (  # before, L-BFGS ascended a different random function at every evaluation
            lambda theta: -0.5 * (torch.nn.functional.dropout(theta, 0.5, training=True) ** 2).sum(),
            ValueError,
            "draws from torch's global random number generator at the start of find_mode's L-BFGS stage",
        ),
    ],
)
def test_find_mode_lbfgs_checks_the_log_posterior_at_its_start_as_the_samplers_do(log_posterior, error, match):
    """Before, these failed inside torch (an IndexError in the line search for the NaN)."""
    with pytest.raises(error, match=match):
        sgmcmc.find_mode(
            log_posterior,
            torch.ones(2, dtype=torch.float64),
            None,
            num_steps=0,
            num_full_batch_steps=5,
            full_batch_method="lbfgs",
        )


def test_find_mode_refuses_full_batch_settings_without_a_full_batch_stage():
    arguments = (lambda theta: -0.5 * (theta**2).sum(), torch.ones(2, dtype=torch.float64), None)
    for setting in (dict(full_batch_step_size=0.1), dict(full_batch_method="lbfgs")):
        with pytest.raises(ValueError, match="which num_full_batch_steps=0 leaves out"):
            sgmcmc.find_mode(*arguments, num_steps=5, step_size=0.1, **setting)


def test_float16_chains_far_from_the_mode_are_not_taken_for_diverged():
    """5000 float16 params about 4 from the mode: Σ (θ − θ̂)² ≈ 80 000 overflows float16 (65 504). Before, the
    distance_to_mode stat was inf and every chain froze at step 0 as diverged."""
    sampler = sgmcmc.SGLDCV(lambda theta: -(theta.float() ** 2).sum() / 32, step_size=0.5, mode=torch.zeros(5000))
    with warnings.catch_warnings():
        warnings.simplefilter("error", sgmcmc.SamplerDivergenceWarning)
        trace = sampler.sample(
            torch.zeros(5000, dtype=torch.float16), num_chains=2, num_steps=20, init_jitter=4.0, seed=0, progress=False
        )
    assert not trace.sample_stats["diverging"].any()
    distance = trace.sample_stats["distance_to_mode"]
    assert np.isfinite(distance).all() and (distance > 256).all()  # sqrt(65 504) = 256


def test_find_mode_started_at_the_mode_does_not_warn_that_it_failed():
    """Full-batch steps from the exact mode of −θ²/2 − Σ(x − θ)²/2 stay there: the log posterior at the result
    equals the start's, which is no failure (found by mutation testing: warning unless strictly above went
    unseen)."""
    rows = torch.tensor([[1.0], [-1.0], [2.0], [-2.0]], dtype=torch.float64)  # mode θ = Σx / (N + 1) = 0

    def log_posterior(theta, batch):
        return -0.5 * theta.square().sum() - 0.5 * (batch[:, 0] - theta).square().sum()

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        mode = sgmcmc.find_mode(
            log_posterior,
            torch.zeros(()),
            sgmcmc.Minibatches(rows, batch_size=4),
            num_steps=0,
            num_full_batch_steps=3,
            full_batch_step_size=0.1,
        )
    assert float(mode) == 0.0

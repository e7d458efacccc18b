"""The Laplace approximation: exact on a Gaussian posterior, a whitened MALA run samples a badly scaled
regression that the same run unwhitened cannot, draws and gradients mapped back, bad modes refused."""

import warnings

import arviz as az
import numpy as np
import pytest
import torch

import sgmcmc
from targets import ConjugateLinearRegression, assert_moments

pytestmark = pytest.mark.usefixtures("one_thread")


def badly_scaled_regression() -> ConjugateLinearRegression:
    """Features scaled by 1, 100 and 0.01: the posterior's covariance has condition number about 1e8."""
    return ConjugateLinearRegression.make(num_data=200, dim=3, seed=0).with_feature_scales([1.0, 100.0, 0.01])


def named_log_posterior(model: ConjugateLinearRegression):
    """The model's log posterior on {"slope": (2,), "offset": ()}, which lay end to end as its weights."""
    log_posterior = model.log_posterior()

    def on_named(params, batch):
        return log_posterior(torch.cat([params["slope"], params["offset"].reshape(1)]), batch)

    on_named.num_data = log_posterior.num_data
    return on_named


def rhat(draws: np.ndarray) -> list[float]:
    """Split R-hat of every coordinate of (chain, draw, d) draws, from ArviZ."""
    return [float(az.rhat(draws[..., i])) for i in range(draws.shape[-1])]


def ess(draws: np.ndarray) -> list[float]:
    """Bulk ESS of every coordinate of (chain, draw, d) draws, from ArviZ."""
    return [float(az.ess(draws[..., i])) for i in range(draws.shape[-1])]


def regression_data(model, batch_size=20):
    return sgmcmc.Minibatches(model.features, model.targets, batch_size=batch_size)


def test_on_a_gaussian_posterior_the_approximation_is_exact():
    """The posterior is Gaussian, so from find_mode's L-BFGS mode the approximation is the posterior:
    mode = mean, Σ = covariance (to rounding at condition number 1e8), and z = 0 at the mode."""
    model = badly_scaled_regression()
    mean, covariance = model.posterior()
    log_posterior, data = named_log_posterior(model), regression_data(model)
    start = {"slope": torch.zeros(2, dtype=torch.float64), "offset": torch.zeros((), dtype=torch.float64)}
    mode = sgmcmc.find_mode(log_posterior, start, data, num_steps=0, num_full_batch_steps=50, full_batch_method="lbfgs")
    laplace = sgmcmc.laplace_approximation(log_posterior, mode, data)
    sd = np.sqrt(np.diag(covariance))
    flat_mode = np.concatenate([laplace.mode["slope"].numpy(), laplace.mode["offset"].numpy()[None]])
    assert np.all(np.abs(flat_mode - mean) < 1e-3 * sd)
    np.testing.assert_allclose(laplace.covariance.numpy(), covariance, rtol=1e-8)
    cholesky = laplace.precision_cholesky
    assert torch.allclose(cholesky @ cholesky.T, torch.linalg.inv(laplace.covariance))
    assert torch.equal(torch.triu(laplace.scale), laplace.scale)
    np.testing.assert_allclose(laplace.whiten(mode).numpy(), 0.0, atol=1e-3)
    chunked = sgmcmc.laplace_approximation(log_posterior, mode, data, chunk_size=1)
    np.testing.assert_allclose(chunked.scale.numpy(), laplace.scale.numpy(), rtol=1e-12, atol=0)
    assert laplace.whitened_log_posterior.num_data == model.features.shape[0]


@pytest.mark.parametrize("named", [False, True], ids=["tensor", "dict"])
def test_params_is_mode_plus_scale_times_z_and_whiten_is_its_inverse(named):
    model = ConjugateLinearRegression.make(num_data=50, dim=3, seed=1).with_feature_scales([1.0, 100.0, 0.01])
    mean, _ = model.posterior()
    if named:
        log_posterior, mode = (
            named_log_posterior(model),
            {"slope": torch.from_numpy(mean[:2]), "offset": torch.tensor(mean[2])},
        )
    else:
        log_posterior, mode = model.log_posterior(), torch.from_numpy(mean)
    laplace = sgmcmc.laplace_approximation(log_posterior, mode, regression_data(model))
    z = torch.tensor([0.3, -0.7, 1.2], dtype=torch.float64)
    theta = laplace.params(z)
    flat = torch.cat([theta["slope"], theta["offset"].reshape(1)]) if named else theta
    np.testing.assert_allclose(flat.numpy(), mean + laplace.scale.numpy() @ z.numpy(), rtol=1e-12)
    np.testing.assert_allclose(laplace.whiten(theta).numpy(), z.numpy(), rtol=1e-9)
    if named:  # by name: the same params in another order (before, whiten joined them in the dict's order)
        reordered = {"offset": theta["offset"], "slope": theta["slope"]}
        np.testing.assert_allclose(laplace.whiten(reordered).numpy(), z.numpy(), rtol=1e-9)


def test_a_whitened_run_samples_a_badly_scaled_posterior_that_the_same_run_unwhitened_cannot():
    """MALA at η = 0.5 in z (where the posterior is N(0, I)) mixes (split R-hat < 1.01, ESS ≥ 400 per
    coordinate) and matches the exact mean and covariance within K_SIGMA s.e. and no bias budget
    (MALA is exact). The same sampler on θ at its largest useful step (1/λ_max of the precision)
    moves the widest direction by about 2e-4 of its sd a step: its chains stay where they started,
    and R-hat flags them. The whitening is what makes the run work."""
    model = badly_scaled_regression()
    mean, covariance = model.posterior()
    log_posterior, data = model.log_posterior(), regression_data(model)
    laplace = sgmcmc.laplace_approximation(log_posterior, torch.from_numpy(mean), data)
    options = dict(num_chains=8, num_steps=2500, burn_in=500, seed=3, progress=False)
    whitened = sgmcmc.LD(laplace.whitened_log_posterior, step_size=0.5, metropolis=True).sample(
        laplace.whiten(torch.from_numpy(mean)), data, init_jitter=1.0, **options
    )
    draws = laplace.unwhiten(whitened).posterior["theta"]
    assert max(rhat(draws)) < 1.01 and min(ess(draws)) >= 400
    assert_moments(draws, mean, covariance, relative_bias=0.0)

    largest_precision = float(torch.linalg.eigvalsh(torch.linalg.inv(torch.from_numpy(covariance))).max())
    plain = sgmcmc.LD(log_posterior, step_size=1 / largest_precision, metropolis=True).sample(
        torch.from_numpy(mean), data, init_jitter=float(np.sqrt(np.diag(covariance)).max()), **options
    )
    assert max(rhat(plain.posterior["theta"])) > 1.5


def test_unwhiten_keeps_names_shapes_dtypes_and_maps_the_gradients(tmp_path):
    """θ = θ̂ + L z under the mode's names, shapes and dtypes (a float32 leaf stays float32), and the
    kept gradients become ∇_θ log p: on full batches they equal autograd's at the mapped draws. A
    functional of θ through ``params`` equals the mapped draws; a streamed trace is read into memory."""
    model = ConjugateLinearRegression.make(num_data=50, dim=3, seed=1)
    log_posterior, data = named_log_posterior(model), regression_data(model, batch_size=50)
    mean, _ = model.posterior()
    mode = {"slope": torch.from_numpy(mean[:2]), "offset": torch.tensor(mean[2], dtype=torch.float32)}
    laplace = sgmcmc.laplace_approximation(log_posterior, mode, data)
    assert laplace.scale.dtype == torch.float64
    whitened = sgmcmc.LD(laplace.whitened_log_posterior, step_size=0.3).sample(
        laplace.whiten(mode),
        data,
        num_chains=2,
        num_steps=20,
        seed=0,
        keep_gradients=True,
        functionals={"first_slope": lambda z: laplace.params(z)["slope"][0]},
        trace_file=tmp_path / "whitened.nc",
        progress=False,
    )
    trace = laplace.unwhiten(whitened)
    z = torch.from_numpy(np.asarray(whitened.posterior["theta"]))
    (tmp_path / "whitened.nc").unlink()  # every group of the mapped trace is in memory
    np.testing.assert_allclose(trace.functionals["first_slope"], trace.posterior["slope"][..., 0], rtol=1e-12)
    assert {name: (value.shape, value.dtype) for name, value in trace.posterior.items()} == {
        "slope": ((2, 20, 2), np.float64),
        "offset": ((2, 20), np.float32),
    }
    theta = laplace.scale @ z[..., None]
    slope = laplace.mode["slope"] + theta[..., :2, 0]
    np.testing.assert_allclose(trace.posterior["slope"], slope.numpy(), rtol=1e-12)
    batch = (model.features, model.targets)
    full_data_gradient = torch.func.vmap(torch.func.grad(lambda params: log_posterior(params, batch)))
    draws = {name: torch.from_numpy(value).reshape(40, *value.shape[2:]) for name, value in trace.posterior.items()}
    expected = full_data_gradient({"slope": draws["slope"], "offset": draws["offset"].double()})
    np.testing.assert_allclose(trace.gradients["slope"].reshape(40, 2), expected["slope"].numpy(), rtol=1e-8, atol=1e-8)
    np.testing.assert_allclose(
        trace.gradients["offset"].reshape(40), expected["offset"].numpy(), rtol=1e-5, atol=1e-5
    )  # float32 storage
    assert trace.attrs["whitening"].startswith("Laplace") and trace.path is None
    assert trace.sample_stats["lp"].shape == (2, 20)
    assert trace.final_state["params"]["theta"].shape == (2, 3), "the state stays in z, where a run resumes"
    assert set(trace.to_arviz().posterior.data_vars) == {"slope", "offset"}


def test_a_log_posterior_without_data():
    variances = torch.tensor([4.0, 0.25])
    laplace = sgmcmc.laplace_approximation(lambda theta: -0.5 * (theta**2 / variances).sum(), torch.zeros(2))
    np.testing.assert_allclose(laplace.covariance.numpy(), np.diag([4.0, 0.25]), rtol=1e-6)


def test_laplace_approximation_inside_no_grad():
    """torch.func.grad ignores an outer no_grad; the check of the log posterior's value must too."""
    with torch.no_grad():
        laplace = sgmcmc.laplace_approximation(
            lambda theta: -0.5 * (theta**2).sum(), torch.zeros(2, dtype=torch.float64)
        )
    torch.testing.assert_close(laplace.scale, torch.eye(2, dtype=torch.float64))


def test_bad_modes_and_traces_are_refused_with_a_clear_message():
    def saddle(theta):
        return -(theta[0] ** 2) + theta[1] ** 2

    with pytest.raises(ValueError, match="eigenvalue -2 ≤ 0 .*not a strict local maximum"):
        sgmcmc.laplace_approximation(saddle, torch.zeros(2))
    with pytest.raises(ValueError, match=r"log_posterior returned a non-finite value \(-inf\) on all the data at mode"):
        sgmcmc.laplace_approximation(lambda theta: torch.log(theta).sum(), torch.tensor([1.0, 0.0]))
    with pytest.raises(TypeError, match="mode must be a tensor or a non-empty dict"):
        sgmcmc.laplace_approximation(saddle, [0.0, 0.0])
    # before, torch's errors from inside grad_and_value, or a misleading "eigenvalue -0 ≤ 0"
    with pytest.raises(
        ValueError, match="log_posterior must return a 0-dim tensor, got shape \\(1,\\) on all the data"
    ):
        sgmcmc.laplace_approximation(lambda theta: -(theta**2).sum().reshape(1), torch.zeros(2))
    with pytest.raises(TypeError, match="log_posterior must return a torch.Tensor, got float"):
        sgmcmc.laplace_approximation(lambda theta: 0.5, torch.zeros(2))
    with pytest.raises(ValueError, match="log_posterior's value does not depend on the params on all the data"):
        sgmcmc.laplace_approximation(lambda theta: -(theta.detach() ** 2).sum(), torch.zeros(2))
    with pytest.raises(ValueError, match="log_posterior draws from torch's global random number generator on all"):
        sgmcmc.laplace_approximation(  # before, vmap's randomness error from inside the Hessian
            lambda theta: -(torch.nn.functional.dropout(theta, 0.5, training=True) ** 2).sum(), torch.ones(2)
        )
    with pytest.raises(ValueError, match=r"mode\['w'\] holds non-finite values"):
        sgmcmc.laplace_approximation(saddle, {"w": torch.tensor([0.0, float("nan")])})
    with pytest.raises(ValueError, match=r"mode has no elements \(shapes \{'w': \(0, 3\)\}\)"):  # before, an IndexError
        sgmcmc.laplace_approximation(saddle, {"w": torch.zeros(0, 3)})

    model = ConjugateLinearRegression.make(num_data=50, dim=3, seed=1)
    mean, covariance = model.posterior()
    data = regression_data(model)
    offset = 3 * np.sqrt(np.diag(covariance))
    newton_step = np.sqrt(offset @ np.linalg.solve(covariance, offset))  # on a Gaussian, the whitened distance
    far = torch.from_numpy(mean + offset)
    with pytest.warns(RuntimeWarning, match=f"Newton step from the given mode is {newton_step:.3g} posterior sds"):
        laplace = sgmcmc.laplace_approximation(model.log_posterior(), far, data)
    # the warning's threshold is one posterior sd
    with pytest.warns(RuntimeWarning, match="Newton step from the given mode is 1.1 posterior sds"):
        sgmcmc.laplace_approximation(model.log_posterior(), torch.from_numpy(mean + 1.1 * offset / newton_step), data)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sgmcmc.laplace_approximation(model.log_posterior(), torch.from_numpy(mean + 0.9 * offset / newton_step), data)
    wrong_num_data = sgmcmc.minibatch_log_posterior(model.log_prior, model.log_likelihood, num_data=5)
    with pytest.warns(RuntimeWarning, match="num_data=5 but the data holds 50 examples") as record:
        sgmcmc.laplace_approximation(wrong_num_data, torch.from_numpy(mean), data)  # before, no warning
    assert {warning.filename for warning in record} == {__file__}
    with pytest.raises(ValueError, match=r"params\['theta'\] has shape \(2,\); the mode's is \(3,\)"):
        laplace.whiten(torch.zeros(2, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"params have names \['w'\]; the mode has \['theta'\]"):
        laplace.whiten({"w": torch.zeros(3, dtype=torch.float64)})
    with pytest.raises(ValueError, match="parameter 'theta' of the point to whiten holds non-finite"):
        laplace.whiten(torch.tensor([0.0, float("nan"), 0.0], dtype=torch.float64))  # before: "init parameter"
    log_posterior = model.log_posterior()
    named = sgmcmc.SGLD(lambda params, batch: log_posterior(params["w"], batch), step_size=1e-4).sample(
        {"w": torch.zeros(3, dtype=torch.float64)}, data, num_chains=1, num_steps=2, progress=False
    )
    with pytest.raises(ValueError, match=r"the trace's draws are \['w'\]"):
        laplace.unwhiten(named)
    nothing_kept = sgmcmc.SGLD(laplace.whitened_log_posterior, step_size=1e-4).sample(
        laplace.whiten(far), data, num_chains=1, num_steps=2, keep=(), progress=False
    )
    with pytest.raises(ValueError, match=r"draws are \[\]; .*a run with keep=\(\) has none to map"):
        laplace.unwhiten(nothing_kept)
    with pytest.raises(
        ValueError,
        match=r"z must be a tensor of shape \(3,\) and dtype torch.float64, got \(3,\) "
        r"torch.float32; start a whitened run at laplace.whiten\(init\)",
    ):
        sgmcmc.SGLD(laplace.whitened_log_posterior, step_size=1e-4).sample(torch.zeros(3), data, progress=False)
    with pytest.raises(ValueError, match="chunk_size must be >= 1, got 0"):
        sgmcmc.laplace_approximation(model.log_posterior(), torch.from_numpy(mean), data, chunk_size=0)
    shorter = sgmcmc.SGLD(lambda z: -0.5 * (z**2).sum(), step_size=0.1).sample(
        torch.zeros(2), num_chains=1, num_steps=2, progress=False
    )
    with pytest.raises(ValueError, match=r"the trace's z has shape \(2,\) per draw; this approximation's has \(3,\)"):
        laplace.unwhiten(shorter)


def test_inference_mode_is_refused_by_name():
    """torch.no_grad() is fine (tests/test_runner.py); torch.inference_mode() forbids the gradients."""
    model = ConjugateLinearRegression.make(num_data=50, dim=3, seed=1)
    arguments = (model.log_posterior(), torch.zeros(3, dtype=torch.float64), regression_data(model))
    with torch.inference_mode():
        with pytest.raises(
            RuntimeError, match="laplace_approximation differentiates log_posterior, which torch.inference_mode"
        ):
            sgmcmc.laplace_approximation(*arguments)
        with pytest.raises(RuntimeError, match="find_mode differentiates log_posterior"):
            sgmcmc.find_mode(*arguments, num_steps=0, num_full_batch_steps=5, full_batch_method="lbfgs")
        with pytest.raises(RuntimeError, match="sample differentiates log_posterior"):
            sgmcmc.SGLD(arguments[0], step_size=1e-4).sample(*arguments[1:], progress=False)

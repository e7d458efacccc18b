"""The bias–variance study: η_opt ∝ n^(−1/3) for the second moment, none for the mean, storage, CLI."""

import math

import arviz as az
import numpy as np
import pytest
import xarray as xr
from scipy import optimize, stats

import sgmcmc
import sgmcmc.bias_variance as bias_variance
from sgmcmc.bias_variance import BiasVarianceStudy, GaussianTarget, bias_variance_study
from sgmcmc.cli import main
from sgmcmc.schedules import Polynomial
from targets import K_SIGMA, group_names

BUDGETS = (128, 1024)
STEP_SIZES = np.geomspace(0.05, 0.8, 9)
TARGET = GaussianTarget.isotropic(32)


@pytest.fixture(scope="module")
def study():
    """128 chains per cell on N(0, I_32) (32 independent copies of the 1-D problem per chain): about 6 s on 2 cores."""
    return bias_variance_study(TARGET, STEP_SIZES.tolist(), BUDGETS, num_replicates=128, seed=0)


def theoretical_slope(budgets, burn_in_fraction=0.1):
    """Slope of log η_opt against log n from the exact bias² + variance of the stationary chain."""

    def optimum(budget):
        averaged = budget - math.floor(burn_in_fraction * budget)
        return optimize.minimize_scalar(
            lambda log_eta: math.log(sum(TARGET.langevin_error("second_moment", math.exp(log_eta), averaged))),
            bounds=(math.log(1e-3), math.log(1.9)),
            method="bounded",
        ).x

    return float(np.polyfit(np.log(budgets), [optimum(budget) for budget in budgets], 1)[0])


def test_optimal_step_size_falls_like_n_to_the_minus_one_third(study):
    """Tolerance: K_SIGMA bootstrap s.e. plus the known departure of the exact discrete chain from the
    leading-order law over these budgets (its bias η/2/(1 − η/2) grows faster than η at the optimum)."""
    fit = study.fit("second_moment")
    assert np.isfinite(fit.optimal_step_size).all()
    assert (np.diff(fit.optimal_step_size) < 0).all()
    assert K_SIGMA * fit.slope_se < 1 / 6, "too imprecise to tell −1/3 from −1/2 or 0"
    theory = theoretical_slope(BUDGETS)
    # which also puts it within K_SIGMA se + |theory + 1/3| of −1/3
    assert abs(fit.slope - theory) < K_SIGMA * fit.slope_se, (fit.slope, fit.slope_se, theory)
    assert fit.squared_bias is not None and fit.variance is not None


def exact_chain_mse(estimator, step_size, budget, burn_in_fraction=0.1):
    """MSE of one coordinate's estimate for SGLD on N(0, 1) started at an exact draw, as the study runs it
    (not yet stationary, unlike TARGET.langevin_error): e_k = ρ^k e_0 + Σ noise, ρ = 1 − η, has
    Var e_k = v + ρ^(2k)(1 − v), v = 1/(1 − η/2), and Cov(e_j, e_k) = ρ^|j−k| Var e_min(j,k); the estimate
    averages e_k (or e_k², Cov(e_j², e_k²) = 2 Cov(e_j, e_k)²) over the kept k = ⌊0.1 n⌋ … n − 1."""
    rho, stationary = 1 - step_size, 1 / (1 - step_size / 2)
    kept = np.arange(math.floor(burn_in_fraction * budget), budget)
    variance = stationary + rho ** (2 * kept) * (1 - stationary)
    covariance = rho ** np.abs(kept[:, None] - kept[None, :]) * variance[np.minimum.outer(kept, kept) - kept[0]]
    if estimator == "mean":
        return covariance.mean()
    return (variance.mean() - 1) ** 2 + 2 * (covariance**2).mean()


def test_every_cells_mse_is_the_exact_chains(study):
    """Each (budget, step size) cell's MSE, summed over TARGET's 32 coordinates, is 32 × :func:`exact_chain_mse`
    within K_SIGMA of its own s.e. (over the 128 replicates): the bias and variance that the fits and η_opt are
    made of, at every cell, for both estimators."""
    for estimator in study.estimators:
        cells = study.cell_errors(estimator)
        for budget_index, budget in enumerate(BUDGETS):
            for step_index, step_size in enumerate(STEP_SIZES):
                expected = TARGET.dim * exact_chain_mse(estimator, step_size, budget)
                mse, mse_se = (cells[name].values[budget_index, step_index] for name in ("mse", "mse_se"))
                assert abs(mse - expected) < K_SIGMA * mse_se, (estimator, budget, step_size, mse, expected, mse_se)


def test_the_mean_has_no_step_size_bias_so_no_interior_optimum(study):
    """E[θ] is exact for every η on a Gaussian (the chain's stationary mean is μ): the bias fit finds
    nothing significant and the MSE keeps falling up to the largest η."""
    fit = study.fit("mean")
    assert fit.squared_bias is None
    assert np.isnan(fit.optimal_step_size).all()
    mse = study.cell_errors("mean")["mse"].values
    assert (np.argmin(mse, axis=1) == len(STEP_SIZES) - 1).all()


def test_decreasing_schedule_is_measured_at_every_budget(study):
    for estimator in study.estimators:
        fit = study.fit(estimator)
        assert fit.decreasing_mse.shape == (len(BUDGETS),) and np.isfinite(fit.decreasing_mse).all()
    assert study.dataset.attrs["decreasing_step_size"] == repr(Polynomial(a=1.0, b=1.0, gamma=0.55))


def test_cell_errors_by_hand():
    """One cell, two replicates, two coordinates: errors (1, 3) and (0, 0) against exact 0. Bias² is
    the squared mean error less its expected noise s²/R: (2² − 2/2) + 0 = 3; variance s² = 2; MSE the
    mean squared error over replicates, (1 + 9)/2 = 5, with s.e. std(1, 9)/√2 = 4."""
    shape = dict(estimator=["mean"], budget=[10], step_size=[0.1], replicate=[0, 1], coordinate=[0, 1])
    estimates = np.array([[1.0, 0.0], [3.0, 0.0]]).reshape(1, 1, 1, 2, 2)
    dataset = xr.Dataset(
        {
            "constant_estimate": (tuple(shape), estimates),
            "exact": (("estimator", "coordinate"), np.zeros((1, 2))),
            "constant_diverged": (("budget", "step_size", "replicate"), np.zeros((1, 1, 2), bool)),
        },
        coords=shape,
    )
    cells = BiasVarianceStudy(dataset).cell_errors("mean").squeeze()
    assert float(cells["squared_bias"]) == 3.0 and float(cells["variance"]) == 2.0
    assert float(cells["mse"]) == 5.0 and float(cells["mse_se"]) == pytest.approx(4.0, rel=1e-12)


def test_decreasing_schedule_mse_by_hand():
    """The decreasing schedule's MSE is the mean over replicates of the squared error summed over coordinates,
    as the constant steps' is: errors (1, 3) and (0, 0) give (1 + 9)/2 = 5 (found by mutation testing: a mean
    over coordinates, 2.5, went unseen)."""
    estimates = np.zeros((1, 1, 2, 2))
    decreasing = np.array([[[1.0, 3.0], [0.0, 0.0]]])  # (budget, replicate, coordinate)
    study = _study_of(estimates, [0.0, 0.0], decreasing=decreasing, decreasing_diverged=np.zeros((1, 2), bool))
    assert study.fit("mean").decreasing_mse.tolist() == [5.0]


def _study_of(estimates, exact, constant_diverged=None, decreasing=None, decreasing_diverged=None):
    """A study holding ``estimates`` (budget, step_size, replicate, coordinate) of the mean, none diverged
    unless ``constant_diverged`` (budget, step_size, replicate) says so; with ``decreasing`` (budget,
    replicate, coordinate), a decreasing schedule's too."""
    num_budgets, num_step_sizes, num_replicates, dim = estimates.shape
    coords = dict(
        estimator=["mean"],
        budget=np.arange(1, num_budgets + 1) * 10,
        step_size=np.geomspace(0.01, 1.0, num_step_sizes),
        replicate=np.arange(num_replicates),
        coordinate=np.arange(dim),
    )
    diverged = np.zeros(estimates.shape[:3], bool) if constant_diverged is None else constant_diverged
    data_vars = {
        "constant_estimate": (tuple(coords), estimates[None]),
        "exact": (("estimator", "coordinate"), np.asarray(exact, dtype=np.float64)[None]),
        "constant_diverged": (("budget", "step_size", "replicate"), diverged),
    }
    if decreasing is not None:
        data_vars["decreasing_estimate"] = (("estimator", "budget", "replicate", "coordinate"), decreasing[None])
        data_vars["decreasing_diverged"] = (("budget", "replicate"), decreasing_diverged)
    return BiasVarianceStudy(xr.Dataset(data_vars, coords=coords))


def test_a_cell_with_a_diverged_replicate_has_infinite_mse_however_finite_its_estimates():
    """A diverged chain is frozen at its last finite state, so its estimate is finite but means nothing:
    its cell's MSE is ∞ (so η_opt is not taken there), in every bootstrap resample that draws it, and so is
    the decreasing schedule's MSE at a budget where one of its chains diverged."""
    estimates = np.random.default_rng(0).normal(size=(2, 5, 4, 1))
    constant_diverged = np.zeros((2, 5, 4), bool)
    constant_diverged[0, 1, 2] = True
    decreasing_diverged = np.array([[False] * 4, [True, False, False, False]])
    study = _study_of(estimates, [0.0], constant_diverged, estimates[:, 0], decreasing_diverged)
    cells = study.cell_errors("mean")
    assert np.isposinf(cells["mse"].values).tolist() == [[False, True, False, False, False], [False] * 5]
    assert np.isposinf(cells["decreasing_mse"].values).tolist() == [False, True]
    bootstrap = study._bootstrap_mse("mean")  # (resample, budget, step_size)
    assert np.isfinite(bootstrap[:, 1]).all() and np.isfinite(bootstrap[:, 0, [0, 2, 3, 4]]).all()
    # a resample misses replicate 2 with probability (3/4)^4 = 0.32
    assert 0 < np.isfinite(bootstrap[:, 0, 1]).mean() < 0.5


def test_the_bootstrap_standard_error_of_the_optimal_step_size_is_its_spread_across_studies():
    """100 synthetic studies of one budget whose cells' squared errors have mean m(η) = 1 + (log η − log 0.1)²
    (optimum 0.1; each cell's replicates independent, R = 16): the bootstrap s.e. of log η_opt, averaged
    over the studies, is its standard deviation across them, within K_SIGMA s.e. of their ratio. That s.e.
    comes from the studies themselves: the mean s.e.'s own error, and the sd's, (κ − 1)/(4n) relative
    variance with κ the optima's kurtosis (3 to 4.7: the vertex is clipped to the grid). Over seeds 1-8
    the z-scores ran from −1.8 to 2.5 (the bootstrap's own small-R bias, some +5%, included)."""
    generator = np.random.default_rng(1)
    step_sizes = np.geomspace(0.01, 1.0, 9)
    mean_squared_error = 1.0 + (np.log(step_sizes) - math.log(0.1)) ** 2
    optima, standard_errors = [], []
    for _ in range(100):
        noise = generator.standard_normal((1, 9, 16, 1))
        study = _study_of(np.sqrt(mean_squared_error)[None, :, None, None] * noise, [0.0])
        fit = study.fit("mean")
        optima.append(math.log(fit.optimal_step_size[0]))
        standard_errors.append(fit.optimal_step_size_se[0])
    num_studies, spread, mean_se = len(optima), np.std(optima, ddof=1), np.mean(standard_errors)
    kurtosis = stats.kurtosis(optima, fisher=False)
    relative_se = math.sqrt(
        np.var(standard_errors, ddof=1) / (num_studies * mean_se**2) + (kurtosis - 1) / (4 * num_studies)
    )
    assert abs(mean_se / spread - 1) < K_SIGMA * relative_se, (mean_se, spread, relative_se)


def test_the_optimal_step_size_is_the_vertex_of_a_parabola_through_five_grid_points_in_log_log():
    """Squared errors exactly an asymmetric m(η) at 9 step sizes: η_opt is the vertex of the least-squares
    parabola in (log η, log MSE) through the grid's best point and two either side, computed here with
    np.polyfit (a 3-point parabola's vertex lies elsewhere), clipped to the best point's neighbours (which
    the second, steeper m needs)."""
    step_sizes = np.geomspace(0.01, 1.0, 9)
    log_step_sizes = np.log(step_sizes)
    shapes = {
        math.log(0.11): lambda offset: np.where(offset < 0, 0.3 * offset**2, 2 * np.abs(offset) ** 1.2),
        math.log(0.2): lambda offset: np.where(offset < 0, 0.02 * offset**2, 3 * np.abs(offset)),
    }
    clipped = []
    for centre, shape in shapes.items():
        log_mse = shape(log_step_sizes - centre)
        study = _study_of(np.exp(log_mse / 2)[None, :, None, None] * np.array([1.0, -1.0])[:, None], [0.0])
        best = int(np.argmin(log_mse))
        curvature, linear, _ = np.polyfit(log_step_sizes[best - 2 : best + 3], log_mse[best - 2 : best + 3], 2)
        vertex = -linear / (2 * curvature)
        expected = np.clip(vertex, log_step_sizes[best - 1], log_step_sizes[best + 1])
        clipped.append(vertex != expected)
        three_point = np.polyfit(log_step_sizes[best - 1 : best + 2], log_mse[best - 1 : best + 2], 2)
        assert abs(-three_point[1] / (2 * three_point[0]) - expected) > 0.1
        assert math.log(study.fit("mean").optimal_step_size[0]) == pytest.approx(expected, abs=1e-12)
    assert clipped == [False, True]


def test_the_burn_in_is_the_budgets_fraction_rounded_down():
    study = bias_variance_study(GaussianTarget([0.0], [1.0]), [0.1, 0.2], [10, 15], num_replicates=2, seed=0)
    assert study.dataset["burn_in"].values.tolist() == [1, 1]
    study = bias_variance_study(
        GaussianTarget([0.0], [1.0]), [0.1, 0.2], [10, 15], num_replicates=2, burn_in_fraction=0.5, seed=0
    )
    assert study.dataset["burn_in"].values.tolist() == [5, 7]


def test_the_zero_bias_test_rejects_as_often_as_its_level_says_with_few_replicates():
    """4000 unbiased cells of R = 8 replicates of 2 correlated coordinates: Hotelling's T² test rejects at
    level 0.05 in 5% of them, within K_SIGMA binomial s.e. The χ² test used before (the coordinates'
    squared t statistics summed) rejected in 13% of the same cells, and fails this check."""
    from scipy import stats

    generator = np.random.default_rng(0)
    covariance = np.array([[1.0, 0.8], [0.8, 4.0]])
    estimates = generator.multivariate_normal([0.0, 0.0], covariance, size=(1, 4000, 8))
    p_values = _study_of(estimates, [0.0, 0.0]).cell_errors("mean")["bias_p_value"].values.ravel()
    level, tolerance = 0.05, K_SIGMA * math.sqrt(0.05 * 0.95 / p_values.size)
    assert abs((p_values < level).mean() - level) < tolerance
    mean, variance = estimates.mean(axis=2), estimates.var(axis=2, ddof=1)
    chi_squared = stats.chi2.sf((mean**2 / (variance / 8)).sum(-1), 2).ravel()
    assert abs((chi_squared < level).mean() - level) > tolerance  # the check tells the two tests apart


def test_significant_cells_whose_bias_estimate_is_not_positive_stay_out_of_the_fit():
    """Coordinate 0 has a large bias, coordinate 1 none but a large variance: Σ (ē² − s²/R) over both is
    ≤ 0 in some significant cells. Before, the log of those made the bias fit NaN, reported as a result."""
    generator = np.random.default_rng(0)
    step_sizes = np.geomspace(0.01, 1.0, 6)
    bias = np.stack([step_sizes, np.zeros(6)], axis=-1)  # (step_size, coordinate)
    noise = generator.normal(size=(1, 6, 64, 2)) * np.array([0.02, 5.0])
    study = _study_of(bias[None, :, None, :] + noise, [0.0, 0.0])
    cells = study.cell_errors("mean")
    significant = (cells["bias_p_value"] < bias_variance.SIGNIFICANCE).values.ravel()
    positive = (cells["squared_bias"] > 0).values.ravel()
    assert (significant & ~positive).any() and (significant & positive).sum() >= 3
    fit = study.fit("mean").squared_bias
    assert fit.num_points == (significant & positive).sum() and math.isfinite(fit.exponent)
    with pytest.raises(ValueError, match="y must be finite and > 0"):
        bias_variance.PowerLawFit.fit(np.array([1.0, 2.0, 3.0]), np.array([1.0, -1.0, 2.0]))


def test_only_cells_whose_bias_is_clearly_measured_enter_the_bias_fit():
    """Four cells of bias η (p ≈ 0), one of p = 0.02 and one of p = 0.5: only the first four are fitted,
    the level being 1e-3. A cell whose bias is lost in its noise would pull the fit towards the noise."""
    from scipy import stats

    num_replicates = 8
    pattern = np.random.default_rng(0).normal(size=num_replicates)
    pattern = (pattern - pattern.mean()) / pattern.std(ddof=1)  # mean 0, sd 1: a cell's t is mean/(sd/√R)
    step_sizes = np.geomspace(0.01, 1.0, 6)
    means = np.concatenate(
        [step_sizes[:4], [stats.t.isf(q, num_replicates - 1) / math.sqrt(num_replicates) for q in (0.01, 0.25)]]
    )
    sds = np.concatenate([1e-3 * step_sizes[:4], [1.0, 1.0]])
    estimates = means[:, None] + sds[:, None] * pattern  # (step_size, replicate)
    study = _study_of(estimates[None, :, :, None], [0.0])
    np.testing.assert_allclose(study.cell_errors("mean")["bias_p_value"].values[0, 4:], [0.02, 0.5])
    fit = study.fit("mean").squared_bias
    assert fit.num_points == 4
    assert fit.exponent == pytest.approx(2.0, abs=1e-5)


def test_averages_by_hand_at_zero_temperature():
    """T = 0: θ_{k+1} = θ_k − η_k (θ_k − μ)/σ², deterministic. A constant step's estimate is the plain
    average of θ_k over k ≥ burn-in, the decreasing schedule's the η_k-weighted one (Teh et al. 2016)."""
    target = GaussianTarget([3.0], [2.0])
    schedule = Polynomial(a=0.5, b=1.0, gamma=0.55)
    study = bias_variance_study(
        target,
        [0.1, 0.2],
        [20, 40],
        num_replicates=2,
        sampler_kwargs={"temperature": 0.0},
        decreasing_step_size=schedule,
        burn_in_fraction=0.25,
        estimators=["mean"],
        seed=0,
    ).dataset
    for i, budget in enumerate([20, 40]):
        starts = target.sample(2, bias_variance._segment_seed(bias_variance._segment_seed(0, i), 0))[:, 0].numpy()

        def states(step_size, starts=starts, budget=budget):
            theta, path = starts.copy(), []
            for k in range(budget):
                path.append(theta.copy())
                theta = theta - step_size(k) * (theta - 3.0) / 4.0
            return np.array(path)  # (budget, replicate): the state kept at step k is the one before the update

        kept = slice(budget // 4, budget)
        for j, eta in enumerate([0.1, 0.2]):
            expected = states(lambda k, eta=eta: eta)[kept].mean(axis=0)
            np.testing.assert_allclose(study["constant_estimate"].values[0, i, j, :, 0], expected, rtol=1e-12)
        weights = schedule.values(budget)[kept]
        expected = (weights[:, None] * states(schedule)[kept]).sum(axis=0) / weights.sum()
        np.testing.assert_allclose(study["decreasing_estimate"].values[0, i, :, 0], expected, rtol=1e-12)


def test_gaussian_target_draws_have_its_mean_and_sd():
    target = GaussianTarget([3.0, -1.0], [0.5, 2.0])
    draws = target.sample(20_000, seed=0).numpy()
    standard_errors = target.sd / math.sqrt(len(draws))
    assert (np.abs(draws.mean(axis=0) - target.mean) < K_SIGMA * standard_errors).all()
    # s.e. of a normal sample's sd: σ/√(2n)
    assert (np.abs(draws.std(axis=0, ddof=1) - target.sd) < K_SIGMA * standard_errors / math.sqrt(2)).all()


def test_bootstrap_resamples_the_replicates_of_a_budget_together_across_step_sizes():
    """Every step size of a budget shares its replicates' seeds, so a resample must take the same
    replicates for each: with equal squared errors at every step size, every resample's MSE is equal too."""
    errors = np.random.default_rng(2).normal(size=(2, 1, 16, 3))
    study = _study_of(np.repeat(errors, 4, axis=1), np.zeros(3))
    bootstrap = study._bootstrap_mse("mean")  # (resample, budget, step_size)
    assert np.ptp(bootstrap, axis=-1).max() == 0.0
    assert np.ptp(bootstrap[:, 0, 0]) > 0  # the resamples differ


def test_step_sizes_beyond_the_stability_of_langevin_on_the_gaussian_are_refused():
    target = GaussianTarget([0.0, 0.0], [0.5, 1.0])
    with pytest.raises(ValueError, match=r"SGLD on .* is stable only for step sizes < 2σ²_min = 0.5"):
        bias_variance_study(target, [0.1, 0.6], [10, 20], num_replicates=2)
    # the same chain: before, LD's unstable cells entered the fits (MSE 1e21, a variance exponent of +21)
    with pytest.raises(ValueError, match=r"LD on .* is stable only for step sizes < 2σ²_min = 0.5"):
        bias_variance_study(target, [0.1, 0.6], [10, 20], num_replicates=2, sampler=sgmcmc.LD)
    # MALA is exact at every step size
    study = bias_variance_study(
        target, [0.1, 0.6], [10, 20], num_replicates=2, sampler=sgmcmc.LD, sampler_kwargs={"metropolis": True}
    )
    assert np.isfinite(study.dataset["constant_estimate"]).all()


def test_a_decreasing_schedule_that_starts_unstable_is_refused_and_one_not_robbins_monro_is_warned_of(tmp_path):
    """Before, at σ = 0.1 the default η_0 = 1 blew the decreasing runs up (MSE 4.7e146, then inf, and a ratio
    printed with 150 digits); the command now starts it at min(1, σ²). A schedule that is not Robbins–Monro
    was taken silently as the Robbins–Monro comparison."""
    target = GaussianTarget.isotropic(2, sd=0.1)
    with pytest.raises(ValueError, match=r"decreasing_step_size starts at η_0 = 1, but SGLD .* < 2σ²_min = 0.02"):
        bias_variance_study(target, [0.001, 0.002], [10, 20], num_replicates=2)
    with pytest.warns(UserWarning, match="does not satisfy the Robbins–Monro conditions"):
        bias_variance_study(
            target, [0.001, 0.002], [10, 20], num_replicates=2, decreasing_step_size=Polynomial(a=0.01, gamma=0.2)
        )
    output = tmp_path / "study"
    arguments = ["--dim", "2", "--sd", "0.1", "--budgets", "64", "256", "--num-replicates", "8"]
    steps = ["--min-step-size", "0.0003", "--max-step-size", "0.008", "--num-step-sizes", "5", "--no-progress"]
    assert main(["bias-variance", *arguments, *steps, "--output", str(output)]) == 0
    decreasing = BiasVarianceStudy.load(output / "study.nc").dataset["decreasing_estimate"]
    assert np.isfinite(decreasing).all() and float(np.abs(decreasing).max()) < 1.0


def test_a_bad_seed_is_refused_naming_it():
    """Before, numpy's SeedSequence errors ('expected non-negative integer', 'int() argument must be...')."""
    target = GaussianTarget([0.0], [1.0])
    with pytest.raises(ValueError, match="seed must be >= 0, got -1"):
        bias_variance_study(target, [0.1, 0.2], [10, 20], num_replicates=2, seed=-1)
    with pytest.raises(TypeError, match="seed must be an integer, got list"):
        bias_variance_study(target, [0.1, 0.2], [10, 20], num_replicates=2, seed=[1, 2])


def test_model_optimum_minimises_the_fitted_bias_and_variance(study):
    """η_opt(n) of the fitted model minimises bias²(η) + variance(nη) = A η^a + B (nη)^(−b)."""
    fit = study.fit("second_moment")
    for budget, model_optimum in zip(fit.budgets, fit.model_optimal_step_size, strict=True):
        log_optimum = optimize.minimize_scalar(
            lambda log_eta, budget=budget: fit.squared_bias(np.exp(log_eta)) + fit.variance(budget * np.exp(log_eta)),
            bounds=(math.log(1e-4), math.log(10.0)),
            method="bounded",
            options={"xatol": 1e-10},
        ).x
        assert model_optimum == pytest.approx(math.exp(log_optimum), rel=1e-6)


def test_model_slope_and_its_delta_method_standard_error(study):
    """−b/(a+b) from the two fitted exponents, and the first-order propagation of their independent
    s.e.s, with the partial derivatives taken numerically here rather than by the formula's algebra."""
    fit = study.fit("second_moment")
    a, b = fit.squared_bias.exponent, -fit.variance.exponent
    assert fit.model_slope == pytest.approx(-b / (a + b), rel=1e-12)

    def model_slope(a, b):
        return -b / (a + b)

    h = 1e-6
    by_a = (model_slope(a + h, b) - model_slope(a - h, b)) / (2 * h)
    by_b = (model_slope(a, b + h) - model_slope(a, b - h)) / (2 * h)
    propagated = math.hypot(by_a * fit.squared_bias.exponent_se, by_b * fit.variance.exponent_se)
    assert fit.model_slope_se == pytest.approx(propagated, rel=1e-6)


def test_netcdf_round_trip_reproduces_the_analysis(study, tmp_path):
    path = study.save(tmp_path / "study.nc")
    loaded = BiasVarianceStudy.load(path)
    xr.testing.assert_identical(loaded.dataset, study.dataset)
    assert loaded.fit("second_moment").slope == study.fit("second_moment").slope
    assert loaded.markdown_table("second_moment") == study.markdown_table("second_moment")
    assert "bias_variance" in group_names(az.from_netcdf(str(path)))


def test_table_and_figure(study, tmp_path):
    table = study.markdown_table("second_moment")
    assert all(f"| {budget} |" in table for budget in BUDGETS) and "slope of log η_opt" in table
    assert "none inside the grid" in study.markdown_table("mean")
    path = study.plot(tmp_path / "figure.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("estimator", ["mean", "second_moment"])
def test_langevin_error_closed_form_matches_a_direct_sum(estimator):
    """The pair sum S(r) = Σ_{j,k<m} r^|j−k| and the stationary moments, against brute force."""
    target = GaussianTarget([0.5, -1.0], [1.0, 2.0])
    step_size, averaged = 0.3, 7
    squared_bias, variance = target.langevin_error(estimator, step_size, averaged)
    lags = np.abs(np.subtract.outer(np.arange(averaged), np.arange(averaged)))
    expected_bias, expected_variance = 0.0, 0.0
    for mean, sd in zip(target.mean, target.sd, strict=True):
        rho, stationary = 1 - step_size / sd**2, sd**2 / (1 - step_size / (2 * sd**2))
        covariance = stationary * rho**lags  # Cov(e_j, e_k) of the stationary AR(1)
        if estimator == "mean":
            expected_variance += covariance.sum() / averaged**2
        else:
            expected_bias += (stationary - sd**2) ** 2
            expected_variance += (4 * mean**2 * covariance + 2 * covariance**2).sum() / averaged**2
    assert squared_bias == pytest.approx(expected_bias, rel=1e-12, abs=1e-15)
    assert variance == pytest.approx(expected_variance, rel=1e-12)


def test_segments_continue_the_run_exactly(monkeypatch):
    """At T = 0 the chains are deterministic: a run split into many segments (each its own sample call,
    the decreasing schedule shifted) gives the averages of one unbroken run."""
    arguments = dict(
        target=GaussianTarget([1.0, -2.0], [1.0, 0.5]),
        step_sizes=[0.05, 0.1],
        budgets=[30, 50],
        num_replicates=3,
        sampler_kwargs={"temperature": 0.0},
        decreasing_step_size=Polynomial(a=0.2, b=2.0, gamma=0.6),
    )
    whole = bias_variance_study(**arguments).dataset
    monkeypatch.setattr(bias_variance, "_SEGMENT_ELEMENTS", 3 * 2 * 7)  # segments of 7 steps
    pieces = bias_variance_study(**arguments).dataset
    for name in ("constant_estimate", "decreasing_estimate"):
        np.testing.assert_allclose(pieces[name].values, whole[name].values, rtol=1e-12)


def test_a_replicate_that_diverged_in_one_segment_does_not_stop_the_next(monkeypatch):
    """Before, a replicate frozen where its log density is -inf started the next segment's sample call
    from there, which refused it ("not finite at the initial params"): the whole study failed."""
    monkeypatch.setattr(bias_variance, "_SEGMENT_ELEMENTS", 4 * 1 * 100)  # segments of 100 steps

    class StandardNormal:  # a target of the user's: the study checks no step size against it
        dim = 1
        gaussian = GaussianTarget([0.0], [1.0])

        def log_density(self, theta):
            return self.gaussian.log_density(theta)

        def exact_expectation(self, estimator):
            return self.gaussian.exact_expectation(estimator)

        def sample(self, num, seed):
            return self.gaussian.sample(num, seed)

    # η = 4 on N(0, 1): θ ← −3θ + noise, so θ²/2 overflows to inf near step 320, in the 4th of 6 segments
    study = bias_variance_study(StandardNormal(), [0.1, 4.0], [20, 600], num_replicates=4, decreasing_step_size=None)
    assert study.dataset["constant_diverged"].values.tolist() == [[[False] * 4] * 2, [[False] * 4, [True] * 4]]
    mse = study.cell_errors("mean")["mse"].values
    assert np.isfinite(mse[:, 0]).all() and np.isfinite(mse[0, 1]) and np.isposinf(mse[1, 1])


def test_ctrl_c_stops_the_study_with_keyboard_interrupt():
    """Before, an interrupted sample call returned its few draws, which the study then added to sums sized for
    the whole segment: a raw 'size of tensor a must match' RuntimeError."""

    class Interrupted:  # Ctrl-C on the 30th call of the log density
        dim, calls, gaussian = 1, 0, GaussianTarget([0.0], [1.0])

        def log_density(self, theta):
            self.calls += 1
            if self.calls == 30:
                raise KeyboardInterrupt
            return self.gaussian.log_density(theta)

        def exact_expectation(self, estimator):
            return self.gaussian.exact_expectation(estimator)

        def sample(self, num, seed):
            return self.gaussian.sample(num, seed)

    with pytest.warns(RuntimeWarning, match="sampling interrupted"):
        with pytest.raises(KeyboardInterrupt, match="bias_variance_study: interrupted after"):
            bias_variance_study(Interrupted(), [0.1, 0.2], [100, 200], num_replicates=4, decreasing_step_size=None)


def test_invalid_targets_and_schedules_are_named():
    """Before, an empty target failed later in IndexError, an sd of the wrong length in numpy's broadcast
    error, and a float was taken as the decreasing schedule."""
    with pytest.raises(ValueError, match="mean must be a finite, non-empty vector"):
        GaussianTarget([], 1.0)
    with pytest.raises(ValueError, match=r"sd must be a number or have mean's shape \(3,\), got shape \(2,\)"):
        GaussianTarget([0.0, 0.0, 0.0], [1.0, 2.0])
    with pytest.raises(TypeError, match="decreasing_step_size must be a Schedule"):
        bias_variance_study(TARGET, [0.1, 0.2], [10, 20], num_replicates=2, decreasing_step_size=0.1)


@pytest.mark.parametrize(
    "change, match",
    [
        ({"step_sizes": [0.2, 0.1]}, "step_sizes"),
        ({"budgets": [100]}, "budgets"),
        ({"burn_in_fraction": 1.0}, "burn_in_fraction"),
        ({"estimators": ["median"]}, "estimators"),
    ],
)
def test_invalid_arguments(change, match):
    arguments = {"target": TARGET, "step_sizes": [0.1, 0.2], "budgets": [10, 20], "num_replicates": 2, **change}
    with pytest.raises(ValueError, match=match):
        bias_variance_study(**arguments)


@pytest.mark.parametrize(
    "change, match",
    [
        ({"step_sizes": 0.1}, "step_sizes must be a sequence, got float 0.1"),
        ({"estimators": "mean"}, "estimators must be a sequence, got str 'mean'"),
        ({"sampler": "SGLD"}, "sampler must be a Sampler class such as sgmcmc.SGLD, got 'SGLD'"),
        ({"burn_in_fraction": "0.1"}, "burn_in_fraction must be a real number, got str"),
        ({"burn_in_fraction": False}, "burn_in_fraction must be a real number, got bool"),
    ],
)
def test_arguments_of_the_wrong_type_are_named(change, match):
    """Before: Python's own errors ('float' object is not iterable, 'str' object is not callable, '<=' not
    supported between 'int' and 'str'), the string 'mean' read as its letters, and False as 0."""
    arguments = {"target": TARGET, "step_sizes": [0.1, 0.2], "budgets": [10, 20], "num_replicates": 2, **change}
    with pytest.raises(TypeError, match=match):
        bias_variance_study(**arguments)


def test_an_estimator_the_study_does_not_hold_is_named(study):
    """Before, xarray's KeyError "not all values found in index 'estimator'"."""
    for analysis in (study.fit, study.cell_errors, study.markdown_table):
        with pytest.raises(ValueError, match=r"this study holds estimators \['mean', 'second_moment'\], not 'median'"):
            analysis("median")


def test_the_slope_has_no_standard_error_when_it_is_not_measured():
    """Here the data find an interior optimum at one budget only, so no slope, while some bootstrap resamples
    find one at both: their spread was given as the s.e. of a NaN slope."""
    small = bias_variance_study(GaussianTarget.isotropic(2), [0.1, 0.2, 0.4], [40, 80], num_replicates=8)
    fit = small.fit("second_moment")
    assert np.isfinite(fit.optimal_step_size).sum() == 1 and math.isnan(fit.slope)
    bootstrap_optima = bias_variance._vertex_step_sizes(np.log([0.1, 0.2, 0.4]), small._bootstrap_mse("second_moment"))
    assert np.isfinite(bias_variance._slopes(np.log([40, 80]), bootstrap_optima)).sum() > 1
    assert math.isnan(fit.slope_se)


def test_command_writes_study_figure_and_table(tmp_path, capsys):
    arguments = ["bias-variance", "--output", str(tmp_path), "--dim", "1", "--budgets", "16", "32"]
    arguments += ["--num-step-sizes", "3", "--num-replicates", "4", "--no-progress"]
    assert main(arguments) == 0
    assert "| 16 |" in capsys.readouterr().out
    loaded = BiasVarianceStudy.load(tmp_path / "study.nc")
    assert loaded.dataset["constant_estimate"].shape == (2, 2, 3, 4, 1)
    assert (tmp_path / "bias_variance.png").exists() and (tmp_path / "bias_variance.md").exists()


@pytest.mark.parametrize(
    "option, value, match",
    [
        ("--sd", "-1", "sd must be finite and > 0, got -1.0"),
        ("--budgets", "16", "budgets"),
        ("--seed", "-1", "seed must be >= 0"),
        ("--burn-in-fraction", "1.5", "burn_in_fraction must be in [0, 1)"),
    ],
)
def test_command_reports_a_bad_option_as_a_usage_error_and_leaves_no_folder(tmp_path, capsys, option, value, match):
    """Before, a bad value printed a Python traceback and exited 1; sgmcmc run and landscape exit 2 with a message.
    Then the output folder, made before the study checked its settings, was left behind empty (and --sd -1 was
    named as a 16-element array)."""
    with pytest.raises(SystemExit) as stopped:
        main(["bias-variance", "--output", str(tmp_path / "out"), "--dim", "16", "--no-progress", option, value])
    assert stopped.value.code == 2
    assert match in capsys.readouterr().err
    assert not (tmp_path / "out").exists()

"""Shared targets with known answers, and Monte Carlo error helpers for the statistical tests."""

from __future__ import annotations

from dataclasses import dataclass

import arviz as az
import numpy as np
import torch
import xarray as xr

import sgmcmc

K_SIGMA = 4.0
"""Monte Carlo allowance in standard errors (posteriordb's README: k = 4 for CI)."""


def group_names(idata) -> set[str]:
    """The group names of an ArviZ 0.x ``InferenceData`` or 1.x ``DataTree``."""
    return set(idata.children) if isinstance(idata, xr.DataTree) else set(idata.groups())


def standard_normal_log_posterior(theta: torch.Tensor) -> torch.Tensor:
    """log N(θ; 0, I) up to a constant."""
    return -0.5 * (theta**2).sum()


def ess(draws: np.ndarray) -> float:
    """Bulk ESS of a (chain, draw) array, from ArviZ."""
    return float(az.ess(np.asarray(draws, dtype=np.float64)))


def mean_and_se(draws: np.ndarray) -> tuple[float, float]:
    """Mean over (chain, draw) and its Monte Carlo s.e., sd / sqrt(ESS of the mean).

    ArviZ's mean ESS, not the bulk ESS: for skewed draws such as squared deviations the bulk ESS
    (of rank-normalised values) is about 25 % larger, and z-scores built on it spread with sd 1.2.
    """
    draws = np.asarray(draws, dtype=np.float64)
    return float(draws.mean()), float(az.mcse(draws, method="mean"))


def between_chains_mean_and_se(draws: np.ndarray) -> tuple[float, float]:
    """Mean over (chain, draw) and its s.e. from the spread of the chain means, sd / sqrt(num_chains):
    honest when a slow mode (a thermostat) hides from the autocorrelation ESS, if chains are independent."""
    chain_means = np.asarray(draws, dtype=np.float64).mean(axis=1)
    return float(chain_means.mean()), float(chain_means.std(ddof=1) / np.sqrt(len(chain_means)))


def variance_about_and_se(draws: np.ndarray, center: float) -> tuple[float, float]:
    """E[(x − center)²] over (chain, draw) and its s.e. from the ESS of the squared deviations."""
    return mean_and_se((draws - center) ** 2)


@dataclass
class ConjugateLinearRegression:
    """y = X w + ε, ε ~ N(0, noise_sd²), prior w ~ N(0, prior_sd² I): Gaussian posterior in closed form."""

    features: torch.Tensor
    targets: torch.Tensor
    noise_sd: float
    prior_sd: float

    @classmethod
    def make(cls, num_data: int = 1000, dim: int = 3, seed: int = 0) -> ConjugateLinearRegression:
        generator = torch.Generator().manual_seed(seed)
        features = torch.randn(num_data, dim, generator=generator, dtype=torch.float64)
        weights = torch.linspace(-1.0, 2.0, dim, dtype=torch.float64)
        targets = features @ weights + torch.randn(num_data, generator=generator, dtype=torch.float64)
        return cls(features, targets, noise_sd=1.0, prior_sd=10.0)

    def with_feature_scales(self, scales: list[float]) -> ConjugateLinearRegression:
        """The same data with feature j multiplied by scales[j]: a badly conditioned posterior when
        the scales differ by orders of magnitude."""
        scaled = self.features * torch.tensor(scales, dtype=self.features.dtype)
        return ConjugateLinearRegression(scaled, self.targets, self.noise_sd, self.prior_sd)

    def posterior(self) -> tuple[np.ndarray, np.ndarray]:
        """Posterior mean (dim,) and covariance (dim, dim)."""
        precision = (
            self.features.T @ self.features / self.noise_sd**2
            + torch.eye(self.features.shape[1], dtype=torch.float64) / self.prior_sd**2
        )
        covariance = torch.linalg.inv(precision)
        mean = covariance @ self.features.T @ self.targets / self.noise_sd**2
        return mean.numpy(), covariance.numpy()

    def log_prior(self, weights: torch.Tensor) -> torch.Tensor:
        return -0.5 * (weights**2).sum() / self.prior_sd**2

    def log_likelihood(self, weights: torch.Tensor, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        features, targets = batch
        return -0.5 * ((targets - features @ weights) / self.noise_sd) ** 2

    def log_posterior(self):
        return sgmcmc.minibatch_log_posterior(self.log_prior, self.log_likelihood, num_data=len(self.targets))


@dataclass
class GaussianMean:
    """y_i ~ N(θ, noise_sd² I), prior θ ~ N(0, prior_sd² I): a Gaussian posterior in closed form.

    Every row has the same Hessian, so a minibatch gradient is the exact one plus an error c that
    does not depend on θ: SG chains on this target are linear with additive gradient noise, and
    :func:`minibatch_stationary_covariance` gives their exact stationary law.
    """

    observations: torch.Tensor
    noise_sd: float
    prior_sd: float

    @classmethod
    def make(cls, num_data: int = 1000, dim: int = 3, seed: int = 0) -> GaussianMean:
        generator = torch.Generator().manual_seed(seed)
        location = torch.linspace(-1.0, 2.0, dim, dtype=torch.float64)
        observations = location + torch.randn(num_data, dim, generator=generator, dtype=torch.float64)
        return cls(observations, noise_sd=1.0, prior_sd=10.0)

    @property
    def precision(self) -> float:
        """h = N/σ² + 1/σ_0², the posterior precision of each coordinate."""
        return self.observations.shape[0] / self.noise_sd**2 + 1 / self.prior_sd**2

    def posterior(self) -> tuple[np.ndarray, np.ndarray]:
        """Posterior mean (dim,) and covariance (dim, dim)."""
        dim = self.observations.shape[1]
        mean = self.observations.sum(0).numpy() / self.noise_sd**2 / self.precision
        return mean, np.eye(dim) / self.precision

    def gradient_noise_covariance(self, batch_size: int) -> np.ndarray:
        """Cov of c = (N/n) Σ_{i∈B} (y_i − ȳ)/σ², n rows without replacement (:func:`minibatch_gradient_noise`)."""
        return minibatch_gradient_noise(self.observations.numpy() / self.noise_sd**2, batch_size)

    def log_prior(self, theta: torch.Tensor) -> torch.Tensor:
        return -0.5 * (theta**2).sum() / self.prior_sd**2

    def log_likelihood(self, theta: torch.Tensor, batch: torch.Tensor) -> torch.Tensor:
        return -0.5 * (((batch - theta) / self.noise_sd) ** 2).sum(-1)

    def log_posterior(self):
        return sgmcmc.minibatch_log_posterior(self.log_prior, self.log_likelihood, num_data=len(self.observations))


def minibatch_gradient_noise(per_example_gradients: np.ndarray, batch_size: int) -> np.ndarray:
    """Cov of the minibatch gradient's error (N/n) Σ_{i∈B} g_i − Σ_i g_i, n of the N rows (N, d) of
    ``per_example_gradients`` drawn without replacement: (N²/n)(N − n)/(N − 1) S², S² their covariance
    with divisor N."""
    num_data, dim = per_example_gradients.shape
    spread = np.cov(per_example_gradients, rowvar=False, bias=True).reshape(dim, dim)
    return num_data**2 / batch_size * (num_data - batch_size) / (num_data - 1) * spread


def minibatch_stationary_covariance(
    transition: np.ndarray,
    gradient_input: np.ndarray,
    injected: np.ndarray,
    gradient_noise: np.ndarray,
    batches_per_epoch: int | None,
) -> np.ndarray:
    """Exact stationary covariance of a linear chain z ← A z + B c_k + w_k, averaged over the draws'
    positions in an epoch (draws at every step, a whole number of epochs).

    w_k ~ N(0, Q) is the injected noise, c_k the minibatch gradient's error, Cov(c_k) = V. The
    package reshuffles each chain's rows every epoch of m batches, so the m errors of an epoch sum
    to 0: Cov(c_p, c_q) = −V/(m − 1) within an epoch, 0 across epochs. ``batches_per_epoch=None``
    gives independent batches instead (Cov(c_p, c_q) = 0), ``gradient_noise = 0`` exact gradients.

    With M_j = A^(t−1−j) B, the error of the first t batches of an epoch contributes
    E_t = (m Σ_j M_j V M_jᵀ − (Σ_j M_j) V (Σ_j M_j)ᵀ)/(m − 1); at epoch starts the gradient-noise
    part solves W = A^m W (A^m)ᵀ + E_m, and t steps later it is A^t W (A^t)ᵀ + E_t.
    """
    from scipy import linalg

    injected_part = linalg.solve_discrete_lyapunov(transition, injected)
    if batches_per_epoch is None:
        return injected_part + linalg.solve_discrete_lyapunov(
            transition, gradient_input @ gradient_noise @ gradient_input.T
        )
    powers = [np.linalg.matrix_power(transition, t) for t in range(batches_per_epoch + 1)]

    def within_epoch(t: int) -> np.ndarray:
        inputs = [powers[t - 1 - j] @ gradient_input for j in range(t)]
        total = sum(inputs, np.zeros_like(gradient_input))
        own = sum((M @ gradient_noise @ M.T for M in inputs), np.zeros_like(injected))
        return (batches_per_epoch * own - total @ gradient_noise @ total.T) / (batches_per_epoch - 1)

    at_epoch_start = linalg.solve_discrete_lyapunov(powers[-1], within_epoch(batches_per_epoch))
    gradient_part = np.mean(
        [powers[t] @ at_epoch_start @ powers[t].T + within_epoch(t) for t in range(batches_per_epoch)], axis=0
    )
    return injected_part + gradient_part


@dataclass
class LogisticRegression:
    """y_i ~ Bernoulli(σ(x_iᵀ w)), prior w ~ N(0, prior_sd² I); x_i ~ N(0, I), true w evenly spaced in [−1, 1]."""

    features: torch.Tensor
    labels: torch.Tensor
    prior_sd: float

    @classmethod
    def make(cls, num_data: int = 10_000, dim: int = 3, seed: int = 0) -> LogisticRegression:
        generator = torch.Generator().manual_seed(seed)
        features = torch.randn(num_data, dim, generator=generator, dtype=torch.float64)
        weights = torch.linspace(-1.0, 1.0, dim, dtype=torch.float64)
        labels = torch.bernoulli(torch.sigmoid(features @ weights), generator=generator)
        return cls(features, labels, prior_sd=10.0)

    def log_prior(self, weights: torch.Tensor) -> torch.Tensor:
        return -0.5 * (weights**2).sum() / self.prior_sd**2

    def log_likelihood(self, weights: torch.Tensor, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        features, labels = batch
        logits = features @ weights
        return labels * logits - torch.nn.functional.softplus(logits)

    def log_posterior(self):
        return sgmcmc.minibatch_log_posterior(self.log_prior, self.log_likelihood, num_data=len(self.labels))


def correlated_gaussian(correlation: float = 0.9, scales: tuple[float, float] = (1.0, 2.0)):
    """A 2-D Gaussian N(mean, covariance) and its log density (one chain, exact gradient)."""
    mean = torch.tensor([1.0, -2.0], dtype=torch.float64)
    sd = torch.tensor(scales, dtype=torch.float64)
    covariance = torch.outer(sd, sd) * torch.tensor([[1.0, correlation], [correlation, 1.0]], dtype=torch.float64)
    precision = torch.linalg.inv(covariance)

    def log_posterior(theta: torch.Tensor) -> torch.Tensor:
        centred = theta - mean
        return -0.5 * centred @ precision @ centred

    return log_posterior, mean.numpy(), covariance.numpy()


class DoubleWell:
    """The SGHMC paper's Figure 1 target: U(θ) = −2θ² + θ⁴, p ∝ exp(−U), gradients ∇U + N(0, 4).

    The gradient noise comes as data: batch z ~ N(0, gradient_noise_variance) and
    log p̃(θ, z) = −U(θ) + θ z, so ∇log p̃ = −∇U + z.
    """

    gradient_noise_variance = 4.0

    def __init__(self, pool_size: int = 100_000, seed: int = 0) -> None:
        from scipy import integrate

        generator = torch.Generator().manual_seed(seed)
        pool = np.sqrt(self.gradient_noise_variance) * torch.randn(pool_size, generator=generator, dtype=torch.float64)
        self.noisy_gradients = sgmcmc.Minibatches(pool, batch_size=1)
        self.grid = np.linspace(-3.0, 3.0, 20_001)
        density = np.exp(-self.potential(self.grid))
        cdf = integrate.cumulative_trapezoid(density, self.grid, initial=0.0)
        self.cdf_on_grid = cdf / cdf[-1]

    @staticmethod
    def potential(theta):
        return -2 * theta**2 + theta**4

    def log_posterior(self, theta: torch.Tensor) -> torch.Tensor:
        return -self.potential(theta).sum()

    def noisy_log_posterior(self, theta: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return -self.potential(theta).sum() + (theta * z).sum()

    def assert_matches_exact_density(self, draws: np.ndarray) -> None:
        """The (chain, draw) draws pass a KS test against exp(−U)/Z at their effective sample size (≥ 1000)."""
        effective_size = ess(draws)
        assert effective_size > 1000, effective_size
        assert self.ks_distance(draws) < ks_bound(effective_size)

    def ks_distance(self, draws: np.ndarray) -> float:
        """sup |F_n − F| between the draws' empirical CDF and the exact CDF."""
        ordered = np.sort(draws.ravel())
        exact = np.interp(ordered, self.grid, self.cdf_on_grid)
        n = len(ordered)
        return float(max((np.arange(1, n + 1) / n - exact).max(), (exact - np.arange(n) / n).max()))


def ks_bound(effective_size: float, false_alarm: float = 1e-3) -> float:
    """The KS distance exceeded with probability ``false_alarm`` by ``effective_size`` independent draws."""
    from scipy import stats

    return float(stats.kstwobign.ppf(1 - false_alarm) / np.sqrt(effective_size))


class GaussianGrid:
    """Zhang et al. (2020)'s synthetic target: 25 equally weighted Gaussians on {−4, −2, 0, 2, 4}², variance 0.03."""

    variance = 0.03

    def __init__(self) -> None:
        grid = torch.tensor([-4.0, -2.0, 0.0, 2.0, 4.0], dtype=torch.float64)
        self.modes = torch.cartesian_prod(grid, grid)

    def log_posterior(self, theta: torch.Tensor) -> torch.Tensor:
        return torch.logsumexp(-((theta - self.modes) ** 2).sum(-1) / (2 * self.variance), dim=0)

    def mode_indicators(self, draws: np.ndarray) -> np.ndarray:
        """(…, 25) indicators: the draw lies within 3 sd of that mode."""
        distances = torch.cdist(torch.as_tensor(draws.reshape(-1, 2)), self.modes)
        near = (distances < 3 * np.sqrt(self.variance)).numpy()
        return near.reshape(*draws.shape[:-1], len(self.modes))


def assert_moments(draws: np.ndarray, mean: np.ndarray, covariance: np.ndarray, relative_bias: float = 0.01) -> None:
    """Means within K_SIGMA s.e.; covariances within K_SIGMA s.e. plus ``relative_bias`` (discretisation)."""
    for i in range(draws.shape[-1]):
        draws_mean, se = mean_and_se(draws[..., i])
        assert abs(draws_mean - mean[i]) < K_SIGMA * se, i
        for j in range(draws.shape[-1]):
            product, product_se = mean_and_se((draws[..., i] - mean[i]) * (draws[..., j] - mean[j]))
            assert abs(product - covariance[i, j]) < K_SIGMA * product_se + relative_bias * abs(covariance[i, j]), (
                i,
                j,
            )


def sghmc_linear_chain(step_size, friction, precision=1.0, noise_estimate=0.0, temperature=1.0):
    """SGHMC on a Gaussian of precision H (a number, or a d × d matrix) as z ← A z + B c + w, z = (θ − μ, v),
    w ~ N(0, Q):

    v' = (1 − α) v − ηH (θ − μ) + η c + σ ξ, θ' = θ + v', σ² = 2(αT − β̂) η, c the gradient's error.
    A is 2d × 2d, B 2d × d, Q 2d × 2d (2 × 2, 2 × 1, 2 × 2 for a number).
    """
    precision = np.atleast_2d(precision)
    identity = np.eye(len(precision))
    damped = (1 - friction) * identity
    transition = np.block([[identity - step_size * precision, damped], [-step_size * precision, damped]])
    variance = 2 * (friction * temperature - noise_estimate) * step_size
    return transition, step_size * np.vstack([identity, identity]), variance * np.kron(np.ones((2, 2)), identity)


def assert_exact_law(
    draws: np.ndarray,
    mean: np.ndarray,
    covariance: np.ndarray,
    others: dict[str, np.ndarray],
    relative_bias: float = 0.0,
) -> None:
    """(chain, draw, dim) draws have the exact law's mean and covariance within K_SIGMA s.e. (plus
    ``relative_bias`` of the covariance, as :func:`assert_moments`), and each of ``others`` (name:
    covariance) is off by more than K_SIGMA s.e. in some variance, so the test tells them apart."""
    assert_moments(draws, mean, covariance, relative_bias=relative_bias)
    variances, ses = np.array([variance_about_and_se(draws[..., dim], mean[dim]) for dim in range(len(mean))]).T
    for name, other in others.items():
        separations = np.abs(variances - np.diag(other)) / ses
        assert separations.max() > K_SIGMA, f"the test cannot tell the exact law from {name}: {separations}"


class Interrupting:
    """A log posterior that raises ``error`` (by default KeyboardInterrupt, as Ctrl-C would) when called
    for step ``at_step``.

    The engine calls ``log_posterior`` twice to check the inputs (chain 0 alone, then every chain),
    then once per step (vectorised over chains), so :attr:`steps_run` counts the steps it took. The
    calls without gradients (a checkpoint's probe of the model) are not counted.
    """

    CHECKS = 2

    def __init__(self, log_posterior, at_step=None, error=KeyboardInterrupt):
        self.log_posterior, self.at_step, self.error, self.calls = log_posterior, at_step, error, 0

    def __call__(self, *arguments):
        if not torch.is_grad_enabled():
            return self.log_posterior(*arguments)
        self.calls += 1
        if self.at_step is not None and self.calls == self.at_step + self.CHECKS + 1:
            raise self.error
        return self.log_posterior(*arguments)

    @property
    def steps_run(self):
        return self.calls - self.CHECKS

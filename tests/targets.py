"""Shared targets with known answers, and Monte Carlo error helpers for the statistical tests."""

from __future__ import annotations

from dataclasses import dataclass

import arviz as az
import numpy as np
import torch

import sgmcmc

K_SIGMA = 4.0
"""Monte Carlo allowance in standard errors (posteriordb's README: k = 4 for CI)."""


def standard_normal_log_posterior(theta: torch.Tensor) -> torch.Tensor:
    """log N(θ; 0, I) up to a constant."""
    return -0.5 * (theta**2).sum()


def ess(draws: np.ndarray) -> float:
    """Bulk ESS of a (chain, draw) array, from ArviZ."""
    return float(az.ess(np.asarray(draws, dtype=np.float64)))


def mean_and_se(draws: np.ndarray) -> tuple[float, float]:
    """Mean over (chain, draw) and its Monte Carlo s.e., sd / sqrt(ESS)."""
    return float(draws.mean()), float(draws.std(ddof=1) / np.sqrt(ess(draws)))


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


def assert_within_budget(draws: np.ndarray, mean: np.ndarray, covariance: np.ndarray, budget: float = 0.1) -> None:
    """Posteriordb-style check for a fixed-step SG sampler, (chain, draw, dim) draws against a Gaussian:
    each mean within ``budget`` sd, each sd within ``budget`` relative, after gating on ESS ≥ 400 and
    on a Monte Carlo error small against the budget (so the check cannot pass by noise alone)."""
    sd = np.sqrt(np.diag(covariance))
    for dim in range(draws.shape[-1]):
        effective_size = ess(draws[..., dim])
        assert effective_size > 400, "too few effective draws for the check to mean anything"
        assert K_SIGMA / np.sqrt(effective_size) < 2 * budget, "Monte Carlo error would swamp the budget"
        assert abs(draws[..., dim].mean() - mean[dim]) < budget * sd[dim], dim
        assert abs(draws[..., dim].std() / sd[dim] - 1.0) < budget, dim


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


class Interrupting:
    """A log posterior that raises KeyboardInterrupt (as Ctrl-C would) when called for step ``at_step``.

    The engine calls ``log_posterior`` once to check the inputs, then once per step (vectorised
    over chains), so :attr:`steps_run` counts the steps it took.
    """

    def __init__(self, log_posterior, at_step=None):
        self.log_posterior, self.at_step, self.calls = log_posterior, at_step, 0

    def __call__(self, *arguments):
        self.calls += 1
        if self.at_step is not None and self.calls == self.at_step + 2:
            raise KeyboardInterrupt
        return self.log_posterior(*arguments)

    @property
    def steps_run(self):
        return self.calls - 1

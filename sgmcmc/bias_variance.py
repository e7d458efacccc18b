"""The bias–variance study of constant-step SG-MCMC: which step size η is best for a budget of n steps?

Notation of seed 002: a constant-step chain run for n steps estimates E_p[f] by the average of
f over its draws. Its error has two parts,

    MSE(η, n) = bias²(η) + variance(η, n) ≈ A η^a + B (n η)^(−b),

a bias that does not shrink with n (the chain's stationary law q_η is not p) and a Monte Carlo
variance that shrinks with the chain's length in time units, n η. With a = 2, b = 1
(bias O(η), variance O(1/(nη))), MSE is smallest at

    η_opt(n) = (b B / (a A))^(1/(a+b)) n^(−b/(a+b)) = (B / (2A n))^(1/3) ∝ n^(−1/3).

:func:`bias_variance_study` measures this: for every budget n and step size η it runs
``num_replicates`` independent chains (one vectorised ``sample`` call; chains are the
replicates), records each chain's estimate of E[θ] (``"mean"``) and E[θ²]
(``"second_moment"``) against the target's exact values, and, at each budget, the same for a
decreasing (Robbins–Monro) schedule. :class:`BiasVarianceStudy` holds the raw estimates as an
``xarray.Dataset`` (saved to netCDF, reloadable) and derives from them the fits, the optimal
steps and their slope, a table and a figure. docs/diagnostics.md explains the theory for a
Gaussian target, where the posterior-mean estimator has no O(η) bias at all.
"""

from __future__ import annotations

import argparse
import datetime
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar, Protocol

import numpy as np
import torch
import xarray as xr

import sgmcmc
from sgmcmc._checks import below_one, count, output_folder, positive
from sgmcmc.ld import LD
from sgmcmc.runner import TENSOR_PARAM_NAME, SamplerDivergenceWarning, stop_if_interrupted
from sgmcmc.sampler import Sampler
from sgmcmc.schedules import Polynomial, Schedule
from sgmcmc.sgld import SGLD

__all__ = [
    "ESTIMATORS",
    "ROBBINS_MONRO",
    "GaussianTarget",
    "TargetWithKnownMoments",
    "PowerLawFit",
    "BiasVarianceFit",
    "BiasVarianceStudy",
    "bias_variance_study",
    "add_command",
]

ESTIMATORS = ("mean", "second_moment")
"""The estimators: the chain average of θ (for E[θ]) and of θ² (for E[θ²]), per coordinate."""

NETCDF_GROUP = "bias_variance"
"""The group of the netCDF file that holds the study (``az.from_netcdf`` reads it as a group too)."""

SIGNIFICANCE = 1e-3
"""A cell's bias counts as measured (and enters the bias fit) when Hotelling's T² test of its mean error
has p < this."""

ROBBINS_MONRO = Polynomial(a=1.0, b=1.0, gamma=0.55)
"""The default decreasing schedule η_k = (1 + k)^(−0.55) (Robbins–Monro: 0.5 < γ ≤ 1)."""

_SEGMENT_ELEMENTS = 2**22
"""Draws × coordinates kept on the host at once: long budgets run in segments of this size."""


class TargetWithKnownMoments(Protocol):
    """What the study needs from a target: its log density, exact moments and exact draws."""

    @property
    def dim(self) -> int:
        """d, the number of coordinates of θ."""

    def log_density(self, theta: torch.Tensor) -> torch.Tensor:
        """log p(θ) up to a constant, for ONE chain's θ of shape (d,); a 0-dim tensor."""

    def exact_expectation(self, estimator: str) -> np.ndarray:
        """E_p[θ] (``"mean"``) or E_p[θ²] (``"second_moment"``), shape (d,)."""

    def sample(self, num: int, seed: int) -> torch.Tensor:
        """``num`` exact draws from p, shape (num, d), float64: where the chains start."""


@dataclass(frozen=True, eq=False)
class GaussianTarget:
    """N(mean, diag(sd²)): independent coordinates with known moments E[θ] = μ, E[θ²] = μ² + σ².

    A d-dimensional isotropic target is d independent copies of the 1-D problem: the MSE of the
    vector estimator (summed over coordinates) is d times that of one coordinate, with the same
    dependence on η and n, at the cost per step of one chain.
    """

    mean: np.ndarray
    sd: np.ndarray

    def __post_init__(self) -> None:
        mean = np.atleast_1d(np.asarray(self.mean, dtype=np.float64))
        if mean.ndim != 1 or mean.size == 0 or not np.isfinite(mean).all():
            raise ValueError(f"mean must be a finite, non-empty vector, got {self.mean!r}")
        sd = np.asarray(self.sd, dtype=np.float64)
        if sd.shape not in ((), mean.shape):
            raise ValueError(f"sd must be a number or have mean's shape {mean.shape}, got shape {sd.shape}")
        sd = np.broadcast_to(sd, mean.shape).copy()
        if not (np.isfinite(sd).all() and (sd > 0).all()):
            raise ValueError(f"sd must be finite and > 0, got {self.sd!r}")
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "sd", sd)

    @classmethod
    def isotropic(cls, dim: int, mean: float = 0.0, sd: float = 1.0) -> GaussianTarget:
        """N(mean·1, sd² I_dim)."""
        return cls(np.full(count("dim", dim, 1), float(mean)), float(sd))  # a bad sd is then named as given

    @property
    def dim(self) -> int:
        return len(self.mean)

    @property
    def stable_step_size_limit(self) -> float:
        """2σ²_min: the unadjusted Langevin chain (SGLD on this target) is stable for steps below it."""
        return float(2 * self.sd.min() ** 2)

    def __repr__(self) -> str:
        if (self.mean == self.mean[0]).all() and (self.sd == self.sd[0]).all():
            return f"GaussianTarget.isotropic({self.dim}, mean={self.mean[0]}, sd={self.sd[0]})"
        return f"GaussianTarget(mean={self.mean.tolist()}, sd={self.sd.tolist()})"

    def log_density(self, theta: torch.Tensor) -> torch.Tensor:
        """−Σ (θ − μ)² / (2σ²)."""
        mean = torch.as_tensor(self.mean, dtype=theta.dtype, device=theta.device)
        sd = torch.as_tensor(self.sd, dtype=theta.dtype, device=theta.device)
        return -0.5 * (((theta - mean) / sd) ** 2).sum()

    def exact_expectation(self, estimator: str) -> np.ndarray:
        if estimator == "mean":
            return self.mean.copy()
        if estimator == "second_moment":
            return self.mean**2 + self.sd**2
        raise ValueError(f"unknown estimator {estimator!r}; choose from {ESTIMATORS}")

    def sample(self, num: int, seed: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(seed)
        noise = torch.randn(num, self.dim, generator=generator, dtype=torch.float64)
        return torch.as_tensor(self.mean) + torch.as_tensor(self.sd) * noise

    def langevin_error(self, estimator: str, step_size: float, num_averaged: int) -> tuple[float, float]:
        """(bias², variance) of the estimator for the unadjusted Langevin chain at T = 1, exactly.

        ``SGLD`` with the exact gradient (no data) or ``LD`` on this target is, per coordinate,
        the AR(1) chain e_{k+1} = ρ e_k + sqrt(2η) ξ_k for e = θ − μ, with ρ = 1 − η/σ² and
        stationary variance v = σ² / (1 − η/(2σ²)) (docs/conventions.md). For the average of
        ``num_averaged`` = m states of the stationary chain, with
        S(r) = Σ_{j,k<m} r^|j−k| = m (1 + r)/(1 − r) − 2r (1 − r^m)/(1 − r)²:

        - mean: bias 0, variance v S(ρ) / m² (→ 2σ⁴/(m η): no η correction at all);
        - second moment: bias v − σ² = η/2 / (1 − η/(2σ²)), variance
          (4μ² v S(ρ) + 2v² S(ρ²)) / m² (Gaussian fourth moments; → 2σ⁶/(m η) for μ = 0).

        Both summed over coordinates. Valid for 0 < η < 2σ² (stability).
        """
        sd2 = self.sd**2
        if not 0 < step_size < self.stable_step_size_limit:
            raise ValueError(f"step_size must be in (0, 2σ²_min) = (0, {self.stable_step_size_limit}), got {step_size}")
        rho = 1 - step_size / sd2
        variance_stationary = sd2 / (1 - step_size / (2 * sd2))
        m = count("num_averaged", num_averaged, 1)

        def pair_sum(r: np.ndarray) -> np.ndarray:
            return m * (1 + r) / (1 - r) - 2 * r * (1 - r**m) / (1 - r) ** 2

        if estimator == "mean":
            return 0.0, float((variance_stationary * pair_sum(rho)).sum() / m**2)
        if estimator == "second_moment":
            squared_bias = float(((variance_stationary - sd2) ** 2).sum())
            variance = 4 * self.mean**2 * variance_stationary * pair_sum(rho) + 2 * variance_stationary**2 * pair_sum(
                rho**2
            )
            return squared_bias, float(variance.sum() / m**2)
        raise ValueError(f"unknown estimator {estimator!r}; choose from {ESTIMATORS}")


def _estimator_values(estimator: str, theta: torch.Tensor) -> torch.Tensor:
    return theta if estimator == "mean" else theta**2


def _segment_seed(seed: int, *labels: int) -> int:
    return int(np.random.SeedSequence([seed, *labels]).generate_state(1, dtype=np.uint64)[0])


@dataclass(frozen=True)
class _ShiftedSchedule(Schedule):
    """η_k = schedule(k + offset): a later segment of a run continues the schedule where it stopped."""

    schedule: Schedule
    offset: int

    def __call__(self, step: int) -> float:
        return self.schedule(step + self.offset)

    def satisfies_robbins_monro(self) -> bool:
        return self.schedule.satisfies_robbins_monro()


def _run_replicates(
    target: TargetWithKnownMoments,
    sampler_class: type[Sampler],
    sampler_kwargs: Mapping[str, Any],
    step_size: float | Schedule,
    budget: int,
    burn_in: int,
    estimators: Sequence[str],
    num_replicates: int,
    seed: int,
    device: str | torch.device,
    step_size_weighted: bool,
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Run ``num_replicates`` chains for ``budget`` steps from exact draws; average f over steps ≥ burn_in.

    Returns estimator -> (num_replicates, d) averages (weighted by η_k when ``step_size_weighted``)
    and the (num_replicates,) flags of chains that diverged. Runs in segments, each one ``sample``
    call continuing from the last state, so that memory stays bounded for long budgets.
    """
    segment_length = max(1, _SEGMENT_ELEMENTS // (num_replicates * target.dim))
    start = theta = target.sample(num_replicates, _segment_seed(seed, 0))
    sums = {name: torch.zeros(num_replicates, target.dim, dtype=torch.float64) for name in estimators}
    weight_sum = torch.zeros(num_replicates, 1, dtype=torch.float64)
    diverged = np.zeros(num_replicates, dtype=bool)
    for segment, first_step in enumerate(range(0, budget, segment_length)):
        steps = min(segment_length, budget - first_step)
        schedule = _ShiftedSchedule(step_size, first_step) if isinstance(step_size, Schedule) else step_size
        sampler = sampler_class(target.log_density, step_size=schedule, **sampler_kwargs)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SamplerDivergenceWarning)  # recorded in ``diverged`` instead
            trace = sampler.sample(
                theta,
                num_chains=num_replicates,
                num_steps=steps,
                seed=_segment_seed(seed, 1, segment),
                device=device,
                stacked_init=True,
                progress=False,
            )
        stop_if_interrupted(trace, steps, "bias_variance_study")
        # also a chain that diverged after its last kept draw, which no draw's flag marks
        diverged |= trace.diverged_at_step >= 0
        # a diverged replicate's frozen state may have a non-finite log density, which the next segment's
        # start would refuse; its estimate is ∞ whatever it does next, so it goes on from its exact start
        theta = trace.final_state["params"][TENSOR_PARAM_NAME]
        theta = torch.where(torch.as_tensor(diverged, device=theta.device)[:, None], start.to(theta.device), theta)
        draws = torch.as_tensor(trace.posterior[TENSOR_PARAM_NAME], dtype=torch.float64)  # (num_replicates, steps, d)
        weights = (
            torch.as_tensor(trace.sample_stats["step_size"])
            if step_size_weighted
            else torch.ones(draws.shape[:2], dtype=torch.float64)
        )
        weights = weights * (torch.arange(first_step, first_step + steps) >= burn_in)
        weight_sum += weights.sum(1, keepdim=True)
        for name in estimators:
            sums[name] += torch.einsum("rk,rkd->rd", weights, _estimator_values(name, draws))
    return {name: (total / weight_sum).numpy() for name, total in sums.items()}, diverged


def bias_variance_study(
    target: TargetWithKnownMoments,
    step_sizes: Sequence[float],
    budgets: Sequence[int],
    *,
    num_replicates: int = 256,
    sampler: type[Sampler] = SGLD,
    sampler_kwargs: Mapping[str, Any] | None = None,
    decreasing_step_size: Schedule | None = ROBBINS_MONRO,
    burn_in_fraction: float = 0.1,
    estimators: Sequence[str] = ESTIMATORS,
    seed: int = 0,
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> BiasVarianceStudy:
    """Measure the bias and variance of chain averages over a grid of constant steps η and budgets n.

    For each budget n (total steps per chain, burn-in included) and each η, one ``sample`` call
    runs ``num_replicates`` chains of ``sampler(target.log_density, step_size=η,
    **sampler_kwargs)`` from exact draws of the target; each chain's estimate is the average
    of f(θ_k) over its steps k ≥ ⌊burn_in_fraction · n⌋. Within a budget every η uses the same
    seeds (common random numbers: replicate r starts at the same draw and sees the same noise
    stream), which makes the MSE differences between step sizes, and so η_opt, more precise;
    budgets use independent seeds, so their η_opt are independent. A budget longer than about
    4·10⁶ / (num_replicates · d) steps runs as several ``sample`` calls, each continuing from the
    last params, to bound memory; a sampler with more state than its params (SGHMC's momentum)
    restarts that state at each of these boundaries.

    At each budget a run with ``decreasing_step_size`` (default the Robbins–Monro schedule
    η_k = (1 + k)^(−0.55)) gives the comparison at the same budget, with the step-size-weighted
    average Σ η_k f(θ_k) / Σ η_k over k ≥ burn-in (Teh, Thiéry & Vollmer 2016).

    Args:
        target: a :class:`GaussianTarget` or any :class:`TargetWithKnownMoments`.
        step_sizes: the constant steps η, increasing.
        budgets: the budgets n in steps, increasing.
        num_replicates: independent chains per (η, n) cell.
        sampler: the sampler class; ``SGLD`` without data is the unadjusted Langevin algorithm.
        sampler_kwargs: its other arguments (e.g. ``temperature``).
        decreasing_step_size: the schedule to compare with, or None.
        burn_in_fraction: the share of each budget discarded, in [0, 1).
        estimators: a subset of :data:`ESTIMATORS`.
        seed: the seed of every run (see above).
        device: where the chains run.
        progress: print one line per budget.

    Returns:
        A :class:`BiasVarianceStudy` of the estimates, shape (estimator, budget, step_size,
        replicate, coordinate), and of the decreasing schedule's (estimator, budget, replicate,
        coordinate).
    """
    for name, grid in (("step_sizes", step_sizes), ("budgets", budgets), ("estimators", estimators)):
        if isinstance(grid, str) or not isinstance(grid, (Sequence, np.ndarray)):
            raise TypeError(f"{name} must be a sequence, got {type(grid).__name__} {grid!r}")
    if not (isinstance(sampler, type) and issubclass(sampler, Sampler)):
        raise TypeError(f"sampler must be a Sampler class such as sgmcmc.SGLD, got {sampler!r}")
    step_size_grid = np.asarray([positive("step_sizes", value) for value in step_sizes], dtype=np.float64)
    budget_grid = np.asarray([count("budgets", value, 2) for value in budgets], dtype=np.int64)
    for name, grid in (("step_sizes", step_size_grid), ("budgets", budget_grid)):
        if len(grid) < 2 or (np.diff(grid) <= 0).any():
            raise ValueError(f"{name} must hold at least 2 strictly increasing values, got {grid.tolist()}")
    num_replicates = count("num_replicates", num_replicates, 2)
    seed = count("seed", seed, 0)
    if decreasing_step_size is not None and not isinstance(decreasing_step_size, Schedule):
        raise TypeError(
            f"decreasing_step_size must be a Schedule (such as ROBBINS_MONRO) or None, got {decreasing_step_size!r}"
        )
    sampler_kwargs = dict(sampler_kwargs or {})
    unadjusted_langevin = sampler is SGLD or (sampler is LD and not sampler_kwargs.get("metropolis", False))
    stable_limit = target.stable_step_size_limit if isinstance(target, GaussianTarget) else math.inf
    if unadjusted_langevin and step_size_grid[-1] >= stable_limit:
        # beyond it the chains grow geometrically, and may stay finite long enough to enter the fits
        raise ValueError(
            f"step_sizes reach {step_size_grid[-1]}, but {sampler.__name__} on {target!r} is stable only for step "
            f"sizes < 2σ²_min = {stable_limit}"
        )
    if decreasing_step_size is not None:
        if unadjusted_langevin and decreasing_step_size(0) >= stable_limit:
            raise ValueError(
                f"decreasing_step_size starts at η_0 = {decreasing_step_size(0):g}, but {sampler.__name__} on "
                f"{target!r} is stable only for step sizes < 2σ²_min = {stable_limit}: its early steps would blow "
                f"the chains up; scale it to the target, e.g. Polynomial(a={stable_limit / 2:g}, "
                f"b={ROBBINS_MONRO.b:g}, gamma={ROBBINS_MONRO.gamma:g})"
            )
        if not decreasing_step_size.satisfies_robbins_monro():
            warnings.warn(
                f"decreasing_step_size {decreasing_step_size!r} does not satisfy the Robbins–Monro conditions "
                "(Σ η_k = ∞, Σ η_k² < ∞): the study's decreasing-schedule results are not the Robbins–Monro "
                "comparison",
                UserWarning,
                stacklevel=2,
            )
    burn_in_fraction = below_one("burn_in_fraction", burn_in_fraction)
    unknown = [name for name in estimators if name not in ESTIMATORS]
    if unknown or not estimators:
        raise ValueError(f"estimators must be a non-empty subset of {ESTIMATORS}, got {list(estimators)}")
    estimators = list(dict.fromkeys(estimators))
    burn_ins = np.floor(burn_in_fraction * budget_grid).astype(np.int64)

    shape = (len(estimators), len(budget_grid), len(step_size_grid), num_replicates, target.dim)
    constant = np.empty(shape)
    constant_diverged = np.zeros(shape[1:4], dtype=bool)
    decreasing = np.empty((len(estimators), len(budget_grid), num_replicates, target.dim))
    decreasing_diverged = np.zeros((len(budget_grid), num_replicates), dtype=bool)
    for i, (budget, burn_in) in enumerate(zip(budget_grid.tolist(), burn_ins.tolist(), strict=True)):
        budget_seed = _segment_seed(seed, i)
        run = dict(
            target=target,
            sampler_class=sampler,
            sampler_kwargs=sampler_kwargs,
            budget=budget,
            burn_in=burn_in,
            estimators=estimators,
            num_replicates=num_replicates,
            seed=budget_seed,
            device=device,
        )
        for j, step_size in enumerate(step_size_grid.tolist()):
            averages, constant_diverged[i, j] = _run_replicates(step_size=step_size, step_size_weighted=False, **run)
            for e, name in enumerate(estimators):
                constant[e, i, j] = averages[name]
        if decreasing_step_size is not None:
            averages, decreasing_diverged[i] = _run_replicates(
                step_size=decreasing_step_size, step_size_weighted=True, **run
            )
            for e, name in enumerate(estimators):
                decreasing[e, i] = averages[name]
        if progress:
            print(f"budget {budget}: {len(step_size_grid)} step sizes x {num_replicates} chains done", flush=True)

    dims = ("estimator", "budget", "step_size", "replicate", "coordinate")
    data_vars: dict[str, Any] = {
        "constant_estimate": (dims, constant),
        "constant_diverged": (dims[1:4], constant_diverged),
        "exact": (("estimator", "coordinate"), np.stack([target.exact_expectation(name) for name in estimators])),
        "burn_in": (("budget",), burn_ins),
    }
    if decreasing_step_size is not None:
        data_vars["decreasing_estimate"] = (("estimator", "budget", "replicate", "coordinate"), decreasing)
        data_vars["decreasing_diverged"] = (("budget", "replicate"), decreasing_diverged)
    dataset = xr.Dataset(
        data_vars,
        coords={
            "estimator": estimators,
            "budget": budget_grid,
            "step_size": step_size_grid,
            "replicate": np.arange(num_replicates),
            "coordinate": np.arange(target.dim),
        },
        attrs={
            "created_at": datetime.datetime.now(datetime.UTC).isoformat(),
            "target": repr(target),
            "sampler": sampler.__name__,
            "sampler_kwargs": repr(sampler_kwargs),
            "decreasing_step_size": repr(decreasing_step_size),
            "burn_in_fraction": float(burn_in_fraction),
            "seed": int(seed),
            "inference_library": "sgmcmc",
            "inference_library_version": sgmcmc.__version__,
            "torch_version": str(torch.__version__),
        },
    )
    return BiasVarianceStudy(dataset)


@dataclass(frozen=True)
class PowerLawFit:
    """y = coefficient · x^exponent, fitted by least squares on log y against log x."""

    coefficient: float
    exponent: float
    exponent_se: float
    num_points: int

    @classmethod
    def fit(cls, x: np.ndarray, y: np.ndarray) -> PowerLawFit | None:
        """The fit, or None with fewer than 3 distinct x; x and y must be finite and > 0."""
        from scipy import (
            stats,
        )  # imported on use: scipy.stats is slow to import and ``import sgmcmc`` loads this module

        for name, values in (("x", x), ("y", y)):
            if not (np.isfinite(values).all() and (values > 0).all()):
                raise ValueError(f"a power law is fitted in log-log: {name} must be finite and > 0, got {values}")
        if len(np.unique(x)) < 3:
            return None
        line = stats.linregress(np.log(x), np.log(y))
        return cls(float(np.exp(line.intercept)), float(line.slope), float(line.stderr), len(x))

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.coefficient * np.asarray(x, dtype=np.float64) ** self.exponent


@dataclass(frozen=True)
class BiasVarianceFit:
    """What one estimator's study measured.

    Attributes:
        estimator: ``"mean"`` or ``"second_moment"``.
        budgets: n, shape (num_budgets,).
        squared_bias: bias² = A η^a over the cells whose bias is significant and whose bias²
            estimate is positive (None if fewer than 3 step sizes have one): ``exponent`` is a.
        variance: variance = B (nη)^(−b): ``exponent`` is −b.
        optimal_step_size: η_opt(n) from the measured MSE: the vertex of a parabola through
            log MSE against log η at the 5 grid points around the smallest MSE; NaN where the
            smallest MSE is at the grid's first or last η or beside a diverged cell (no
            interior optimum).
        optimal_step_size_se: bootstrap s.e. of log η_opt(n) (over replicates). It covers the Monte
            Carlo error only: log MSE is not a parabola in log η, and on an exact MSE curve the vertex
            sits at 0.74–0.84 of the true argmin on a grid of factor 2 between step sizes, 0.89–0.93 on
            the command's default grid (factor 1.4); refine the grid around η_opt to shrink that.
        model_optimal_step_size: η_opt(n) = (b B/(a A))^(1/(a+b)) n^(−b/(a+b)) of the fits.
        slope: least-squares slope of log η_opt against log n (the theory: −1/3).
        slope_se: its bootstrap s.e.; the budgets' η_opt are independent, the replicates of a
            budget are resampled together across step sizes.
        model_slope, model_slope_se: −b/(a+b) and its delta-method s.e.
        best_grid_step_size: the η of the grid with the smallest measured MSE at each budget.
        best_grid_mse: that MSE.
        decreasing_mse: the MSE of the decreasing schedule at each budget (NaN without one).
    """

    estimator: str
    budgets: np.ndarray
    squared_bias: PowerLawFit | None
    variance: PowerLawFit | None
    optimal_step_size: np.ndarray
    optimal_step_size_se: np.ndarray
    model_optimal_step_size: np.ndarray
    slope: float
    slope_se: float
    model_slope: float
    model_slope_se: float
    best_grid_step_size: np.ndarray
    best_grid_mse: np.ndarray
    decreasing_mse: np.ndarray


def _vertex_step_sizes(log_step_sizes: np.ndarray, mse: np.ndarray) -> np.ndarray:
    """η_opt per budget from MSE of shape (..., num_budgets, num_step_sizes); NaN without an interior minimum."""
    flat = mse.reshape(-1, mse.shape[-1])
    optimum = np.full(flat.shape[0], np.nan)
    last = len(log_step_sizes) - 1
    for row, values in enumerate(flat):
        if not np.isfinite(values).any():
            continue
        best = int(np.nanargmin(np.where(np.isfinite(values), values, np.nan)))
        if best in (0, last) or not np.isfinite(values[best - 1 : best + 2]).all():
            continue
        window = np.arange(max(best - 2, 0), min(best + 3, last + 1))
        window = window[np.isfinite(values[window])]
        curvature, linear, _ = np.polyfit(log_step_sizes[window], np.log(values[window]), 2)
        vertex = -linear / (2 * curvature) if curvature > 0 else log_step_sizes[best]
        optimum[row] = np.clip(vertex, log_step_sizes[best - 1], log_step_sizes[best + 1])
    return optimum.reshape(mse.shape[:-1])


def _zero_bias_p_values(error: xr.DataArray) -> np.ndarray:
    """Per (budget, step_size) cell, the p-value of Hotelling's T² test that the mean error is 0.

    With R replicates of d coordinates, mean error ē and sample covariance S, T² = R ēᵀ S⁻¹ ē,
    and (R − d) T² / (d (R − 1)) ~ F(d, R − d) without bias (the estimates normal across
    replicates, any covariance between coordinates): exact for every R > d, where a χ²_d of
    the coordinates' squared t statistics rejects far too often at small R. NaN where R ≤ d
    (S is singular) or a replicate's estimate is not finite.
    """
    from scipy import stats

    values = error.transpose("budget", "step_size", "replicate", "coordinate").values
    num_replicates, dim = values.shape[-2:]
    p_values = np.full(values.shape[:2], np.nan)
    finite = np.isfinite(values).all(axis=(-2, -1))
    if num_replicates <= dim or not finite.any():
        return p_values
    cells = values[finite]
    mean = cells.mean(axis=1)
    centred = cells - mean[:, None, :]
    covariance = np.swapaxes(centred, -1, -2) @ centred / (num_replicates - 1)
    precision = np.linalg.pinv(covariance, hermitian=True)
    t_squared = num_replicates * np.einsum("ci,cij,cj->c", mean, precision, mean)
    statistic = (num_replicates - dim) * t_squared / (dim * (num_replicates - 1))
    p_values[finite] = stats.f.sf(statistic, dim, num_replicates - dim)
    return p_values


def _slopes(log_budgets: np.ndarray, log_optimum: np.ndarray) -> np.ndarray:
    """Least-squares slope of each row of log η_opt (..., num_budgets) against log n, over finite entries."""
    rows = log_optimum.reshape(-1, log_optimum.shape[-1])
    slopes = np.full(rows.shape[0], np.nan)
    for index, row in enumerate(rows):
        finite = np.isfinite(row)
        if finite.sum() >= 2:
            slopes[index] = np.polyfit(log_budgets[finite], row[finite], 1)[0]
    return slopes.reshape(log_optimum.shape[:-1])


class BiasVarianceStudy:
    """The raw estimates of :func:`bias_variance_study` and everything derived from them.

    Args:
        dataset: the ``xarray.Dataset`` the study returns or :meth:`load` reads back.
    """

    num_bootstrap: ClassVar[int] = 1000
    """Bootstrap resamples for the standard errors of η_opt and of its slope."""

    def __init__(self, dataset: xr.Dataset) -> None:
        self.dataset = dataset

    def save(self, path: str | Path) -> Path:
        """Write the dataset to netCDF (group ``bias_variance``; ``az.from_netcdf`` reads it as a group)."""
        path = Path(path)
        self.dataset.to_netcdf(path, group=NETCDF_GROUP, engine="h5netcdf")
        return path

    @classmethod
    def load(cls, path: str | Path) -> BiasVarianceStudy:
        """Read a study written by :meth:`save`."""
        with xr.open_dataset(path, group=NETCDF_GROUP, engine="h5netcdf") as dataset:
            return cls(dataset.load())

    @property
    def estimators(self) -> list[str]:
        return [str(name) for name in self.dataset["estimator"].values]

    def _estimates(self, estimator: str) -> xr.Dataset:
        """The dataset's variables for ``estimator``, or a ValueError naming the estimators the study holds."""
        if estimator not in self.estimators:
            raise ValueError(f"this study holds estimators {self.estimators}, not {estimator!r}")
        return self.dataset.sel(estimator=estimator)

    def cell_errors(self, estimator: str) -> xr.Dataset:
        """Per (budget, step_size) cell, summed over coordinates: ``squared_bias``, ``variance``, ``mse``,
        ``mse_se`` and ``bias_p_value`` (Hotelling's T² test of zero bias, NaN with no more replicates
        than coordinates), and ``decreasing_mse`` per budget.

        bias² is the unbiased (ē − x)² − s²/R per coordinate (R replicates, s² their sample
        variance); variance is s²; MSE is the mean of |estimate − x|² over replicates. A cell
        with a diverged replicate has MSE = ∞ and its other statistics NaN.
        """
        data = self._estimates(estimator)
        diverged = data["constant_diverged"].any("replicate")
        # a diverged replicate's estimate comes from a frozen chain, often near overflow: its cell's spread is void
        error = (data["constant_estimate"] - data["exact"]).where(~diverged)
        num_replicates = self.dataset.sizes["replicate"]
        variance_per_coordinate = error.var("replicate", ddof=1, skipna=False)
        mean_error = error.mean("replicate", skipna=False)
        squared_error = (error**2).sum("coordinate", skipna=False)
        cells = xr.Dataset(
            {
                "squared_bias": (mean_error**2 - variance_per_coordinate / num_replicates).sum(
                    "coordinate", skipna=False
                ),
                "variance": variance_per_coordinate.sum("coordinate", skipna=False),
                "mse": squared_error.mean("replicate", skipna=False).where(~diverged, np.inf),
                "mse_se": squared_error.std("replicate", ddof=1, skipna=False) / math.sqrt(num_replicates),
                "bias_p_value": (("budget", "step_size"), _zero_bias_p_values(error)),
            }
        )
        if "decreasing_estimate" in self.dataset:
            decreasing_error = ((data["decreasing_estimate"] - data["exact"]) ** 2).sum("coordinate")
            cells["decreasing_mse"] = decreasing_error.mean("replicate").where(
                ~data["decreasing_diverged"].any("replicate"), np.inf
            )
        return cells

    def fit(self, estimator: str) -> BiasVarianceFit:
        """Fit bias² ∝ η^a and variance ∝ (nη)^(−b), find η_opt(n) and the slope of log η_opt against log n."""
        cells = self.cell_errors(estimator)
        budgets = self.dataset["budget"].values.astype(np.float64)
        step_sizes = self.dataset["step_size"].values
        usable = np.isfinite(cells["mse"].values)
        budget_grid, step_size_grid = np.meshgrid(budgets, step_sizes, indexing="ij")

        # a positive estimate too: the unbiased bias² of a significant cell can still be ≤ 0 when the
        # bias lies in a few coordinates and the others' variance outweighs it
        significant = usable & (cells["bias_p_value"].values < SIGNIFICANCE) & (cells["squared_bias"].values > 0)
        squared_bias = PowerLawFit.fit(step_size_grid[significant], cells["squared_bias"].values[significant])
        variance = (
            PowerLawFit.fit((budget_grid * step_size_grid)[usable], cells["variance"].values[usable])
            if usable.sum() >= 3
            else None
        )

        log_step_sizes, log_budgets = np.log(step_sizes), np.log(budgets)
        log_optimum = _vertex_step_sizes(log_step_sizes, cells["mse"].values)
        bootstrap_log_optimum = _vertex_step_sizes(log_step_sizes, self._bootstrap_mse(estimator))
        slope = float(_slopes(log_budgets, log_optimum))
        bootstrap_slopes = _slopes(log_budgets, bootstrap_log_optimum)

        model_optimum = np.full(len(budgets), np.nan)
        model_slope = model_slope_se = math.nan
        if squared_bias is not None and variance is not None and squared_bias.exponent > 0 and variance.exponent < 0:
            a, b = squared_bias.exponent, -variance.exponent
            model_slope = -b / (a + b)
            model_slope_se = math.hypot(
                b / (a + b) ** 2 * squared_bias.exponent_se, a / (a + b) ** 2 * variance.exponent_se
            )
            scale = (b * variance.coefficient / (a * squared_bias.coefficient)) ** (1 / (a + b))
            model_optimum = scale * budgets**model_slope
        decreasing = cells["decreasing_mse"].values if "decreasing_mse" in cells else np.full(len(budgets), np.nan)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns: no interior optimum anywhere
            optimum_se = np.nanstd(bootstrap_log_optimum, axis=0, ddof=1)
        return BiasVarianceFit(
            estimator=estimator,
            budgets=budgets.astype(np.int64),
            squared_bias=squared_bias,
            variance=variance,
            optimal_step_size=np.exp(log_optimum),
            optimal_step_size_se=np.where(np.isfinite(log_optimum), optimum_se, np.nan),
            model_optimal_step_size=model_optimum,
            slope=slope,
            # NaN with the slope: resamples that find optima the data did not say nothing of its error
            slope_se=float(np.nanstd(bootstrap_slopes, ddof=1))
            if math.isfinite(slope) and np.isfinite(bootstrap_slopes).sum() > 1
            else math.nan,
            model_slope=model_slope,
            model_slope_se=model_slope_se,
            best_grid_step_size=step_sizes[cells["mse"].argmin("step_size").values],
            best_grid_mse=cells["mse"].min("step_size").values,
            decreasing_mse=decreasing,
        )

    def _bootstrap_mse(self, estimator: str) -> np.ndarray:
        """MSE per (bootstrap, budget, step_size), replicates resampled with replacement, the same
        indices for every step size of a budget (they share seeds)."""
        data = self._estimates(estimator)
        squared_error = ((data["constant_estimate"] - data["exact"]) ** 2).sum("coordinate")
        squared_error = squared_error.where(~data["constant_diverged"], np.inf).transpose(
            "budget", "step_size", "replicate"
        )
        values = squared_error.values
        num_budgets, _, num_replicates = values.shape
        generator = np.random.default_rng(int(self.dataset.attrs.get("seed", 0)))
        indices = generator.integers(0, num_replicates, size=(self.num_bootstrap, num_budgets, 1, num_replicates))
        return np.take_along_axis(values[None], indices, axis=-1).mean(-1)

    def markdown_table(self, estimator: str) -> str:
        """A summary line of the fits and one row per budget: η_opt (measured ± s.e., model), MSE at the
        best grid η, MSE of the decreasing schedule and their ratio."""
        fit = self.fit(estimator)
        lines = [f"**{estimator}** ({self.dataset.attrs['target']}, {self.dataset.attrs['sampler']}):", ""]
        if fit.squared_bias is not None:
            lines.append(
                f"- bias² ∝ η^a: a = {fit.squared_bias.exponent:.2f} ± {fit.squared_bias.exponent_se:.2f} "
                f"({fit.squared_bias.num_points} cells with a significant bias)"
            )
        else:
            lines.append("- bias² ∝ η^a: not fitted, fewer than 3 step sizes show a significant bias")
        if fit.variance is not None:
            lines.append(f"- variance ∝ (nη)^(−b): b = {-fit.variance.exponent:.2f} ± {fit.variance.exponent_se:.2f}")
        if np.isfinite(fit.slope):
            from_fits = (
                f", from the fits −b/(a+b) = {fit.model_slope:.3f} ± {fit.model_slope_se:.3f}"
                if np.isfinite(fit.model_slope)
                else ""
            )
            lines.append(
                f"- slope of log η_opt against log n: measured {fit.slope:.3f} ± {fit.slope_se:.3f}{from_fits}, "
                "theory −1/3"
            )
        else:
            lines.append("- slope of log η_opt against log n: none, fewer than 2 budgets have an interior optimum")
        lines += [
            "",
            "| n | η_opt measured | η_opt from fits | best η on the grid | its MSE | MSE decreasing schedule | ratio |",
            "|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for index, budget in enumerate(fit.budgets):
            optimum = fit.optimal_step_size[index]
            measured = (
                f"{optimum:.4f} ± {optimum * fit.optimal_step_size_se[index]:.4f}"
                if np.isfinite(optimum)
                else "none inside the grid"
            )
            model = fit.model_optimal_step_size[index]
            ratio = fit.decreasing_mse[index] / fit.best_grid_mse[index]
            lines.append(
                f"| {budget} | {measured} | {f'{model:.4f}' if np.isfinite(model) else '—'} | "
                f"{fit.best_grid_step_size[index]:.4g} | {fit.best_grid_mse[index]:.3e} | "
                f"{fit.decreasing_mse[index]:.3e} | {ratio:.3g} |"
            )
        lines.append("")
        lines.append("ratio: MSE of the decreasing schedule / MSE of the best constant η on the grid, same budget.")
        return "\n".join(lines)

    def plot(self, path: str | Path, estimators: Sequence[str] | None = None) -> Path:
        """A PNG, one row per estimator: MSE against η per budget with the fitted model curves and the
        decreasing schedule's MSE (dashed); η_opt against n with the fitted slope and a −1/3 reference."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import NullFormatter

        estimators = list(estimators or self.estimators)
        step_sizes = self.dataset["step_size"].values
        figure, axes = plt.subplots(len(estimators), 2, figsize=(11, 4.2 * len(estimators)), squeeze=False)
        fine = np.geomspace(step_sizes[0], step_sizes[-1], 200)
        for row, estimator in zip(axes, estimators, strict=True):
            fit, cells = self.fit(estimator), self.cell_errors(estimator)
            colours = plt.cm.viridis(np.linspace(0, 0.85, len(fit.budgets)))
            for index, (budget, colour) in enumerate(zip(fit.budgets, colours, strict=True)):
                mse, mse_se = cells["mse"].values[index], cells["mse_se"].values[index]
                row[0].errorbar(step_sizes, mse, yerr=mse_se, fmt="o", color=colour, ms=4, label=f"n = {budget}")
                if fit.variance is not None:
                    bias_part = fit.squared_bias(fine) if fit.squared_bias is not None else 0.0
                    row[0].plot(fine, bias_part + fit.variance(budget * fine), color=colour, lw=1)
                if np.isfinite(fit.decreasing_mse[index]):
                    row[0].axhline(fit.decreasing_mse[index], color=colour, ls="--", lw=1)
            row[0].set(xscale="log", yscale="log", xlabel="step size η", ylabel="MSE")
            model = "A η^a + B (nη)^(−b)" if fit.squared_bias is not None else "B (nη)^(−b), no measurable bias"
            row[0].set_title(f"{estimator}: MSE (lines: {model}; dashed: decreasing schedule)", fontsize=9)
            row[0].legend(fontsize=8)
            finite = np.isfinite(fit.optimal_step_size)
            if finite.any():
                optimum = fit.optimal_step_size
                row[1].errorbar(
                    fit.budgets[finite],
                    optimum[finite],
                    yerr=(optimum * fit.optimal_step_size_se)[finite],
                    fmt="o",
                    color="k",
                    label="measured",
                )
                anchor_budget = math.exp(np.log(fit.budgets[finite]).mean())
                anchor = math.exp(np.log(optimum[finite]).mean())
                budgets = np.geomspace(fit.budgets[0], fit.budgets[-1], 50)
                if np.isfinite(fit.slope):
                    row[1].plot(
                        budgets,
                        anchor * (budgets / anchor_budget) ** fit.slope,
                        "k-",
                        label=f"fit: slope {fit.slope:.3f} ± {fit.slope_se:.3f}",
                    )
                row[1].plot(budgets, anchor * (budgets / anchor_budget) ** (-1 / 3), "r:", label="slope −1/3")
                if np.isfinite(fit.model_optimal_step_size).all():
                    row[1].plot(
                        fit.budgets,
                        fit.model_optimal_step_size,
                        "s",
                        mfc="none",
                        color="C0",
                        label=f"from fits: slope {fit.model_slope:.3f}",
                    )
                row[1].set(xscale="log", yscale="log")
                row[1].legend(fontsize=8)
            else:
                row[1].text(
                    0.5,
                    0.5,
                    "no interior optimum on the η grid:\nMSE falls up to the largest η",
                    ha="center",
                    va="center",
                    transform=row[1].transAxes,
                )
                row[1].set_xticks([])
                row[1].set_yticks([])
            row[1].set(xlabel="budget n (steps)", ylabel="η_opt")
            for axis in row:
                axis.xaxis.set_minor_formatter(NullFormatter())  # the log axes' minor labels overlap
            row[1].set_title(f"{estimator}: optimal constant step", fontsize=9)
        figure.tight_layout()
        path = Path(path)
        figure.savefig(path, dpi=110)
        plt.close(figure)
        return path


def _run_command(arguments: argparse.Namespace) -> int:
    output = Path(arguments.output)
    try:
        with output_folder(output):  # before the study, which an unwritable output would waste
            study = bias_variance_study(
                GaussianTarget.isotropic(arguments.dim, sd=arguments.sd),
                # ROBBINS_MONRO at σ ≥ 1; below, started at σ², where SGLD on the target is stable (< 2σ²)
                decreasing_step_size=replace(ROBBINS_MONRO, a=min(ROBBINS_MONRO.a, arguments.sd**2)),
                step_sizes=np.geomspace(
                    arguments.min_step_size, arguments.max_step_size, arguments.num_step_sizes
                ).tolist(),
                budgets=arguments.budgets,
                num_replicates=arguments.num_replicates,
                burn_in_fraction=arguments.burn_in_fraction,
                seed=arguments.seed,
                progress=not arguments.no_progress,
            )
    except (ValueError, TypeError) as error:  # a bad setting: a usage error, as sgmcmc run gives
        arguments.parser.error(str(error))
    except OSError as error:
        arguments.parser.error(f"cannot write to --output {arguments.output}: {error}")
    study.save(output / "study.nc")
    study.plot(output / "bias_variance.png")
    tables = "\n\n".join(study.markdown_table(estimator) for estimator in study.estimators)
    (output / "bias_variance.md").write_text(tables + "\n")
    print(tables)
    print(f"\nstudy written to {output / 'study.nc'}, figure to {output / 'bias_variance.png'}")
    return 0


def add_command(commands: argparse._SubParsersAction) -> None:
    """Register ``sgmcmc bias-variance``."""
    parser = commands.add_parser(
        "bias-variance",
        help="bias–variance study of constant-step SGLD on a Gaussian: η_opt(n) and its slope (theory −1/3)",
    )
    parser.add_argument("--output", default="sgmcmc-bias-variance", help="folder for study.nc, the figure and table")
    parser.add_argument("--dim", type=int, default=16, help="coordinates of the isotropic Gaussian target")
    parser.add_argument(
        "--sd",
        type=float,
        default=1.0,
        help="its standard deviation σ; the decreasing schedule compared is η_k = min(1, σ²)(1 + k)^(−0.55)",
    )
    parser.add_argument("--budgets", type=int, nargs="+", default=[128, 1024, 8192], help="budgets n in steps")
    parser.add_argument("--min-step-size", type=float, default=0.025)
    parser.add_argument("--max-step-size", type=float, default=0.8)
    parser.add_argument("--num-step-sizes", type=int, default=11, help="log-spaced between min and max")
    parser.add_argument("--num-replicates", type=int, default=256, help="chains per (η, n) cell")
    parser.add_argument("--burn-in-fraction", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-progress", action="store_true", help="print nothing while running")
    parser.set_defaults(run=_run_command, parser=parser)

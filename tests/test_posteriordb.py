"""Samplers against posteriordb's Stan reference posteriors.

MALA (``LD(metropolis=True)``) on eight schools (non-centred), and minibatch SGLD and SGHMC on
kidiq (kidscore_momiq) and arK. Judged as posteriordb's README prescribes: gate on split R-hat
and ESS, then per element |m̂ − m| ≤ k √(se_mean² + mcse_mean²) + b·s and
|ŝ − s| ≤ k √(se_sd² + mcse_sd²) + b·s, k = 4. MALA is exact, so b = 0; the SG samplers have a
fixed step and minibatch noise, so they get a bias budget: b = 0.1 for means ("accurate"), b = 0.03,
their measured bias, for sds. The data
and reference summaries are copied to tests/data (see LICENSE-posteriordb.txt).
"""

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import arviz as az
import numpy as np
import pytest
import torch

import sgmcmc
from targets import K_SIGMA, ess, mean_and_se

DATA = Path(__file__).parent / "data/posteriordb"
REFERENCE = json.loads((DATA / "eight_schools_noncentered.json").read_text())
Y = torch.tensor(REFERENCE["data"]["y"], dtype=torch.float64)
SIGMA = torch.tensor(REFERENCE["data"]["sigma"], dtype=torch.float64)

BIAS_BUDGET = 0.1
"""b: the bias a fixed-step SG sampler may add to a mean, as a fraction of the reference sd."""
SD_BIAS_BUDGET = 0.03
"""b for an sd. Predicted on the whitened, near-Gaussian posterior: the minibatch noise inflates the sd by
0.8-0.9 % (see the test) and the fixed step by about η/4 = 0.5 % (SGLD's stationary variance on N(0, 1)
is 1/(1 − η/2)). Measured over seeds 5-7: kidiq's sds within 1.1 % (1.1 s.e.), arK's up to 2.3-2.6 % too
wide under SGLD (2.4-2.6 s.e.) and 2.8-4.2 % under SGHMC (2.7-4.0 s.e.): a bias of about 3 %, more than
predicted (arK's posterior is further from Gaussian); b is that.
b = 0.1 let a noise variance 20 % too large (sd +9.5 %) pass, which a mutation test found."""


pytestmark = pytest.mark.usefixtures("one_thread")


def log_density(u: dict[str, torch.Tensor]) -> torch.Tensor:
    """log p(u) on R^10, u = (theta_trans, mu, log tau), with the log-Jacobian of tau = exp(log tau)."""
    tau = u["log_tau"].exp()
    theta = u["mu"] + tau * u["theta_trans"]
    return (
        torch.distributions.Normal(theta, SIGMA).log_prob(Y).sum()
        - 0.5 * (u["theta_trans"] ** 2).sum()
        - u["mu"] ** 2 / 50.0
        - torch.log1p((tau / 5.0) ** 2)
        + u["log_tau"]
    )


def _se_sd(draws: np.ndarray) -> float:
    """s.e. of the sd from the ESS of the squared deviations (posteriordb README, section 1)."""
    return mean_and_se((draws - draws.mean()) ** 2)[1] / (2 * draws.std(ddof=1))


def _elements(constrained: dict[str, np.ndarray], reference: dict):
    """(label, (chain, draw) draws, reference summaries) of every scalar element of every block."""
    for name, values in constrained.items():
        columns = values.reshape(*values.shape[:2], -1)
        for element in range(columns.shape[-1]):
            summaries = {key: np.atleast_1d(value)[element] for key, value in reference[name].items()}
            yield f"{name}[{element}]", columns[..., element], summaries


def assert_matches_reference(
    constrained: dict[str, np.ndarray], reference: dict, bias_budget: float = 0.0, sd_bias_budget: float = 0.0
) -> dict[str, float]:
    """Gate (split R-hat < 1.05, bulk ESS ≥ 400), then the per-element mean and sd tests.

    Args:
        constrained: block name -> (chain, draw, *shape) draws in the stored (constrained) space.
        reference: block name -> {"mean", "sd", "mcse_mean", "mcse_sd"}, scalars or lists.
        bias_budget: b, a fraction of the reference sd allowed on top of k Monte Carlo s.e. of a mean.
        sd_bias_budget: b for the sds.

    Returns:
        The one-line summary over elements: max R-hat, min ESS, max |m̂ − m|/s, the sd ratio ŝ/s
        farthest from 1, and the largest |z| of the means and of the sds.
    """
    rhat = az.rhat(az.convert_to_dataset(dict(constrained)))
    max_rhat = max(float(rhat[name].max()) for name in constrained)
    assert max_rhat < 1.05, f"split R-hat {max_rhat:.3f} >= 1.05"
    elements = list(_elements(constrained, reference))
    sizes = [ess(draws) for _, draws, _ in elements]
    for (where, _, _), effective_size in zip(elements, sizes, strict=True):
        assert effective_size >= 400, f"{where}: ESS {effective_size:.0f} < 400"
    summary = {"max_rhat": max_rhat, "min_ess": min(sizes), "max_mean_error": 0.0, "worst_sd_ratio": 1.0}
    summary |= {"max_z_mean": 0.0, "max_z_sd": 0.0}
    for (where, draws, ref), effective_size in zip(elements, sizes, strict=True):
        mean, sd, mcse_mean, mcse_sd = (ref[key] for key in ("mean", "sd", "mcse_mean", "mcse_sd"))
        draws_mean, draws_sd = draws.mean(), draws.std(ddof=1)
        mean_scale = math.hypot(draws_sd / math.sqrt(effective_size), mcse_mean)
        sd_scale = math.hypot(_se_sd(draws), mcse_sd)
        mean_allowed = K_SIGMA * mean_scale + bias_budget * sd
        sd_allowed = K_SIGMA * sd_scale + sd_bias_budget * sd
        assert abs(draws_mean - mean) <= mean_allowed, (
            f"{where}: mean {draws_mean:.6g}, reference {mean:.6g}: off by "
            f"{abs(draws_mean - mean) / sd:.3f} sd, allowed {mean_allowed / sd:.3f} sd"
        )
        assert abs(draws_sd - sd) <= sd_allowed, (
            f"{where}: sd {draws_sd:.6g}, reference {sd:.6g}: ratio {draws_sd / sd:.3f}, "
            f"allowed 1 ± {sd_allowed / sd:.3f}"
        )
        summary["max_mean_error"] = max(summary["max_mean_error"], abs(draws_mean - mean) / sd)
        if abs(draws_sd / sd - 1) > abs(summary["worst_sd_ratio"] - 1):
            summary["worst_sd_ratio"] = draws_sd / sd
        summary["max_z_mean"] = max(summary["max_z_mean"], abs(draws_mean - mean) / mean_scale)
        summary["max_z_sd"] = max(summary["max_z_sd"], abs(draws_sd - sd) / sd_scale)
    return summary


def test_mala_matches_the_stan_reference():
    init = {
        "theta_trans": torch.zeros(8, dtype=torch.float64),
        "mu": torch.tensor(4.0, dtype=torch.float64),
        "log_tau": torch.tensor(1.0, dtype=torch.float64),
    }
    trace = sgmcmc.LD(log_density, step_size=0.6, metropolis=True).sample(
        init, num_chains=8, num_steps=8000, burn_in=500, seed=11, init_jitter=0.5, progress=False
    )
    u = trace.posterior
    tau = np.exp(u["log_tau"])
    constrained = {"theta": u["mu"][..., None] + tau[..., None] * u["theta_trans"], "mu": u["mu"], "tau": tau}
    assert_matches_reference(constrained, REFERENCE["reference"])


@dataclass
class Posterior:
    """A posteriordb posterior on R^d for minibatch samplers.

    ``log_prior(u)`` holds the prior and the log-Jacobian, ``log_likelihood(u, batch)`` one term
    per row of ``rows``; ``constrain`` maps (…, d) draws of u to the stored blocks.
    """

    log_prior: Callable[[torch.Tensor], torch.Tensor]
    log_likelihood: Callable[[torch.Tensor, tuple[torch.Tensor, ...]], torch.Tensor]
    rows: tuple[torch.Tensor, ...]
    init: torch.Tensor
    constrain: Callable[[np.ndarray], dict[str, np.ndarray]]
    reference: dict
    batch_size: int

    def log_posterior(self) -> Callable[[torch.Tensor, tuple[torch.Tensor, ...]], torch.Tensor]:
        return sgmcmc.minibatch_log_posterior(self.log_prior, self.log_likelihood, num_data=len(self.rows[0]))


def _normal_log_likelihood(targets: torch.Tensor, location: torch.Tensor, log_sigma: torch.Tensor) -> torch.Tensor:
    """log Normal(targets | location, e^log_sigma), each row."""
    return torch.distributions.Normal(location, log_sigma.exp()).log_prob(targets)


def _half_cauchy_with_jacobian(log_sigma: torch.Tensor) -> torch.Tensor:
    """log half-Cauchy(e^log_sigma | 2.5) + log|dσ/du|, the Jacobian of σ = e^u being u."""
    return torch.distributions.HalfCauchy(2.5).log_prob(log_sigma.exp()) + log_sigma


def kidiq() -> Posterior:
    """kid_score_n ~ Normal(β₁ + β₂ mom_iq_n, σ), flat β, σ ~ half-Cauchy(2.5); u = (β₁, β₂, log σ), N = 434."""
    source = json.loads((DATA / "kidiq_kidscore_momiq.json").read_text())
    mom_iq, kid_score = (torch.tensor(source["data"][key], dtype=torch.float64) for key in ("mom_iq", "kid_score"))

    def log_likelihood(u, batch):
        mom_iq, kid_score = batch
        return _normal_log_likelihood(kid_score, u[0] + u[1] * mom_iq, u[2])

    return Posterior(
        log_prior=lambda u: _half_cauchy_with_jacobian(u[2]),
        log_likelihood=log_likelihood,
        rows=(mom_iq, kid_score),
        init=torch.tensor([0.0, 0.0, math.log(kid_score.std())], dtype=torch.float64),
        constrain=lambda u: {"beta": u[..., :2], "sigma": np.exp(u[..., 2])},
        reference=source["reference"],
        batch_size=43,
    )


def ark() -> Posterior:
    """AR(5): y_t ~ Normal(α + Σ_k β_k y_{t−k}, σ), t = 6..200, α, β_k ~ Normal(0, 10), σ ~ half-Cauchy(2.5);
    u = (α, β₁..β₅, log σ). Row t of the data is (y_t, (y_{t−1}, …, y_{t−5})), so its 195 rows are independent terms."""
    source = json.loads((DATA / "arK.json").read_text())
    series, order = torch.tensor(source["data"]["y"], dtype=torch.float64), source["data"]["K"]
    targets = series[order:]
    lags = torch.stack([series[order - lag : len(series) - lag] for lag in range(1, order + 1)], dim=1)

    def log_likelihood(u, batch):
        targets, lags = batch
        return _normal_log_likelihood(targets, u[0] + lags @ u[1:6], u[6])

    return Posterior(
        log_prior=lambda u: -(u[:6] ** 2).sum() / 200.0 + _half_cauchy_with_jacobian(u[6]),
        log_likelihood=log_likelihood,
        rows=(targets, lags),
        init=torch.tensor([0.0] * 6 + [math.log(targets.std())], dtype=torch.float64),
        constrain=lambda u: {"alpha": u[..., 0], "beta": u[..., 1:6], "sigma": np.exp(u[..., 6])},
        reference=source["reference"],
        batch_size=20,
    )


def find_laplace_approximation(log_posterior, rows: tuple[torch.Tensor, ...], init: torch.Tensor):
    """The Laplace approximation of the full-data posterior, at the mode from find_mode's L-BFGS stage
    alone: its gradient-descent stages converge at a rate set by the Hessian's condition number,
    4.7e5 on kidiq, and after 20,000 full-batch steps are still 4 posterior sds from the mode."""
    data = sgmcmc.Minibatches(*rows, batch_size=len(rows[0]))
    mode = sgmcmc.find_mode(log_posterior, init, data, num_steps=0, num_full_batch_steps=500, full_batch_method="lbfgs")
    return sgmcmc.laplace_approximation(log_posterior, mode, data)


SG_SAMPLERS = {
    "SGLD": (
        lambda log_posterior: sgmcmc.SGLD(log_posterior, step_size=0.02),
        dict(num_chains=128, num_steps=5200, burn_in=200),
    ),
    "SGHMC": (
        lambda log_posterior: sgmcmc.SGHMC(log_posterior, step_size=0.01, friction=0.2),
        dict(num_chains=128, num_steps=2200, burn_in=200),
    ),
}
"""Sampler name -> (the sampler on a whitened log posterior, its run length). Step sizes are in whitened units."""


@pytest.mark.parametrize("sampler_name", SG_SAMPLERS)
@pytest.mark.parametrize("posterior", [kidiq, ark], ids=["kidiq", "arK"])
def test_minibatch_sampler_matches_the_stan_reference(posterior, sampler_name):
    """Minibatch SGLD and SGHMC on kidiq and arK, within k = 4 s.e. plus b = 0.1 reference sd for a mean and
    b = 0.03 for an sd (:data:`SD_BIAS_BUDGET`).

    Preconditioning, as a user without the reference would do it: the Laplace approximation
    N(mode, L Lᵀ) of the full-data posterior (:func:`sgmcmc.laplace_approximation`); the samplers
    move z, with u = mode + L z and log density log p(mode + L z) (a constant Jacobian). In z the
    posterior is close to N(0, I), so the step sizes are in whitened units, as in check 4 of
    posteriordb's README.

    How the step and batch sizes were chosen. |B| ≈ N/10: 43 of 434 rows, 20 of 195. The
    package reshuffles each chain's rows every epoch, so the gradient errors of an epoch sum to
    zero, and on a whitened Gaussian they add far less variance than the README's batches drawn
    with replacement. By :func:`targets.minibatch_stationary_covariance` (per-row gradient
    covariance I/N in z, 0.6-1.3 I/N measured at the mode), SGLD at η = 0.02 inflates the sd by
    0.8 % (5 % with replacement); SGHMC at η = ε² = 0.01 with friction α = 0.2 (α/ε = 2, critical
    damping at unit precision) by 0.9 % (11 %). The larger bias is a shift of σ's mean that
    grows with the step and vanishes with full batches: SGLD at η = 0.05 shifted arK's σ by
    0.11 sd, over the budget (0.00 sd with full batches). At the steps chosen the largest mean
    error was 0.05 sd (SGLD) and 0.07 sd (SGHMC) over seeds 5-7, and no sd was off by more than
    4.2 %. The run lengths (chains 35-50 autocorrelation times long) gave split R-hat ≤ 1.023 and
    ESS ≥ 4500 per element on those seeds, so k/√ESS ≤ 0.06, below b.
    """
    posterior = posterior()
    laplace = find_laplace_approximation(posterior.log_posterior(), posterior.rows, posterior.init)
    make_sampler, run_length = SG_SAMPLERS[sampler_name]
    trace = make_sampler(laplace.whitened_log_posterior).sample(
        laplace.whiten(laplace.mode),
        sgmcmc.Minibatches(*posterior.rows, batch_size=posterior.batch_size),
        thin=4,
        seed=5,
        init_jitter=1.0,
        progress=False,
        **run_length,
    )
    u = laplace.unwhiten(trace).posterior["theta"]
    summary = assert_matches_reference(
        posterior.constrain(u), posterior.reference, bias_budget=BIAS_BUDGET, sd_bias_budget=SD_BIAS_BUDGET
    )
    print(", ".join(f"{name} {value:.{0 if name == 'min_ess' else 3}f}" for name, value in summary.items()))

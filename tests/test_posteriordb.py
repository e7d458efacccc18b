"""MALA (``LD(metropolis=True)``) against posteriordb's Stan reference for eight schools (non-centred).

Judged as posteriordb's README prescribes: gate on R-hat and ESS, then per element
|m̂ − m| ≤ k √(se_mean² + mcse_mean²) and |ŝ − s| ≤ k √(se_sd² + mcse_sd²), k = 4, no bias
budget (MALA is exact). The summaries are copied to tests/data (see LICENSE-posteriordb.txt).
"""

import json
import math
from pathlib import Path

import arviz as az
import numpy as np
import torch

import sgmcmc
from targets import K_SIGMA, ess, mean_and_se

REFERENCE = json.loads((Path(__file__).parent / "data/posteriordb/eight_schools_noncentered.json").read_text())
Y = torch.tensor(REFERENCE["data"]["y"], dtype=torch.float64)
SIGMA = torch.tensor(REFERENCE["data"]["sigma"], dtype=torch.float64)


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
    rhat = az.rhat(az.convert_to_dataset({name: values for name, values in constrained.items()}))
    assert max(float(rhat[name].max()) for name in constrained) < 1.05
    for name, values in constrained.items():
        reference = REFERENCE["reference"][name]
        columns = values.reshape(*values.shape[:2], -1)
        for element in range(columns.shape[-1]):
            draws = columns[..., element]
            effective_size = ess(draws)
            assert effective_size >= 400, (name, element, effective_size)
            mean, sd = np.atleast_1d(reference["mean"])[element], np.atleast_1d(reference["sd"])[element]
            mcse_mean = np.atleast_1d(reference["mcse_mean"])[element]
            mcse_sd = np.atleast_1d(reference["mcse_sd"])[element]
            se_mean = draws.std(ddof=1) / math.sqrt(effective_size)
            assert abs(draws.mean() - mean) <= K_SIGMA * math.hypot(se_mean, mcse_mean), (
                name,
                element,
                draws.mean(),
                mean,
            )
            assert abs(draws.std(ddof=1) - sd) <= K_SIGMA * math.hypot(_se_sd(draws), mcse_sd), (
                name,
                element,
                draws.std(),
                sd,
            )

"""pSGLD vs SGLD on an ill-conditioned Gaussian, each at the largest stable step of its own.

Target N(0, diag(σ²)), d = 100, σ² log-spaced from 1e-2 to 1e2 (condition number 1e4), exact
gradients, every chain started at θ_0 = 3σ (away from the mode). Samplers: SGLD and pSGLD
(``sgmcmc.PSGLD``, eps default) with alpha in {0.9, 0.99, 0.999}, without and with the Γ term.

Step rule: walk up the log grid STEP_GRID (4 points per decade) with short runs (8 chains x
SWEEP_STEPS steps, SWEEP_BURN_IN burn-in) and stop at the first step that diverges (any chain
flagged ``diverging``) or whose relative variance error in the narrowest coordinate exceeds
MAX_NARROW_ERROR; the chosen step is the last one before it. Then a long run (8 chains x
NUM_STEPS, BURN_IN burn-in) at the chosen step gives the table. A second, small table checks
the bias of pSGLD on N(0, diag(0.25, 4)): α x Γ at step 0.03, and α = 0.99 without Γ at
three steps.

Run: python benchmarks/psgld_ill_conditioned.py   (about 4.5 minutes on 2 CPU cores)
"""

from __future__ import annotations

import warnings
from pathlib import Path

import arviz as az
import numpy as np
import torch
from tables import markdown_table

import sgmcmc

warnings.filterwarnings("ignore", category=FutureWarning)
warnings.filterwarnings("ignore", category=sgmcmc.runner.SamplerDivergenceWarning)
DIMENSION, NUM_CHAINS, NUM_STEPS, BURN_IN = 100, 8, 10_000, 2_000
SWEEP_STEPS, SWEEP_BURN_IN, MAX_NARROW_ERROR = 2_000, 500, 0.5
VARIANCES = torch.logspace(-2, 2, DIMENSION, dtype=torch.float64)
STEP_GRID = [float(f"{value:.3g}") for value in np.logspace(-3, 0, 13)]
ALPHAS = (0.9, 0.99, 0.999)


def log_posterior(theta: torch.Tensor) -> torch.Tensor:
    return -0.5 * (theta**2 / VARIANCES).sum()


def make(name: str, step_size: float) -> sgmcmc.Sampler:
    if name == "SGLD":
        return sgmcmc.SGLD(log_posterior, step_size=step_size)
    _, alpha, gamma = name.split()
    return sgmcmc.PSGLD(
        log_posterior,
        step_size=step_size,
        alpha=float(alpha.removeprefix("α=")),
        gamma_correction=gamma == "Γ=on",
    )


def run(name: str, step_size: float, num_steps: int, burn_in: int) -> dict[str, object]:
    trace = make(name, step_size).sample(
        3 * VARIANCES.sqrt(), num_chains=NUM_CHAINS, num_steps=num_steps, burn_in=burn_in, seed=0, progress=False
    )
    draws = trace.posterior["theta"]
    variance_error = draws.var(axis=(0, 1)) / VARIANCES.numpy() - 1
    mean_error = np.abs(draws.mean(axis=(0, 1))) / VARIANCES.sqrt().numpy()
    ess = az.ess(az.convert_to_dataset({"theta": draws}))["theta"].values
    return {
        "sampler": name,
        "step": step_size,
        "var err narrowest": variance_error[0],
        "var err median": variance_error[DIMENSION // 2],
        "var err widest": variance_error[-1],
        "max abs mean err / σ": mean_error.max(),
        "min ESS / 1000 steps": 1000 * np.nanmin(ess) / (NUM_CHAINS * num_steps),
        "diverged": bool(trace.sample_stats["diverging"].any()),
    }


def largest_stable_step(name: str) -> tuple[float, str]:
    """The last grid step before the first failure, and the sweep's record as text."""
    chosen, record = STEP_GRID[0], []
    for step_size in STEP_GRID:
        result = run(name, step_size, SWEEP_STEPS, SWEEP_BURN_IN)
        failed = result["diverged"] or not abs(result["var err narrowest"]) <= MAX_NARROW_ERROR
        outcome = "diverged" if result["diverged"] else f"{result['var err narrowest']:+.2f}"
        record.append(f"{step_size:g}: {outcome}")
        if failed:
            if step_size == STEP_GRID[0]:
                record.append("(no step passed; smallest used)")
            break
        chosen = step_size
    return chosen, ", ".join(record)


def two_dimensional_bias() -> str:
    """Variance ratios of pSGLD on N(0, diag(0.25, 4)), 16 chains, seed 1.

    Rows: α x Γ at η = 0.03 from 0 with init_jitter 0.5 (as in tests/test_psgld.py) and, with
    Γ, from θ_0 = 3σ; then α = 0.99 without Γ at three steps. Each run keeps max(5000, 60/η)
    steps after a burn-in of a fifth of that.
    """
    variances = torch.tensor([0.25, 4.0], dtype=torch.float64)
    settings = [(alpha, gamma, "0 ± 0.5", 0.03) for gamma in (False, True) for alpha in ALPHAS]
    settings += [(alpha, True, "3σ", 0.03) for alpha in ALPHAS]
    settings += [(0.99, False, "3σ", step_size) for step_size in (0.005, 0.015, 0.03)]
    lines = [
        "| alpha | Γ | start | η | steps (burn-in) | var ratio narrow (0.25) | var ratio wide (4) | diverged |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for alpha, gamma, start, step_size in settings:
        sampler = sgmcmc.PSGLD(
            lambda theta: -0.5 * (theta**2 / variances).sum(),
            step_size=step_size,
            alpha=alpha,
            gamma_correction=gamma,
        )
        kept = max(5000, round(60 / step_size))
        burn_in = kept // 5
        trace = sampler.sample(
            torch.zeros(2, dtype=torch.float64) if start == "0 ± 0.5" else 3 * variances.sqrt(),
            num_chains=16,
            num_steps=kept + burn_in,
            burn_in=burn_in,
            seed=1,
            init_jitter=0.5 if start == "0 ± 0.5" else 0.0,
            progress=False,
        )
        ratio = trace.posterior["theta"].var(axis=(0, 1)) / variances.numpy()
        diverged = bool(trace.sample_stats["diverging"].any())
        lines.append(
            f"| {alpha} | {'on' if gamma else 'off'} | {start} | {step_size:g} | {kept + burn_in} ({burn_in}) "
            f"| {ratio[0]:.3g} | {ratio[1]:.3g} | {diverged} |"
        )
    return "\n".join(lines)


def main() -> None:
    names = ["SGLD"] + [f"pSGLD α={alpha} Γ={gamma}" for gamma in ("off", "on") for alpha in ALPHAS]
    runs, sweeps = [], []
    for name in names:
        step_size, record = largest_stable_step(name)
        sweeps.append(f"- {name}: {record} → η = {step_size:g}")
        runs.append(run(name, step_size, NUM_STEPS, BURN_IN))
        print(sweeps[-1], flush=True)

    table = markdown_table(runs, lambda column, value: f"{value:+.3g}" if column.startswith("var") else f"{value:.3g}")
    bias_table = two_dimensional_bias()
    context = (
        f"d={DIMENSION}, σ² log-spaced 1e-2 … 1e2, θ_0 = 3σ, exact gradients, {NUM_CHAINS} chains x {NUM_STEPS} steps "
        f"({BURN_IN} burn-in), seed 0, eps = 1e-5; step rule: largest η on {STEP_GRID} (walking up, stopping at the "
        f"first failure) whose {NUM_CHAINS} x {SWEEP_STEPS}-step sweep run ({SWEEP_BURN_IN} burn-in) neither diverged "
        f"nor had |var err narrowest| > {MAX_NARROW_ERROR}; ESS: ArviZ bulk, pooled over chains, per 1000 steps of "
        f"all chains ({NUM_CHAINS * NUM_STEPS} steps incl. burn-in); torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads"
    )
    print(context)
    print(table)
    print(bias_table)
    output = Path(__file__).parent / "results" / "psgld_ill_conditioned.md"
    output.parent.mkdir(exist_ok=True)
    output.write_text(
        f"# pSGLD vs SGLD on an ill-conditioned Gaussian\n\n{context}\n\n{table}\n\n"
        "Sweeps (step: var err narrowest of the sweep run):\n\n" + "\n".join(sweeps) + "\n\n"
        "## Bias of pSGLD on N(0, diag(0.25, 4)), 16 chains, seed 1 (variance ratio 1 is exact)\n\n"
        f"{bias_table}\n"
    )


if __name__ == "__main__":
    main()

"""The bias–variance study of seed 002: η_opt(n) of constant-step SGLD, its slope, and a Robbins–Monro schedule.

Target N(0, I_16) with exact gradients (SGLD without data, i.e. the unadjusted Langevin algorithm),
chains started at exact draws, the first 10 % of each budget discarded. Budgets n ∈ {128, 1024,
8192} steps, 11 log-spaced constant steps η ∈ [0.025, 0.8], 256 chains per (η, n) cell (the
replicates; with 16 independent coordinates each), seed 0. Estimators: the chain averages of θ
(E[θ] = 0) and of θ² (E[θ²] = 1). At each budget the decreasing schedule η_k = (1 + k)^(−0.55)
(Robbins–Monro) with the step-size-weighted average runs on the same seeds.

Beside the measurement, the exact theory for this chain (``GaussianTarget.langevin_error``: the
stationary AR(1) bias and variance) gives η_opt(n) by minimising over η and its slope over the
same budgets. The table is printed and written to results/bias_variance.md; the figure to
docs/figures/bias_variance.png.

Run: python benchmarks/bias_variance.py   (about 3 minutes on 2 CPU cores)
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
from scipy import optimize

from sgmcmc.bias_variance import GaussianTarget, bias_variance_study

BUDGETS = (128, 1024, 8192)
STEP_SIZES = np.geomspace(0.025, 0.8, 11)
NUM_REPLICATES, DIM, BURN_IN_FRACTION, SEED = 256, 16, 0.1, 0
ROOT = Path(__file__).parents[1]
FIGURE = ROOT / "docs" / "figures" / "bias_variance.png"
RESULTS = Path(__file__).parent / "results" / "bias_variance.md"


def theoretical_optimum(target: GaussianTarget, budget: int) -> float:
    """argmin over η of the exact bias² + variance of the second-moment average of the stationary chain."""
    averaged = budget - math.floor(BURN_IN_FRACTION * budget)

    def log_mse(log_step_size: float) -> float:
        return math.log(sum(target.langevin_error("second_moment", math.exp(log_step_size), averaged)))

    return math.exp(optimize.minimize_scalar(log_mse, bounds=(math.log(1e-4), math.log(1.9)), method="bounded").x)


def main() -> None:
    target = GaussianTarget.isotropic(DIM)
    start = time.perf_counter()
    study = bias_variance_study(
        target,
        STEP_SIZES.tolist(),
        BUDGETS,
        num_replicates=NUM_REPLICATES,
        burn_in_fraction=BURN_IN_FRACTION,
        seed=SEED,
        progress=True,
    )
    seconds = time.perf_counter() - start
    study.plot(FIGURE)

    theory = np.array([theoretical_optimum(target, budget) for budget in BUDGETS])
    theory_slope = float(np.polyfit(np.log(BUDGETS), np.log(theory), 1)[0])
    fit = study.fit("second_moment")
    theory_rows = [
        "| n | η_opt measured | η_opt exact theory (stationary AR(1)) | (4/(0.9 n))^(1/3), leading order |",
        "|---:|---:|---:|---:|",
    ]
    for budget, measured, exact in zip(BUDGETS, fit.optimal_step_size, theory, strict=True):
        leading = (4 / (budget - math.floor(BURN_IN_FRACTION * budget))) ** (1 / 3)
        theory_rows.append(f"| {budget} | {measured:.4f} | {exact:.4f} | {leading:.4f} |")
    sections = [
        f"Target N(0, I_{DIM}), SGLD with exact gradients; budgets {list(BUDGETS)}; {len(STEP_SIZES)} step sizes "
        f"{STEP_SIZES[0]:g}–{STEP_SIZES[-1]:g}; {NUM_REPLICATES} chains per cell; burn-in {BURN_IN_FRACTION:.0%}; "
        f"seed {SEED}; decreasing schedule {study.dataset.attrs['decreasing_step_size']}; {seconds:.0f} s.",
        *(study.markdown_table(estimator) for estimator in study.estimators),
        f"**second_moment against the exact theory**: slope of log η_opt against log n over these budgets: "
        f"measured {fit.slope:.3f} ± {fit.slope_se:.3f}, exact theory {theory_slope:.3f}, leading order −1/3.",
        "\n".join(theory_rows),
    ]
    text = "\n\n".join(sections) + "\n"
    print(text)
    RESULTS.write_text("# Bias–variance study (benchmarks/bias_variance.py)\n\n" + text)
    print(f"written {RESULTS} and {FIGURE}")


if __name__ == "__main__":
    main()

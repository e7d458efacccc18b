"""SGD vs Adam vs SGLD on the test landscapes of sgmcmc.landscapes: seed 000's playground, measured.

Every landscape gets `sgmcmc.playground.sweep`: torch.optim.SGD and torch.optim.Adam and
sgmcmc.optim.SGLD (T = 1) at three learning rates, plus SGLD on a step decaying from the largest
rate to the smallest (γ = 0.55) at T = 1, and the same with T cooled harmonically from 1 to 0.05
(simulated annealing). All methods start from the same 256 uniform random starts in the landscape's
start box, seed 0, float64, exact gradients (so "SGD" is deterministic gradient descent). Reported
per method: share of runs whose final state, and whose lowest-loss state, lies in the global basin
(each landscape's `in_global_basin`), share diverged, medians of the final U − U* and |θ − θ*|².

- Ackley 2-D, lr 0.01 / 0.05 / 0.1, 1000 steps: the table, the final success share over seeds 0–4,
  the mass exp(−U/T) puts on the global cell (grid quadrature over [−8, 8]²), and three figures.
- Ackley 10-D, 2000 steps; tilted double well 2-D (tilt 0.5), 1000 steps, and its trajectories;
  Rosenbrock 2-D, lr 1e-4 / 5e-4 / 1e-3, 3000 steps, and its loss curves; the symmetric quadratic
  2-D and the rotated ill-conditioned one (κ = 100; lr 0.001 / 0.005 / 0.015), 1000 steps.

Tables to results/landscapes.md, figures to docs/figures/landscape_*.png.

Run: python benchmarks/landscapes.py   (under a minute on one CPU thread)
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from tables import markdown_table

from sgmcmc.landscapes import Ackley, Landscape, make_landscape
from sgmcmc.playground import (
    Comparison,
    compare,
    plot_loss_curves,
    plot_success_rates,
    plot_trajectories,
    sweep,
)

NUM_STARTS, SEED, TEMPERATURE = 256, 0, 1.0
ROOT = Path(__file__).parents[1]
FIGURES = ROOT / "docs" / "figures"


def run(landscape: Landscape, learning_rates: tuple[float, ...], num_steps: int, seed: int = SEED) -> Comparison:
    methods = sweep(learning_rates=learning_rates, temperature=TEMPERATURE, num_steps=num_steps)
    return compare(landscape, methods, num_starts=NUM_STARTS, num_steps=num_steps, seed=seed)


def gibbs_mass_of_global_cell(temperature: float, half_width: float = 8.0, points: int = 2001) -> float:
    """∫_cell exp(−U/T) / ∫_box exp(−U/T) for 2-D Ackley, box [−8, 8]² (exp(−U/T) has infinite mass on R²)."""
    ackley = Ackley(2)
    axis = torch.linspace(-half_width, half_width, points, dtype=torch.float64)
    grid = torch.stack(torch.meshgrid(axis, axis, indexing="xy"), dim=-1)
    weights = torch.exp(-ackley.potential(grid) / temperature)
    return float(weights[ackley.in_global_basin(grid)].sum() / weights.sum())


def section(title: str, comparison: Comparison, learning_rates: tuple[float, ...]) -> str:
    landscape = comparison.landscape
    context = (
        f"{landscape!r}; {NUM_STARTS} starts uniform in {landscape.start_box}^{landscape.dim}; "
        f"{comparison.num_steps} steps; lr {', '.join(f'{rate:g}' for rate in learning_rates)}; "
        f"SGLD T = {TEMPERATURE:g}; seed {comparison.seed}"
    )
    return f"## {title}\n\n{context}\n\n{comparison.to_markdown()}\n"


def main() -> None:
    torch.set_num_threads(1)  # tensors of at most 256 x 10 elements: a second thread only adds synchronisation
    start = time.perf_counter()
    sections = []

    ackley_rates = (0.01, 0.05, 0.1)
    ackley = run(Ackley(2), ackley_rates, 1000)
    sections.append(section("Ackley, 2-D", ackley, ackley_rates))
    plot_trajectories(ackley, FIGURES / "landscape_ackley_trajectories.png")
    plot_loss_curves(ackley, FIGURES / "landscape_ackley_loss.png")
    plot_success_rates(ackley, FIGURES / "landscape_ackley_success.png")

    per_seed = {run_.method.label: [run_.success_rate] for run_ in ackley.runs}
    for seed in range(1, 5):
        for run_ in run(Ackley(2), ackley_rates, 1000, seed=seed).runs:
            per_seed[run_.method.label].append(run_.success_rate)
    seed_rows = [
        {
            "method": label,
            **{f"seed {seed}": f"{rate:.0%}" for seed, rate in enumerate(rates)},
            "mean": f"{np.mean(rates):.0%}",
        }
        for label, rates in per_seed.items()
    ]
    sections.append(
        "## Ackley, 2-D: final state in the global basin, seeds 0–4\n\n"
        f"Each seed draws new starts and new SGLD noise; binomial s.e. of one entry ≤ {0.5 / NUM_STARTS**0.5:.1%}.\n\n"
        f"{markdown_table(seed_rows)}\n"
    )
    gibbs_rows = [
        {
            "T": temperature,
            "mass of exp(−U/T) on the global cell (max_i abs(θ_i) < 1/2)": gibbs_mass_of_global_cell(temperature),
        }
        for temperature in (1.0, 0.3, 0.05)
    ]
    sections.append(
        "## Ackley, 2-D: where SGLD's target puts its mass\n\n"
        "Grid quadrature (2001² points) over [−8, 8]²; on all of R² exp(−U/T) has infinite mass, as U is bounded.\n\n"
        f"{markdown_table(gibbs_rows, lambda column, value: f'{value:.3g}')}\n"
    )

    sections.append(section("Ackley, 10-D", run(Ackley(10), ackley_rates, 2000), ackley_rates))

    double_well = run(make_landscape("double-well", 2), ackley_rates, 1000)
    sections.append(section("Tilted double well, 2-D", double_well, ackley_rates))
    plot_trajectories(double_well, FIGURES / "landscape_double_well_trajectories.png")

    rosenbrock_rates = (1e-4, 5e-4, 1e-3)
    rosenbrock = run(make_landscape("rosenbrock", 2), rosenbrock_rates, 3000)
    sections.append(section("Rosenbrock, 2-D", rosenbrock, rosenbrock_rates))
    plot_loss_curves(rosenbrock, FIGURES / "landscape_rosenbrock_loss.png")

    sections.append(
        section("Symmetric quadratic, 2-D", run(make_landscape("quadratic", 2), ackley_rates, 1000), ackley_rates)
    )
    conditioned_rates = (0.001, 0.005, 0.015)
    conditioned = run(make_landscape("ill-conditioned", 2), conditioned_rates, 1000)
    sections.append(section("Ill-conditioned quadratic (κ = 100, rotated 45°), 2-D", conditioned, conditioned_rates))

    header = (
        "# SGD vs Adam vs SGLD on the test landscapes\n\n"
        f"benchmarks/landscapes.py; torch {torch.__version__}, torch threads: {torch.get_num_threads()}, float64, CPU; "
        f"{time.perf_counter() - start:.0f} s in all. Columns: share of runs whose final state / lowest-loss state "
        "lies in the global basin, share diverged, medians over runs of the final U − U* and |θ − θ*|² "
        "(diverged runs count as +∞), seconds for the method's loop.\n"
    )
    text = "\n".join([header, *sections])
    print(text)
    output = Path(__file__).parent / "results" / "landscapes.md"
    output.parent.mkdir(exist_ok=True)
    output.write_text(text)


if __name__ == "__main__":
    main()

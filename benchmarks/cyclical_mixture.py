"""Mode discovery on 25 Gaussians: constant-step SGLD vs cyclical SGLD (Zhang et al. 2020, Sec. 5.1).

Target: the equal-weight mixture of 25 Gaussians N(μ, 0.03 I), μ ∈ {−4, −2, 0, 2, 4}², exact
gradients. Every sampler gets the same gradient budget, 16 chains x 20 000 steps, all chains
started at 0 plus N(0, 3²) jitter, seed 0. SGLD runs at the constant step 0.01; cSGLD on
Cyclical(η₀, 50 cycles) with exploration fraction β (β = 0: Langevin noise for the whole
cycle; β > 0: the first β of each cycle is noise-free SGD and keeps no draw): η₀ = 0.05 with
β ∈ {0, 0.3, 0.8}, and η₀ ∈ {0.1, 0.2}, whose exploration steps exceed SGD's stability limit
2σ² = 0.06 at the start of each cycle.

A draw is "near" a mode when it lies within 3 sd of it. Reported: modes visited by all chains
together, min / median modes visited by one chain, max |weight − 1/25| and the smallest and
largest weight (weight: the share of near-mode draws at each mode), the share of kept draws near
no mode, diverged chains, seconds. For the cyclical runs, a second table counts where the cycles
ended: the mode near each chain's last kept draw of each cycle.
A third table follows the exploration stage alone: noise-free SGD at constant steps around
2σ², where it settles into a mode, wanders between modes or diverges. The tables are printed
and written to results/cyclical_mixture.md; the figure (draws over the log density, one panel
per sampler that did not diverge) to docs/figures/cyclical_mixture.png.

Run: python benchmarks/cyclical_mixture.py   (about 2 minutes on 2 CPU cores)
"""

from __future__ import annotations

import math
import time
import warnings
from pathlib import Path

import matplotlib
import numpy as np
import torch
from tables import markdown_table

import sgmcmc
from sgmcmc.schedules import Cyclical

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)

NUM_CHAINS, NUM_STEPS, SEED, INIT_JITTER = 16, 20_000, 0, 3.0
SGD_CHAINS, SGD_STEPS = 256, 2_000
SGD_STEP_SIZES = (0.03, 0.05, 0.059, 0.062, 0.07, 0.1, 0.13, 0.15)
VARIANCE = 0.03
GRID = torch.tensor([-4.0, -2.0, 0.0, 2.0, 4.0], dtype=torch.float64)
MODES = torch.cartesian_prod(GRID, GRID)  # (25, 2)
FIGURE = Path(__file__).parents[1] / "docs" / "figures" / "cyclical_mixture.png"


def log_posterior(theta: torch.Tensor) -> torch.Tensor:
    """log Σ_m exp(−|θ − μ_m|² / (2σ²)), the mixture's log density up to a constant."""
    return torch.logsumexp(-((theta - MODES) ** 2).sum(-1) / (2 * VARIANCE), dim=0)


def near_modes(draws: np.ndarray) -> np.ndarray:
    """(chain, draw, 25) indicators: the draw lies within 3 sd of that mode."""
    distances = torch.cdist(torch.as_tensor(draws.reshape(-1, 2)), MODES)
    return (distances < 3 * math.sqrt(VARIANCE)).numpy().reshape(*draws.shape[:-1], len(MODES))


def cycle_landings(name: str, trace: sgmcmc.Trace) -> dict[str, object]:
    """Where the cycles ended: the mode within 3 sd of each chain's last kept draw of each cycle."""
    cycles = trace.draw_coords["cycle"]
    last = np.array([np.flatnonzero(cycles == cycle)[-1] for cycle in np.unique(cycles)])
    ends = trace.posterior["theta"][:, last]  # (chain, cycle, 2)
    near = near_modes(ends) & ~trace.sample_stats["diverging"][:, last, None]
    counts = near.sum(axis=(0, 1))

    def span(mask: np.ndarray) -> str:
        return f"{counts[mask].min()}–{counts[mask].max()}"

    return {
        "sampler": name,
        "cycle ends (chains × cycles)": near.shape[0] * near.shape[1],
        "near no mode": int((~near.any(axis=-1)).sum()),
        "landings per mode, min–max": span(np.ones(len(MODES), dtype=bool)),
        "… at each of (±2, ±2)": span((MODES.abs() == 2).all(dim=1).numpy()),
        "… at each corner (±4, ±4)": span((MODES.abs() == 4).all(dim=1).numpy()),
        "fair share": near.shape[0] * near.shape[1] / len(MODES),
    }


def measure(name: str, sampler: sgmcmc.Sampler) -> tuple[dict[str, object], np.ndarray, dict[str, object] | None]:
    start = time.perf_counter()
    trace = sampler.sample(
        torch.zeros(2, dtype=torch.float64),
        num_chains=NUM_CHAINS,
        num_steps=NUM_STEPS,
        seed=SEED,
        init_jitter=INIT_JITTER,
        progress=False,
    )
    seconds = time.perf_counter() - start
    draws = trace.posterior["theta"]
    diverging = trace.sample_stats["diverging"]
    near = near_modes(draws) & ~diverging[..., None]
    per_chain = near.any(axis=1).sum(axis=-1)
    counts = near.sum(axis=(0, 1))
    weights = counts / max(counts.sum(), 1)
    row = {
        "sampler": name,
        "kept draws": draws.shape[0] * draws.shape[1],
        "modes visited (of 25)": int((counts > 0).sum()),
        "modes per chain min / median": f"{per_chain.min()} / {np.median(per_chain):g}",
        "max abs(weight − 1/25)": float(np.abs(weights - 1 / len(MODES)).max()) if counts.any() else "—",
        "weight min / max (× 1/25)": f"{25 * weights.min():.2f} / {25 * weights.max():.2f}" if counts.any() else "—",
        "share of draws near no mode": float(1 - near.any(axis=-1).mean()),
        "diverged chains": int(diverging[:, -1].sum()),
        "seconds": seconds,
    }
    return row, draws, cycle_landings(name, trace) if "cycle" in trace.draw_coords else None


def sgd_fate(step_size: float) -> dict[str, object]:
    """Where noise-free SGD (SGLD at T = 0) goes at a constant step: the exploration stage on its own."""
    trace = sgmcmc.SGLD(log_posterior, step_size=step_size, temperature=0.0).sample(
        torch.zeros(2, dtype=torch.float64),
        num_chains=SGD_CHAINS,
        num_steps=SGD_STEPS,
        seed=SEED,
        init_jitter=INIT_JITTER,
        progress=False,
    )
    draws = trace.posterior["theta"]
    alive = ~trace.sample_stats["diverging"][:, -1]
    start_mode = torch.cdist(torch.as_tensor(draws[:, 0]), MODES).argmin(dim=1).numpy()
    end = torch.as_tensor(draws[:, -1])
    end_distance, end_mode = torch.cdist(end, MODES).min(dim=1)
    at_rest = alive & (end_distance.numpy() < 1e-3)
    late = near_modes(draws[:, SGD_STEPS // 2 :]).any(axis=1).sum(axis=-1)
    return {
        "SGD step η": step_size,
        "η / σ²": step_size / VARIANCE,
        "diverged": float(1 - alive.mean()),
        "at rest in a mode": float(at_rest.mean()),
        "… the one nearest its start": float((at_rest & (end_mode.numpy() == start_mode)).mean()),
        "modes visited in the last half, median": f"{np.median(late[alive]):g}" if alive.any() else "—",
    }


def figure(results: list[tuple[dict[str, object], np.ndarray]], path: Path) -> None:
    axis = np.linspace(-5.5, 5.5, 221)
    x, y = np.meshgrid(axis, axis)
    points = torch.as_tensor(np.stack([x.ravel(), y.ravel()], axis=-1))
    log_density = torch.vmap(log_posterior)(points).numpy().reshape(x.shape)
    columns = 3
    rows = math.ceil(len(results) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(3.0 * columns, 3.15 * rows), sharex=True, sharey=True)
    for ax, (row, draws) in zip(axes.ravel(), results, strict=True):
        ax.contourf(x, y, np.maximum(log_density, -40), levels=[-40, -12, -6, -2, 0.5], cmap="Greys", alpha=0.35)
        flat = draws.reshape(-1, 2)
        thinned = flat[:: max(1, len(flat) // 3000)]
        ax.scatter(thinned[:, 0], thinned[:, 1], s=2, alpha=0.6, color="tab:red", linewidths=0)
        ax.set_title(f"{row['sampler']}: {row['modes visited (of 25)']}/25 modes", fontsize=9)
        ax.set_xlim(-5.5, 5.5)
        ax.set_ylim(-5.5, 5.5)
        ax.set_aspect("equal")
        ax.tick_params(labelsize=7)
    for ax in axes.ravel()[len(results) :]:
        ax.set_visible(False)
    fig.suptitle(
        f"25 Gaussians (log density, grey) and ~3000 thinned draws (red); {NUM_CHAINS} chains x {NUM_STEPS} steps each",
        fontsize=9,
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main() -> None:
    samplers = {"SGLD η=0.01": sgmcmc.SGLD(log_posterior, step_size=0.01)}
    for initial_step_size, exploration in ((0.05, 0.0), (0.05, 0.3), (0.05, 0.8), (0.1, 0.3), (0.1, 0.8), (0.2, 0.8)):
        schedule = Cyclical(initial_step_size, num_cycles=50, total_steps=NUM_STEPS, exploration=exploration)
        samplers[f"cSGLD η₀={initial_step_size} β={exploration}"] = sgmcmc.CyclicalSGLD(log_posterior, schedule)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", sgmcmc.SamplerDivergenceWarning)  # counted in the tables instead
        results = [measure(name, sampler) for name, sampler in samplers.items()]
        fates = [sgd_fate(step_size) for step_size in SGD_STEP_SIZES]

    context = (
        f"25 Gaussians (variance σ² = {VARIANCE}) on {{−4, −2, 0, 2, 4}}², {NUM_CHAINS} chains x {NUM_STEPS} steps, "
        f"init 0 + N(0, {INIT_JITTER}²), seed {SEED}; cyclical: 50 cycles of {NUM_STEPS // 50} steps; "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    sgd_context = (
        f"Noise-free SGD (SGLD at temperature 0) at a constant step, {SGD_CHAINS} chains x {SGD_STEPS} steps from "
        f"the same kind of start: share diverged, share at rest (within 1e-3) in a mode at the end, and in the mode "
        f"nearest its start; median number of modes passed within 3 sd in the last {SGD_STEPS // 2} steps"
    )
    landings_context = (
        "Where each cycle ended (cyclical runs): the mode within 3 sd of each chain's last kept draw of each "
        "cycle, counted per mode; a fair share is the number of cycle ends / 25"
    )
    three_digits = lambda column, value: f"{value:.3g}"  # noqa: E731
    table, sgd_table = markdown_table([row for row, _, _ in results], three_digits), markdown_table(fates, three_digits)
    landings_table = markdown_table([landings for _, _, landings in results if landings is not None], three_digits)
    print(context, table, landings_context, landings_table, sgd_context, sgd_table, sep="\n\n")
    output = Path(__file__).parent / "results" / "cyclical_mixture.md"
    output.parent.mkdir(exist_ok=True)
    output.write_text(
        f"# Mode discovery on 25 Gaussians: SGLD vs cyclical SGLD\n\n{context}\n\n{table}\n\n"
        f"## Where the cycles ended\n\n{landings_context}\n\n{landings_table}\n\n"
        f"## The exploration stage alone\n\n{sgd_context}\n\n{sgd_table}\n"
    )
    # the run that diverged has nothing to show
    figure([(row, draws) for row, draws, _ in results if row["diverged chains"] == 0], FIGURE)


if __name__ == "__main__":
    main()

"""The loss-landscape playground: SGD, Adam and SGLD from many random starts on a :mod:`sgmcmc.landscapes` potential.

Seed 000's experiment, made measurable: every method starts from the same R random points, runs
for the same number of steps, and is scored by its loss U(θ_k), its squared distance |θ_k − θ*|² to
the global minimiser over the steps (seed 000's "MSE to the optimal weights" times dim), and the
fraction of runs whose final state lies in the global basin (each landscape's
``in_global_basin``), and the same for the state of lowest loss each run visited (what one keeps
when using SGLD as a global optimizer). :func:`sweep` adds SGLD's learning-rate sweep, a decaying
step and simulated annealing.

All methods go through one ``torch.optim`` loop over a single (R, dim) parameter: the loss is
Σ_r U(θ_r), whose gradient in row r is ∇U(θ_r), and SGD, Adam (per-coordinate moments) and
:class:`sgmcmc.optim.SGLD` (per-coordinate noise) update each row from its own gradient only, so
one loop advances R independent runs with one forward and backward pass per step. SGLD is the
package's own update, θ ← θ − η ∇U(θ) + sqrt(2ηT) ξ (:func:`sgmcmc.sgld.langevin_step`),
targeting exp(−U/T).

The figures use matplotlib's object API (no pyplot state, no backend to choose), imported only
when a plot is made.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from sgmcmc import optim
from sgmcmc._checks import count, flag, nonnegative, output_folder, positive
from sgmcmc.chains import chain_seeds
from sgmcmc.landscapes import LANDSCAPES, Landscape, make_landscape
from sgmcmc.schedules import Polynomial, Schedule, as_schedule

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "OPTIMIZERS",
    "ESCAPED",
    "Method",
    "Run",
    "Comparison",
    "compare",
    "polynomial_decay",
    "sweep",
    "plot_trajectories",
    "plot_loss_curves",
    "plot_success_rates",
    "add_command",
]

OPTIMIZERS = ("sgd", "adam", "sgld")
"""``torch.optim.SGD`` (no momentum), ``torch.optim.Adam`` (default betas) and :class:`sgmcmc.optim.SGLD`."""
_DISPLAY_NAMES = {"sgd": "SGD", "adam": "Adam", "sgld": "SGLD"}


@dataclass(frozen=True)
class Method:
    """One optimizer configuration for :func:`compare`.

    Args:
        optimizer: one of :data:`OPTIMIZERS`.
        learning_rate: the step size η_k at step k, a float or a :class:`sgmcmc.schedules.Schedule`;
            for SGLD it is the samplers' η (noise variance 2ηT).
        temperature: SGLD's T (a float ≥ 0 or a schedule of T_k); None means 1 for SGLD, and None it must
            be for the other optimizers.
        label: the name in tables and legends; by default built from the above.
    """

    optimizer: str
    learning_rate: float | Schedule
    temperature: float | Schedule | None = None
    label: str = field(default="")

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if not isinstance(self.learning_rate, Schedule):
            object.__setattr__(self, "learning_rate", positive("learning_rate", self.learning_rate))
        if self.optimizer == "sgld":
            temperature = 1.0 if self.temperature is None else self.temperature
            if not isinstance(temperature, Schedule):
                temperature = nonnegative("temperature", temperature)
            object.__setattr__(self, "temperature", temperature)
        elif self.temperature is not None:
            raise ValueError(
                f"temperature applies to sgld only, got temperature={self.temperature} for {self.optimizer}"
            )
        if not self.label:
            label = f"{_DISPLAY_NAMES[self.optimizer]} lr={_describe(self.learning_rate)}"
            if self.optimizer == "sgld":
                label += f" T={_describe(self.temperature)}"
            object.__setattr__(self, "label", label)

    def learning_rate_at(self, step: int) -> float:
        """η_k."""
        return as_schedule(self.learning_rate)(step)

    def temperature_at(self, step: int) -> float:
        """T_k (SGLD only)."""
        return self.temperature(step) if isinstance(self.temperature, Schedule) else float(self.temperature)


def _describe(value: float | Schedule) -> str:
    if isinstance(value, Polynomial):
        return f"{value.a:.3g}(k+{value.b:.3g})^−{value.gamma:g}"
    return repr(value) if isinstance(value, Schedule) else f"{value:g}"


def polynomial_decay(initial: float, final: float, num_steps: int, gamma: float = 0.55) -> Polynomial:
    """x_k = a (b + k)^(−γ) falling from ``initial`` at k = 0 to ``final`` at k = ``num_steps``.

    b = num_steps / ((initial/final)^(1/γ) − 1) and a = initial · b^γ. As a step size with
    0.5 < γ ≤ 1 it is Welling & Teh's (2011) Robbins–Monro decay; as a temperature with γ = 1 it is
    the harmonic cooling T_k = T_0 b/(b + k) of simulated annealing.
    """
    initial, final = positive("initial", initial), positive("final", final)
    if final >= initial:
        raise ValueError(f"final must be < initial for a decay, got initial={initial}, final={final}")
    gamma = positive("gamma", gamma)
    num_steps = count("num_steps", num_steps, 1)
    try:
        offset = num_steps / ((initial / final) ** (1 / gamma) - 1)
        return Polynomial(a=initial * offset**gamma, b=offset, gamma=gamma)
    except (OverflowError, ZeroDivisionError, ValueError):  # (initial/final)^(1/γ), b or a out of float64's range
        raise ValueError(
            f"no decay a (b + k)^(−{gamma:g}) from initial={initial:g} to final={final:g} in {num_steps} steps is "
            "representable in float64; bring initial and final closer or raise gamma"
        ) from None


def sweep(
    optimizers: Sequence[str] = OPTIMIZERS,
    learning_rates: Sequence[float] = (0.01, 0.05, 0.1),
    temperature: float = 1.0,
    num_steps: int = 1000,
    annealed: bool = True,
    final_temperature: float | None = None,
) -> list[Method]:
    """Every optimizer at every learning rate, and, with ``annealed`` when SGLD is among them and there are
    two or more rates, SGLD twice more on the step η_k = :func:`polynomial_decay` (γ = 0.55) from the
    largest rate to the smallest over ``num_steps``:

    - at the constant ``temperature`` T: a decaying step, seed 000's "decaying learning rate", which
      slows the chain down but leaves its target exp(−U/T) as it is;
    - with T_k cooled too, harmonically (γ = 1) from T to ``final_temperature`` (default T/20):
      simulated annealing, whose target exp(−U/T_k) concentrates on the global minimum as T_k → 0
      (left out at T = 0, where there is nothing to cool).
    """
    methods = [
        Method(name, rate, temperature if name == "sgld" else None) for name in optimizers for rate in learning_rates
    ]
    decays = flag("annealed", annealed) and "sgld" in optimizers and len(set(learning_rates)) > 1
    if final_temperature is not None and not (decays and temperature > 0):
        raise ValueError(
            f"final_temperature={final_temperature:g} sets the cooled SGLD run, which these settings leave out (it "
            "needs annealed, sgld among the optimizers, two or more learning rates and temperature > 0)"
        )
    if decays:
        largest, smallest = max(learning_rates), min(learning_rates)
        step_size = polynomial_decay(largest, smallest, num_steps)
        decay_label = f"SGLD lr={largest:g}→{smallest:g} T={temperature:g}"
        methods.append(Method("sgld", step_size, temperature, label=decay_label))
        if temperature > 0:  # at T = 0 there is nothing to cool
            final_temperature = temperature / 20 if final_temperature is None else final_temperature
            if not 0 < final_temperature < temperature:
                raise ValueError(
                    f"final_temperature must be in (0, temperature = {temperature:g}), got {final_temperature:g}"
                )
            cooling = polynomial_decay(temperature, final_temperature, num_steps, gamma=1.0)
            methods.append(Method("sgld", step_size, cooling, label=f"{decay_label}→{final_temperature:g}"))
    return methods


ESCAPED = 1e6
"""How many times the squared reach of the starts a run's final squared distance from θ* must exceed for
the run to count as diverged though finite (a distance 1000 times the start box's diagonal)."""


@dataclass(frozen=True)
class Run:
    """One method's R runs; step k's entries are the states after k steps (before step k's update).

    Attributes:
        loss: U(θ_k) per run, shape (num_steps + 1, num_starts).
        squared_distance: |θ_k − θ*|² per run, shape (num_steps + 1, num_starts).
        trajectories: θ_k of the first ``num_traced`` runs, shape (num_steps + 1, num_traced, dim).
        final: θ_K, shape (num_starts, dim).
        best: the state of lowest U visited by each run, shape (num_starts, dim).
        final_in_basin, best_in_basin: ``landscape.in_global_basin`` of those, bool (num_starts,); a run that
            diverged is never in the basin.
        diverged: whether each run diverged, bool (num_starts,): its final state or loss is non-finite, or
            its final state lies more than :data:`ESCAPED` times farther from θ* (in squared distance)
            than the start box's diagonal or any start (SGD above its stability limit grows geometrically,
            and may still be finite after the last step).
        seconds: wall-clock time of the loop.
    """

    method: Method
    loss: np.ndarray
    squared_distance: np.ndarray
    trajectories: np.ndarray
    final: np.ndarray
    best: np.ndarray
    final_in_basin: np.ndarray
    best_in_basin: np.ndarray
    diverged: np.ndarray
    seconds: float

    @property
    def success_rate(self) -> float:
        """Fraction of runs whose final state lies in the global basin."""
        return float(self.final_in_basin.mean())

    @property
    def best_success_rate(self) -> float:
        """Fraction of runs whose lowest-loss state lies in the global basin."""
        return float(self.best_in_basin.mean())


@dataclass(frozen=True)
class Comparison:
    """What :func:`compare` returns: the landscape, the shared starts (num_starts, dim) and one :class:`Run`
    per method."""

    landscape: Landscape
    starts: np.ndarray
    runs: list[Run]
    num_steps: int
    seed: int

    def table(self) -> list[dict[str, object]]:
        """One row per method: success rates, divergences and medians over runs of the final excess loss
        U(θ_K) − U(θ*) and squared distance |θ_K − θ*|²."""
        return [
            {
                "method": run.method.label,
                "final in global basin": run.success_rate,
                "best in global basin": run.best_success_rate,
                "diverged": float(run.diverged.mean()),
                "median final U − U*": _median(run.loss[-1] - self.landscape.minimum_value),
                "median final ‖θ − θ*‖²": _median(run.squared_distance[-1]),
                "seconds": run.seconds,
            }
            for run in self.runs
        ]

    def to_markdown(self) -> str:
        """:meth:`table` as a markdown table (shares as percentages)."""
        rows = self.table()
        lines = ["| " + " | ".join(rows[0]) + " |", "|---|" + "---:|" * (len(rows[0]) - 1)]
        for row in rows:
            cells = [
                f"{value:.1%}" if column.endswith(("basin", "diverged")) else _number(value)
                for column, value in row.items()
            ]
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines)


def _diverged_as_infinite(values: np.ndarray) -> np.ndarray:
    """NaN (a diverged run) as +∞, so that medians and quartiles stay finite while most runs do."""
    return np.where(np.isnan(values), np.inf, values)


def _median(values: np.ndarray) -> float:
    return float(np.median(_diverged_as_infinite(values)))


def _number(value: object) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def compare(
    landscape: Landscape,
    methods: Sequence[Method],
    num_starts: int = 32,
    num_steps: int = 1000,
    seed: int = 0,
    num_traced: int = 8,
    starts: torch.Tensor | None = None,
) -> Comparison:
    """Run every method from the same ``num_starts`` random starts on ``landscape``.

    Starts are uniform in ``landscape.start_box``^dim unless given. ``seed`` fixes everything else:
    the starts and SGLD's noise come from the two seeds ``sgmcmc.chain_seeds(seed, 2)``, so the same
    seed gives the same numbers (bit for bit on CPU) and every SGLD configuration sees the same noise
    stream (common random numbers across the sweep). :class:`sgmcmc.optim.SGLD` draws the noise of
    all R runs from that one stream: the draws are independent, but run r's path depends on R. For
    one stream per run use ``sgmcmc.SGLD(landscape.log_density, ...).sample(starts, num_chains=R,
    stacked_init=True)``. Computation is in float64 on the CPU.

    Args:
        landscape: the potential U, used as the loss.
        methods: the configurations to run (see :func:`sweep`).
        num_starts: R, the number of runs per method (ignored when ``starts`` is given).
        num_steps: K, the number of updates per run.
        seed: an integer ≥ 0.
        num_traced: how many runs (the first ones) keep their whole trajectory for the contour plots.
        starts: fixed starting points (R, dim) instead of random ones.

    Returns:
        A :class:`Comparison`.
    """
    if not isinstance(landscape, Landscape):
        raise TypeError(f"landscape must be a sgmcmc.landscapes.Landscape, got {type(landscape).__name__}")
    methods = list(methods)  # a generator would be used up by the label check
    if not methods:
        raise ValueError("methods must name at least one Method")
    labels = [method.label for method in methods]
    repeated = sorted({label for label in labels if labels.count(label) > 1})
    if repeated:
        # the table and the figures tell runs apart by label
        raise ValueError(f"methods {repeated} are given more than once")
    num_steps = count("num_steps", num_steps, 1)
    start_seed, noise_seed = chain_seeds(seed, 2)
    if starts is None:
        low, high = landscape.start_box
        generator = torch.Generator().manual_seed(start_seed)
        shape = (count("num_starts", num_starts, 1), landscape.dim)
        starts = low + (high - low) * torch.rand(shape, generator=generator, dtype=torch.float64)
    else:
        starts = torch.as_tensor(starts).detach().to("cpu", torch.float64)  # a Parameter's values, not its graph
        if starts.ndim != 2 or starts.shape[1] != landscape.dim or len(starts) == 0:
            raise ValueError(f"starts must have shape (num_starts, {landscape.dim}), got {tuple(starts.shape)}")
        if not bool(torch.isfinite(starts).all()):
            raise ValueError("starts must be finite")
    num_traced = min(count("num_traced", num_traced, 0), len(starts))
    runs = [_run(landscape, method, starts, num_steps, noise_seed, num_traced) for method in methods]
    return Comparison(landscape, starts.numpy(), runs, num_steps, seed)


def _make_optimizer(method: Method, parameter: torch.nn.Parameter, noise_seed: int) -> torch.optim.Optimizer:
    learning_rate = method.learning_rate_at(0)
    if method.optimizer == "sgd":
        return torch.optim.SGD([parameter], lr=learning_rate)
    if method.optimizer == "adam":
        return torch.optim.Adam([parameter], lr=learning_rate)
    return optim.SGLD([parameter], lr=learning_rate, temperature=method.temperature_at(0), seed=noise_seed)


def _run(
    landscape: Landscape, method: Method, starts: torch.Tensor, num_steps: int, noise_seed: int, num_traced: int
) -> Run:
    """The one training loop: R runs as the rows of one parameter, loss Σ_r U(θ_r)."""
    theta = torch.nn.Parameter(starts.clone())
    optimizer = _make_optimizer(method, theta, noise_seed)
    loss = torch.empty(num_steps + 1, len(starts), dtype=torch.float64)
    squared_distance = torch.empty_like(loss)
    trajectories = torch.empty(num_steps + 1, num_traced, landscape.dim, dtype=torch.float64)
    best_loss = torch.full((len(starts),), math.inf, dtype=torch.float64)
    best = starts.clone()

    start = time.perf_counter()
    for step in range(num_steps + 1):
        potential = landscape.potential(theta)
        with torch.no_grad():
            loss[step] = potential
            squared_distance[step] = landscape.squared_distance(theta)
            trajectories[step] = theta[:num_traced]
            improved = potential < best_loss
            best_loss = torch.where(improved, potential, best_loss)
            best = torch.where(improved[:, None], theta, best)
        if step == num_steps:
            break
        for group in optimizer.param_groups:
            group["lr"] = method.learning_rate_at(step)
            if method.optimizer == "sgld":
                group["temperature"] = method.temperature_at(step)
        optimizer.zero_grad()
        potential.sum().backward()
        optimizer.step()
    seconds = time.perf_counter() - start

    final = theta.detach()
    low, high = landscape.start_box
    reach = max(landscape.dim * (high - low) ** 2, float(squared_distance[0].max()))
    diverged = ~(torch.isfinite(final).all(dim=-1) & torch.isfinite(loss[-1])) | (
        squared_distance[-1] > ESCAPED * reach
    )
    return Run(
        method=method,
        loss=loss.numpy(),
        squared_distance=squared_distance.numpy(),
        trajectories=trajectories.numpy(),
        final=final.numpy(),
        best=best.numpy(),
        final_in_basin=(landscape.in_global_basin(final) & ~diverged).numpy(),
        best_in_basin=(landscape.in_global_basin(best) & ~diverged).numpy(),
        diverged=diverged.numpy(),
        seconds=seconds,
    )


def _colors(number: int) -> list[tuple[float, float, float, float]]:
    from matplotlib import colormaps

    palette = colormaps["tab10" if number <= 10 else "tab20"]
    return [palette(index % palette.N) for index in range(number)]


def _save(figure: Figure, path: str | Path | None) -> Figure:
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(path, dpi=90)
    return figure


def plot_trajectories(comparison: Comparison, path: str | Path | None = None, columns: int = 4) -> Figure:
    """One panel per method: the traced runs (start ○, end ×) over the contours of U, θ* as a star.

    For dim > 2 the panels show (θ_1, θ_2) over the plane through θ* spanned by those coordinates;
    for dim = 1, θ against the step k, with θ* as a line. Writes a PNG to ``path`` when given and
    returns the matplotlib ``Figure`` (no pyplot state).
    """
    from matplotlib.figure import Figure

    landscape, runs = comparison.landscape, comparison.runs
    low, high = landscape.start_box
    margin = 0.1 * (high - low)
    axis = torch.linspace(low - margin, high + margin, 201, dtype=torch.float64)
    columns = min(count("columns", columns, minimum=1), len(runs))
    rows = math.ceil(len(runs) / columns)
    figure = Figure(figsize=(3.2 * columns, 3.2 * rows), layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False, sharex=True, sharey=True).ravel()
    minimum = landscape.minimum.numpy()
    if landscape.dim > 1:
        plane = landscape.minimum.repeat(len(axis), len(axis), 1)
        plane[..., 0], plane[..., 1] = torch.meshgrid(axis, axis, indexing="xy")
        surface = (landscape.potential(plane) - landscape.minimum_value).numpy()
        levels = np.unique(np.quantile(surface, np.linspace(0, 1, 16)))
    for ax, run in zip(axes, runs, strict=False):
        if landscape.dim > 1:
            ax.contourf(axis, axis, surface, levels=levels, cmap="Greys_r", alpha=0.6)
            ax.plot(*minimum[:2], "*", color="gold", markersize=12, markeredgecolor="black")
            ax.set_xlim(low - margin, high + margin)
            ax.set_aspect("equal")
        else:
            ax.axhline(minimum[0], color="gold", linewidth=2)
            ax.set_xlabel("step", fontsize=7)
        for trajectory in np.moveaxis(run.trajectories, 1, 0):
            # dim 1: θ over the steps; otherwise the first two coordinates
            x, y = (np.arange(len(trajectory)), trajectory[:, 0]) if landscape.dim == 1 else trajectory[:, :2].T
            (line,) = ax.plot(x, y, linewidth=0.7, alpha=0.8)
            ax.plot(x[0], y[0], "o", color=line.get_color(), markersize=4)
            ax.plot(x[-1], y[-1], "x", color=line.get_color(), markersize=6, markeredgewidth=1.5)
        ax.set_title(f"{run.method.label}\nfinal in global basin: {run.success_rate:.0%}", fontsize=8)
        ax.set_ylim(low - margin, high + margin)
        ax.tick_params(labelsize=7)
    for ax in axes[len(runs) :]:
        ax.set_visible(False)
    num_traced = runs[0].trajectories.shape[1]
    figure.suptitle(
        f"{landscape!r}: {num_traced} of {len(comparison.starts)} runs, {comparison.num_steps} steps",
        fontsize=9,
    )
    return _save(figure, path)


def plot_loss_curves(comparison: Comparison, path: str | Path | None = None) -> Figure:
    """U(θ_k) − U(θ*) (top) and |θ_k − θ*|² (bottom) over the steps k, one column per optimizer: median over
    runs (line) and quartiles (band), log scale.

    Each row's scale runs from 10× the largest quartile of the runs whose quartiles stay finite down to the
    smallest quartile reached, but at most 16 decades: a diverged run leaves the top, one converging to
    rounding level the bottom. (If every run diverges, the top is 10× the largest finite quartile.)
    """
    from matplotlib.figure import Figure

    optimizers = list(dict.fromkeys(run.method.optimizer for run in comparison.runs))
    figure = Figure(figsize=(4.2 * len(optimizers), 6.4), layout="constrained")
    axes = figure.subplots(2, len(optimizers), squeeze=False, sharex=True, sharey="row")
    for ax in axes.ravel():
        ax.set_yscale("log")
    steps = np.arange(comparison.num_steps + 1)
    rows = (
        ("U(θ_k) − U(θ*)", lambda run: run.loss - comparison.landscape.minimum_value),
        ("|θ_k − θ*|²", lambda run: run.squared_distance),
    )
    for row, (name, values_of) in enumerate(rows):
        quartiles = {
            run.method.label: np.quantile(
                _diverged_as_infinite(values_of(run)), [0.25, 0.5, 0.75], axis=1, method="inverted_cdf"
            )
            for run in comparison.runs
        }
        # over every step, not the first: a run started near θ* rises to its stationary level; a diverging run
        # passes through values up to 1e308 before inf, which would squeeze every other run off the bottom
        finite_uppers = [upper for _, _, upper in quartiles.values() if np.isfinite(upper).all()]
        uppers = finite_uppers or [upper[np.isfinite(upper)] for _, _, upper in quartiles.values()]
        largest = max(upper.max(initial=0.0) for upper in uppers)
        # capped: a diverging run passes through finite values near the float64 maximum, whose tenfold is inf,
        # and matplotlib's log ticks above 1e308 (a decade past the maximum) fail to format
        ceiling = 1e300
        top = (10 * largest if largest < ceiling / 10 else ceiling) or 1.0
        reached = np.concatenate([lower[lower > 0] for lower, _, _ in quartiles.values()])
        axes[row, 0].set_ylim(max(reached.min(initial=top), 1e-16 * top), top)
        axes[row, 0].set_ylabel(name)
        for column, optimizer in enumerate(optimizers):
            runs = [run for run in comparison.runs if run.method.optimizer == optimizer]
            for run, color in zip(runs, _colors(len(runs)), strict=True):
                lower, median, upper = np.where(
                    np.isinf(quartiles[run.method.label]), np.nan, quartiles[run.method.label]
                )
                axes[row, column].plot(steps, median, color=color, label=run.method.label, linewidth=1.1)
                axes[row, column].fill_between(
                    steps, lower, np.nan_to_num(upper, nan=top), color=color, alpha=0.15, linewidth=0
                )
    for column in range(len(optimizers)):
        axes[0, column].legend(fontsize=7, loc="upper right")
        axes[1, column].set_xlabel("step k")
    for ax in axes.ravel():
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=7)
    figure.suptitle(f"{comparison.landscape!r}: median and quartiles over {len(comparison.starts)} runs", fontsize=9)
    return _save(figure, path)


def plot_success_rates(comparison: Comparison, path: str | Path | None = None) -> Figure:
    """Bars per method: share of runs whose final state, and whose lowest-loss state, lies in the global basin,
    and share diverged."""
    from matplotlib.figure import Figure

    runs = comparison.runs
    figure = Figure(figsize=(max(6, 0.9 * len(runs) + 2), 4.2), layout="constrained")
    ax = figure.subplots()
    positions = np.arange(len(runs))
    bars = (
        ("final state in global basin", [run.success_rate for run in runs], "tab:blue"),
        ("lowest-loss state in global basin", [run.best_success_rate for run in runs], "tab:green"),
        ("diverged", [float(run.diverged.mean()) for run in runs], "tab:red"),
    )
    width = 0.27
    for offset, (label, values, color) in zip((-width, 0.0, width), bars, strict=True):
        ax.bar(positions + offset, values, width, label=label, color=color)
    ax.set_xticks(positions, [run.method.label for run in runs], rotation=35, ha="right", fontsize=7)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel(f"share of {len(comparison.starts)} runs")
    ax.legend(fontsize=7)
    ax.grid(axis="y", alpha=0.3)
    ax.set_title(f"{comparison.landscape!r}, {comparison.num_steps} steps, seed {comparison.seed}", fontsize=9)
    return _save(figure, path)


def _run_command(arguments: argparse.Namespace) -> int:
    try:
        landscape = make_landscape(arguments.name, arguments.dim)
        methods = sweep(
            arguments.optimizers,
            arguments.lr,
            arguments.temperature,
            arguments.num_steps,
            annealed=not arguments.no_annealed,
            final_temperature=arguments.final_temperature,
        )
        output = Path(arguments.output)
        with output_folder(output):  # before the runs, which an unwritable output would waste
            comparison = compare(landscape, methods, arguments.num_starts, arguments.num_steps, arguments.seed)
    except (ValueError, TypeError) as error:  # a bad setting: a usage error, as sgmcmc run gives
        arguments.parser.error(str(error))
    except OSError as error:
        arguments.parser.error(f"cannot write to --output {arguments.output}: {error}")
    print(f"{landscape!r}, {arguments.num_starts} random starts in {landscape.start_box}^{landscape.dim}, ", end="")
    print(f"{arguments.num_steps} steps, seed {arguments.seed}\n")
    print(comparison.to_markdown())
    for kind, plot in (
        ("trajectories", plot_trajectories),
        ("loss", plot_loss_curves),
        ("success", plot_success_rates),
    ):
        path = output / f"landscape_{arguments.name}_{kind}.png"
        plot(comparison, path)
        print(f"wrote {path}")
    return 0


def add_command(commands: argparse._SubParsersAction) -> None:
    """Register ``sgmcmc landscape``."""
    parser = commands.add_parser(
        "landscape",
        help="SGD vs Adam vs SGLD from random starts on a test landscape: table and PNG figures",
        description="Runs each optimizer at each learning rate from the same random starts, and SGLD twice more on a "
        "step decaying from the largest rate to the smallest: at T, and with T cooled to --final-temperature "
        "(simulated annealing). Prints the success table and writes three PNGs.",
    )
    parser.add_argument("name", choices=sorted(LANDSCAPES), help="the landscape")
    parser.add_argument("--optimizers", nargs="+", choices=OPTIMIZERS, default=list(OPTIMIZERS))
    parser.add_argument("--lr", nargs="+", type=float, default=[0.01, 0.05, 0.1], help="learning rates η")
    parser.add_argument("--temperature", type=float, default=1.0, help="SGLD's T (default: %(default)s)")
    parser.add_argument("--num-starts", type=int, default=32, help="random starts R (default: %(default)s)")
    parser.add_argument("--num-steps", type=int, default=1000)
    parser.add_argument("--dim", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--final-temperature", type=float, default=None, help="where the annealed SGLD run cools to (default: T/20)"
    )
    parser.add_argument("--no-annealed", action="store_true", help="leave out the two SGLD runs on the decaying step")
    parser.add_argument("--output", default="sgmcmc-landscape", help="folder for the PNGs (default: %(default)s)")
    parser.set_defaults(run=_run_command, parser=parser)

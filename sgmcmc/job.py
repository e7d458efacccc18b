"""The main job, ``sgmcmc run``: a Bayesian MLP on a tabular data set, end to end.

Load and split the data, sample the network's posterior with many chains, train a deep
ensemble of the same cost (the same chains at temperature 0: SGD on the same log posterior),
and report held-out accuracy (or RMSE), NLL, expected calibration error, Brier score, OOD
detection by predictive entropy and R-hat/ESS of predictive functionals. Writes the
InferenceData (posterior, sample_stats, functionals, posterior_predictive, observed_data),
``report.json`` and PNG plots.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import time
import tomllib
import types
import typing
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import xarray as xr
from sklearn import datasets
from sklearn.model_selection import train_test_split
from torch import nn

import sgmcmc
from sgmcmc import metrics
from sgmcmc._checks import count, nonnegative, output_folder, positive, sampling_device, warn_caller
from sgmcmc.checkpoint import write_atomically
from sgmcmc.models import Classification, ModulePosterior, Regression
from sgmcmc.runner import SamplerDivergenceWarning, kept_steps, warn_of_divergences
from sgmcmc.schedules import Cyclical
from sgmcmc.trace import group_dataset

__all__ = ["JobConfig", "run_job", "add_command"]

BUNDLED = {
    "digits": datasets.load_digits,
    "breast_cancer": datasets.load_breast_cancer,
    "wine": datasets.load_wine,
    "diabetes": datasets.load_diabetes,
}
"""scikit-learn's data sets that ship with it (no download)."""

SAMPLERS = ("sgld", "sghmc", "sgnht", "psgld", "csgld", "csghmc")
CHOICES = {
    "sampler": SAMPLERS,
    "task": ("classification", "regression"),
    "activation": ("tanh", "relu"),
    "parallel": ("chains", "data"),
}
"""The settings that take one of a few names (``task`` and ``parallel`` may also be None)."""
DEFAULT_STEP_SIZES = {
    "classification": {
        "sgld": 1e-3,
        "sghmc": 1e-4,
        "sgnht": 1e-2,
        "psgld": 1e-2,
        "csgld": 3e-4,
        "csghmc": 3e-5,
        "ensemble": 1e-3,
    },
    "regression": {
        "sgld": 1e-4,
        "sghmc": 3e-5,
        "sgnht": 3e-3,
        "psgld": 1e-2,
        "csgld": 1e-4,
        "csghmc": 1e-5,
        "ensemble": 1e-4,
    },
}
"""Default step sizes per task, of each sampler (for SGHMC the paper's ε²) and of the SGD ensemble.
Classification: each ran without a divergence on digits with the job's other defaults; csgld's is
the one a validation sweep chose (benchmarks/cyclical_bnn.py, which preferred 3e-3 for SGLD, against
this conservative 1e-3). Regression: on diabetes at noise_scale 0.5 (seeds 0-2), each is about a
third of the smallest step that diverged (sgld 3e-4, sghmc 1e-4, csgld 3e-4, ensemble 3e-4, sgnht
1e-2); the job multiplies them by (noise_scale / 0.5)², since the Gaussian likelihood's curvature,
which bounds the stable step, is ∝ 1 / noise_scale². pSGLD is the exception to both rules: its
RMSprop-normalised steps did not diverge even at step 1 on either set, so its default was chosen
by mixing and fit (4 chains × 8000 steps): on digits, 1e-4 left the chains unmixed (R-hat of the
test log-likelihood 1.40, bulk ESS 9), 1e-2 gave 1.04-1.09 (ESS 35-94, seeds 0-2), and from
0.3 on the test NLL and ECE worsen (NLL 0.13 at 1e-2, 0.20 at 0.3, 0.30 at 1: discretisation
bias); on diabetes 1e-2 gave R-hat 1.01 (1e-4: 1.56; SGLD's default 1.13)."""
REGRESSION_REFERENCE_NOISE_SCALE = 0.5


@dataclass
class JobConfig:
    """Every setting of ``sgmcmc run``; the command's flags and ``--config`` TOML keys have these names.

    ``dataset`` is a bundled name (:data:`BUNDLED`) or a ``.npz`` (arrays ``x``, ``y``) or
    ``.csv`` (last column the target, a header row) file. ``task`` is inferred when None:
    classification for whole-number targets with at most 50 values. ``step_size`` and
    ``ensemble_step_size`` None take the task's :data:`DEFAULT_STEP_SIZES`. ``ood_classes``
    are held out of training and used as out-of-distribution inputs, beside uniform noise over
    each feature's training range. ``burn_in`` None means half the steps. ``compile`` compiles
    each sampler step (:meth:`sgmcmc.Sampler.sample`'s ``compile``; the SGD ensemble stays eager).
    ``parallel`` ("chains" or "data", under torchrun) samples across processes
    (docs/distributed.md); rank 0 writes the files.
    """

    dataset: str = "digits"
    task: str | None = None
    hidden: list[int] = field(default_factory=lambda: [100])
    activation: str = "tanh"
    sampler: str = "sgld"
    step_size: float | None = None
    friction: float = 0.1
    num_cycles: int = 4
    temperature: float = 1.0
    prior_scale: float = 1.0
    noise_scale: float = 0.5
    num_chains: int = 4
    num_steps: int = 8000
    burn_in: int | None = None
    thin: int = 20
    batch_size: int = 64
    test_fraction: float = 0.25
    ood_classes: list[int] = field(default_factory=list)
    ensemble: bool = True
    ensemble_step_size: float | None = None
    keep_params: bool = True
    stream: bool = False
    checkpoint_every: int = 0
    seed: int = 0
    device: str = "cpu"
    output: str = "sgmcmc-output"
    progress: bool = True
    compile: bool = False
    parallel: str | None = None

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(JobConfig)
        for setting in dataclasses.fields(self):
            value = getattr(self, setting.name)
            if not _has_type(value, hints[setting.name]):
                raise TypeError(f"setting {setting.name} must be {setting.type}, got {type(value).__name__} {value!r}")
        for name, least in [("num_chains", 1), ("num_steps", 1), ("thin", 1), ("batch_size", 1), ("num_cycles", 1)]:
            count(name, getattr(self, name), least)
        count("checkpoint_every", self.checkpoint_every, 0)
        if count("seed", self.seed, 0) >= 2**32:  # scikit-learn's split takes a 32-bit random_state
            raise ValueError(f"seed must be < 2**32, got {self.seed}")
        if self.burn_in is not None and count("burn_in", self.burn_in, 0) >= self.num_steps:
            raise ValueError(f"burn_in ({self.burn_in}) must be < num_steps ({self.num_steps}) so that a draw is kept")
        nonnegative("temperature", self.temperature)
        for name in ("prior_scale", "noise_scale", "friction"):
            positive(name, getattr(self, name))
        for name in ("step_size", "ensemble_step_size"):
            if getattr(self, name) is not None:
                positive(name, getattr(self, name))
        for name, options in CHOICES.items():
            value = getattr(self, name)
            if value is not None and value not in options:
                raise ValueError(f"{name} must be one of {options}, got {value!r}")
        if self.parallel is not None and self.checkpoint_every:
            raise ValueError(f"--parallel {self.parallel} cannot checkpoint (--checkpoint-every; docs/distributed.md)")
        if self.parallel == "chains" and self.stream:
            raise ValueError("--parallel chains cannot stream the trace (--stream): rank 0 gathers it at the end")
        if not 0 < self.test_fraction < 1:
            raise ValueError(f"test_fraction must be in (0, 1), got {self.test_fraction}")
        if not self.hidden or any(width < 1 for width in self.hidden):
            raise ValueError(f"hidden must list layer widths >= 1, got {self.hidden}")
        for name, samplers in (("friction", ("sghmc", "csghmc")), ("num_cycles", ("csgld", "csghmc"))):
            if getattr(self, name) != getattr(JobConfig, name) and self.sampler not in samplers:
                warn_caller(
                    f"{name}={getattr(self, name)} has no effect with sampler {self.sampler!r}: only {samplers} use it",
                    RuntimeWarning,
                )
        if self.sampler in ("csgld", "csghmc") and self.num_cycles > self.num_steps:
            raise ValueError(
                f"num_cycles ({self.num_cycles}) must be <= num_steps ({self.num_steps}): each cycle needs a step"
            )
        sampling_device("device", self.device)


def _has_type(value: Any, hint: Any) -> bool:
    """Whether a setting's ``value`` (from flags or a TOML file) has the type ``hint`` (an int passes for a float)."""
    if typing.get_origin(hint) in (types.UnionType, typing.Union):
        return any(_has_type(value, option) for option in typing.get_args(hint))
    if typing.get_origin(hint) is list:
        return isinstance(value, list) and all(_has_type(item, typing.get_args(hint)[0]) for item in value)
    if hint is type(None):
        return value is None
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint)


@dataclass
class _Data:
    train: tuple[torch.Tensor, torch.Tensor]
    test: tuple[torch.Tensor, torch.Tensor]
    out_of_distribution: dict[str, torch.Tensor]
    task: str
    num_outputs: int
    target_mean: float
    target_scale: float
    noise_scale: float
    classes: list[Any] | None = None
    """Classification: the data set's label of each class index the network predicts (held-out classes left out)."""


def _load(dataset: str) -> tuple[np.ndarray, np.ndarray]:
    if dataset in BUNDLED:
        return BUNDLED[dataset](return_X_y=True)
    path = Path(dataset)
    if not path.is_file():
        raise ValueError(f"dataset {dataset!r} is neither one of {list(BUNDLED)} nor an existing .npz/.csv file")
    if path.suffix == ".npz":
        with np.load(path) as arrays:
            if not {"x", "y"} <= set(arrays.files):
                raise ValueError(f"{path} must hold arrays 'x' and 'y', it holds {arrays.files}")
            features, targets = arrays["x"], arrays["y"]
    elif path.suffix == ".csv":
        try:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", "loadtxt: input contained no data")  # refused below, by name
                table = np.loadtxt(path, delimiter=",", skiprows=1, ndmin=2)
        except ValueError as error:
            raise ValueError(
                f"{path} must hold numbers only after its header row (class labels as integers): {error}"
            ) from error
        if len(table) == 0:
            raise ValueError(f"{path} has no rows of data after its header row")
        features, targets = table[:, :-1], table[:, -1]
    else:
        raise ValueError(f"dataset file {path} must be .npz or .csv")
    if targets.ndim == 2 and targets.shape[1] == 1:  # a column of targets
        targets = targets[:, 0]
    if targets.ndim != 1:
        raise ValueError(f"{path}'s targets y must hold one value per row, shape (n,) or (n, 1); got {targets.shape}")
    return features, targets


def _prepare(config: JobConfig) -> _Data:
    features, targets = _load(config.dataset)
    targets = np.asarray(targets)
    if targets.dtype == bool:  # netCDF has no boolean type, for the classes attribute written at the end
        targets = targets.astype(np.int64)
    for name, values in (("features x", np.asarray(features)), ("targets y", targets)):
        if not np.issubdtype(values.dtype, np.number) or np.iscomplexobj(values):
            raise ValueError(
                f"dataset {name} must be real numbers (class labels as integers), got dtype {values.dtype}"
            )
    features = np.asarray(features, np.float64).reshape(len(features), -1)
    if len(features) != len(targets) or len(features) < 10:
        raise ValueError(f"dataset has {len(features)} rows of features and {len(targets)} targets; need >= 10 of each")
    if not (np.isfinite(features).all() and np.isfinite(np.asarray(targets, np.float64)).all()):
        raise ValueError("dataset holds non-finite values")
    is_integer = np.array_equal(targets, np.round(targets))
    task = config.task or ("classification" if is_integer and len(np.unique(targets)) <= 50 else "regression")
    if config.ood_classes and task != "classification":
        raise ValueError(f"ood_classes need a classification task; {config.dataset} is a {task} task")
    held_out = np.isin(targets, config.ood_classes) if task == "classification" else np.zeros(len(targets), bool)
    absent = [label for label in config.ood_classes if not np.isin(label, targets)]
    if absent:  # a typo among them would silently hold out fewer classes than the report records
        raise ValueError(f"ood_classes {absent} match no label of {config.dataset}")
    if task == "classification" and len(np.unique(targets[~held_out])) < 2:
        raise ValueError(f"ood_classes {config.ood_classes} leave fewer than 2 classes of {config.dataset} to train on")
    stratify = targets if task == "classification" else None
    train_x, test_x, train_y, test_y, train_held, test_held = train_test_split(
        features, targets, held_out, test_size=config.test_fraction, random_state=config.seed, stratify=stratify
    )
    mean, scale = train_x[~train_held].mean(axis=0), train_x[~train_held].std(axis=0)
    scale = np.where(scale > 0, scale, 1.0)
    as_float = lambda array: torch.as_tensor((array - mean) / scale, dtype=torch.float32)  # noqa: E731
    low, high = train_x[~train_held].min(axis=0), train_x[~train_held].max(axis=0)  # the trained classes only
    num_test = int((~test_held).sum())  # the test points of the trained classes
    noise = np.random.default_rng(config.seed).uniform(low, high, size=(num_test, features.shape[1]))
    out_of_distribution = {"noise": as_float(noise)}
    if task == "classification":
        if config.noise_scale != JobConfig.noise_scale:
            warn_caller(f"noise_scale={config.noise_scale} has no effect on a classification task", RuntimeWarning)
        classes = np.unique(train_y[~train_held])
        relabel = {label: index for index, label in enumerate(classes)}
        if config.ood_classes:
            out_of_distribution["held_out_classes"] = as_float(test_x[test_held])
        as_labels = lambda labels: torch.tensor([relabel[label] for label in labels])  # noqa: E731
        train = (as_float(train_x[~train_held]), as_labels(train_y[~train_held]))
        test = (as_float(test_x[~test_held]), as_labels(test_y[~test_held]))
        return _Data(
            train, test, out_of_distribution, task, len(classes), 0.0, 1.0, config.noise_scale, classes.tolist()
        )
    if np.ptp(train_y) == 0:  # standardising would divide by 0
        raise ValueError(
            f"the training targets of {config.dataset} all equal {train_y[0]}: there is nothing to regress"
        )
    target_mean, target_scale = float(train_y.mean()), float(train_y.std())
    as_targets = lambda y: torch.as_tensor((y - target_mean) / target_scale, dtype=torch.float32)  # noqa: E731
    return _Data(
        (as_float(train_x), as_targets(train_y)),
        (as_float(test_x), as_targets(test_y)),
        out_of_distribution,
        task,
        1,
        target_mean,
        target_scale,
        config.noise_scale,
    )


def _network(config: JobConfig, num_inputs: int, num_outputs: int) -> nn.Sequential:
    activation = {"tanh": nn.Tanh, "relu": nn.ReLU}[config.activation]
    widths = [num_inputs, *config.hidden]
    layers: list[nn.Module] = []
    for width_in, width_out in zip(widths[:-1], widths[1:], strict=True):
        layers += [nn.Linear(width_in, width_out), activation()]
    return nn.Sequential(*layers, nn.Linear(widths[-1], num_outputs))


def _step_size(config: JobConfig, task: str, method: str) -> float:
    """The step size of ``method`` (a sampler's name, or "ensemble"): the config's, or the task's default."""
    chosen = config.ensemble_step_size if method == "ensemble" else config.step_size
    if chosen is not None:
        return chosen
    if task == "classification" or method == "psgld":  # pSGLD's RMSprop preconditioner scales with the curvature
        return DEFAULT_STEP_SIZES[task][method]
    return DEFAULT_STEP_SIZES[task][method] * (config.noise_scale / REGRESSION_REFERENCE_NOISE_SCALE) ** 2


def _sampler(config: JobConfig, step_size: float, log_posterior: Any, temperature: float) -> sgmcmc.Sampler:
    if config.sampler in ("csgld", "csghmc"):
        schedule = Cyclical(step_size, num_cycles=config.num_cycles, total_steps=config.num_steps)
        if config.sampler == "csgld":
            return sgmcmc.CyclicalSGLD(log_posterior, schedule, temperature=temperature)
        return sgmcmc.CyclicalSGHMC(log_posterior, schedule, friction=config.friction, temperature=temperature)
    if config.sampler == "sghmc":
        return sgmcmc.SGHMC(log_posterior, step_size, friction=config.friction, temperature=temperature)
    if config.sampler == "sgnht":
        return sgmcmc.SGNHT(log_posterior, step_size, temperature=temperature)
    if config.sampler == "psgld":
        return sgmcmc.PSGLD(log_posterior, step_size, temperature=temperature)
    return sgmcmc.SGLD(log_posterior, step_size, temperature=temperature)


def _scores(
    data: _Data, test_draws: np.ndarray, ood_draws: dict[str, np.ndarray], test_log_likelihoods: np.ndarray
) -> dict[str, float]:
    """Metrics of the predictive that averages a set of networks (posterior draws or ensemble members).

    Args:
        test_draws: each network's predictive at the test points: class probabilities (networks,
            points, classes), or predicted means (networks, points) for regression.
        ood_draws: the same at each set of out-of-distribution points (classification only).
        test_log_likelihoods: each network's log p(y_i | x_i) at the test points (networks, points):
            the NLL of both tasks, exact where float32 class probabilities underflow (a regression's in
            standardised units, moved to the targets' by + log of their scale).
    """
    targets = data.test[1].numpy()
    nll = metrics.mixture_negative_log_likelihood(test_log_likelihoods) + float(np.log(data.target_scale))
    if data.task == "regression":
        return {
            "rmse": metrics.root_mean_squared_error(test_draws.mean(axis=0), targets) * data.target_scale,
            "nll": nll,
            "draws": len(test_draws),
        }
    predictive = test_draws.mean(axis=0)
    return {
        "accuracy": metrics.accuracy(predictive, targets),
        "nll": nll,
        "ece": metrics.expected_calibration_error(predictive, targets),
        "brier": metrics.brier_score(predictive, targets),
        **{f"auroc_{name}": metrics.ood_auroc(predictive, draws.mean(axis=0)) for name, draws in ood_draws.items()},
        "draws": len(test_draws),
    }


def _plot(
    output: Path, data: _Data, test_predictive: np.ndarray, diverging: np.ndarray, functionals: xr.Dataset
) -> list[Path]:
    """The reliability diagram (classification) and the per-chain trace of the test log-likelihood, as PNGs;
    ``diverging`` (chains, draws) marks the draws left out of that trace."""
    from matplotlib.figure import Figure  # the object API: no pyplot state, no global backend

    written = []
    if data.task == "classification":
        confidence, accuracy, counts = metrics.reliability_bins(test_predictive, data.test[1].numpy())
        figure = Figure(figsize=(4.5, 4.5))
        axes = figure.subplots()
        filled = counts > 0
        axes.plot([0, 1], [0, 1], color="grey", linestyle="--", label="perfect calibration")
        axes.plot(confidence[filled], accuracy[filled], marker="o", label="posterior predictive")
        axes.set(xlabel="confidence (top-label probability)", ylabel="accuracy", title="Reliability diagram")
        axes.legend(loc="upper left")
        figure.tight_layout()
        figure.savefig(output / "reliability.png", dpi=120)
        written.append(output / "reliability.png")
    # a diverged chain's frozen draws are left out of the plot (a gap), as they are of the scores
    values = np.where(diverging, np.nan, functionals["test_log_likelihood"].values)
    figure = Figure(figsize=(7, 3.5))
    axes = figure.subplots()
    for chain, trajectory in enumerate(values):
        label = f"chain {chain}" + (" (diverged)" if diverging[chain].any() else "")
        axes.plot(functionals["step"].values, trajectory, label=label, linewidth=0.8)
    axes.set(xlabel="step", ylabel="test log-likelihood", title="Trace of a predictive functional")
    axes.legend(fontsize="small")
    figure.tight_layout()
    figure.savefig(output / "functionals.png", dpi=120)
    return [*written, output / "functionals.png"]


def _with_predictive_groups(idata: Any, groups: dict[str, xr.Dataset]) -> Any:
    if hasattr(idata, "add_groups"):  # ArviZ 0.x InferenceData
        idata.add_groups(groups)
        return idata
    for name, dataset in groups.items():  # ArviZ 1.x: an xarray DataTree
        idata[name] = xr.DataTree(dataset)
    return idata


def run_job(config: JobConfig) -> dict[str, Any]:
    """Run the job of ``config``; prints the report and returns it (the contents of ``report.json``)."""
    output = Path(config.output)
    in_the_way = [name for name in _FILES if (output / name).is_dir()]
    if in_the_way:  # found now, not when the results of a long run are written
        raise ValueError(
            f"--output {output} holds directories named as the files the job writes ({', '.join(in_the_way)}): "
            "move them or give another --output"
        )
    data = _prepare(config)
    likelihood = Classification() if data.task == "classification" else Regression(config.noise_scale)
    train_x, train_y = data.train
    torch.manual_seed(config.seed)
    network = _network(config, train_x.shape[1], data.num_outputs)
    # data-parallel ranks share out P (N // P) rows between them: that is the N the likelihood scales to
    num_data = sgmcmc.distributed.sharded_num_rows(len(train_y)) if config.parallel == "data" else len(train_y)
    posterior = ModulePosterior(network, likelihood, num_data=num_data, prior_scale=config.prior_scale)
    test_x, test_y = (tensor.to(config.device) for tensor in data.test)
    ood = {name: inputs.to(config.device) for name, inputs in data.out_of_distribution.items()}

    def test_point_log_likelihood(params: dict[str, torch.Tensor]) -> torch.Tensor:
        return posterior.log_likelihood(params, (test_x, test_y))

    functionals = {
        "test_log_likelihood": lambda params: test_point_log_likelihood(params).sum(),
        "test_point_log_likelihood": test_point_log_likelihood,
        "test_predictive": lambda params: posterior.predictive(params, test_x),
        **{f"{name}_predictive": lambda params, x=x: posterior.predictive(params, x) for name, x in ood.items()},
    }
    minibatches = sgmcmc.Minibatches(train_x.to(config.device), train_y.to(config.device), batch_size=config.batch_size)
    common = dict(
        num_chains=config.num_chains,
        num_steps=config.num_steps,
        seed=config.seed,
        device=config.device,
        stacked_init=True,
        progress=config.progress,
    )
    init = posterior.initial_params(config.num_chains, config.seed)
    burn_in = config.num_steps // 2 if config.burn_in is None else config.burn_in
    step_sizes = {"sampler": _step_size(config, data.task, config.sampler)}
    if config.ensemble:
        step_sizes["ensemble"] = _step_size(config, data.task, "ensemble")

    sampler = _sampler(config, step_sizes["sampler"], posterior.log_posterior, config.temperature)
    kept_steps(sampler, config.num_steps, burn_in, config.thin)  # a cyclical sampler may keep none of them
    # after the settings' checks, and gone again if sampling refuses the settings: a usage error leaves no folder
    with output_folder(output):
        # its presence marks a finished run: an earlier job's must not outlive this one if this one fails
        (output / "report.json").unlink(missing_ok=True)
        start = time.perf_counter()
        trace = _naming_divergences(
            f"chains of the {config.sampler} run",
            "--step-size",
            lambda: sgmcmc.distributed.sample_in_parallel(
                config.parallel,
                sampler,
                init,
                minibatches,
                burn_in=burn_in,
                thin=config.thin,
                functionals=functionals,
                keep=None if config.keep_params else (),
                trace_file=output / "trace.nc" if config.stream else None,
                checkpoint=output / "checkpoint.pt" if config.checkpoint_every else None,
                checkpoint_every=max(config.checkpoint_every, 1),
                compile=config.compile,
                **common,
            ),
        )
    seconds = {"sampler": time.perf_counter() - start}
    if trace is None:  # a rank other than 0 of a parallel run: rank 0 has the trace and writes the files
        return {}
    steps_done = trace.attrs["steps_done"]
    interrupted = steps_done < config.num_steps
    if trace.num_draws == 0:
        resume = "; run the same command again to resume from the checkpoint" if config.checkpoint_every else ""
        raise JobError(
            f"the {config.sampler} run was interrupted after {steps_done} of {config.num_steps} steps, before "
            f"its first kept draw (burn-in {burn_in}), so there is nothing to score{resume}"
        )
    alive = ~trace.sample_stats["diverging"]
    diverged_at_step = trace.diverged_at_step
    if (diverged_at_step >= 0).all():  # its draws before the divergence come from chains already blowing up
        raise JobError(
            f"every chain of the {config.sampler} run diverged (at steps {diverged_at_step.tolist()}), so there "
            "is nothing to score; try a smaller step size (--step-size)"
        )

    def pooled(name: str) -> np.ndarray:
        return trace.functionals[name][alive]  # (kept draws of every chain, *shape)

    ood_functionals = {name: f"{name}_predictive" for name in ood} if data.task == "classification" else {}
    test_draws = pooled("test_predictive")
    methods = {
        "posterior": {
            **_scores(
                data,
                test_draws,
                {name: pooled(f) for name, f in ood_functionals.items()},
                pooled("test_point_log_likelihood"),
            ),
            "diverged": int((~alive).any(axis=1).sum()),
        }
    }

    if config.ensemble and interrupted:  # a stop asks for the results so far, not a second run as long
        warn_caller(
            f"the {config.sampler} run was interrupted, so the SGD ensemble, which would take as long again, is "
            "skipped; the posterior is scored on the draws kept so far",
            RuntimeWarning,
        )
    elif config.ensemble:
        start = time.perf_counter()
        # rank 0 alone trains the ensemble, on all the rows: its likelihood scales to all of them
        full_data = (
            posterior
            if num_data == len(train_y)
            else ModulePosterior(network, likelihood, num_data=len(train_y), prior_scale=config.prior_scale)
        )
        ensemble = _naming_divergences(
            "members of the SGD ensemble",
            "--ensemble-step-size",
            lambda: sgmcmc.SGLD(full_data.log_posterior, step_sizes["ensemble"], temperature=0.0).sample(
                init, minibatches, burn_in=config.num_steps - 1, functionals=functionals, keep=(), **common
            ),
        )
        seconds["ensemble"] = time.perf_counter() - start
        methods.update(_ensemble_scores(data, ensemble, ood_functionals, config.num_chains))

    idata = trace.to_arviz()
    functionals = group_dataset(idata, "functionals")
    # R-hat compares whole chains, so a chain with diverged (frozen) draws is left out altogether
    healthy_chains = np.flatnonzero(alive.all(axis=1))
    convergence = {
        **_convergence(functionals.isel(chain=healthy_chains)),
        "chains": len(healthy_chains),
    }
    generator = np.random.default_rng(config.seed)
    draws = np.asarray(functionals["test_predictive"].values)
    if data.task == "classification":
        cumulative = draws.cumsum(axis=-1)
        replicated = (generator.uniform(size=draws.shape[:-1] + (1,)) > cumulative).sum(axis=-1)
        # class indices, as the predictive's last dim counts them; attrs["classes"] maps them to the labels
        replicated = np.minimum(replicated, draws.shape[-1] - 1).astype(np.int64)
        observed = test_y.cpu().numpy().astype(np.int64)
        attrs = {"classes": data.classes, "y": "class index i is the data set's label classes[i]"}
    else:
        # in the targets' own units, as the report's RMSE and NLL (the network and functionals use standardised ones)
        replicated = (draws + config.noise_scale * generator.standard_normal(draws.shape)) * data.target_scale
        replicated = replicated + data.target_mean
        observed = test_y.cpu().numpy() * data.target_scale + data.target_mean
        attrs = {}
    dims = ("chain", "draw", "test_point")
    coords = {"chain": functionals.chain.values, "draw": functionals.draw.values}
    idata = _with_predictive_groups(
        idata,
        {
            "posterior_predictive": xr.Dataset({"y": (dims, replicated)}, coords=coords, attrs=attrs),
            "observed_data": xr.Dataset({"y": (("test_point",), observed)}, attrs=attrs),
        },
    )
    write_atomically(output / "posterior.nc", lambda path: idata.to_netcdf(str(path)))
    figures = _plot(output, data, test_draws.mean(axis=0), ~alive, functionals)
    files = [output / "posterior.nc", *figures]
    files += [
        output / name
        for name, made in (("trace.nc", config.stream), ("checkpoint.pt", config.checkpoint_every))
        if made
    ]
    _remove_stale_files(output, files)

    report = {
        "config": dataclasses.asdict(config),
        "task": data.task,
        "num_train": len(train_y),
        "num_data": num_data,
        "num_test": len(test_y),
        "methods": methods,
        "convergence": convergence,
        "step_sizes": step_sizes,
        "seconds": seconds,
        "steps_done": steps_done,
        "files": [str(path) for path in files if path.exists()],
    }
    strict = json.dumps(_finite_or_named(report), indent=2, allow_nan=False)
    write_atomically(output / "report.json", lambda path: path.write_text(strict))
    _print_report(report)
    return report


_FILES = ("posterior.nc", "report.json", "reliability.png", "functionals.png", "trace.nc", "checkpoint.pt")
"""The files a job may write in its output folder."""


def _remove_stale_files(output: Path, written: list[Path]) -> None:
    """Delete the figures an earlier job left in ``output`` that this one did not write (a classification
    run's reliability diagram beside a regression run's report), and warn of its trace and checkpoint,
    which are data: they are not this run's, and a run with --checkpoint-every would resume from them."""
    for name in set(_FILES) - {path.name for path in written} - {"report.json"}:
        path = output / name
        if path.exists() and name.endswith(".png"):
            path.unlink()
        elif path.exists():
            warn_caller(f"{path} is from an earlier job, not this one: move or delete it", RuntimeWarning)


class JobError(RuntimeError):
    """The job ran but has nothing to score: every chain diverged, or it was stopped before its first kept draw."""


def _naming_divergences(chains: str, option: str, sample: Callable[[], sgmcmc.Trace | None]) -> sgmcmc.Trace | None:
    """``sample()``, its :class:`sgmcmc.SamplerDivergenceWarning` said of ``chains`` and naming the command-line
    ``option`` that sets their step size (``sample``'s own names the ``step_size`` argument, which the job's user
    never wrote, and does not say which of the job's two runs diverged)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SamplerDivergenceWarning)
        trace = sample()
    if trace is not None:  # None on the ranks of a parallel run other than 0, which reports for all chains
        warn_of_divergences(trace.diverged_at_step.tolist(), chains, option)
    return trace


def _ensemble_scores(
    data: _Data, ensemble: sgmcmc.Trace, ood_functionals: dict[str, str], num_members: int
) -> dict[str, dict[str, float]]:
    """The scores of member 0 ("SGD, one network") and of the whole ensemble, each member at its last step.

    A diverged member is frozen at its last finite state: it is left out, as diverged draws are.
    """
    label = f"SGD ensemble of {num_members}"
    if ensemble.num_draws == 0:
        warn_caller("the SGD ensemble was interrupted before its last step, so it has no scores", RuntimeWarning)
        return {label: {}}
    finite = ~ensemble.sample_stats["diverging"][:, -1]
    if not finite.any():  # the posterior is still written and scored
        warn_caller(
            "every member of the SGD ensemble diverged, so it has no scores; try a smaller "
            "--ensemble-step-size, or --no-ensemble",
            RuntimeWarning,
        )
    scores = {}
    for row, members in (("SGD, one network", np.array([0])), (label, np.arange(num_members))):
        kept = members[finite[members]]
        values = {name: draws[kept, -1] for name, draws in ensemble.functionals.items()}  # (members, *shape)
        ood_members = {name: values[functional] for name, functional in ood_functionals.items()}
        scores[row] = (
            _scores(data, values["test_predictive"], ood_members, values["test_point_log_likelihood"])
            if kept.size
            else {}
        )
        scores[row]["diverged"] = int(members.size - kept.size)
    return scores


def _finite_or_named(value: Any) -> Any:
    """``value`` with every non-finite float written as a string ("inf", "-inf", "nan"), which strict JSON needs:
    an R-hat of chains that each stay constant but differ is inf."""
    if isinstance(value, dict):
        return {key: _finite_or_named(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_or_named(item) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


CONVERGENCE_KEYS = (
    "test_log_likelihood_rhat",
    "test_log_likelihood_ess_bulk",
    "test_predictive_rhat_max",
    "test_predictive_rhat_median",
)
MIN_CHAINS_FOR_RHAT, MIN_DRAWS_FOR_RHAT = 2, 4
"""ArviZ's R-hat needs at least 2 chains of 4 draws (it returns NaN and logs a warning otherwise)."""


def _convergence(functionals: xr.Dataset) -> dict[str, float | None]:
    """R-hat and bulk ESS of the test log-likelihood, and the median and max R-hat of the test
    predictive over test points (points whose draws are all equal, hence R-hat NaN, left out);
    all ``None`` when there are too few chains or draws for R-hat."""
    import arviz as az

    if functionals.sizes["chain"] < MIN_CHAINS_FOR_RHAT or functionals.sizes["draw"] < MIN_DRAWS_FOR_RHAT:
        return dict.fromkeys(CONVERGENCE_KEYS)
    test_log_likelihood = functionals[["test_log_likelihood"]]
    # R-hat of a constant point is 0/0, left out below; of chains that each stay constant but differ, x/0 = inf
    with np.errstate(invalid="ignore", divide="ignore"):
        predictive_rhat = np.asarray(az.rhat(functionals[["test_predictive"]])["test_predictive"].values)
        test_log_likelihood_rhat = float(az.rhat(test_log_likelihood)["test_log_likelihood"])
    computable = predictive_rhat[~np.isnan(predictive_rhat)]
    return {
        "test_log_likelihood_rhat": test_log_likelihood_rhat,
        "test_log_likelihood_ess_bulk": float(az.ess(test_log_likelihood, method="bulk")["test_log_likelihood"]),
        "test_predictive_rhat_max": float(computable.max()) if computable.size else None,
        "test_predictive_rhat_median": float(np.median(computable)) if computable.size else None,
    }


def _print_report(report: dict[str, Any]) -> None:
    config = report["config"]
    steps = report["steps_done"]
    steps_run = f"{steps}" if steps == config["num_steps"] else f"{steps} of {config['num_steps']}"  # interrupted
    print(
        f"\n{config['dataset']} ({report['task']}): {report['num_train']} train / {report['num_test']} test rows; "
        f"MLP hidden {config['hidden']} {config['activation']}; {config['sampler']}, {config['num_chains']} chains x "
        f"{steps_run} steps in {report['seconds']['sampler']:.1f} s"
    )
    columns = sorted({key for scores in report["methods"].values() for key in scores}, key=_column_order)
    width = max(len(name) for name in report["methods"]) + 2
    widths = {column: max(16, len(column) + 2) for column in columns}
    print("".join([f"{'method':<{width}}", *(f"{column:>{widths[column]}}" for column in columns)]))
    for name, scores in report["methods"].items():
        cells = [
            " " * widths[column]
            if column not in scores
            else f"{scores[column]:>{widths[column]}}"  # counts in full
            if isinstance(scores[column], int)
            else f"{scores[column]:>{widths[column]}.4g}"
            for column in columns
        ]
        print("".join([f"{name:<{width}}", *cells]))
    convergence = report["convergence"]
    left_out = config["num_chains"] - convergence["chains"]
    diverged = f" (the {left_out} chains that diverged left out)" if left_out else ""
    if convergence["test_log_likelihood_rhat"] is None:
        print(
            f"R-hat and ESS not computed: R-hat needs at least {MIN_CHAINS_FOR_RHAT} chains "
            f"of {MIN_DRAWS_FOR_RHAT} kept draws{diverged}"
        )
    else:
        median, largest = convergence["test_predictive_rhat_median"], convergence["test_predictive_rhat_max"]
        predictive = (
            "not computable (every test point's draws are constant)"
            if largest is None
            else f"median {median:.3f}, max {largest:.3f}"
        )
        print(
            f"R-hat of the test log-likelihood {convergence['test_log_likelihood_rhat']:.3f} "
            f"(bulk ESS {convergence['test_log_likelihood_ess_bulk']:.0f}); "
            f"R-hat of the test predictive {'probabilities' if report['task'] == 'classification' else 'means'}: "
            f"{predictive}{diverged}"
        )
    print("written: " + ", ".join(report["files"]) + f", {Path(config['output']) / 'report.json'}")


def _column_order(column: str) -> tuple[int, str]:
    order = ["accuracy", "rmse", "nll", "ece", "brier"]
    return (order.index(column) if column in order else len(order) + ["diverged", "draws"].count(column), column)


def config_from_arguments(arguments: argparse.Namespace) -> JobConfig:
    """The config of a parsed ``sgmcmc run``: the TOML file's values, then the flags given."""
    values: dict[str, Any] = {}
    if arguments.config is not None:
        with open(arguments.config, "rb") as file:
            try:
                values = tomllib.load(file)
            except tomllib.TOMLDecodeError as error:  # its message names a line, not the file
                raise ValueError(f"{arguments.config} is not valid TOML: {error}") from None
        unknown = set(values) - {item.name for item in dataclasses.fields(JobConfig)}
        if unknown:
            raise ValueError(f"{arguments.config}: unknown settings {sorted(unknown)}")
    given = {key: value for key, value in vars(arguments).items() if value is not None and key not in _NOT_SETTINGS}
    return JobConfig(**{**values, **given})


_NOT_SETTINGS = {"config", "run", "command", "parser"}
_DEFAULT_DESCRIPTIONS = {
    "task": "inferred from the targets (classification for whole numbers with at most 50 values)",
    "step_size": "the task's, per sampler (sgmcmc.job.DEFAULT_STEP_SIZES)",
    "ensemble_step_size": "the task's (sgmcmc.job.DEFAULT_STEP_SIZES)",
    "burn_in": "half of --num-steps",
    "parallel": "one process",
}
"""What a setting whose default is None means, for ``--help``."""


def add_options(parser: argparse.ArgumentParser) -> None:
    """The flags of :class:`JobConfig` (every default None: unset flags leave the config's value)."""
    parser.add_argument("--config", help="a TOML file of settings (the names below, with underscores)")
    for item in dataclasses.fields(JobConfig):
        flag = "--" + item.name.replace("_", "-")
        default = item.default if item.default is not dataclasses.MISSING else item.default_factory()
        text = f"default: {_DEFAULT_DESCRIPTIONS.get(item.name, default)}"
        if item.type == "bool":
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=text)
        elif item.name in ("hidden", "ood_classes"):
            parser.add_argument(flag, type=int, nargs="*", default=None, help=text)
        else:
            kind = {"int": int, "float": float, "int | None": int, "float | None": float}.get(item.type, str)
            parser.add_argument(flag, type=kind, choices=CHOICES.get(item.name), default=None, help=text)


def _run_command(arguments: argparse.Namespace) -> int:
    try:
        config = config_from_arguments(arguments)
    except (ValueError, TypeError, OSError) as error:  # a bad setting or config file: a usage error
        arguments.parser.error(str(error))
    processes = sgmcmc.distributed.launched_world_size()
    if config.parallel is None and processes > 1:
        arguments.parser.error(
            f"this is one of {processes} processes a launcher started, but --parallel is not set: "
            "every process would run the whole job and write the same --output; give --parallel chains or data"
        )
    try:
        if config.parallel is None:
            run_job(config)
            return 0
        with sgmcmc.distributed.process_group(config.device) as group:
            run_job(dataclasses.replace(config, device=str(group.device)))
        return 0
    except (ValueError, TypeError, OSError) as error:  # the data, the output folder or a setting the run checks
        arguments.parser.error(str(error))
    except MemoryError as error:  # the in-memory trace's own check, before sampling: its remedies in flags
        arguments.parser.error(f"{error}; in sgmcmc run: --stream, a larger --thin or --burn-in, or --no-keep-params")
    except JobError as error:  # it ran, but has nothing to score
        arguments.parser.exit(1, f"{arguments.parser.prog}: {error}\n")


def add_command(commands: argparse._SubParsersAction) -> None:
    """Register ``sgmcmc run`` and its alias ``sgmcmc demo`` (the defaults are the digits demo)."""
    parser = commands.add_parser(
        "run",
        aliases=["demo"],
        help="Bayesian MLP on a data set (default: digits, about a minute): sample, compare with a deep "
        "ensemble of the same cost, report accuracy, NLL, calibration, OOD AUROC and R-hat of functionals",
    )
    add_options(parser)
    parser.set_defaults(run=_run_command, parser=parser)

"""The engine shared by every sampler: validate, start the chains, step them, keep draws.

One loop for all algorithms. Each step gathers every chain's minibatch with one indexing op,
calls the sampler's vectorised ``step``, freezes any chain whose new state is non-finite (on
device, without a host sync) and records kept draws.
"""

from __future__ import annotations

import functools
import itertools
import math
import os
import re
import types
import weakref
from collections.abc import Callable, Mapping, Sequence
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.func import vmap
from torch.utils import _pytree as pytree
from tqdm.auto import tqdm

import sgmcmc
from sgmcmc._checks import (
    autograd_allowed,
    count,
    flag,
    has_elements,
    nonnegative,
    parameter_tensor,
    recordable,
    sampling_device,
    warn_caller,
)
from sgmcmc.chains import (
    ChainGenerators,
    RecordingGenerators,
    ReplayedDraws,
    per_chain_sum,
    seeds_of_chains,
    select_chains,
)
from sgmcmc.checkpoint import check_same_run, load_checkpoint, save_checkpoint
from sgmcmc.data import chain_data
from sgmcmc.log_density import BoundPotential, ChainPotential, check_call_form, checked_log_density
from sgmcmc.schedules import Cyclical, Schedule
from sgmcmc.trace import Trace, TraceRecorder, Variable, netcdf_attr

if TYPE_CHECKING:
    from sgmcmc.sampler import Sampler

__all__ = ["run", "SamplerDivergenceWarning"]

TENSOR_PARAM_NAME = "theta"
"""The name a bare-tensor ``init`` gets in the trace."""

RESERVED_NAMES = ("chain", "draw", "step", "cycle")
"""Names of trace coordinates, which parameters and functionals cannot take."""


class SamplerDivergenceWarning(RuntimeWarning):
    """A chain's state or log posterior became non-finite; it was frozen and flagged ``diverging`` from then on."""


def _named_params(
    init: Any, argument: str = "init"
) -> tuple[dict[str, torch.Tensor], Callable[[dict[str, torch.Tensor]], Any]]:
    """``init`` as a dict of named tensors, and the map back to the structure the user gave; errors name
    it ``argument``."""
    if isinstance(init, torch.Tensor):
        named, to_user = {TENSOR_PARAM_NAME: init}, lambda params: params[TENSOR_PARAM_NAME]
    elif isinstance(init, dict):
        if not init:
            raise ValueError(f"{argument} is an empty dict; give at least one parameter tensor")
        named, to_user = dict(init), lambda params: params
    else:
        raise TypeError(f"{argument} must be a tensor or a dict of named tensors, got {type(init).__name__}")
    for name, value in named.items():
        if not isinstance(name, str):
            raise TypeError(f"parameter names must be strings, got {name!r}")
        parameter_tensor(f"parameter {name!r} of {argument}", value)
    has_elements(argument, named)
    return named, to_user


def _stack_over_chains(params: dict[str, torch.Tensor], num_chains: int, stacked: bool) -> dict[str, torch.Tensor]:
    if not stacked:
        return {name: value.detach().expand(num_chains, *value.shape).clone() for name, value in params.items()}
    for name, value in params.items():
        if value.ndim == 0 or value.shape[0] != num_chains:
            raise ValueError(
                f"stacked_init=True but parameter {name!r} has shape {tuple(value.shape)}; "
                f"its leading dim must be num_chains={num_chains}"
            )
    return {name: value.detach().clone() for name, value in params.items()}


def _finite_per_chain(new_state: dict[str, Any], state: dict[str, Any]) -> torch.Tensor:
    """Per chain, whether every floating leaf of ``new_state`` is finite: shape (num_chains,).

    Leaves carried over unchanged from ``state`` (the same tensor) are skipped: they were checked
    when they were made (a step's by this check, the initial state's by :func:`_check_initial_state`).
    A sum is non-finite when any term is (or when the terms are so large that it overflows, which
    is divergence too), so one reduction per leaf replaces an elementwise test and its ``all``.
    """
    leaves = [
        leaf
        for leaf, old_leaf in zip(pytree.tree_leaves(new_state), pytree.tree_leaves(state), strict=True)
        if leaf.is_floating_point() and leaf is not old_leaf
    ]
    if not leaves:  # a step that left its whole state as it was
        return torch.tensor(True)
    return _finite(per_chain_sum(dict(enumerate(leaves))))


def _finite(values: torch.Tensor) -> torch.Tensor:
    """``torch.isfinite(values)`` of the few per-chain numbers a step checks, as |values| < ∞ (False for
    NaN): two ops, where ``isfinite``, composed of five, costs some 10 µs a call on the CPU."""
    return values.abs() < math.inf


def _finite_stats(stats: dict[str, torch.Tensor]) -> torch.Tensor:
    """Per chain, whether every floating stat (each (num_chains,)) of the current state is finite."""
    finite = [_finite(value) for value in stats.values() if value.is_floating_point()]
    return functools.reduce(torch.logical_and, finite) if finite else torch.tensor(True)


def _check_log_posterior_at_start(
    log_posterior: Callable[..., torch.Tensor],
    to_user: Callable[[dict[str, torch.Tensor]], Any],
    params: dict[str, torch.Tensor],
    first_batch: Any,
    potential: ChainPotential,
) -> None:
    """Raise, naming what is wrong, if ``log_posterior`` at the initial params (and the first batch)
    is not a finite scalar that depends on the params, draws from torch's global RNG, or is not finite
    with its gradient in every chain.

    Chain 0 is called directly, so that a wrong return reads as the user's error, not vmap's.
    """
    check_call_form(log_posterior, has_data=first_batch is not None)
    where = "at the initial params of chain 0" + ("" if first_batch is None else " with the first batch")
    data = () if first_batch is None else (first_batch,)
    # a copy of the dict: a log posterior that rebinds a key (p["w"] = 2 * p["w"]) must not replace a leaf
    checked_log_density(
        lambda chain_zero: log_posterior(to_user(dict(chain_zero)), *data),
        {name: value[0] for name, value in params.items()},
        where,
    )
    try:
        values, gradients = potential(params, first_batch)
    except RuntimeError as error:
        num_chains = next(iter(params.values())).shape[0]
        if num_chains == 1:
            raise
        # chain 0 alone ran: what failed is most likely vmap's refusal of an op
        advice = (
            # torch's own gap (recurrent layers have none), not the user's code
            "torch.func.vmap has no rule for that op, so chains cannot be vectorised through it: sample one chain "
            "a run (num_chains=1 is not vmapped), or one per process with sgmcmc.distributed.sample_chain_parallel"
            if "Batching rule not implemented" in str(error)
            else "Use torch operations on the params and the batch: no .item(), float() or Python if on their "
            "values (torch.where instead)"
        )
        raise RuntimeError(
            f"log_posterior ran for chain 0 alone but failed for all {num_chains} chains together, as "
            f"sample evaluates it with torch.func.vmap: {str(error).rstrip('.')}. {advice}"
        ) from error
    finite = torch.isfinite(values)
    for gradient in gradients.values():
        finite &= torch.isfinite(gradient.reshape(gradient.shape[0], -1)).all(dim=1)
    if not finite.all():
        chains = (~finite).nonzero().flatten().tolist()
        raise ValueError(
            f"log_posterior or its gradient is not finite at the initial params of chains {chains}"
            + ("" if first_batch is None else " with the first batch")
            + " (check init, and init_jitter if it is set: a chain may start outside the support)"
        )


def _model_probe(
    potential: ChainPotential,
    functionals: Mapping[str, Callable[[dict[str, torch.Tensor]], torch.Tensor]],
    params: dict[str, torch.Tensor],
    batch: Any,
) -> dict[str, Any]:
    """For a checkpoint: every chain's log posterior at ``params`` on ``batch`` (one chain's batch, or
    None), (num_chains,), the batch's tensors, and every functional at ``params`` (num_chains, *shape),
    all on the CPU."""
    # cloned: a batch of rows is a view of the whole data set, whose storage torch.save would write entire
    leaves = [] if batch is None else [leaf.cpu().clone() for leaf in pytree.tree_leaves(batch)]
    return {
        "values": potential.value(params, batch).cpu(),
        "batch": leaves,
        "functionals": {name: functional(params).cpu() for name, functional in functionals.items()},
    }


def _first_difference(saved: torch.Tensor, now: torch.Tensor) -> int | None:
    """The first chain (leading dim) at which ``now`` differs from ``saved`` beyond rounding, or None.

    The tolerance, 256 units of rounding (at most 1e-4), allows for rounding that differs with the thread
    count or machine; a 1% change of a prior's scale moves a log posterior far more."""
    if saved.dtype != now.dtype or saved.shape != now.shape:
        return 0
    if not saved.is_floating_point():
        differs = saved != now
    else:
        tolerance = min(256 * torch.finfo(saved.dtype).eps, 1e-4)
        differs = ~torch.isclose(saved, now, rtol=tolerance, atol=tolerance, equal_nan=True)
    chains = differs.reshape(len(differs), -1).any(dim=1).nonzero().flatten().tolist()
    return chains[0] if chains else None


def _check_same_model(
    probe: dict[str, Any],
    potential: ChainPotential,
    functionals: Mapping[str, Callable[[dict[str, torch.Tensor]], torch.Tensor]],
    params: dict[str, torch.Tensor],
    batch: Any,
    path: Path,
) -> None:
    """Raise if ``log_posterior`` at the checkpoint's state, on the batch the checkpoint keeps, or a functional
    there, differs from what it was when the checkpoint at ``path`` was written: the model or the functional
    was edited, and a resumed run would mix two posteriors' draws, or two quantities under one name. ``batch``,
    this run's first batch, gives the saved batch's structure."""
    leaves = [leaf.to(pytree.tree_leaves(params)[0].device) for leaf in probe["batch"]]
    saved_batch = None if batch is None else pytree.tree_unflatten(leaves, pytree.tree_structure(batch))
    saved = probe["values"]
    now = potential.value(params, saved_batch).cpu()
    chain = _first_difference(saved, now)
    if chain is not None:
        raise ValueError(
            f"checkpoint {path} was written with another log_posterior: at chain {chain}'s saved state it gave "
            f"{saved[chain].item():.8g}, now {now[chain].item():.8g} (on a batch the checkpoint keeps); delete "
            "the checkpoint to sample the edited model afresh, or restore the model it was written with"
        )
    for name, saved in probe["functionals"].items():
        chain = _first_difference(saved, functionals[name](params).cpu())
        if chain is not None:
            raise ValueError(
                f"checkpoint {path} was written with another functional {name!r}: at chain {chain}'s saved state "
                "it now gives other values; a resumed run would keep two quantities under one name. Delete the "
                "checkpoint to sample afresh, restore the functional, or record the new one under another name"
            )


def _check_initial_state(state: dict[str, Any]) -> None:
    """Raise, naming the chains and state entries, if the sampler's initial state is not finite."""
    bad = {}
    for path, leaf in pytree.tree_flatten_with_path(state)[0]:
        if leaf.is_floating_point():
            chains = (~torch.isfinite(leaf.reshape(leaf.shape[0], -1)).all(dim=1)).nonzero().flatten().tolist()
            if chains:
                bad[pytree.keystr(path)] = chains
    if bad:
        listed = "; ".join(f"state{entry} of chains {chains}" for entry, chains in bad.items())
        raise ValueError(
            f"the sampler's initial state is not finite: {listed} (log_posterior or its gradient at the initial "
            "params, or a hyperparameter, is inf or NaN)"
        )


class _GradientKeepingPotential(BoundPotential):
    """A :class:`BoundPotential` that keeps ∇log p̃ of its first call at ``params`` (the step's current state),
    which a run with ``keep_gradients`` records instead of computing it again."""

    def __init__(self, potential: ChainPotential, batch: Any, params: dict[str, torch.Tensor]) -> None:
        super().__init__(potential, batch)
        self.params = params
        self.gradient: dict[str, torch.Tensor] | None = None

    def _keep(self, params: dict[str, torch.Tensor], gradient: dict[str, torch.Tensor]) -> None:
        if params is self.params and self.gradient is None:
            self.gradient = gradient

    def __call__(self, params: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        log_posterior, gradient = super().__call__(params)
        self._keep(params, gradient)
        return log_posterior, gradient

    def with_hessian_vector_product(
        self, params: dict[str, torch.Tensor], tangent: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        log_posterior, gradient, product = super().with_hessian_vector_product(params, tangent)
        self._keep(params, gradient)
        return log_posterior, gradient, product


def _advance_function(sampler: Sampler, potential: ChainPotential, keep_gradients: bool) -> Callable[..., Any]:
    """One step of every chain with the divergence guard: the function ``compile=True`` compiles.

    ``advance(state, batch, step_size, temperature, alive, generators) -> (state, stats, alive, gradient)``:
    a chain whose new state is not finite keeps its old state and is no longer alive; so does one
    whose stats of the current state (its log p̃, ...) are not finite, and then the current state's
    own draw is flagged too (``stats["diverging"]``, the flag of the current state's draw). With
    ``keep_gradients``, ``gradient`` is ∇log p̃ at the current state on ``batch`` if the step computed
    it (every sampler but LD, which keeps the full-data one from its previous step), else None.
    """

    def advance(
        state: dict[str, Any], batch: Any, step_size: float, temperature: float, alive: torch.Tensor, generators: Any
    ) -> tuple[dict[str, Any], dict[str, torch.Tensor], torch.Tensor, dict[str, torch.Tensor] | None]:
        bound = (
            _GradientKeepingPotential(potential, batch, state["params"])
            if keep_gradients
            else BoundPotential(potential, batch)
        )
        new_state, stats = sampler.step(state, bound, step_size, temperature, generators)
        current_alive = alive & _finite_stats(stats)
        still_alive = current_alive & _finite_per_chain(new_state, state)
        gradient = bound.gradient if keep_gradients else None
        return (
            select_chains(still_alive, new_state, state),
            {**stats, "diverging": ~current_alive},
            still_alive,
            gradient,
        )

    return advance


_STEP_CODES: dict[tuple[int, int, tuple[Any, ...]], tuple[types.CodeType, Callable[[], Any]]] = {}
"""The code object that the compiled steps of one sampler and log posterior on one input layout run under,
and a reference to that log posterior (an id alone may be a freed one's, reused)."""
_STEP_NAMES = itertools.count()


def _step_code(sampler: Sampler, step: Callable[..., Any], inputs: Any) -> types.CodeType:
    """``step``'s code under a name of its own for ``sampler`` and the shapes, dtypes and devices of ``inputs``.

    Dynamo keeps its compiled graphs, its recompile count and its record of which sizes and
    numbers varied between calls (made symbolic at the next compilation) per code object and
    name. Sharing one code object across runs would let one run's batch or data size turn into a
    symbol in another's step (which user code such as N / batch.shape[0] cannot always take) and
    let other models use up a run's recompile limit; one per run would retrace an identical run
    each time. So runs of the same sampler and log posterior on inputs laid out alike share one:
    a sampler given another log posterior (its ``num_data`` another constant) gets a code of its own.
    """
    layout = tuple(
        (leaf.shape, leaf.dtype, leaf.device) for leaf in pytree.tree_leaves(inputs) if isinstance(leaf, torch.Tensor)
    )
    key = (id(sampler), id(sampler.log_posterior), layout)
    code, log_posterior = _STEP_CODES.get(key, (None, None))
    if code is None or log_posterior() is not sampler.log_posterior:  # new, or a new object at a freed one's id
        code = step.__code__.replace(co_name=f"compiled_step_{next(_STEP_NAMES)}")
        _STEP_CODES[key] = (code, _reference(sampler.log_posterior))
        weakref.finalize(sampler, _STEP_CODES.pop, key, None)
    return code


def _reference(value: Any) -> Callable[[], Any]:
    """A weak reference to ``value`` where it takes one (a function does), else a strong one."""
    try:
        return weakref.ref(value)
    except TypeError:
        return lambda: value


class _CompiledAdvance:
    """``advance`` under ``torch.compile``, with each chain's random draws made outside the graph.

    An eager step, whose draws are then rewound, records what the sampler draws; every step
    makes those draws from the per-chain generators and replays them inside the compiled step. The step
    must compile to one graph (``fullgraph=True``): if it cannot (a graph break, or dynamo's
    recompile limit reached), a warning says why and the run goes on eagerly.
    """

    def __init__(self, advance: Callable[..., Any], sampler: Sampler) -> None:
        self.advance = advance
        self.sampler = sampler
        self.requests: list[tuple[str, tuple[Any, ...]]] | None = None
        self.compiled: Callable[..., Any] | None = None
        self.eager = False

    def _compile(self, state: dict[str, Any], batch: Any) -> Callable[..., Any]:
        advance = self.advance

        def step(state, batch, step_size, temperature, alive, draws, device):  # noqa: ANN001, ANN202
            return advance(state, batch, step_size, temperature, alive, ReplayedDraws(draws, device, len(alive)))

        code = _step_code(self.sampler, step, (state, batch))
        return torch.compile(
            types.FunctionType(code, step.__globals__, code.co_name, None, step.__closure__),
            fullgraph=True,
            options={"fallback_random": True},
        )

    def __call__(
        self,
        state: dict[str, Any],
        batch: Any,
        step_size: float,
        temperature: float,
        alive: torch.Tensor,
        generators: ChainGenerators,
    ) -> tuple[dict[str, Any], dict[str, torch.Tensor], torch.Tensor, dict[str, torch.Tensor] | None]:
        if self.requests is None:
            # learn what a step draws from an eager step, then rewind the streams and take the step
            # compiled: a resumed run's first step is then compiled too, as in the run never stopped
            rewind = generators.get_states()
            recording = RecordingGenerators(generators)
            self.advance(state, batch, step_size, temperature, alive, recording)
            self.requests = recording.requests
            generators.set_states(rewind)
        draws = generators.draw(self.requests)
        if not self.eager:
            try:
                if self.compiled is None:
                    self.compiled = self._compile(state, batch)
                return self.compiled(state, batch, step_size, temperature, alive, draws, generators.device)
            except Exception as error:  # noqa: BLE001 -- any compiler failure falls back to eager
                if isinstance(error, torch._dynamo.exc.FailOnRecompileLimitHit):
                    error = (
                        "the step of this sampler on inputs of these shapes needed more than "
                        f"torch._dynamo.config.recompile_limit ({torch._dynamo.config.recompile_limit}) "
                        "compilations; raise that limit"
                    )
                warn_caller(f"compile=True: torch.compile failed, sampling eagerly: {error}", RuntimeWarning)
                self.eager = True
        return self.advance(
            state, batch, step_size, temperature, alive, ReplayedDraws(draws, generators.device, len(generators))
        )


def _functionals(
    functionals: Mapping[str, Callable[[Any], torch.Tensor]] | None,
    to_user: Callable[[dict[str, torch.Tensor]], Any],
    params: dict[str, torch.Tensor],
) -> tuple[dict[str, Callable[[dict[str, torch.Tensor]], torch.Tensor]], dict[str, Variable]]:
    """Each functional vectorised over chains, and the shape and dtype of its value at the initial params."""
    if functionals is None:
        return {}, {}
    if not isinstance(functionals, Mapping):
        raise TypeError(f"functionals must be a dict of name -> callable, got {type(functionals).__name__}")
    vectorised, variables = {}, {}
    for name, functional in functionals.items():
        _check_name("functional", name)
        if not callable(functional):
            raise TypeError(f"functional {name!r} is a {type(functional).__name__}, not a callable")
        over_chains = vmap(lambda chain_params, functional=functional: functional(to_user(chain_params)))
        try:
            value = over_chains(params)
        except Exception as error:
            raise ValueError(
                f"functional {name!r} failed on the initial params, evaluated for all chains with "
                f"torch.func.vmap (use torch operations, no .item() or branching on values): {error}"
            ) from error
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"functional {name!r} must return a tensor, got {type(value).__name__}")
        vectorised[name], variables[name] = over_chains, Variable.of(recordable(f"functional {name!r}", value))
    return vectorised, variables


def _check_name(kind: str, name: Any) -> None:
    """Names become netCDF variables beside dims named ``<name>_dim_<i>``: a name must not be one of those."""
    if (
        not isinstance(name, str)
        or name in ("", ".")
        or "/" in name
        or name in RESERVED_NAMES
        or re.search(r"_dim_\d+$", name)
    ):
        raise ValueError(
            f"{kind} name {name!r} is not usable: names are non-empty strings without '/', not '.', not "
            f"ending in '_dim_<i>' (the trace's names for the axes of a variable), not {RESERVED_NAMES}"
        )


def _kept_params(keep: Sequence[str] | None, params: dict[str, torch.Tensor]) -> list[str]:
    if keep is None:
        return list(params)
    if isinstance(keep, str):
        raise TypeError(f"keep must be a sequence of parameter names, got the string {keep!r}")
    keep = list(keep)  # a generator would be used up by the check below
    unknown = [name for name in keep if name not in params]
    if unknown:
        raise ValueError(f"keep names unknown parameters {unknown}; the parameters are {list(params)}")
    return keep


def _step_size_at(schedule: Schedule, step: int) -> float:
    """η at ``step``, checked: a schedule of the user's own that reaches 0, goes negative or gives NaN
    would otherwise freeze the chains, divide by zero or be reported as a divergence."""
    value = schedule(step)
    try:
        if isinstance(value, (str, bytes, bool, np.bool_)):  # which float() would take
            raise TypeError
        step_size = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"the step-size schedule {schedule!r} gave {value!r} at step {step}, not a number") from None
    if not 0 < step_size < math.inf:
        raise ValueError(
            f"the step-size schedule {schedule!r} gave step_size {step_size} at step {step}; "
            "step sizes must be finite and > 0"
        )
    return step_size


def _check_cycles_fit(schedule: Schedule, num_steps: int) -> None:
    """Warn when a run outlasts its :class:`Cyclical` step size's plan, M cycles of L = ⌈K/M⌉ steps: the
    cycle length comes from the plan, so the cycles would silently go on past the M planned."""
    if isinstance(schedule, Cyclical) and num_steps > schedule.num_cycles * schedule.cycle_length:
        warn_caller(
            f"the Cyclical step size was made for total_steps={schedule.total_steps} ({schedule.num_cycles} "
            f"cycles of {schedule.cycle_length} steps) but the run has num_steps={num_steps}, so it starts cycle "
            f"{schedule.cycle(num_steps - 1) + 1}; make the schedule with total_steps={num_steps}",
            RuntimeWarning,
        )


def kept_steps(sampler: Sampler, num_steps: int, burn_in: int, thin: int) -> tuple[Callable[[int], bool], int]:
    """Whether the state at a step becomes a draw (after burn-in, thinning and the sampler's stages), and how
    many do; raise if none does, so that a caller can check a run's settings before it makes anything."""
    from sgmcmc.sampler import Sampler  # here, not above: sgmcmc.sampler imports this module

    steps = range(burn_in, num_steps, thin)

    def kept(step: int) -> bool:
        return step in steps and sampler.keeps(step)

    # a sampler that keeps every state needs no pass over the steps, which a run of 10⁹ steps would wait for
    count = len(steps) if type(sampler).keeps is Sampler.keeps else sum(map(sampler.keeps, steps))
    if count == 0:
        raise ValueError(
            f"no state of this run would be kept: {type(sampler).__name__} keeps none of steps {burn_in} to "
            f"{num_steps - 1} (every {thin}); a cyclical sampler keeps only the states its sampling stages make"
        )
    return kept, count


def run(
    sampler: Sampler,
    init: Any,
    data: Any,
    *,
    num_chains: int,
    num_steps: int,
    burn_in: int,
    thin: int,
    seed: int | Sequence[int],
    device: str | torch.device,
    init_jitter: float,
    stacked_init: bool,
    progress: bool,
    functionals: Mapping[str, Callable[[Any], torch.Tensor]] | None,
    keep: Sequence[str] | None,
    keep_gradients: bool,
    trace_file: str | Path | None,
    checkpoint: str | Path | None,
    checkpoint_every: int,
    wrap_potential: Callable[[ChainPotential], ChainPotential] | None = None,
    compile: bool = False,
    stop_when: Callable[[int], bool] | None = None,
) -> Trace:
    """Run ``sampler``; the arguments are those of :meth:`sgmcmc.Sampler.sample`."""
    autograd_allowed("sample")
    if stop_when is not None and not callable(stop_when):
        raise TypeError(f"stop_when must be callable as stop_when(steps_done) -> bool, got {type(stop_when).__name__}")
    num_chains = count("num_chains", num_chains, 1)
    num_steps = count("num_steps", num_steps, 1)
    burn_in = count("burn_in", burn_in, 0)
    thin = count("thin", thin, 1)
    checkpoint_every = count("checkpoint_every", checkpoint_every, 1)
    stacked_init, keep_gradients = flag("stacked_init", stacked_init), flag("keep_gradients", keep_gradients)
    progress, compile = flag("progress", progress), flag("compile", compile)
    if checkpoint is not None and trace_file is not None and Path(checkpoint).resolve() == Path(trace_file).resolve():
        raise ValueError(f"checkpoint and trace_file are the same file ({checkpoint}): each needs its own")
    for name, path, example in (("trace_file", trace_file, "trace.nc"), ("checkpoint", checkpoint, "checkpoint.pt")):
        if path is not None and Path(path).is_dir():
            raise ValueError(f"{name} {path} is a directory; give a file in it, such as {Path(path) / example}")
    if burn_in >= num_steps:
        raise ValueError(f"burn_in ({burn_in}) must be < num_steps ({num_steps}) so that a draw is kept")
    _check_cycles_fit(sampler.step_size, num_steps)
    for step in (0, num_steps - 1):  # the first, which init may use, and the last: a decay below 0 fails now
        _step_size_at(sampler.step_size, step)
    init_jitter = nonnegative("init_jitter", init_jitter)
    device = sampling_device("device", device)
    seeds = seeds_of_chains(seed, num_chains)

    params, to_user = _named_params(init)
    for name in params:
        _check_name("parameter", name)
    params = {name: value.to(device) for name, value in _stack_over_chains(params, num_chains, stacked_init).items()}
    kept_params = _kept_params(keep, params)
    generators = ChainGenerators(seeds, device)
    if init_jitter > 0:
        jitter = generators.normal_like(params)
        params = {name: value + init_jitter * jitter[name] for name, value in params.items()}
        overflowed = [name for name, value in params.items() if not torch.isfinite(value).all()]
        if overflowed:
            raise ValueError(
                f"init_jitter={init_jitter:g} overflows parameters {overflowed} "
                f"({', '.join(str(params[name].dtype) for name in overflowed)}) to inf; give a jitter on the "
                "scale of the posterior sd"
            )

    stream = chain_data(data)
    if stream is not None:
        stream = stream.to(device)
        if checkpoint is not None:
            stream.keep_epoch_starts()
        if wrap_potential is None:  # a wrapper's estimate covers more than this data (a shard)
            stream.check_num_data(sampler.log_posterior)
    first_batch = None if stream is None else stream.first_batch()
    full_data_potential = ChainPotential(
        sampler.log_posterior, to_user, has_data=stream is not None, batch_per_chain=False
    )
    _check_log_posterior_at_start(sampler.log_posterior, to_user, params, first_batch, full_data_potential)
    functionals, functional_variables = _functionals(functionals, to_user, params)

    full_batch = None if stream is None else stream.full_batch()
    potential = (
        full_data_potential
        if stream is None or sampler.full_batch
        else ChainPotential(sampler.log_posterior, to_user, has_data=True, batch_per_chain=True)
    )
    if wrap_potential is not None:
        full_data_potential, potential = wrap_potential(full_data_potential), wrap_potential(potential)
    state = sampler.init(params, BoundPotential(full_data_potential, full_batch), generators)
    _check_initial_state(state)
    advance = _advance_function(sampler, potential, keep_gradients)
    if compile:
        advance = _CompiledAdvance(advance, sampler)

    def draw(
        state: dict[str, Any],
        stats: dict[str, torch.Tensor],
        batch: Any,
        gradient: dict[str, torch.Tensor] | None,
    ) -> dict[str, dict[str, torch.Tensor]]:
        """The draw of ``state``; ``gradient``: ∇log p̃ there on ``batch`` if the step computed it."""
        chain_params = state["params"]
        values = {
            "posterior": {name: chain_params[name] for name in kept_params},
            "functionals": {name: functional(chain_params) for name, functional in functionals.items()},
            "sample_stats": stats,
        }
        if keep_gradients:
            if gradient is None:
                gradient = BoundPotential(potential, batch)(chain_params)[1]
            values["gradients"] = {name: gradient[name] for name in kept_params}
        return values

    alive = torch.ones(num_chains, dtype=torch.bool, device=device)
    diverged_at = torch.full((num_chains,), -1, dtype=torch.long, device=device)
    stat_names = [*sampler.stats, "step_size", "diverging"]
    layout = {
        "posterior": {name: Variable.of(params[name]) for name in kept_params},
        "functionals": functional_variables,
        "gradients": {name: Variable.of(params[name]) for name in kept_params} if keep_gradients else {},
        "sample_stats": {
            name: Variable((), np.dtype(bool) if name == "diverging" else np.dtype(np.float64)) for name in stat_names
        },
    }
    run_settings = {
        "sampler": type(sampler).__name__,
        **{key: netcdf_attr(value) for key, value in sampler.hyperparameters().items()},
        "seed": int(seed) if isinstance(seed, (int, np.integer)) else [int(value) for value in seed],
        "chain_seeds": seeds,
        "num_chains": num_chains,
        "num_steps": num_steps,
        "burn_in": burn_in,
        "thin": thin,
    }
    attrs = {
        **run_settings,
        "inference_library": "sgmcmc",
        "inference_library_version": sgmcmc.__version__,
        "torch_version": torch.__version__,
        "arviz_version": version("arviz"),
    }

    kept, max_draws = kept_steps(sampler, num_steps, burn_in, thin)
    recorder = TraceRecorder(
        layout,
        ["step", *sampler.draw_coords(0)],
        num_chains,
        attrs,
        max_draws,
        path=trace_file,
        # late-bound: the record as it is when the recorder writes, which the loop keeps up to date
        run_attrs=lambda: {"diverged_at_step": diverged_at.tolist()},
    )
    checkpoint_settings = {
        **run_settings,
        "params": {name: (tuple(value.shape), str(value.dtype)) for name, value in params.items()},
        "kept": kept_params,
        "functionals": {name: (variable.shape, str(variable.dtype)) for name, variable in functional_variables.items()},
        "keep_gradients": keep_gradients,
        "trace_file": None if trace_file is None else str(Path(trace_file).resolve()),
        "data": None if stream is None else "rows" if stream.rows else "pre-made batches",
        # a CPU generator's stream cannot continue on a CUDA generator, nor the other way round
        "device_type": device.type,
    }
    checkpoint = None if checkpoint is None else Path(checkpoint)
    first_step = 0
    if checkpoint is not None and checkpoint.exists():
        saved = load_checkpoint(checkpoint)
        check_same_run(saved["settings"], checkpoint_settings, checkpoint)
        # the trace so far and the generator states stay on the host; the chains' state goes to the device
        state, alive, diverged_at = pytree.tree_map(
            lambda tensor: tensor.to(device), (saved["state"], saved["alive"], saved["diverged_at"])
        )
        first_step = saved["step"]
        generators.set_states(saved["generators"])
        if stream is not None:
            stream.set_state(saved["data"])
        _check_same_model(
            saved["model_probe"], full_data_potential, functionals, state["params"], first_batch, checkpoint
        )
        recorder.restore(saved["trace"], steps_done=first_step)
    else:
        recorder.start(steps_done=0)

    def save(steps_done: int) -> None:
        contents = {
            "settings": checkpoint_settings,
            "model_probe": _model_probe(full_data_potential, functionals, state["params"], first_batch),
            "step": steps_done,
            "state": state,
            "alive": alive,
            "diverged_at": diverged_at,
            "generators": generators.get_states(),
            "data": None if stream is None else stream.get_state(),
            "trace": recorder.checkpoint(steps_done),
        }
        save_checkpoint(checkpoint, contents)

    steps_done = first_step
    interrupted = False
    show = progress and not os.environ.get("CI")
    try:
        for step in tqdm(
            range(first_step, num_steps),
            initial=first_step,
            total=num_steps,
            disable=not show,
            desc=type(sampler).__name__,
            unit="step",
        ):
            if stream is None or sampler.full_batch:
                batch = full_batch
            else:
                batch = stream.next(generators)
            step_size = _step_size_at(sampler.step_size, step)
            temperature = sampler.temperature_at(step)
            new_state, stats, still_alive, gradient = advance(state, batch, step_size, temperature, alive, generators)
            # before the draw, whose chunk may be written now: the file's record then covers its steps_done
            diverged_at = torch.where(alive & ~still_alive, step, diverged_at)
            if kept(step):
                step_sizes = torch.full((num_chains,), step_size, dtype=torch.float64, device=device)
                recorder.append(
                    draw(state, {**stats, "step_size": step_sizes}, batch, gradient),
                    {"step": step, **sampler.draw_coords(step)},
                    steps_done=step + 1,
                )
            state, alive = new_state, still_alive
            steps_done = step + 1
            due = checkpoint is not None and (steps_done % checkpoint_every == 0 or steps_done == num_steps)
            if due:
                save(steps_done)
            # after the save that was due, which a stop_when that raises must not skip
            if steps_done < num_steps and stop_when is not None and stop_when(steps_done):
                if checkpoint is not None and not due:
                    save(steps_done)
                break
    except KeyboardInterrupt:
        interrupted = True
    except Exception as error:
        # the draws so far go with the error to the caller: a crash hours into a run keeps them
        try:
            error.partial_trace = recorder.finish(steps_done, state)
            error.add_note(
                f"sgmcmc: the {error.partial_trace.num_draws} draws kept in the {steps_done} steps before this "
                "error are in its .partial_trace"
            )
        except Exception as failure:  # noqa: BLE001 -- the caller must see the first error, not this one
            error.add_note(f"sgmcmc: the draws kept before this error were lost: {failure!r}")
        raise
    except BaseException:
        recorder.flush(steps_done)
        raise

    # before the warnings, which may be errors (-W error)
    trace = recorder.finish(steps_done, state)
    if interrupted:
        warn_caller(
            f"sampling interrupted after {steps_done} of {num_steps} steps; the trace keeps the draws so far",
            RuntimeWarning,
        )
    warn_of_divergences(trace.diverged_at_step.tolist())
    for name, non_finite in recorder.non_finite_functionals.items():
        warn_caller(
            f"functional {name!r} is NaN or infinite at {non_finite} of the {num_chains} × {recorder.num_draws} "
            "(chain, draw) values kept; they are recorded as they came (does it leave its domain?)",
            RuntimeWarning,
        )
    return trace


def stop_if_interrupted(trace: Trace, num_steps: int, where: str) -> None:
    """Raise ``KeyboardInterrupt`` if ``sample`` stopped before ``num_steps`` (Ctrl-C): it keeps the draws
    of an interrupted run, but a caller that runs it as one stage of a longer computation must stop too."""
    steps_done = trace.attrs["steps_done"]
    if steps_done < num_steps:
        raise KeyboardInterrupt(f"{where}: interrupted after {steps_done} of {num_steps} steps")


def warn_of_divergences(
    diverged_at_step: Sequence[int], chains: str = "chains", step_size_name: str = "step_size"
) -> None:
    """One :class:`SamplerDivergenceWarning` naming each chain whose ``diverged_at_step`` is ≥ 0, if any.

    ``chains`` says whose chains they are and ``step_size_name`` what sets their step size, for a
    caller that runs ``sample`` under names of its own (the job's command-line options)."""
    diverged = {chain: step for chain, step in enumerate(diverged_at_step) if step >= 0}
    if diverged:
        listed = ", ".join(f"chain {chain} at step {step}" for chain, step in diverged.items())
        warn_caller(
            f"{len(diverged)} of {len(diverged_at_step)} {chains} diverged (state or log posterior became "
            f"non-finite): {listed}. Each is frozen where it was and its later draws are flagged diverging; "
            f"try a smaller {step_size_name}.",
            SamplerDivergenceWarning,
        )

"""Sampling across processes and GPUs with ``torch.distributed``: chain-parallel and data-parallel.

Start P processes with ``torchrun --nproc-per-node=P script.py`` (or any launcher that sets
``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``), enter
:func:`process_group` in each, then call one of:

* :func:`sample_chain_parallel`: the K chains are split into contiguous blocks, one per rank;
  rank r runs its block with the block's seeds ``chain_seeds(seed, K)[block]``, and rank 0
  gathers the pieces into ONE :class:`sgmcmc.Trace` with global chain ids, identical draw for
  draw to a single-process run with the same seed (a chain depends only on its own seed; a
  rank that runs one chain alone calls ``log_posterior`` without vmap, which may round apart
  by an ulp).
* :func:`sample_data_parallel`: every rank runs all K chains on its own shard of the data. Each
  rank evaluates the user's unchanged ``log_posterior`` (with ``num_data`` = N, the size of the
  WHOLE data set) on its shard's minibatch B_r, and the P values and gradients are averaged:

      log p̃(θ) = (1/P) Σ_r [log p(θ) + (N/|B_r|) Σ_{i∈B_r} log p(x_i | θ)]
               = log p(θ) + (N/|B|) Σ_{i∈B} log p(x_i | θ),   B = B_1 ∪ … ∪ B_P, |B| = P |B_r|,

  the minibatch estimator of the union batch: the prior counted once, the likelihood scaled by
  N/|B|. The noise is drawn from the same per-chain generators on every rank, so the replicas
  take identical steps; the shards must be equal-sized (:func:`shard_rows`) because the
  minibatch draws of every rank come from those same generators.

Every rank must be given the same sampler, init and arguments (but its own device; in
data-parallel mode its own shard of the data, in chain-parallel mode the same data): both
modes first gather every rank's settings and, if any differ, raise ``ValueError`` on every
rank naming them.

Failure: a rank that raises prints its error, leaves the process group and exits non-zero;
torchrun then stops the other ranks at once. Without such a launcher a healthy rank stops at
its next collective (every step in data-parallel mode, the final gather in chain-parallel
mode), which fails when the peer is gone or after the process group's timeout (the gather,
which waits out the other ranks' sampling, after 7 days), with an error that says another
rank failed. Write result files on rank 0 only, with
:func:`write_atomically`, so no partial file ever looks complete.
"""

from __future__ import annotations

import inspect
import os
import signal
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
import torch.distributed as dist
from torch.utils import _pytree as pytree

from sgmcmc._checks import count, positive, sampling_device, warn_caller
from sgmcmc.chains import seeds_of_chains
from sgmcmc.checkpoint import write_atomically
from sgmcmc.data import Minibatches, chain_data
from sgmcmc.log_density import ChainPotential
from sgmcmc.runner import SamplerDivergenceWarning, warn_of_divergences
from sgmcmc.sampler import Sampler
from sgmcmc.trace import GROUPS, Trace, netcdf_attr, tensor_digest

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "STOP_CHECK_SECONDS",
    "STOP_CHECK_MAX_STEPS",
    "REPEATED_INTERRUPT_S",
    "PARALLEL_MODES",
    "DistributedSamplingError",
    "ProcessGroup",
    "AveragedPotential",
    "process_group",
    "launched",
    "launched_world_size",
    "chain_block",
    "sample_chain_parallel",
    "sample_data_parallel",
    "sample_in_parallel",
    "shard_rows",
    "sharded_num_rows",
    "shard_minibatches",
    "write_atomically",
]

DEFAULT_TIMEOUT_S = 600.0
"""Seconds a collective waits for the other ranks before it fails (the process group's timeout)."""

_WAIT_FOR_SAMPLING = timedelta(days=7)
"""How long the chain-parallel gather waits for the other ranks to finish their chains: the length of a
run, not a peer's hang, which ``timeout_s`` bounds. A rank that dies closes its connections (gloo), or
its launcher stops the others, so the wait ends then."""

STOP_CHECK_SECONDS = 1.0
"""About how often the data-parallel ranks agree whether to stop (after Ctrl-C on any of them, or a
``stop_when`` that said so): every ⌊1 s / step time⌋ steps (at least every step, at most every
:data:`STOP_CHECK_MAX_STEPS`), the step time the slowest rank's since the last agreement. Each agreement
is one all-reduce of three numbers, which on CUDA waits for the device. torchrun kills its workers 30 s
after it forwards a Ctrl-C, so the ranks must stop well within that."""

STOP_CHECK_MAX_STEPS = 16
"""The most steps between two of the data-parallel ranks' agreements on whether to stop: the gap is
predicted from the steps before it, and steps that slow down after an agreement (a 3 ms step becoming
a 150 ms one) stretch it; 16 steps bound that to 16 of the slower steps."""

REPEATED_INTERRUPT_S = 1.0
"""A second Ctrl-C this many seconds after the first interrupts a data-parallel rank at once; an earlier
one is taken for the same Ctrl-C, which reaches a worker twice under torchrun (from the terminal, then
forwarded by the launcher)."""

PARALLEL_MODES = ("chains", "data")
"""The modes of :func:`sample_in_parallel` (and of ``sgmcmc run --parallel``)."""

Result = TypeVar("Result")


class DistributedSamplingError(RuntimeError):
    """A collective failed: another rank raised, died or timed out."""


@dataclass(frozen=True)
class ProcessGroup:
    """This process's place in the job.

    Attributes:
        rank: this process's index, 0 … world_size − 1 (rank 0 gathers results and writes files).
        world_size: P, the number of processes.
        local_rank: this process's index on its node (which GPU it uses).
        device: the device this rank samples on: ``cuda:<local_rank>`` when CUDA was asked for.
        timeout_s: how long a collective waits before it fails.
    """

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    timeout_s: float


def launched() -> bool:
    """Whether a launcher such as torchrun started this process (it sets ``RANK`` and ``WORLD_SIZE``)."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def launched_world_size() -> int:
    """How many processes the launcher started (its ``WORLD_SIZE``); 1 without a launcher."""
    return int(os.environ["WORLD_SIZE"]) if launched() else 1


@contextmanager
def process_group(
    device: str | torch.device = "cpu", timeout_s: float = DEFAULT_TIMEOUT_S, backend: str | None = None
) -> Iterator[ProcessGroup]:
    """Join the job's other processes for the duration of the block; leave the group on exit.

    Reads the launcher's environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``; the rendezvous
    address comes through ``MASTER_ADDR``/``MASTER_PORT``). Without a launcher it yields rank 0
    of 1 and initialises nothing, so the same script runs under plain ``python``.

    Args:
        device: ``"cpu"``, or ``"cuda"`` for one GPU per rank: ``cuda:<LOCAL_RANK>`` is made the
            current device and given back as :attr:`ProcessGroup.device`.
        timeout_s: how long a collective (and the rendezvous) waits for the other ranks.
        backend: default ``"nccl"`` for CUDA, ``"gloo"`` for CPU.

    If the block raises, this rank prints the error on stderr with its rank, leaves the group
    and re-raises, so the process exits non-zero and the launcher stops the others.
    """
    device = sampling_device("device", device)
    timeout_s = positive("timeout_s", timeout_s)
    if timeout_s * 1000 >= 2**31:  # torch's stores count it in milliseconds in a C int
        raise ValueError(f"timeout_s must be below 2**31 ms (about 24.8 days), got {timeout_s:g}")
    # a name, or per device type ("cpu:gloo,cuda:nccl"); torch's own check is a bare AssertionError at the rendezvous
    if backend is not None and any(
        part.split(":")[-1].strip().lower() not in dist.Backend.backend_list for part in str(backend).split(",")
    ):
        raise ValueError(f"backend must be None or one of {dist.Backend.backend_list}, got {backend!r}")
    if not launched():
        yield ProcessGroup(0, 1, 0, device, timeout_s)
        return
    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    backend = backend or ("nccl" if device.type == "cuda" else "gloo")
    dist.init_process_group(backend, timeout=timedelta(seconds=timeout_s))
    try:
        yield ProcessGroup(rank, world_size, local_rank, device, timeout_s)
    except BaseException as error:
        print(
            f"sgmcmc.distributed: rank {rank} of {world_size} failed with {type(error).__name__}: {error}",
            file=sys.stderr,
            flush=True,
        )
        raise
    finally:
        dist.destroy_process_group()


def _rank_and_world_size() -> tuple[int, int]:
    """(rank, world size) of the joined process group; (0, 1) in a process that runs alone. A process that a
    launcher started as one of several but that joined no group is refused: it would run the whole job, as
    every other rank would, each writing the same results."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    if launched_world_size() > 1:
        raise RuntimeError(
            f"this process is rank {os.environ['RANK']} of {os.environ['WORLD_SIZE']} started by a launcher, but "
            "it joined no process group: call sgmcmc.distributed's functions inside `with "
            "sgmcmc.distributed.process_group(...):`, or every rank runs the whole job"
        )
    return 0, 1


def _collective(what: str, operation: Callable[[], Result]) -> Result:
    """Run a collective; if it fails, say that another rank is the likely cause."""
    try:
        return operation()
    except RuntimeError as error:
        rank, world_size = _rank_and_world_size()
        raise DistributedSamplingError(
            f"rank {rank} of {world_size}: {what} failed, most likely because another rank raised, died or "
            f"timed out (see its error above): {error}"
        ) from error


def chain_block(num_chains: int, rank: int, world_size: int) -> range:
    """The global ids of the chains rank ``rank`` runs: contiguous blocks whose sizes differ by at most one."""
    count("num_chains", num_chains, 1)
    if not 0 <= count("rank", rank, 0) < count("world_size", world_size, 1):
        raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank}")
    return range(rank * num_chains // world_size, (rank + 1) * num_chains // world_size)


def _block_of_init(init: Any, block: range, num_chains: int) -> Any:
    """The stacked init (leading dim num_chains) of the chains in ``block``."""

    def rows(name: str, value: Any) -> torch.Tensor:
        if not isinstance(value, torch.Tensor) or value.ndim == 0 or value.shape[0] != num_chains:
            shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise ValueError(
                f"stacked_init=True but init {name} has shape {shape}; its leading dim must be num_chains={num_chains}"
            )
        return value[block.start : block.stop]

    if isinstance(init, dict):
        return {name: rows(repr(name), value) for name, value in init.items()}
    return rows("", init)


_PER_RANK_ARGUMENTS = frozenset(
    {"data", "device", "progress", "trace_file", "checkpoint", "checkpoint_every", "wrap_potential", "stop_when"}
)
"""Arguments of ``sample`` that the ranks need not share: each has its own device and data (a data-parallel
run compares its shards' shapes), only rank 0 writes, each rank may decide to stop (a time budget), and
the others are refused."""


def _settings(sampler: Sampler, arguments: dict[str, Any]) -> dict[str, Any]:
    """What every rank must be given alike: the sampler and the arguments of ``sample`` (defaults
    filled in), tensors by a digest of their values (their repr would name each rank's device)."""

    def comparable(value: Any) -> Any:
        if isinstance(value, np.ndarray):
            value = value.tolist()
        digest = tensor_digest(value)
        return netcdf_attr(value) if digest is None else f"{pytree.tree_structure(value)} (sha256 {digest})"

    defaults = {
        name: parameter.default
        for name, parameter in inspect.signature(sampler.sample).parameters.items()
        if parameter.default is not inspect.Parameter.empty
    }
    settings = {
        "sampler": type(sampler).__name__,
        "num_data": getattr(sampler.log_posterior, "num_data", None),
        **{name: comparable(value) for name, value in sampler.hyperparameters().items()},
    }
    for name, value in {**defaults, **arguments}.items():
        if name == "functionals":
            settings[name] = sorted(value or {})
        elif name == "keep" and value is not None and not isinstance(value, str):
            settings[name] = sorted(value, key=str)  # a set of names prints in each rank's hash order
        elif name not in _PER_RANK_ARGUMENTS:
            settings[name] = comparable(value)
    return settings


def _materialised_keep(sample_kwargs: dict[str, Any]) -> dict[str, Any]:
    """``sample_kwargs`` with ``keep`` as a list: a generator of names would be used up by the comparison."""
    keep = sample_kwargs.get("keep")
    if keep is None or isinstance(keep, str):
        return sample_kwargs
    return {**sample_kwargs, "keep": list(keep)}


def _settings_by_rank(settings: dict[str, Any]) -> list[dict[str, Any]]:
    """Every rank's ``settings``, gathered on every rank (of two or more)."""
    _, world_size = _rank_and_world_size()
    by_rank: list[Any] = [None] * world_size
    _collective("comparing the ranks' settings", lambda: dist.all_gather_object(by_rank, settings))
    return by_rank


def _check_same_settings(by_rank: list[dict[str, Any]]) -> None:
    """Raise, on every rank alike, if the ranks were given different settings. Otherwise a data-parallel
    run fails at a later collective, after the process group's timeout and blaming another rank, and a
    chain-parallel run gathers chains run under other settings into one trace."""
    names = sorted({name for settings in by_rank for name in settings})
    differing = {
        name: [settings.get(name) for settings in by_rank]
        for name in names
        if any(settings.get(name) != by_rank[0].get(name) for settings in by_rank)
    }
    if differing:
        raise ValueError(
            "the ranks were given different settings ("
            + "; ".join(f"{name} by rank: {values}" for name, values in differing.items())
            + "); give every rank the same sampler, init and arguments"
        )


def _refuse(sample_kwargs: dict[str, Any], *names: str) -> None:
    for name in names:
        if sample_kwargs.get(name) is not None:
            raise ValueError(f"{name}= is not supported when sampling across processes (see docs/distributed.md)")


def sample_chain_parallel(
    sampler: Sampler,
    init: torch.Tensor | dict[str, torch.Tensor],
    data: Any = None,
    *,
    num_chains: int = 4,
    seed: int | Sequence[int] = 0,
    stacked_init: bool = False,
    **sample_kwargs: Any,
) -> Trace | None:
    """``sampler.sample`` with the chains split across the ranks; the whole trace gathered on rank 0.

    Rank r runs the chains :func:`chain_block` ``(num_chains, r, P)`` with their global seeds
    (chain c always gets ``chain_seeds(seed, num_chains)[c]``, or ``seed[c]``), on its own
    device (``device=`` of the rank's :class:`ProcessGroup`). Any split works, also when P does
    not divide K (a rank with no chain only takes part in the gather).

    Args:
        sampler: the sampler, as built on a single process.
        init: as for :meth:`sgmcmc.Sampler.sample`. With ``stacked_init=True`` it holds all K
            chains' starts (leading dim K) and rank r takes its block.
        data: as for :meth:`sgmcmc.Sampler.sample`; every rank gets the whole data set (each
            chain draws its own minibatches from it).
        num_chains: K, the total number of chains.
        seed: as for :meth:`sgmcmc.Sampler.sample`.
        **sample_kwargs: the other arguments of :meth:`sgmcmc.Sampler.sample` (not ``trace_file``,
            ``checkpoint`` or ``wrap_potential``).

    Returns:
        On rank 0, the :class:`sgmcmc.Trace` of all K chains (arrays (K, num_draws, …), chain c
        equal to chain c of ``sampler.sample(..., num_chains=K, seed=seed)`` on the same device
        type, bit for bit where the kernels round alike; a rank of one chain calls
        ``log_posterior`` without vmap and may round apart by an ulp), with attrs describing the
        whole run (``num_chains`` K, all ``chain_seeds``, ``seed``) plus ``num_processes`` P,
        and ``final_state`` on the CPU.
        None on the other ranks. Divergences are reported on rank 0, as by ``sample``: one
        :class:`sgmcmc.SamplerDivergenceWarning` naming the global chain ids, and the trace's
        ``diverged_at_step`` covers all K chains.

    Raises:
        ValueError: on every rank, before sampling, if the ranks were given other settings or data.
    """
    _refuse(sample_kwargs, "trace_file", "checkpoint", "wrap_potential")
    sample_kwargs = _materialised_keep(sample_kwargs)
    num_chains = count("num_chains", num_chains, 1)
    seeds = seeds_of_chains(seed, num_chains)
    rank, world_size = _rank_and_world_size()
    if world_size > 1:
        arguments = {"init": init, "num_chains": num_chains, "seed": seeds, "stacked_init": stacked_init}
        settings = _settings(sampler, {**sample_kwargs, **arguments})
        # every rank's chains must sample one posterior: the same data (by its values), not each rank's own
        stream = chain_data(data)
        settings["data"] = (
            None
            if stream is None
            else f"{stream.num_units} {'rows' if stream.rows else 'batches'} (sha256 {tensor_digest(stream.units)})"
            + (f" in batches of {stream.units_per_step}" if stream.rows else "")
        )
        _check_same_settings(_settings_by_rank(settings))
        # the gather waits for the slowest rank's chains (a rank without chains waits for the whole run),
        # which the process group's timeout, meant for a peer that hangs, would cut short
        gather_group = dist.new_group(timeout=_WAIT_FOR_SAMPLING)
    block = chain_block(num_chains, rank, world_size)
    piece = None
    if len(block):
        block_init = _block_of_init(init, block, num_chains) if stacked_init else init
        with warnings.catch_warnings():
            # reported for all chains on rank 0, with global chain ids
            warnings.simplefilter("ignore", SamplerDivergenceWarning)
            trace = sampler.sample(
                block_init,
                data,
                num_chains=len(block),
                seed=seeds[block.start : block.stop],
                stacked_init=stacked_init,
                **sample_kwargs,
            )
        trace.final_state = pytree.tree_map(
            lambda leaf: leaf.cpu() if isinstance(leaf, torch.Tensor) else leaf, trace.final_state
        )
        piece = trace
    pieces = [None] * world_size if rank == 0 else None
    if world_size > 1:
        _collective(
            "gathering the chains' traces on rank 0",
            lambda: dist.gather_object(piece, pieces, dst=0, group=gather_group),
        )
    else:
        pieces = [piece]
    if rank != 0:
        return None
    trace = _concatenate_chains(
        [gathered for gathered in pieces if gathered is not None], seed=seed, seeds=seeds, num_processes=world_size
    )
    warn_of_divergences(trace.diverged_at_step.tolist())
    return trace


def _concatenate_chains(traces: list[Trace], seed: int | Sequence[int], seeds: list[int], num_processes: int) -> Trace:
    """One trace of the chains of ``traces`` (in order), with attrs describing the whole run.

    Ranks that a Ctrl-C stopped at different steps kept different numbers of draws: the trace keeps the
    draws every rank made (a warning says so), as a stopped run keeps its draws, and ``steps_done`` and
    ``diverged_at_step`` go back to the earliest stop. ``final_state`` stays each rank's last state.
    """
    num_draws = min(trace.num_draws for trace in traces)
    steps_done_by_rank = [int(trace.attrs["steps_done"]) for trace in traces]
    steps_done = min(steps_done_by_rank)
    first = traces[0]
    for trace in traces[1:]:
        if any(
            not np.array_equal(values[:num_draws], trace.draw_coords[name][:num_draws])
            for name, values in first.draw_coords.items()
        ):
            raise DistributedSamplingError("the ranks kept draws of different steps; their traces cannot be joined")
    if any(trace.num_draws > num_draws for trace in traces) or max(steps_done_by_rank) > steps_done:
        warn_caller(
            f"the ranks stopped after different numbers of steps "
            f"({steps_done_by_rank}); the trace keeps the {num_draws} draws "
            f"of the first {steps_done} steps, which every rank made",
            RuntimeWarning,
        )
    groups = {
        group: {
            name: np.concatenate([getattr(trace, group)[name][:, :num_draws] for trace in traces], axis=0)
            for name in getattr(first, group)
        }
        for group in GROUPS
    }
    diverged_at_step = np.concatenate([trace.diverged_at_step for trace in traces])
    attrs = {
        **first.attrs,
        "steps_done": steps_done,
        "seed": netcdf_attr(int(seed) if isinstance(seed, (int, np.integer)) else [int(value) for value in seed]),
        "chain_seeds": netcdf_attr(seeds),
        "num_chains": len(seeds),
        "num_processes": num_processes,
        "diverged_at_step": netcdf_attr(np.where(diverged_at_step < steps_done, diverged_at_step, -1).tolist()),
    }
    final_state = pytree.tree_map(lambda *leaves: torch.cat(leaves), *[trace.final_state for trace in traces])
    return Trace(
        posterior=groups["posterior"],
        sample_stats=groups["sample_stats"],
        attrs=attrs,
        draw_coords={name: values[:num_draws] for name, values in first.draw_coords.items()},
        final_state=final_state,
        functionals=groups["functionals"],
        gradients=groups["gradients"],
    )


def _all_reduce_mean(tree: Result) -> Result:
    """Every tensor of ``tree`` averaged over the ranks (one all-reduce per dtype)."""
    leaves, spec = pytree.tree_flatten(tree)
    _, world_size = _rank_and_world_size()
    by_dtype: dict[torch.dtype, list[int]] = {}
    for position, leaf in enumerate(leaves):
        by_dtype.setdefault(leaf.dtype, []).append(position)
    averaged = list(leaves)
    for positions in by_dtype.values():
        flat = torch.cat([leaves[position].reshape(-1) for position in positions])
        _collective("averaging the log posterior over the data shards", lambda flat=flat: dist.all_reduce(flat))
        flat /= world_size
        pieces = torch.split(flat, [leaves[position].numel() for position in positions])
        for position, piece in zip(positions, pieces, strict=True):
            averaged[position] = piece.reshape(leaves[position].shape)
    return pytree.tree_unflatten(averaged, spec)


class AveragedPotential(ChainPotential):
    """A :class:`sgmcmc.log_density.ChainPotential` averaged over the ranks, for data-parallel sampling.

    Each rank evaluates ``potential`` on its own shard's batch; every rank gets the mean over
    the P ranks of the values (num_chains,), the gradients and, for curvature-using samplers,
    the Hessian-vector products (a mean of Hessians is the Hessian of the mean). The
    all-reduce runs after the vectorised gradient (collectives cannot run inside
    ``torch.func`` transforms).
    """

    def __init__(self, potential: ChainPotential) -> None:
        self.potential = potential

    def __call__(
        self, params: dict[str, torch.Tensor], batch: Any = None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return _all_reduce_mean(self.potential(params, batch))

    def value(self, params: dict[str, torch.Tensor], batch: Any = None) -> torch.Tensor:
        return _all_reduce_mean(self.potential.value(params, batch))

    def with_hessian_vector_product(
        self, params: dict[str, torch.Tensor], batch: Any, tangent: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        return _all_reduce_mean(self.potential.with_hessian_vector_product(params, batch, tangent))


class _StopAgreement:
    """A ``stop_when`` for ``sample`` on every data-parallel rank: all of them stop after the same step.

    A rank stopped on its own (plain Ctrl-C between two steps) would leave the others waiting in the
    step's all-reduce, and every rank's draws would be lost. Here Ctrl-C (SIGINT, see :meth:`interrupt`)
    only marks a stop as asked for, and so does the user's ``stop_when`` returning True; at each
    agreement (about every :data:`STOP_CHECK_SECONDS`) the ranks share their marks and their step
    times, and if any rank asked, all stop there: by raising ``KeyboardInterrupt`` after a Ctrl-C
    (``sample`` keeps the draws and warns), by returning True after ``stop_when``. Every rank gets the
    same shared values, so every rank schedules the next agreement at the same step.
    """

    def __init__(self, device: torch.device, stop_when: Callable[[int], bool] | None) -> None:
        self.device, self.stop_when = device, stop_when
        self.interrupted_at: float | None = None
        self.forced = False
        self.asked = False
        self.next_agreement = 1
        self.last_agreement = (0, time.monotonic())

    def interrupt(self, signum: int, frame: Any) -> None:
        """The SIGINT handler: mark a stop; a second Ctrl-C after :data:`REPEATED_INTERRUPT_S` forces one."""
        now = time.monotonic()
        if self.interrupted_at is None:
            self.interrupted_at = now
        elif now - self.interrupted_at > REPEATED_INTERRUPT_S:
            self.forced = True
            raise KeyboardInterrupt

    def __call__(self, steps_done: int) -> bool:
        self.asked = self.asked or (self.stop_when is not None and bool(self.stop_when(steps_done)))
        if steps_done < self.next_agreement:
            return False
        last_steps, last_time = self.last_agreement
        seconds_per_step = (time.monotonic() - last_time) / (steps_done - last_steps)
        marks = torch.tensor(
            [self.interrupted_at is not None, self.asked, seconds_per_step], dtype=torch.float64, device=self.device
        )
        _collective("agreeing whether to stop", lambda: dist.all_reduce(marks, op=dist.ReduceOp.MAX))
        interrupted, asked, seconds_per_step = marks.tolist()
        between = STOP_CHECK_SECONDS / max(seconds_per_step, 1e-9)
        self.next_agreement = steps_done + int(min(max(between, 1.0), STOP_CHECK_MAX_STEPS))
        self.last_agreement = (steps_done, time.monotonic())
        if interrupted:
            raise KeyboardInterrupt
        return bool(asked)


@contextmanager
def _stopping_together(device: torch.device, stop_when: Callable[[int], bool] | None) -> Iterator[_StopAgreement]:
    """A :class:`_StopAgreement`, its handler taking SIGINT for the block (in the main thread, which alone
    receives signals; elsewhere Ctrl-C stays Python's)."""
    agreement = _StopAgreement(device, stop_when)
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, agreement.interrupt) if in_main_thread else None
    try:
        yield agreement
    finally:
        if in_main_thread:
            signal.signal(signal.SIGINT, previous)


def sample_data_parallel(
    sampler: Sampler,
    init: torch.Tensor | dict[str, torch.Tensor],
    shard: Any,
    *,
    trace_file: str | Path | None = None,
    **sample_kwargs: Any,
) -> Trace | None:
    """``sampler.sample`` of all chains on every rank, with log p̃ and ∇log p̃ averaged over the data shards.

    Args:
        sampler: its ``log_posterior`` is the usual single-process one with ``num_data`` = N, the
            size of the WHOLE data set (e.g. ``minibatch_log_posterior(..., num_data=N)``); the
            average over the ranks turns it into the estimator of the union batch (module docstring).
        init: as for :meth:`sgmcmc.Sampler.sample`, the same on every rank.
        shard: this rank's data, in any form ``sample`` takes (e.g. ``Minibatches(*shard_rows(x, y),
            batch_size=B // P)``). Every rank's shard must have as many rows (or batches) and the
            same batch size: the ranks draw their batch positions from the same per-chain
            generators, so they stay in step only if their streams have the same shape.
            Full-batch samplers (``LD``) use the whole shard every step.
        trace_file: written by rank 0 only.
        **sample_kwargs: the other arguments of :meth:`sgmcmc.Sampler.sample` (the same on every
            rank; not ``checkpoint`` or ``wrap_potential``).

    Returns:
        The trace on rank 0 (``lp`` is the averaged estimate), None on the other ranks. At the end
        the ranks check that their final params are identical, and raise
        :class:`DistributedSamplingError` if they drifted apart. Ctrl-C on any rank, or a
        ``stop_when`` (which each rank may give its own) returning True on any, stops every rank
        after the same step, about :data:`STOP_CHECK_SECONDS` later, and rank 0's trace keeps the
        draws so far, as ``sample``'s does. A second Ctrl-C more than :data:`REPEATED_INTERRUPT_S`
        seconds after the first raises ``KeyboardInterrupt`` at once, on that rank, and the draws
        are lost; the other ranks' next collective then fails.

    Raises:
        ValueError: on every rank, before sampling, if the ranks' shards differ in shape or the
            ranks were given other settings.
    """
    _refuse(sample_kwargs, "checkpoint", "wrap_potential")
    sample_kwargs = _materialised_keep(sample_kwargs)
    stream = chain_data(shard)
    if stream is None:
        raise ValueError("data-parallel sampling needs data: give this rank's shard")
    rank, world_size = _rank_and_world_size()
    if world_size > 1:
        # the runner leaves the averaged estimate, over every rank's shard, to this check
        stream.check_num_data(sampler.log_posterior, num_shards=world_size)
        # the shapes and dtypes of every tensor, not only the row count: pre-made batches of other sizes must
        # differ too, and a float64 shard beside float32 ones would average values of other dtypes (a deadlock)
        layout = (
            stream.units_per_step,
            [(tuple(leaf.shape), str(leaf.dtype)) for leaf in pytree.tree_leaves(stream.units)],
        )
        by_rank = _settings_by_rank({"shard": layout, **_settings(sampler, {"init": init, **sample_kwargs})})
        layouts = [settings.pop("shard") for settings in by_rank]
        if any(other != layout for other in layouts):
            raise ValueError(
                f"the ranks' shards differ: (rows per step, shapes and dtypes of the shard's tensors) by rank = "
                f"{layouts}; "
                "data-parallel sampling needs equal shards (see shard_rows)"
            )
        _check_same_settings(by_rank)
    if world_size == 1:  # one process: nothing to average, no other rank to stop with
        return sampler.sample(init, shard, trace_file=trace_file, **sample_kwargs)
    stop_when = sample_kwargs.pop("stop_when", None)
    with _stopping_together(sampling_device("device", sample_kwargs.get("device", "cpu")), stop_when) as agreement:
        trace = sampler.sample(
            init,
            shard,
            trace_file=trace_file if rank == 0 else None,
            wrap_potential=AveragedPotential,
            stop_when=agreement,
            **sample_kwargs,
        )
    if agreement.forced:  # this rank left the others in a collective: no more of them, or all would wait
        raise KeyboardInterrupt(
            f"rank {rank} of {world_size}: interrupted at once by a second Ctrl-C; its draws are lost"
        )
    params = trace.final_state["params"]
    differs = []
    for value in params.values():
        reference = value.clone()
        _collective(
            "comparing the replicas' final params", lambda reference=reference: dist.broadcast(reference, src=0)
        )
        differs.append(not torch.equal(reference, value))
    # rank 0 compares its params with themselves: every rank must learn what the others found
    drifted = torch.tensor(differs, dtype=torch.int32, device=next(iter(params.values())).device)
    _collective("comparing the replicas' final params", lambda: dist.all_reduce(drifted, op=dist.ReduceOp.MAX))
    names = [name for name, flag in zip(params, drifted.tolist(), strict=True) if flag]
    if names:
        raise DistributedSamplingError(
            f"the replicas drifted apart: parameters {names} differ from rank 0's on some rank (give every "
            "rank the same sampler, seed, init and settings)"
        )
    return trace if rank == 0 else None


def sharded_num_rows(num_rows: int) -> int:
    """How many of ``num_rows`` rows :func:`shard_rows` shares out: P (N // P), the log posterior's ``num_data``."""
    _, world_size = _rank_and_world_size()
    return world_size * (num_rows // world_size)


def shard_rows(*tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """This rank's equal share of ``tensors`` (rows along dim 0, N of them): rows [r n, (r + 1) n), n = N // P.

    The last N mod P rows are left out (with a warning), so that every shard has n rows; give
    ``num_data`` = P n (:func:`sharded_num_rows`) to the log posterior then, or choose N divisible by P.
    """
    if not tensors:
        raise ValueError("shard_rows needs at least one tensor")
    rank, world_size = _rank_and_world_size()
    scalars = [position for position, tensor in enumerate(tensors) if tensor.ndim == 0]
    if scalars:
        raise ValueError(f"tensors {scalars} are 0-dim; shard_rows shares out rows along dim 0")
    num_rows = tensors[0].shape[0]
    if any(tensor.shape[0] != num_rows for tensor in tensors):
        raise ValueError(f"tensors must share their first dim (rows), got {[tuple(t.shape) for t in tensors]}")
    rows_per_rank = sharded_num_rows(num_rows) // world_size
    if rows_per_rank == 0:
        raise ValueError(f"{num_rows} rows cannot be shared by {world_size} ranks")
    if num_rows % world_size:
        warn_caller(
            f"{num_rows} rows do not split evenly over {world_size} ranks: "
            f"the last {num_rows % world_size} are left out",
            UserWarning,
        )
    rows = slice(rank * rows_per_rank, (rank + 1) * rows_per_rank)
    return tuple(tensor[rows] for tensor in tensors)


def shard_minibatches(data: Minibatches) -> Minibatches:
    """This rank's share of ``data``: its :func:`shard_rows`, in batches of ``batch_size // P`` rows.

    The P ranks' batches together have P (B // P) rows, B's own size when P divides B.
    """
    _, world_size = _rank_and_world_size()
    if data.batch_size < world_size:
        raise ValueError(f"batch_size {data.batch_size} is smaller than the {world_size} ranks sharing it")
    return Minibatches(*shard_rows(*data.tensors), batch_size=data.batch_size // world_size)


def sample_in_parallel(
    parallel: str | None, sampler: Sampler, init: Any, data: Any = None, **sample_kwargs: Any
) -> Trace | None:
    """``sampler.sample(init, data, ...)`` run as ``parallel`` says, in the current process group.

    Args:
        parallel: None: in this process alone (the trace on every rank); ``"chains"``:
            :func:`sample_chain_parallel`; ``"data"``: :func:`sample_data_parallel` on this rank's
            :func:`shard_minibatches` of ``data``, a :class:`sgmcmc.Minibatches` of the whole data set.

    Returns:
        The trace, or None on ranks other than 0 in the parallel modes.
    """
    if parallel is None:
        _rank_and_world_size()  # one of several launched processes outside a group would each run it all
        return sampler.sample(init, data, **sample_kwargs)
    if parallel == "chains":
        return sample_chain_parallel(sampler, init, data, **sample_kwargs)
    if parallel == "data":
        if not isinstance(data, Minibatches):
            raise TypeError(f"parallel='data' shards a Minibatches, got {type(data).__name__}")
        return sample_data_parallel(sampler, init, shard_minibatches(data), **sample_kwargs)
    raise ValueError(f"parallel must be None or one of {PARALLEL_MODES}, got {parallel!r}")

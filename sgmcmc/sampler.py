"""The sampler interface every algorithm module implements; ``sample`` runs the shared engine."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch

from sgmcmc._checks import nonnegative
from sgmcmc.chains import ChainGenerators
from sgmcmc.log_density import BoundPotential, ChainPotential
from sgmcmc.runner import run
from sgmcmc.schedules import Schedule, as_schedule
from sgmcmc.trace import Trace

__all__ = ["Sampler", "Potential", "State"]

Params = dict[str, torch.Tensor]
State = dict[str, Any]
"""A sampler's state: ``"params"`` (name -> (num_chains, *shape)) and any other tensors, each
with a leading chain dim."""
Potential = BoundPotential
"""``potential(params) -> (log p̃ of shape (num_chains,), ∇log p̃ shaped like params)``, on this
step's batch; ``potential.with_hessian_vector_product(params, tangent)`` adds ∇²log p̃ · tangent."""


class Sampler(ABC):
    """A stochastic-gradient MCMC kernel for many chains at once.

    Subclasses implement :meth:`step` (one update of every chain, the paper's equation) and,
    where they carry more than the params, :meth:`init`. Everything else (chains, seeds,
    data streams, burn-in, thinning, divergence guard, progress, trace) is the engine's.

    Args:
        log_posterior: ``log_posterior(params, batch) -> ()`` for ONE chain, estimating the
            full-data log posterior (see :func:`sgmcmc.minibatch_log_posterior`); ``params`` is
            a tensor or a dict of named tensors, as given to :meth:`sample`. Without data it is
            called as ``log_posterior(params)``.
        step_size: η, a float or a :class:`sgmcmc.schedules.Schedule` of η_k.
        temperature: T ≥ 0; the stationary law is ∝ p(θ)^(1/T). T < 1 is a "cold posterior".
    """

    full_batch: ClassVar[bool] = False
    """Whether every step uses the whole data set instead of a minibatch."""
    stats: tuple[str, ...] = ("lp",)
    """Names of the per-chain statistics :meth:`step` returns."""

    def __init__(
        self,
        log_posterior: Callable[..., torch.Tensor],
        step_size: float | Schedule,
        temperature: float = 1.0,
    ) -> None:
        if not callable(log_posterior):
            raise TypeError(f"log_posterior must be callable, got {type(log_posterior).__name__}")
        self.log_posterior = log_posterior
        self.step_size = as_schedule(step_size)
        self.temperature = nonnegative("temperature", temperature)

    def init(self, params: Params, potential: Potential, generators: ChainGenerators) -> State:
        """The state before step 0. ``potential`` evaluates the log posterior on all of the data at
        once (lazily: a sampler that never calls it costs nothing)."""
        return {"params": params}

    @abstractmethod
    def step(
        self, state: State, potential: Potential, step_size: float, temperature: float, generators: ChainGenerators
    ) -> tuple[State, dict[str, torch.Tensor]]:
        """Advance every chain once.

        Returns the new state and the stats of the *current* state, each of shape
        (num_chains,): always ``lp``, the log-posterior estimate at ``state["params"]``.
        """

    def temperature_at(self, step: int) -> float:
        """T at step ``step``; constant unless a subclass tempers by stage (cyclical samplers)."""
        return self.temperature

    def keeps(self, step: int) -> bool:
        """Whether the state at ``step`` may be kept as a draw (before burn-in and thinning)."""
        return True

    def draw_coords(self, step: int) -> dict[str, int]:
        """Labels of the draw at ``step`` beyond its step index (e.g. its cycle), for the trace."""
        return {}

    def hyperparameters(self) -> dict[str, Any]:
        """What the trace's attrs record about this sampler."""
        return {"step_size": self.step_size, "temperature": self.temperature}

    def sample(
        self,
        init: torch.Tensor | Params,
        data: Any = None,
        *,
        num_chains: int = 4,
        num_steps: int = 1000,
        burn_in: int = 0,
        thin: int = 1,
        seed: int | Sequence[int] = 0,
        device: str | torch.device = "cpu",
        init_jitter: float = 0.0,
        stacked_init: bool = False,
        progress: bool = True,
        functionals: Mapping[str, Callable[[Any], torch.Tensor]] | None = None,
        keep: Sequence[str] | None = None,
        keep_gradients: bool = False,
        trace_file: str | Path | None = None,
        checkpoint: str | Path | None = None,
        checkpoint_every: int = 1000,
        wrap_potential: Callable[[ChainPotential], ChainPotential] | None = None,
        compile: bool = False,
        stop_when: Callable[[int], bool] | None = None,
    ) -> Trace:
        """Run ``num_chains`` chains for ``num_steps`` steps; keep every ``thin``-th state from step ``burn_in``.

        Args:
            init: one chain's params (a tensor or a dict of named tensors), where every chain
                starts, or, with ``stacked_init=True``, params with a leading dim of size
                ``num_chains``.
            data: None, a :class:`sgmcmc.Minibatches`, a DataLoader or any re-iterable of
                batches (see :mod:`sgmcmc.data`). Each chain draws its own minibatch stream.
            seed: one integer (chain c gets ``sgmcmc.chain_seeds(seed, num_chains)[c]``) or
                one seed per chain; a chain run alone with its seed reproduces itself.
            init_jitter: standard deviation of Gaussian noise added to each chain's start.
            progress: show a tqdm bar (always off when the ``CI`` variable is set).
            functionals: name -> ``f(params) -> tensor`` of one chain's params (as given in
                ``init``), evaluated at every kept draw for all chains at once (torch.func.vmap)
                and stored in the trace's ``functionals`` group: predictive probabilities of
                held-out points, a log-likelihood, any summary whose R-hat and ESS mean more
                than those of unidentifiable weights.
            keep: names of the parameters to keep in the trace (default all; ``()`` keeps only
                functionals and stats).
            keep_gradients: also keep ∇log p̃ at each kept draw (on its step's batch) in the
                ``gradients`` group: the gradient the step took there, so it costs no more
                gradients, except under LD (whose step takes the next state's), which takes one
                more per kept draw.
            trace_file: stream the kept draws to this netCDF file (in chunks of at most 256 draws
                and 64 MiB) instead of holding them in memory; the returned trace reads them from
                the file, which is a valid trace of the draws so far at every moment.
            checkpoint: a file to which the run's complete state is saved (atomically) every
                ``checkpoint_every`` steps. If it exists when the run starts, the run resumes
                from it and continues bit for bit as if it had never stopped; it must then be
                configured as the run that wrote it. Without ``trace_file`` each checkpoint holds
                every draw kept so far, so each is larger than the last (40 checkpoints of a
                264 MB trace wrote 5.5 GB); with it, only their count.
            wrap_potential: ``wrap_potential(potential) -> potential`` replaces the vectorised
                potential (``potential(params, batch) -> (log p̃ (num_chains,), ∇log p̃ shaped like
                params)`` and ``potential.with_hessian_vector_product(params, batch, tangent)``) for the
                whole run. Default None: unchanged. Data-parallel sampling uses it to average every
                process's value and gradient on its data shard (:mod:`sgmcmc.distributed`).
            compile: run each step (gradient, update, divergence check) as one
                ``torch.compile``-d graph. It takes seconds to compile and then pays off: 1.8-3.1×
                more chain-steps/s on small models (docs/benchmarks.md). The draws are those
                of the eager run up to rounding: each chain's noise still comes from its own
                generator, drawn outside the graph. If the step does not compile to one graph
                (a graph break in ``log_posterior``, a compiler error, or more than dynamo's
                recompile limit, 8, compilations of one sampler's step on inputs of the same
                shapes), a RuntimeWarning says why and the run goes on eagerly.
            stop_when: ``stop_when(steps_done) -> bool``, called after every step but the last;
                True ends the run there, as Ctrl-C does but without a warning: the trace keeps
                the draws so far (its ``steps_done`` attr says how many steps ran) and, with
                ``checkpoint``, the state is saved at that step, so the same call resumes from
                it. For a time budget: ``deadline = time.monotonic() + 3600`` and
                ``stop_when=lambda steps_done: time.monotonic() > deadline``.

        Returns:
            A :class:`sgmcmc.Trace`; draw i is the state after ``burn_in + i * thin`` steps.
            Ctrl-C stops the run and returns the draws kept so far (also in ``trace_file``); any
            other exception propagates with them as its ``partial_trace`` (a :class:`sgmcmc.Trace`).
        """
        return run(
            self,
            init,
            data,
            num_chains=num_chains,
            num_steps=num_steps,
            burn_in=burn_in,
            thin=thin,
            seed=seed,
            device=device,
            init_jitter=init_jitter,
            stacked_init=stacked_init,
            progress=progress,
            functionals=functionals,
            keep=keep,
            keep_gradients=keep_gradients,
            trace_file=trace_file,
            checkpoint=checkpoint,
            checkpoint_every=checkpoint_every,
            wrap_potential=wrap_potential,
            compile=compile,
            stop_when=stop_when,
        )

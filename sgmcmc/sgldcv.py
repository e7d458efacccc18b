"""SGLD-CV: SGLD with a control-variate gradient, Baker, Fearnhead, Fox & Nemeth (2019), Sec. 3.

θ ← θ + η [∇log p(θ̂) + ∇log p̃_B(θ) − ∇log p̃_B(θ̂)] + sqrt(2ηT) ξ, with θ̂ near the mode.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any, Literal

import torch

from sgmcmc._checks import (
    autograd_allowed,
    count,
    has_elements,
    parameter_tensor,
    positive,
    sampling_device,
    warn_caller,
)
from sgmcmc.chains import ChainGenerators, at_least_float32, per_chain_sum
from sgmcmc.data import full_data_arguments
from sgmcmc.ld import LD
from sgmcmc.log_density import checked_log_density
from sgmcmc.runner import TENSOR_PARAM_NAME, SamplerDivergenceWarning, _named_params, stop_if_interrupted
from sgmcmc.sampler import Potential, Sampler, State
from sgmcmc.schedules import Schedule, as_schedule
from sgmcmc.sgld import SGLD, langevin_step

__all__ = ["SGLDCV", "find_mode"]


def find_mode(
    log_posterior: Callable[..., torch.Tensor],
    init: torch.Tensor | dict[str, torch.Tensor],
    data: Any,
    *,
    num_steps: int,
    step_size: float | Schedule | None = None,
    num_full_batch_steps: int = 0,
    full_batch_step_size: float | None = None,
    full_batch_method: Literal["gradient", "lbfgs"] = "gradient",
    seed: int | Sequence[int] = 0,
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> torch.Tensor | dict[str, torch.Tensor]:
    """θ̂ ≈ argmax log p(θ): ``num_steps`` of minibatch SGD, then ``num_full_batch_steps`` on the full data.

    The SGD stage is the package's own sampler at temperature 0, one chain: :class:`sgmcmc.SGLD`
    (SGD on −log p̃, learning rate η_k) on the minibatches of ``data``. The full-batch stage is
    :class:`sgmcmc.LD` at temperature 0 (gradient descent on −log p) or, with
    ``full_batch_method="lbfgs"``, ``torch.optim.LBFGS`` with a strong-Wolfe line search, which
    needs no step size and whose rate does not degrade with the Hessian's condition number as
    gradient descent's does (a badly scaled regression: see docs/samplers.md).

    Args:
        log_posterior: as for the samplers, ``log_posterior(params, batch) -> ()``.
        init: the starting point, a tensor or a dict of named tensors.
        data: the minibatches, as for :meth:`sgmcmc.Sampler.sample`.
        num_steps: minibatch SGD steps (≥ 0; 0 only with a full-batch stage).
        step_size: η_k of the SGD stage, a float or a schedule; needed unless the only stage is L-BFGS.
        num_full_batch_steps: full-batch steps after the SGD stage (default 0): gradient steps, or
            L-BFGS iterations (each evaluates the full-data log posterior and gradient about once).
        full_batch_step_size: the gradient steps' step size; default ``step_size`` at step 0. Not
            for L-BFGS.
        full_batch_method: ``"gradient"`` (default) or ``"lbfgs"``.
        seed: as for :meth:`sgmcmc.Sampler.sample`.
        device: as for :meth:`sgmcmc.Sampler.sample`.
        progress: as for :meth:`sgmcmc.Sampler.sample`.

    Returns:
        θ̂ in the format of ``init``, detached, on ``device``.

    Raises:
        ValueError: if either stage diverges (its state becomes non-finite): the step is too large.
            Also for a ``full_batch_method`` not listed, or a ``full_batch_step_size`` with L-BFGS.
        KeyboardInterrupt: if a stage is interrupted (Ctrl-C); no mode is returned.

    Warns:
        RuntimeWarning: if the log posterior on all of ``data`` is lower at θ̂ than at ``init``:
            the descent did not converge (an unstable step grows the iterate without overflowing).
    """
    autograd_allowed("find_mode")
    num_full_batch_steps = count("num_full_batch_steps", num_full_batch_steps, 0)
    num_steps = count("num_steps", num_steps, 0 if num_full_batch_steps > 0 else 1)
    if full_batch_method not in ("gradient", "lbfgs"):
        raise ValueError(f"full_batch_method must be 'gradient' or 'lbfgs', got {full_batch_method!r}")
    if full_batch_step_size is not None:
        full_batch_step_size = positive("full_batch_step_size", full_batch_step_size)
    if full_batch_method == "lbfgs" and full_batch_step_size is not None:
        raise ValueError("full_batch_step_size is for gradient steps; L-BFGS takes its steps by line search")
    if num_full_batch_steps == 0 and (full_batch_step_size is not None or full_batch_method != "gradient"):
        raise ValueError(
            "full_batch_step_size and full_batch_method set the full-batch stage, which num_full_batch_steps=0 "
            "leaves out; give num_full_batch_steps > 0"
        )
    full_batch_uses_step_size = (
        num_full_batch_steps > 0 and full_batch_method == "gradient" and full_batch_step_size is None
    )
    if step_size is None and (num_steps > 0 or full_batch_uses_step_size):
        raise ValueError("find_mode needs a step_size for its SGD stage and, by default, its full-batch gradient steps")
    named_init, to_user = _named_params(init)
    # the stages that sample check num_data against the data themselves; L-BFGS alone would not
    lbfgs_only = num_steps == 0 and full_batch_method == "lbfgs"
    all_data = full_data_arguments(data, sampling_device("device", device), log_posterior if lbfgs_only else None)
    options = dict(num_chains=1, seed=seed, device=device, progress=progress, keep=())

    def descend(optimizer: Sampler, start: Any, steps: int, stage: str) -> Any:
        with warnings.catch_warnings():
            warnings.simplefilter("error", SamplerDivergenceWarning)
            try:
                trace = optimizer.sample(start, data, num_steps=steps, burn_in=steps - 1, **options)
            except SamplerDivergenceWarning as error:
                raise ValueError(f"find_mode: the {stage} diverged; use a smaller step size ({error})") from None
        stop_if_interrupted(trace, steps, f"find_mode, in the {stage}")
        return to_user({name: value[0] for name, value in trace.final_state["params"].items()})

    mode = init
    if num_steps > 0:
        sgd = SGLD(log_posterior, step_size=step_size, temperature=0.0)
        mode = descend(sgd, mode, num_steps, "minibatch SGD stage")
    if num_full_batch_steps > 0 and full_batch_method == "lbfgs":
        mode = _lbfgs_ascent(log_posterior, mode, all_data, num_full_batch_steps, device)
    elif num_full_batch_steps > 0:
        full_step = as_schedule(step_size)(0) if full_batch_step_size is None else full_batch_step_size
        full_batch = LD(log_posterior, step_size=full_step, temperature=0.0)
        mode = descend(full_batch, mode, num_full_batch_steps, "full-batch gradient stage")
    with torch.no_grad():
        start = to_user({name: value.to(device) for name, value in named_init.items()})
        start_value, mode_value = (float(log_posterior(point, *all_data)) for point in (start, mode))
    if num_full_batch_steps > 0 and full_batch_method == "lbfgs" and not math.isfinite(mode_value):
        # the line search can step where log p is NaN (outside its support) while the params stay finite
        raise ValueError(
            f"find_mode: the L-BFGS stage ended where log_posterior is {mode_value} (outside its support?); start "
            "nearer the mode, or take gradient steps (full_batch_method='gradient')"
        )
    if not mode_value >= start_value:
        step_sizes = {"step_size": num_steps > 0 or full_batch_uses_step_size}
        step_sizes["full_batch_step_size"] = full_batch_step_size is not None and num_full_batch_steps > 0
        remedies = [f"lower {name}" for name, used in step_sizes.items() if used] + ["add steps"]
        warn_caller(
            f"find_mode: the log posterior on all the data is {mode_value:.6g} at the result, below {start_value:.6g} "
            f"at init: the descent did not converge (a step size too large to be stable?); {' or '.join(remedies)} "
            "(or, if init was a mode already, use init itself)",
            RuntimeWarning,
        )
    return mode


def _lbfgs_ascent(
    log_posterior: Callable[..., torch.Tensor], start: Any, all_data: tuple[Any, ...], iterations: int, device: Any
) -> Any:
    """``iterations`` of ``torch.optim.LBFGS`` on −log p over all the data, from ``start`` (in the user's format)."""
    named_start, to_user = _named_params(start)
    # what the samplers check at their start, which this stage, run first, would otherwise meet inside torch
    start_value, leaves = checked_log_density(
        lambda start_leaves: log_posterior(to_user(start_leaves), *all_data),
        {name: value.to(device) for name, value in named_start.items()},
        "at the start of find_mode's L-BFGS stage",
    )
    optimizer = torch.optim.LBFGS(list(leaves.values()), max_iter=iterations, line_search_fn="strong_wolfe")

    non_finite = []

    def loss() -> torch.Tensor:
        optimizer.zero_grad()
        value = -log_posterior(to_user(leaves), *all_data)
        if not torch.isfinite(value):
            non_finite.append(value.item())
        value.backward()
        return value

    try:
        optimizer.step(loss)
    except IndexError as error:
        if not non_finite:
            raise
        # torch's strong-Wolfe zoom can run out of bracket points after trying a point where log p is NaN
        raise ValueError(
            f"find_mode: the L-BFGS line search tried points where log_posterior is {-non_finite[-1]} (outside its "
            "support?) and failed there; start nearer the mode, or take gradient steps (full_batch_method='gradient')"
        ) from error
    if not all(bool(torch.isfinite(value).all()) for value in leaves.values()):
        raise ValueError("find_mode: the L-BFGS stage ended at a non-finite point; start nearer the mode")
    return to_user({name: value.detach() for name, value in leaves.items()})


def _named_mode(mode: Any) -> dict[str, torch.Tensor]:
    """``mode`` as named tensors (a bare tensor is named as the engine names it), checked."""
    if isinstance(mode, torch.Tensor):
        named = {TENSOR_PARAM_NAME: mode}
    elif isinstance(mode, dict) and mode:
        named = dict(mode)
    else:
        raise TypeError(f"mode must be a tensor or a non-empty dict of named tensors, like init; got {mode!r:.80}")
    named = {
        name: parameter_tensor("mode" if isinstance(mode, torch.Tensor) else f"mode[{name!r}]", value).detach()
        for name, value in named.items()
    }
    has_elements("mode", named)
    return named


class SGLDCV(Sampler):
    """SGLD with control variates (SGLD-CV; Baker, Fearnhead, Fox & Nemeth 2019, Sec. 3).

    Given θ̂ near the posterior mode (``mode``; :func:`find_mode` finds one) and the full-data
    gradient ∇log p(θ̂), computed once when sampling starts, every step estimates the gradient
    on the chain's minibatch B_k by

        ĝ(θ) = ∇log p(θ̂) + ∇log p̃_{B_k}(θ) − ∇log p̃_{B_k}(θ̂),

    both minibatch terms on the same batch, and makes the SGLD move (:class:`sgmcmc.SGLD`)

        θ_{k+1} = θ_k + η_k ĝ(θ_k) + sqrt(2 η_k T) ξ_k,  ξ_k ~ N(0, I).

    ĝ is unbiased, and its variance is that of the minibatch estimate of the *difference*
    log p(θ) − log p(θ̂), which vanishes as θ → θ̂: for smooth per-example terms it grows as
    ‖θ − θ̂‖², so near a sharply peaked posterior (large N) it is far below plain SGLD's, whose
    variance grows as N²/|B|. The paper shows that SGLD-CV then reaches a given accuracy at a
    cost that does not grow with N, beyond the mode search and the one full-data gradient. The
    same estimator is SGLDFP in Brosse, Durmus & Moulines (2018). It assumes ``log_posterior``
    scales by the size of the batch it is given (as :func:`sgmcmc.minibatch_log_posterior`
    does), so that it is the exact log posterior on the full data.

    Symbols: the paper writes the potential U = −log p, its ∇Ũ is our −ĝ and its θ̂ our
    ``mode``; the step size maps as for :class:`sgmcmc.SGLD`.

    Cost: two minibatch gradients per step (at θ and at θ̂, on the same batch) and one full-data
    gradient when sampling starts. With ``keep_gradients=True`` the trace keeps the plain
    minibatch gradient ∇log p̃_{B_k}(θ), not ĝ.

    Args:
        log_posterior: as for every sampler (:class:`sgmcmc.Sampler`).
        step_size: η, a float or a schedule.
        mode: θ̂, in the format of the ``init`` given to :meth:`sample` (a tensor, or a dict
            with the same names and shapes).
        temperature: T.

    State: ``params``, ``mode`` and ``mode_gradient`` (θ̂ and ∇log p(θ̂), each one tensor
    expanded to a leading chain dim without copies, so that a checkpoint holds them). Stats:
    ``lp`` (log p̃ at the draw on its batch) and ``distance_to_mode`` (‖θ − θ̂‖ over all
    parameters), which governs the estimator's variance: if it drifts far beyond the
    posterior's spread, θ̂ is a poor centre.
    """

    stats = ("lp", "distance_to_mode")

    def __init__(
        self,
        log_posterior: Callable[..., torch.Tensor],
        step_size: float | Schedule,
        mode: torch.Tensor | dict[str, torch.Tensor],
        temperature: float = 1.0,
    ) -> None:
        super().__init__(log_posterior, step_size, temperature)
        self.mode = _named_mode(mode)
        self._mode_is_tensor = isinstance(mode, torch.Tensor)

    def hyperparameters(self) -> dict[str, Any]:
        return {**super().hyperparameters(), "mode": self.mode}

    def _mode_like(self, params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """θ̂ with a leading chain dim of 1, on the device and dtype of each parameter."""
        if set(self.mode) != set(params):
            if self._mode_is_tensor:
                raise ValueError(f"mode is a bare tensor but init is a dict of parameters {sorted(params)}")
            if set(params) == {TENSOR_PARAM_NAME} and TENSOR_PARAM_NAME not in self.mode:
                raise ValueError(f"mode is a dict of {sorted(self.mode)} but init is a bare tensor")
            raise ValueError(
                f"mode names {sorted(self.mode)} but init has parameters {sorted(params)}: "
                f"missing {sorted(set(params) - set(self.mode))}, unexpected {sorted(set(self.mode) - set(params))}"
            )
        mode = {}
        for name, value in params.items():
            where = "mode" if self._mode_is_tensor else f"mode[{name!r}]"
            if self.mode[name].shape != value.shape[1:]:
                shapes = f"{tuple(self.mode[name].shape)}, the parameter has shape {tuple(value.shape[1:])}"
                raise ValueError(f"{where} has shape {shapes}")
            mode[name] = self.mode[name].to(device=value.device, dtype=value.dtype).unsqueeze(0)
        return mode

    def init(self, params: dict[str, torch.Tensor], potential: Potential, generators: ChainGenerators) -> State:
        mode = self._mode_like(params)
        _, mode_gradient = potential(mode)
        for name, value in mode_gradient.items():
            if not torch.isfinite(value).all():
                raise ValueError(f"the full-data gradient of log_posterior at mode is non-finite in {name!r}")
        num_chains = len(generators)

        def over_chains(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
            return {name: value.expand(num_chains, *value.shape[1:]) for name, value in tensors.items()}

        return {"params": params, "mode": over_chains(mode), "mode_gradient": over_chains(mode_gradient)}

    def step(
        self, state: State, potential: Potential, step_size: float, temperature: float, generators: ChainGenerators
    ) -> tuple[State, dict[str, torch.Tensor]]:
        log_posterior, gradient = potential(state["params"])
        _, gradient_at_mode = potential(state["mode"])
        estimate = {
            name: value - gradient_at_mode[name] + state["mode_gradient"][name] for name, value in gradient.items()
        }
        noise = generators.normal_like(state["params"])
        params = langevin_step(state["params"], estimate, noise, step_size, temperature)
        offset = {
            name: (value - state["mode"][name]).to(at_least_float32(value.dtype))
            for name, value in state["params"].items()
        }
        distance = per_chain_sum({name: value**2 for name, value in offset.items()}).sqrt()
        new_state = {"params": params, "mode": state["mode"], "mode_gradient": state["mode_gradient"]}
        return new_state, {"lp": log_posterior, "distance_to_mode": distance}

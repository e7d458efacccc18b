"""The log posterior: the unbiased minibatch estimate, and its gradient for all chains at once.

Convention (used by every sampler): ``log_posterior(params, batch)`` estimates the *full-data*
log posterior, log p(θ) + (N/|B|) Σ_{i∈B} log p(x_i | θ), a sum over the data rescaled by
N/|B|, not a mean. :func:`minibatch_log_posterior` builds it from a prior and a per-example
likelihood.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch.func import grad_and_value, jvp, vmap
from torch.utils import _pytree as pytree

from sgmcmc._checks import count
from sgmcmc.chains import at_least_float32

__all__ = [
    "minibatch_log_posterior",
    "ChainPotential",
    "BoundPotential",
    "check_call_form",
    "check_log_posterior",
    "checked_log_density",
]

Params = dict[str, torch.Tensor]


def minibatch_log_posterior(
    log_prior: Callable[[Any], torch.Tensor],
    log_likelihood: Callable[[Any, Any], torch.Tensor],
    num_data: int,
) -> Callable[[Any, Any], torch.Tensor]:
    """log p̃(θ) = log p(θ) + (N/|B|) Σ_{i∈B} log p(x_i | θ), unbiased for the full log posterior.

    Args:
        log_prior: ``log_prior(params) -> ()`` tensor.
        log_likelihood: ``log_likelihood(params, batch) -> (|B|,)`` tensor, one term per example; |B|
            must be the leading dim of one of the batch's tensors (checked: a term per feature is an error).
        num_data: N, the number of examples in the full data set.

    Returns:
        ``log_posterior(params, batch) -> ()`` for one chain; its attribute ``num_data`` is N,
        which ``sample`` compares with the number of rows in its data.
    """
    if not callable(log_prior) or not callable(log_likelihood):
        raise TypeError("log_prior and log_likelihood must be callables")
    num_data = count("num_data", num_data, 1)

    def log_posterior(params: Any, batch: Any) -> torch.Tensor:
        per_example = log_likelihood(params, batch)
        if not isinstance(per_example, torch.Tensor) or per_example.ndim != 1:
            shape = tuple(per_example.shape) if isinstance(per_example, torch.Tensor) else type(per_example).__name__
            raise ValueError(f"log_likelihood must return one value per example, shape (|B|,); got {shape}")
        rows = {leaf.shape[0] for leaf in pytree.tree_leaves(batch) if isinstance(leaf, torch.Tensor) and leaf.ndim}
        # a term per feature or per class (a sum over the wrong axis) would be scaled by N/d, not N/|B|; any
        # leaf may carry the rows, since a dict batch may hold a per-batch tensor first
        if rows and per_example.shape[0] not in rows:
            raise ValueError(
                f"log_likelihood must return one value per example, shape (|B|,); got {per_example.shape[0]} "
                f"values for a batch whose tensors have {sorted(rows)} rows (summed over the wrong dim?)"
            )
        # summed in at least float32: N/|B| Σ of float16 terms overflows (65504) for N of some 10⁴ and more
        total = per_example.sum(dtype=at_least_float32(per_example.dtype))
        return log_prior(params) + (num_data / per_example.shape[0]) * total

    log_posterior.num_data = num_data
    return log_posterior


def check_log_posterior(value: Any, where: str, params: Iterable[torch.Tensor], name: str = "log_posterior") -> None:
    """Raise if ``value``, computed with gradients enabled from ``params``, is not a finite 0-dim floating
    tensor that depends on them through autograd; ``where`` names the inputs, ``name`` the function."""
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must return a torch.Tensor, got {type(value).__name__} {where}")
    if value.ndim != 0:
        raise ValueError(f"{name} must return a 0-dim tensor, got shape {tuple(value.shape)} {where}")
    if not value.is_floating_point():
        raise TypeError(f"{name} must return a floating tensor, got {value.dtype} {where}")
    if not torch.isfinite(value):
        raise ValueError(f"{name} returned a non-finite value ({value.item()}) {where}")
    # a value from other tensors that require grad (a module's own weights) has a graph, but not to the params
    if not value.requires_grad or all(
        gradient is None for gradient in torch.autograd.grad(value, list(params), allow_unused=True)
    ):
        raise ValueError(
            f"{name}'s value does not depend on the params {where}: it has no gradient to follow "
            "(computed under torch.no_grad(), from detached tensors, through .item() or numpy, or by a "
            "module with its own weights instead of the params: use torch.func.functional_call?)"
        )


def check_call_form(log_posterior: Callable[..., torch.Tensor], has_data: bool) -> None:
    """A TypeError, before the first call, when ``log_posterior``'s signature cannot take the arguments it
    will get: ``(params, batch)`` with data, ``(params)`` without (else Python's own "missing 1 required
    positional argument" would name neither the data nor the sampler's call)."""
    try:
        signature = inspect.signature(log_posterior)
    except (TypeError, ValueError):  # a builtin or an extension type: its first call will tell
        return
    arguments = ("params", "batch") if has_data else ("params",)
    try:
        signature.bind(*arguments)
    except TypeError:
        if has_data:
            raise TypeError(
                f"data is given, so log_posterior is called as log_posterior(params, batch), which its signature "
                f"{signature} does not take: give it a batch argument, or sample without data"
            ) from None
        raise TypeError(
            f"no data is given, so log_posterior is called as log_posterior(params), which its signature "
            f"{signature} does not take: pass the data to sample, or drop the batch argument"
        ) from None


def checked_log_density(
    function: Callable[[Any], torch.Tensor], point: Any, where: str, name: str = "log_posterior"
) -> tuple[torch.Tensor, Any]:
    """``function`` at ``point`` (a tensor or a pytree of them), checked by :func:`check_log_posterior` and
    for draws from torch's global RNG, and the leaves it was taken at: copies of ``point``'s tensors that
    require grad, evaluated with gradients enabled whatever the caller's mode."""
    leaves = pytree.tree_map(lambda value: value.detach().clone().requires_grad_(), point)
    tensors = pytree.tree_leaves(leaves)
    global_rng = _global_rng_state(tensors)
    with torch.enable_grad():
        value = function(leaves)
    check_log_posterior(value, where, tensors, name)
    if not all(map(torch.equal, global_rng, _global_rng_state(tensors))):
        raise ValueError(
            f"{name} draws from torch's global random number generator {where} (dropout in training mode, "
            "torch.randn, ...): it must be a deterministic function of the params. A sampler's chain would not "
            "be reproducible from its seed (and from two chains on torch.func.vmap refuses the draws); a mode, "
            "Hessian or score would be that of a random function. Make it deterministic "
            "(F.dropout(..., training=False)); a sampler draws its randomness from the chains' own generators"
        )
    return value, leaves


def _global_rng_state(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    """The states of torch's global generators that ops on ``tensors`` draw from: the CPU's, and each of
    their CUDA devices'."""
    devices = {value.device for value in tensors if value.device.type == "cuda"}
    return [torch.random.get_rng_state(), *(torch.cuda.get_rng_state(device) for device in devices)]


class ChainPotential:
    """log p̃ and ∇log p̃ at the params of every chain, the chains vectorised by ``torch.func.vmap``.

    Eagerly, the gradient is one reverse pass through the chains' summed log p̃: the chains are
    independent, so the gradient of the sum with respect to chain c's params is chain c's
    gradient, and plain autograd takes it 15-30% faster than ``vmap(grad_and_value)``, which
    wraps every op of the model twice. A single chain is not vmapped at all. Under
    ``torch.compile`` (which cannot trace ``torch.autograd.grad`` into one graph) the step uses
    ``vmap(grad_and_value)`` instead.

    Args:
        log_posterior: the user's one-chain function, ``(params, batch) -> ()`` or ``(params) -> ()``.
        to_user: maps the engine's named params to what ``log_posterior`` takes.
        has_data: whether ``log_posterior`` takes a batch.
        batch_per_chain: whether each chain has its own batch (leading chain dim) or all share one.
    """

    def __init__(
        self,
        log_posterior: Callable[..., torch.Tensor],
        to_user: Callable[[Params], Any],
        has_data: bool,
        batch_per_chain: bool,
    ) -> None:
        def one_chain(params: Params, batch: Any) -> torch.Tensor:
            user_params = to_user(params)
            return log_posterior(user_params, batch) if has_data else log_posterior(user_params)

        def one_chain_with_hvp(params: Params, batch: Any, tangent: Params) -> tuple[torch.Tensor, Params, Params]:
            (gradient, value), (product, _) = jvp(
                lambda chain_params: grad_and_value(one_chain)(chain_params, batch), (params,), (tangent,)
            )
            return value, gradient, product

        batch_dim = 0 if batch_per_chain else None
        self._one_chain, self._batch_per_chain = one_chain, batch_per_chain
        self._value = _over_chains(one_chain, in_dims=(0, batch_dim))
        self._value_and_grad = vmap(grad_and_value(one_chain), in_dims=(0, batch_dim))
        self._with_hvp = _over_chains(one_chain_with_hvp, in_dims=(0, batch_dim, 0))

    def __call__(self, params: Params, batch: Any = None) -> tuple[torch.Tensor, Params]:
        """Returns (log p̃ of shape (num_chains,), gradients shaped like ``params``)."""
        if torch.compiler.is_compiling():
            gradient, value = self._value_and_grad(params, batch)
            return value, gradient
        if _num_chains(params) == 1:
            # the chain's own tensors are the leaves, not views into the stacked ones: no select to differentiate
            batch = _chain_alone(batch) if self._batch_per_chain else batch
            value, gradient = _value_and_gradient(
                self._one_chain, {name: param[0] for name, param in params.items()}, batch
            )
            return value[None], {name: leaf[None] for name, leaf in gradient.items()}
        return _value_and_gradient(self._value, params, batch)

    def value(self, params: Params, batch: Any = None) -> torch.Tensor:
        """log p̃ of shape (num_chains,) alone, computed without gradients."""
        with torch.no_grad():
            return self._value(params, batch)

    def with_hessian_vector_product(
        self, params: Params, batch: Any, tangent: Params
    ) -> tuple[torch.Tensor, Params, Params]:
        """(log p̃, ∇log p̃, ∇²log p̃ · tangent) by forward-over-reverse differentiation."""
        return self._with_hvp(params, batch, tangent)


def _value_and_gradient(function: Callable[[Params, Any], torch.Tensor], params: Params, batch: Any) -> Any:
    """``function(params, batch)`` and its gradient with respect to ``params`` by one reverse pass
    through its sum (a vmapped function's chains are independent, so each gets its own gradient)."""
    leaves = {name: param.detach().requires_grad_() for name, param in params.items()}
    with torch.enable_grad():  # a caller's torch.no_grad() would leave nothing to differentiate
        # a copy: a log posterior that rebinds a key (p["w"] = 2 * p["w"]) must not replace the leaf
        value = function(dict(leaves), batch)
        total = value.sum()
    if not value.requires_grad:  # log p̃ does not depend on the params
        return value, {name: torch.zeros_like(leaf) for name, leaf in leaves.items()}
    gradient = torch.autograd.grad(total, tuple(leaves.values()), allow_unused=True, materialize_grads=True)
    return value.detach(), dict(zip(leaves, gradient, strict=True))


def _num_chains(params: Params) -> int:
    return next(iter(params.values())).shape[0]


def _chain_alone(tree: Any) -> Any:
    """The only chain of ``tree``: every tensor without its chain dim of size 1."""
    return pytree.tree_map(lambda leaf: leaf[0], tree)


def _with_chain_dim(tree: Any) -> Any:
    return pytree.tree_map(lambda leaf: leaf[None], tree)


def _over_chains(function: Callable[..., Any], in_dims: tuple[int | None, ...]) -> Callable[..., Any]:
    """``vmap(function, in_dims)``, except that a single chain is passed to ``function`` directly (its
    tensors without the chain dim, which its results get back): vmap over one chain would cost about
    as much again as the gradient itself. The first argument is the params."""
    vmapped = vmap(function, in_dims=in_dims)

    def over_chains(params: Params, *others: Any) -> Any:
        if _num_chains(params) != 1:
            return vmapped(params, *others)
        arguments = [
            argument if dim is None else _chain_alone(argument)
            for argument, dim in zip((params, *others), in_dims, strict=True)
        ]
        return _with_chain_dim(function(*arguments))

    return over_chains


class BoundPotential:
    """A :class:`ChainPotential` on one step's batch: ``potential(params) -> (log p̃, ∇log p̃)``."""

    def __init__(self, potential: ChainPotential, batch: Any) -> None:
        self.potential = potential
        self.batch = batch

    def __call__(self, params: Params) -> tuple[torch.Tensor, Params]:
        return self.potential(params, self.batch)

    def with_hessian_vector_product(self, params: Params, tangent: Params) -> tuple[torch.Tensor, Params, Params]:
        """(log p̃, ∇log p̃, ∇²log p̃ · tangent) on this batch, for samplers that need curvature."""
        return self.potential.with_hessian_vector_product(params, self.batch, tangent)

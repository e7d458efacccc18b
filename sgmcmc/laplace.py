"""The Laplace approximation N(θ̂, Σ), Σ = (−∇²log p(θ̂))⁻¹, and sampling in its whitened coordinates.

Any sampler run on z, with θ = θ̂ + L z and L Lᵀ = Σ, samples the exact posterior (the map is
affine, so its Jacobian is a constant); where the Laplace approximation is good, the posterior in
z is near N(0, I), so one step size fits every direction however badly θ is scaled. This is a
fixed dense preconditioner (a dense mass matrix, in HMC's words) for every sampler at once.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch.func import grad, jvp, vmap

from sgmcmc._checks import autograd_allowed, count, warn_caller
from sgmcmc.chains import split_like
from sgmcmc.data import full_data_arguments
from sgmcmc.log_density import checked_log_density
from sgmcmc.runner import TENSOR_PARAM_NAME, _named_params
from sgmcmc.sgldcv import _named_mode
from sgmcmc.trace import Trace

__all__ = ["LaplaceApproximation", "laplace_approximation"]


@dataclasses.dataclass(frozen=True, eq=False)
class LaplaceApproximation:
    """N(θ̂, Σ) over the parameters laid end to end (P numbers, in the order of ``mode``'s names).

    Attributes:
        log_posterior: the ``log_posterior`` it approximates.
        mode: θ̂, in the format of the ``mode`` it was built from (a tensor or a dict of tensors).
        precision_cholesky: C, shape (P, P), lower triangular, C Cᵀ = −∇²log p(θ̂) = Σ⁻¹.
        scale: L = C⁻ᵀ, shape (P, P), upper triangular, L Lᵀ = Σ: θ = θ̂ + L z.
    """

    log_posterior: Callable[..., torch.Tensor]
    mode: Any
    precision_cholesky: torch.Tensor
    scale: torch.Tensor
    _named_mode: dict[str, torch.Tensor] = dataclasses.field(repr=False)
    _to_user: Callable[[dict[str, torch.Tensor]], Any] = dataclasses.field(repr=False)
    _on_device: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = dataclasses.field(
        default_factory=dict, repr=False
    )

    @property
    def covariance(self) -> torch.Tensor:
        """Σ = L Lᵀ, shape (P, P)."""
        return self.scale @ self.scale.T

    @functools.cached_property
    def whitened_log_posterior(self) -> Callable[..., torch.Tensor]:
        """z ↦ log p̃(θ̂ + L z) on the sampler's batch, z of shape (P,): a ``log_posterior`` for any
        sampler, with the original's ``num_data``. Started at z = 0 (θ̂) with ``init_jitter=1.0``,
        the chains start spread over about one posterior sd."""

        def whitened_log_posterior(z: torch.Tensor, *batch: Any) -> torch.Tensor:
            return self.log_posterior(self.params(z), *batch)

        if hasattr(self.log_posterior, "num_data"):
            whitened_log_posterior.num_data = self.log_posterior.num_data  # type: ignore[attr-defined]
        return whitened_log_posterior

    def params(self, z: torch.Tensor) -> Any:
        """θ = θ̂ + L z in the format of ``mode``, for one z of shape (P,): what a functional of a
        whitened run (which is handed z) calls to compute a functional of θ."""
        size = self.scale.shape[0]
        if not isinstance(z, torch.Tensor) or tuple(z.shape) != (size,) or z.dtype != self.scale.dtype:
            described = f"{tuple(z.shape)} {z.dtype}" if isinstance(z, torch.Tensor) else type(z).__name__
            raise ValueError(
                f"z must be a tensor of shape ({size},) and dtype {self.scale.dtype}, got {described}; start a "
                "whitened run at laplace.whiten(init) (or laplace.whiten(laplace.mode))"
            )
        if z.device not in self._on_device:  # an approximation built on the CPU serves a run on CUDA
            self._on_device[z.device] = (_flatten(self._named_mode, z.dtype).to(z.device), self.scale.to(z.device))
        centre, scale = self._on_device[z.device]
        return self._to_user(split_like(centre + scale @ z, self._named_mode, leading_dims=0))

    def whiten(self, params: torch.Tensor | dict[str, torch.Tensor]) -> torch.Tensor:
        """z = Cᵀ (θ − θ̂), shape (P,), on ``mode``'s device, for one point θ in the format of
        ``mode`` (zeros at θ̂; the inverse of :meth:`params`)."""
        named, _ = _named_params(params, "the point to whiten")
        if named.keys() != self._named_mode.keys():
            raise ValueError(f"params have names {sorted(named)}; the mode has {sorted(self._named_mode)}")
        for name, value in named.items():
            expected = tuple(self._named_mode[name].shape)
            if tuple(value.shape) != expected:
                raise ValueError(f"params[{name!r}] has shape {tuple(value.shape)}; the mode's is {expected}")
        # in the mode's order: dicts with the same names in another order compare equal above
        point = _flatten({name: named[name] for name in self._named_mode}, self.scale.dtype).to(self.scale.device)
        return self.precision_cholesky.T @ (point - _flatten(self._named_mode, self.scale.dtype))

    def unwhiten(self, trace: Trace) -> Trace:
        """The trace of a run on :attr:`whitened_log_posterior`, its draws mapped back to θ, in memory.

        ``posterior`` gets θ̂ + L z under the mode's names and shapes; ``gradients`` (from
        ``keep_gradients=True``) get ∇_θ log p̃ = C ∇_z log p̃. Stats, functionals (computed on z:
        see :meth:`params`) and ``attrs`` are kept (``attrs["whitening"]`` records the map), all
        read into memory; ``final_state`` stays in z, where the sampler resumes.
        """
        if set(trace.posterior) != {TENSOR_PARAM_NAME}:
            raise ValueError(
                f"the trace's draws are {sorted(trace.posterior)}; a run on whitened_log_posterior keeps one, "
                f"{TENSOR_PARAM_NAME!r} (the bare tensor z; a run with keep=() has none to map)"
            )
        size = self.scale.shape[0]
        if trace.posterior[TENSOR_PARAM_NAME].shape[2:] != (size,):
            raise ValueError(
                f"the trace's z has shape {tuple(trace.posterior[TENSOR_PARAM_NAME].shape[2:])} per draw; "
                f"this approximation's has ({size},)"
            )
        scale, precision_cholesky = self.scale.cpu().double(), self.precision_cholesky.cpu().double()
        mode = _flatten(self._named_mode, torch.float64).cpu()

        def split(flat: torch.Tensor) -> dict[str, np.ndarray]:
            return {name: value.numpy() for name, value in split_like(flat, self._named_mode, leading_dims=0).items()}

        z = torch.from_numpy(np.asarray(trace.posterior[TENSOR_PARAM_NAME])).double()
        posterior = split(mode + z @ scale.T)
        gradients = (
            split(torch.from_numpy(np.asarray(trace.gradients[TENSOR_PARAM_NAME])).double() @ precision_cholesky.T)
            if TENSOR_PARAM_NAME in trace.gradients
            else {}
        )
        return dataclasses.replace(
            trace,
            posterior=posterior,
            gradients=gradients,
            sample_stats={name: np.asarray(value) for name, value in trace.sample_stats.items()},
            functionals={name: np.asarray(value) for name, value in trace.functionals.items()},
            attrs={**trace.attrs, "whitening": "Laplace: theta = mode + scale @ z"},
            path=None,
        )


def laplace_approximation(
    log_posterior: Callable[..., torch.Tensor],
    mode: torch.Tensor | dict[str, torch.Tensor],
    data: Any = None,
    *,
    chunk_size: int | None = None,
) -> LaplaceApproximation:
    """The Laplace approximation of the full-data posterior at ``mode``, ready to whiten a sampler.

    The Hessian of log p over all of ``data`` (one batch, so ``log_posterior`` must scale by the
    size of the batch it is given, as :func:`sgmcmc.minibatch_log_posterior` does) is P
    Hessian-vector products, forward over reverse, vectorised by ``torch.func.vmap``; its
    Cholesky factor is taken in float64. Cost: memory of about P (``chunk_size`` if given)
    full-data gradients at once and a (P, P) matrix, and each step of a whitened run adds a
    (P, P) matrix-vector product per chain; it suits models of up to a few thousand parameters,
    such as regressions and hierarchical models, not a neural network's.

    Example::

        mode = sgmcmc.find_mode(log_posterior, init, data, num_steps=0,
                                num_full_batch_steps=500, full_batch_method="lbfgs")
        laplace = sgmcmc.laplace_approximation(log_posterior, mode, data)
        trace = sgmcmc.SGLD(laplace.whitened_log_posterior, step_size=0.02).sample(
            laplace.whiten(mode), data, num_chains=4, num_steps=5000, init_jitter=1.0)
        trace = laplace.unwhiten(trace)        # draws of θ, under init's names

    Args:
        log_posterior: as for the samplers, ``log_posterior(params, batch) -> ()``, or
            ``log_posterior(params) -> ()`` when ``data`` is None.
        mode: θ̂, a tensor or a dict of named tensors (as ``init``), e.g. from :func:`sgmcmc.find_mode`.
        data: the data, as for :meth:`sgmcmc.Sampler.sample`; all of it is one batch here.
        chunk_size: Hessian columns computed at once (default all P).

    Returns:
        The approximation; its tensors are on ``mode``'s device, in the params' promoted dtype.

    Raises:
        ValueError: if log p or its Hessian at ``mode`` is not finite, or −∇²log p(θ̂) is not
            positive definite (θ̂ is not a strict local maximum: a saddle, a flat direction, a
            point far from the mode); the message gives its smallest eigenvalue.

    Warns:
        RuntimeWarning: if the Newton step from ``mode``, C⁻¹∇log p in whitened units, is longer
            than 1: ``mode`` is about a posterior sd or more from the mode, so the approximation
            (though the whitened run still samples the exact posterior) is a poor preconditioner.
    """
    autograd_allowed("laplace_approximation")
    named_mode, (_, to_user) = _named_mode(mode), _named_params(mode, "mode")
    if chunk_size is not None:
        chunk_size = count("chunk_size", chunk_size, 1)
    device = next(iter(named_mode.values())).device
    dtype = _flat_dtype(named_mode)
    all_data = full_data_arguments(data, device, log_posterior)

    def full_data_log_posterior(flat: torch.Tensor) -> torch.Tensor:
        return log_posterior(to_user(split_like(flat, named_mode, leading_dims=0)), *all_data)

    centre = _flatten(named_mode, dtype)
    gradient_at_mode = grad(full_data_log_posterior)

    def hessian_vector_product(tangent: torch.Tensor) -> torch.Tensor:
        return jvp(gradient_at_mode, (centre,), (tangent,))[1]

    checked_log_density(full_data_log_posterior, centre, "on all the data at mode")
    gradient = gradient_at_mode(centre)
    hessian = vmap(hessian_vector_product, chunk_size=chunk_size)(torch.eye(centre.numel(), dtype=dtype, device=device))
    if not bool(torch.isfinite(hessian).all() and torch.isfinite(gradient).all()):
        raise ValueError("the gradient or Hessian of log_posterior at mode is not finite")
    precision = -(hessian + hessian.T).double() / 2
    precision_cholesky, info = torch.linalg.cholesky_ex(precision)
    if info.item() != 0:
        smallest = float(torch.linalg.eigvalsh(precision)[0])
        raise ValueError(
            f"−∇²log p at mode has an eigenvalue {smallest:.3g} ≤ 0 (not positive definite): mode is not a strict "
            "local maximum of the log posterior (a saddle, a flat direction, or a point far from the mode?)"
        )
    identity = torch.eye(centre.numel(), dtype=torch.float64, device=device)
    scale = torch.linalg.solve_triangular(precision_cholesky.T, identity, upper=True)
    newton_step = float(torch.linalg.vector_norm(scale.T @ gradient.double()))
    if newton_step > 1:
        warn_caller(
            f"laplace_approximation: the Newton step from the given mode is {newton_step:.3g} posterior sds long (by "
            "the approximation): the point is not a mode, and the Hessian there may fit the posterior poorly (the "
            "whitened run still targets the exact posterior); run find_mode longer",
            RuntimeWarning,
        )
    return LaplaceApproximation(
        log_posterior=log_posterior,
        mode=to_user(named_mode),
        precision_cholesky=precision_cholesky.to(dtype),
        scale=scale.to(dtype),
        _named_mode=named_mode,
        _to_user=to_user,
    )


def _flat_dtype(named: dict[str, torch.Tensor]) -> torch.dtype:
    """The promoted dtype of one point's tensors laid end to end."""
    return functools.reduce(torch.promote_types, (value.dtype for value in named.values()))


def _flatten(named: dict[str, torch.Tensor], dtype: torch.dtype) -> torch.Tensor:
    """One point's tensors laid end to end: shape (P,)."""
    return torch.cat([value.reshape(-1).to(dtype) for value in named.values()])

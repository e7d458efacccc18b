"""Kernel Stein discrepancy with the inverse multiquadric kernel (Gorham & Mackey 2017).

R-hat and ESS compare chains with each other, so they cannot see the bias that every chain
of a constant-step sampler shares. The kernel Stein discrepancy compares the draws with the
target itself, through its score s(x) = ∇log p(x), which needs no normalising constant:

    KSD² = Σ_ij w_i w_j k0(x_i, x_j),
    k0(x, y) = ∇_x·∇_y k(x, y) + ∇_x k(x, y)·s(y) + ∇_y k(x, y)·s(x) + k(x, y) s(x)·s(y),

Gorham & Mackey (2017), Prop. 2 (the sum of their k0^j over coordinates j), with weights
w_i = 1/n by default (the V-statistic). With the IMQ kernel k(x, y) = (c² + |x − y|²)^β,
c > 0, β ∈ (−1, 0), KSD → 0 only if the draws converge weakly to p, for targets with
distant dissipativity such as strongly log-concave ones (their Thm. 8); they use c = 1,
β = −1/2. Writing u = x − y, r² = |u|², q = c² + r² and d the dimension, each term is closed-form:

    k0(x, y) = q^β s(x)·s(y) + 2β q^(β−1) u·(s(y) − s(x)) − 2βd q^(β−1) − 4β(β−1) r² q^(β−2).

For exact draws KSD² is O(1/n): its expectation is E[k0(x, x)]/n (the off-diagonal terms have
mean zero), which for the IMQ kernel is (−2βd c^(2β−2) + c^(2β) E|s(x)|²)/n; 2d/n for
N(0, I_d) with c = 1, β = −1/2.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch

from sgmcmc._checks import count, flag, positive, real
from sgmcmc.log_density import checked_log_density
from sgmcmc.runner import TENSOR_PARAM_NAME

__all__ = ["kernel_stein_discrepancy", "imq_stein_kernel", "flatten_draws", "score_at_draws"]

ArrayLike = torch.Tensor | np.ndarray
Draws = ArrayLike | Mapping[str, ArrayLike]


def flatten_draws(named: Mapping[str, ArrayLike], names: list[str] | None = None) -> torch.Tensor:
    """A trace-shaped mapping as one matrix: name -> (num_chains, num_draws, *shape) becomes (n, d).

    n = num_chains · num_draws (chain-major) and the columns are each parameter flattened, in the
    order of ``names`` (default: the mapping's own order). ``trace.posterior`` and the scores
    :func:`score_at_draws` returns for it flatten to matching rows and columns.
    """
    names = list(named) if names is None else names
    missing = [name for name in names if name not in named]
    if missing:
        raise ValueError(f"parameters {missing} are missing; the mapping has {list(named)}")
    tensors = _trace_shaped({name: named[name] for name in names})
    columns = [value.reshape(value.shape[0] * value.shape[1], -1) for value in tensors.values()]
    return torch.cat([column.to(columns[0].device) for column in columns], dim=1)


def _trace_shaped(named: Mapping[str, ArrayLike]) -> dict[str, torch.Tensor]:
    """The mapping's values as tensors, checked to be (num_chains, num_draws, ...) with the same leading dims."""
    if not named:
        raise ValueError("no parameters: the mapping is empty")
    tensors, leading = {}, {}
    for name, value in named.items():
        tensors[name] = _tensor(value)
        if tensors[name].ndim < 2:
            raise ValueError(
                f"parameter {name!r} has shape {tuple(tensors[name].shape)}; expected (num_chains, num_draws, ...)"
            )
        leading[name] = tuple(tensors[name].shape[:2])
    if len(set(leading.values())) > 1:
        raise ValueError(f"the parameters have different (num_chains, num_draws): {leading}")
    return tensors


def _tensor(value: Any) -> torch.Tensor:
    """A tensor, array or array-like (such as an xarray DataArray of ``idata.posterior``) as a tensor."""
    return value if isinstance(value, torch.Tensor) else torch.as_tensor(np.asarray(value))


def _as_matrix(value: ArrayLike, name: str) -> torch.Tensor:
    matrix = _tensor(value)
    if matrix.ndim == 1:
        matrix = matrix[:, None]
    if matrix.ndim != 2:
        raise ValueError(f"{name} must have shape (n, d) (or (n,) for d = 1), got {tuple(matrix.shape)}")
    if matrix.is_complex() or matrix.dtype == torch.bool:
        raise TypeError(f"{name} must be real numbers (floating point or integer), got dtype {matrix.dtype}")
    return matrix


def imq_stein_kernel(
    draws_a: torch.Tensor,
    scores_a: torch.Tensor,
    draws_b: torch.Tensor,
    scores_b: torch.Tensor,
    c: float = 1.0,
    beta: float = -0.5,
) -> torch.Tensor:
    """The Stein kernel k0(x_i, y_j) of the IMQ kernel (c² + |x − y|²)^β for every pair, shape (m, p).

    ``draws_a``, ``scores_a`` are (m, d) and ``draws_b``, ``scores_b`` are (p, d): the points and the
    scores ∇log p at them. Uses the closed form in the module docstring; memory O(m·p), not O(m·p·d).
    """
    tensors = {"draws_a": draws_a, "scores_a": scores_a, "draws_b": draws_b, "scores_b": scores_b}
    for name, value in tensors.items():
        if not isinstance(value, torch.Tensor) or value.ndim != 2 or not value.is_floating_point():
            described = (
                f"{value.dtype} {tuple(value.shape)}" if isinstance(value, torch.Tensor) else type(value).__name__
            )
            raise ValueError(f"{name} must be a 2-d floating-point tensor (points, d), got {described}")
    if scores_a.shape != draws_a.shape or scores_b.shape != draws_b.shape or draws_a.shape[1] != draws_b.shape[1]:
        shapes = {name: tuple(value.shape) for name, value in tensors.items()}
        raise ValueError(
            f"imq_stein_kernel takes draws and scores of shapes (m, d), (m, d), (p, d), (p, d); got {shapes}"
        )
    if len({(value.dtype, value.device) for value in tensors.values()}) > 1:
        kinds = {name: f"{value.dtype} on {value.device}" for name, value in tensors.items()}
        raise ValueError(f"imq_stein_kernel takes tensors of one dtype and device, got {kinds}")
    dim = draws_a.shape[1]
    # k0 depends on x − y, not on x and y: centring is exact and keeps |x|² + |y|² − 2x·y from
    # cancelling catastrophically for draws far from the origin
    centre = draws_a.mean(0)
    draws_a, draws_b = draws_a - centre, draws_b - centre
    squared_distance = (draws_a * draws_a).sum(1)[:, None] + (draws_b * draws_b).sum(1)[None, :]
    squared_distance.addmm_(draws_a, draws_b.T, alpha=-2.0).clamp_min_(0.0)
    base = squared_distance + c * c
    kernel_over_base = base.pow(beta - 1.0)
    # In place, one (m, p) buffer at a time: k0 = q^(β−1) [q s(x)·s(y) + 2β u·(s(y) − s(x)) − 2βd − 4β(β−1) r²/q],
    # with u·(s(y) − s(x)) = x·s(y) + s(x)·y − x·s(x) − y·s(y), so no (m, p, d) tensor is formed.
    stein = (scores_a @ scores_b.T).mul_(base)
    stein.addmm_(torch.cat([draws_a, scores_a], 1), torch.cat([scores_b, draws_b], 1).T, alpha=2.0 * beta)
    stein.sub_((2.0 * beta) * (draws_a * scores_a).sum(1)[:, None])
    stein.sub_((2.0 * beta) * (draws_b * scores_b).sum(1)[None, :])
    stein.sub_(2.0 * beta * dim)
    stein.sub_(squared_distance.div_(base).mul_(4.0 * beta * (beta - 1.0)))
    return stein.mul_(kernel_over_base)


def kernel_stein_discrepancy(
    draws: Draws,
    scores: Draws,
    *,
    weights: ArrayLike | None = None,
    c: float = 1.0,
    beta: float = -0.5,
    block_size: int = 1024,
    squared: bool = False,
) -> float:
    """The IMQ kernel Stein discrepancy of weighted draws from the target whose score they come with.

    KSD = sqrt(Σ_ij w_i w_j k0(x_i, x_j)) (Gorham & Mackey 2017, Prop. 2; the IMQ kernel of their
    Thm. 8, defaults c = 1, β = −1/2 as in their experiments). See the module docstring for k0.

    The n × n sum is taken over blocks of ``block_size`` × ``block_size`` pairs, only on and above
    the diagonal (k0 is symmetric), accumulated in float64 on the draws' device. Memory is
    O(n·d + block_size²), so 10⁵ draws in d = 100 need about 160 MB for the inputs in float64 and
    under 100 MB per block at the default size; time is O(n² d). A larger block is faster on a GPU.

    Args:
        draws: x_i, shape (n, d) (or (n,) when d = 1), a torch tensor (any device) or NumPy
            array; or a trace-shaped mapping name -> (num_chains, num_draws, *shape) such as
            ``trace.posterior``, flattened by :func:`flatten_draws`.
        scores: s(x_i) = ∇log p(x_i), the same shape (for a mapping: the same names). A tensor
            is moved to the draws' device. Only the gradient of the log density matters, so an
            unnormalised log posterior gives the same KSD; a minibatch estimate does not.
        weights: w_i ≥ 0, shape (n,), normalised to sum to 1; default 1/n.
        c: the IMQ kernel's scale c > 0.
        beta: the IMQ exponent β, −1 < β < 0.
        block_size: draws per block.
        squared: return KSD² instead of KSD.

    Returns:
        KSD (or KSD²) as a float.

    Raises:
        ValueError: shapes that disagree, non-finite draws, scores or weights, negative or
            all-zero weights, c ≤ 0 or β outside (−1, 0).
    """
    c = positive("c", c)
    beta = real("beta", beta)
    if not -1.0 < beta < 0.0:
        raise ValueError(f"beta must be in (-1, 0) for the IMQ kernel to detect non-convergence, got {beta}")
    block_size = count("block_size", block_size, 1)
    squared = flag("squared", squared)
    if isinstance(draws, Mapping) or isinstance(scores, Mapping):
        if not (isinstance(draws, Mapping) and isinstance(scores, Mapping)):
            raise TypeError("draws and scores must both be arrays or both be mappings of named arrays")
        if set(draws) != set(scores):
            raise ValueError(f"draws have parameters {sorted(draws)} but scores have {sorted(scores)}")
        # converted once here: flatten_draws takes tensors as they are
        draws = {name: _tensor(value) for name, value in draws.items()}
        scores = {name: _tensor(value) for name, value in scores.items()}
        for name in draws:
            draw_shape, score_shape = tuple(draws[name].shape), tuple(scores[name].shape)
            if draw_shape != score_shape:
                raise ValueError(f"parameter {name!r}: draws have shape {draw_shape} but scores have {score_shape}")
        draws, scores = flatten_draws(draws), flatten_draws(scores, names=list(draws))
    points = _as_matrix(draws, "draws").to(torch.float64)
    gradients = _as_matrix(scores, "scores").to(device=points.device, dtype=torch.float64)
    if points.shape != gradients.shape:
        raise ValueError(f"draws have shape {tuple(points.shape)} but scores have shape {tuple(gradients.shape)}")
    num_draws = points.shape[0]
    if num_draws == 0:
        raise ValueError("no draws")
    if points.shape[1] == 0:
        raise ValueError("the draws have no coordinates (d = 0): there is nothing to measure")
    for name, tensor in (("draws", points), ("scores", gradients)):
        if not bool(torch.isfinite(tensor).all()):
            raise ValueError(f"{name} contain non-finite values (diverged chains? drop them first)")
    if weights is None:
        weight = torch.full((num_draws,), 1.0 / num_draws, dtype=torch.float64, device=points.device)
    else:
        weight = torch.as_tensor(weights)
        if weight.is_complex() or weight.dtype == torch.bool:  # a mask, or a cast that drops the imaginary part
            raise TypeError(f"weights must be real numbers (floating point or integer), got dtype {weight.dtype}")
        weight = weight.to(device=points.device, dtype=torch.float64)
        if weight.shape != (num_draws,):
            raise ValueError(f"weights must have shape ({num_draws},), got {tuple(weight.shape)}")
        # the largest first: weights near the largest float would sum to inf
        largest = weight.max()
        if not bool(torch.isfinite(weight).all()) or bool((weight < 0).any()) or float(largest) <= 0:
            raise ValueError("weights must be finite, >= 0 and not all zero")
        weight = weight / largest
        weight = weight / weight.sum()

    total = torch.zeros((), dtype=torch.float64, device=points.device)
    starts = range(0, num_draws, block_size)
    for row in starts:
        rows = slice(row, row + block_size)
        for column in starts:
            if column < row:
                continue
            columns = slice(column, column + block_size)
            block = imq_stein_kernel(points[rows], gradients[rows], points[columns], gradients[columns], c, beta)
            contribution = weight[rows] @ block @ weight[columns]
            total += contribution if column == row else 2.0 * contribution
    squared_discrepancy = float(total)
    # Rounding can leave a tiny negative value where the exact sum is 0 (it is a squared RKHS norm).
    return squared_discrepancy if squared else math.sqrt(max(squared_discrepancy, 0.0))


def score_at_draws(
    log_density: Callable[[Any], torch.Tensor], draws: Draws, *, chunk_size: int | None = None
) -> torch.Tensor | dict[str, torch.Tensor]:
    """The exact score ∇log p at every draw, by ``torch.func.vmap(torch.func.grad(log_density))``.

    Args:
        log_density: log p (up to a constant) of ONE point: a tensor of shape (d,) when ``draws``
            is a matrix, or a dict of named tensors when ``draws`` is a mapping, like the
            ``log_posterior`` given to a sampler without data.
        draws: (n, d) tensor or array, or a trace-shaped mapping name -> (num_chains, num_draws,
            *shape) such as ``trace.posterior``.
        chunk_size: passed to ``vmap`` to bound memory.

    Returns:
        The scores as tensors of the draws' dtype, ready for :func:`kernel_stein_discrepancy`:
        named and shaped like a mapping, (n, d) for a matrix (and for (n,) draws, (n, 1)).

    Raises:
        TypeError: draws that are not floating point (``log_density`` cannot be differentiated there).
        ValueError: ``log_density`` at the first draw is not a finite 0-dim tensor that depends on it.
    """
    if chunk_size is not None:
        chunk_size = count("chunk_size", chunk_size, 1)
    score = torch.func.vmap(torch.func.grad(log_density), chunk_size=chunk_size)
    if isinstance(draws, Mapping):
        tensors = _trace_shaped(draws)
        for name, value in tensors.items():
            if not value.is_floating_point():
                raise TypeError(f"draws[{name!r}] must be floating point to take the score there, got {value.dtype}")
        leading = next(iter(tensors.values())).shape[:2]
        if leading.numel() == 0:
            raise ValueError(f"no draws to take the score at: draws have {leading[0]} chains of {leading[1]} draws")
        flat = {name: value.reshape(leading.numel(), *value.shape[2:]) for name, value in tensors.items()}
        try:
            checked_log_density(
                log_density, {name: value[0] for name, value in flat.items()}, "at the first draw", "log_density"
            )
            scores = score(flat)
        except Exception as error:
            if list(tensors) == [TENSOR_PARAM_NAME]:
                name = TENSOR_PARAM_NAME
                error.add_note(
                    f"score_at_draws: draws is a mapping, so log_density was called with a dict {{'{name}': …}}; a "
                    "run started from a bare tensor keeps its draws under that name: for a log density of a tensor, "
                    f"pass trace.posterior['{name}'].reshape(-1, d)"
                )
            raise
        return {name: value.reshape(*leading, *value.shape[1:]) for name, value in scores.items()}
    matrix = _as_matrix(draws, "draws")
    if not matrix.is_floating_point():
        raise TypeError(f"draws must be floating point to take the score there, got {matrix.dtype}")
    if matrix.shape[0] == 0:
        raise ValueError("no draws to take the score at: draws have shape (0, d)")
    checked_log_density(log_density, matrix[0], "at the first draw", "log_density")
    return score(matrix)

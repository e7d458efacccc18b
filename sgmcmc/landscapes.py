"""Test landscapes: potentials U(θ) with known global minima and analytic gradients.

Each landscape is at once

- a **loss** for any ``torch.optim`` optimizer: ``landscape.potential(theta)`` is differentiable
  in ``theta``, so ``landscape.potential(theta).sum().backward()`` on a (num_runs, dim) parameter
  gives every run its own gradient ∇U(θ_r);
- a **log posterior** for every sampler: ``landscape.log_density(theta) = −U(θ)``. The sampler's
  own ``temperature`` T then makes the target exp(−U(θ)/T), so the same landscape serves every T
  and the recorded ``lp`` is −U. ``sgmcmc.SGLD(landscape.log_density, step_size=η, temperature=T)``
  runs θ ← θ − η ∇U(θ) + sqrt(2ηT) ξ.

Points are batches of shape (..., dim); ``potential`` returns (...) and ``gradient`` (..., dim).
Written with torch operations only (no Python branching on values), so ``torch.func.vmap`` and
``grad`` go through them, as the samplers require.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable

import numpy as np
import torch

from sgmcmc._checks import count, flag, nonnegative, positive

__all__ = [
    "Landscape",
    "Quadratic",
    "IsotropicGaussian",
    "Ackley",
    "Rosenbrock",
    "DoubleWell",
    "LANDSCAPES",
    "make_landscape",
]


class Landscape(ABC):
    """A potential U on R^dim with a known global minimiser θ* and minimum value U(θ*).

    Args:
        dim: the dimension of θ.
    """

    start_box: tuple[float, float] = (-2.0, 2.0)
    """(low, high): the playground draws random starts uniformly in [low, high]^dim and draws its contour
    plots over that square."""

    def __init__(self, dim: int) -> None:
        self.dim = count("dim", dim, 1)

    @abstractmethod
    def potential(self, theta: torch.Tensor) -> torch.Tensor:
        """U(θ) of points ``theta`` (..., dim); shape (...)."""

    @abstractmethod
    def gradient(self, theta: torch.Tensor) -> torch.Tensor:
        """The analytic ∇U(θ) of points ``theta`` (..., dim); shape (..., dim)."""

    @property
    @abstractmethod
    def minimum(self) -> torch.Tensor:
        """The global minimiser θ*, shape (dim,), float64."""

    @property
    def minimum_value(self) -> float:
        """U(θ*), the global minimum value."""
        return float(self.potential(self.minimum))

    @abstractmethod
    def in_global_basin(self, theta: torch.Tensor) -> torch.Tensor:
        """Whether each point of ``theta`` (..., dim) lies in the global minimum's basin; bool (...).

        Each subclass documents its definition; non-finite points never do.
        """

    def log_density(self, theta: torch.Tensor) -> torch.Tensor:
        """log p(θ) = −U(θ), shape (...): a ``log_posterior`` for the samplers, whose temperature makes it −U/T."""
        return -self.potential(theta)

    def squared_distance(self, theta: torch.Tensor) -> torch.Tensor:
        """|θ − θ*|², shape (...); divided by dim it is the mean squared error to the optimal weights."""
        self._check(theta)
        return ((theta - self.minimum.to(theta)) ** 2).sum(dim=-1)

    def _check(self, theta: torch.Tensor) -> None:
        if theta.shape[-1:] != (self.dim,):
            raise ValueError(f"theta must have shape (..., {self.dim}), got {tuple(theta.shape)}")
        if not theta.is_floating_point():
            # the landscape's constants would be cast to an integer dtype, truncated
            raise TypeError(f"theta must be floating point, got {theta.dtype}")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(dim={self.dim})"


def _finite(theta: torch.Tensor) -> torch.Tensor:
    return torch.isfinite(theta).all(dim=-1)


class Quadratic(Landscape):
    """U(θ) = ½ θᵀ H θ with H = Q diag(λ) Qᵀ: the convex quadratic bowl, minimum 0 at θ* = 0.

    The curvatures λ_i = curvature · κ^(i/(dim−1)) are log-spaced from ``curvature`` to
    ``curvature · condition_number`` (κ = 1: the symmetric bowl λ = curvature). Q = I aligns the
    axes of the ellipsoid with the coordinates, where Adam's per-coordinate step scaling undoes the
    ill-conditioning; ``rotated=True`` takes for Q the orthonormal DCT-II basis, a fixed dense
    rotation (in 2-D the 45° turn), so that it cannot: rescaling each coordinate leaves a
    condition number near κ in every dim (88–100 of κ = 100 up to dim 32). ∇U = Hθ. Convex, so
    every finite point is in the global basin.

    Gradient descent is stable for η < 2/λ_max. SGLD at a constant step η and temperature T is
    then, along each eigenvector, the AR(1) chain x' = (1 − ηλ)x + sqrt(2ηT)ξ, whose stationary
    variance is T / (λ (1 − ηλ/2)) (see :meth:`stationary_covariance`).
    """

    start_box = (-3.0, 3.0)

    def __init__(
        self, dim: int = 2, condition_number: float = 1.0, rotated: bool = False, curvature: float = 1.0
    ) -> None:
        super().__init__(dim)
        self.condition_number = positive("condition_number", condition_number)
        if self.condition_number < 1:
            raise ValueError(f"condition_number must be >= 1, got {condition_number}")
        if dim == 1 and self.condition_number != 1:
            raise ValueError(f"a 1-D quadratic has one curvature: condition_number must be 1, got {condition_number}")
        self.curvature = positive("curvature", curvature)
        self.rotated = flag("rotated", rotated)
        exponents = torch.arange(dim, dtype=torch.float64) / max(dim - 1, 1)
        self.curvatures = self.curvature * self.condition_number**exponents
        """λ, shape (dim,): the eigenvalues of H."""
        self.rotation = torch.eye(dim, dtype=torch.float64)
        """Q, shape (dim, dim): H's eigenvectors as columns."""
        if rotated:
            from scipy import fft  # imported on use: ``import sgmcmc`` loads this module

            self.rotation = torch.from_numpy(fft.dct(np.eye(dim), norm="ortho", axis=0).T.copy())
        self.hessian = self.rotation @ torch.diag(self.curvatures) @ self.rotation.T
        """H, shape (dim, dim)."""

    def potential(self, theta: torch.Tensor) -> torch.Tensor:
        self._check(theta)
        return 0.5 * (theta * (theta @ self.hessian.to(theta))).sum(dim=-1)

    def gradient(self, theta: torch.Tensor) -> torch.Tensor:
        self._check(theta)
        return theta @ self.hessian.to(theta)

    @property
    def minimum(self) -> torch.Tensor:
        return torch.zeros(self.dim, dtype=torch.float64)

    def in_global_basin(self, theta: torch.Tensor) -> torch.Tensor:
        """Every finite point: the bowl is convex."""
        self._check(theta)
        return _finite(theta)

    def stationary_covariance(self, step_size: float, temperature: float = 1.0) -> torch.Tensor:
        """The exact stationary covariance of constant-step SGLD on exp(−U/T), shape (dim, dim).

        Q diag(T / (λ_i (1 − η λ_i / 2))) Qᵀ, from v = (1 − ηλ)² v + 2ηT per eigen-direction; it tends
        to the target's T H⁻¹ as η → 0. Requires η < 2/λ_max (otherwise the chain diverges).
        """
        step_size, temperature = positive("step_size", step_size), nonnegative("temperature", temperature)
        if step_size * float(self.curvatures.max()) >= 2:
            raise ValueError(f"step_size must be < 2/λ_max = {2 / float(self.curvatures.max())}, got {step_size}")
        variances = temperature / (self.curvatures * (1 - step_size * self.curvatures / 2))
        return self.rotation @ torch.diag(variances) @ self.rotation.T

    def __repr__(self) -> str:
        return (
            f"Quadratic(dim={self.dim}, condition_number={self.condition_number:g}, rotated={self.rotated}, "
            f"curvature={self.curvature:g})"
        )


class IsotropicGaussian(Quadratic):
    """U(θ) = |θ|² / (2σ²): exp(−U/T) is N(0, Tσ² I), and at σ = 1 the gradient is θ itself.

    Seed 000's validation target ("a standard distribution whose gradient is equal to its
    parameter w"). Constant-step SGLD leaves N(0, v I) stationary with the discrete-time variance
    v = Tσ² / (1 − η/(2σ²)), not Tσ² (:meth:`Quadratic.stationary_covariance`).
    """

    def __init__(self, dim: int = 2, scale: float = 1.0) -> None:
        self.scale = positive("scale", scale)
        super().__init__(dim, curvature=1.0 / self.scale**2)

    def __repr__(self) -> str:
        return f"IsotropicGaussian(dim={self.dim}, scale={self.scale:g})"


class Ackley(Landscape):
    """Ackley's function (Ackley 1987; the d-dimensional form of Bäck 1996, Sec. 3.3.3):

        U(θ) = −a exp(−b sqrt(mean_i θ_i²)) − exp(mean_i cos(c θ_i)) + a + e,

    with a = 20, b = 0.2, c = 2π by default; global minimum U(0) = 0. The cosine term puts a local
    minimum near every point of the integer lattice; the exponential term tilts them towards the
    origin. With r = sqrt(mean θ²) and s = mean cos(cθ),

        ∂U/∂θ_i = a b exp(−b r) θ_i / (dim · r) + c exp(s) sin(c θ_i) / dim,

    whose first term is set to 0 at θ = 0, where U has a cone-shaped kink (its subgradient).

    **Global basin:** max_i |θ_i| < 1/2, the lattice cell of the origin. Between the origin and its
    lattice neighbours the ridge of U lies beyond |θ_i| = 1/2 (the tilt pushes it outward), so the
    cell lies inside the basin of attraction of 0; tests/test_landscapes.py checks that gradient
    descent from points of the cell reaches 0.
    """

    start_box = (-4.0, 4.0)

    def __init__(self, dim: int = 2, a: float = 20.0, b: float = 0.2, c: float = 2 * math.pi) -> None:
        super().__init__(dim)
        self.a, self.b, self.c = positive("a", a), positive("b", b), positive("c", c)

    def potential(self, theta: torch.Tensor) -> torch.Tensor:
        self._check(theta)
        # vector_norm's gradient at 0 is 0 (the subgradient), where sqrt(mean θ²) would give NaN
        radius = torch.linalg.vector_norm(theta, dim=-1) / math.sqrt(self.dim)
        mean_cosine = torch.cos(self.c * theta).mean(dim=-1)
        return -self.a * torch.expm1(-self.b * radius) + (math.e - torch.exp(mean_cosine))

    def gradient(self, theta: torch.Tensor) -> torch.Tensor:
        self._check(theta)
        radius = torch.linalg.vector_norm(theta, dim=-1, keepdim=True) / math.sqrt(self.dim)
        safe_radius = torch.where(radius > 0, radius, torch.ones_like(radius))
        cone = self.a * self.b * torch.exp(-self.b * radius) * theta / (self.dim * safe_radius)
        ripples = self.c * torch.exp(torch.cos(self.c * theta).mean(dim=-1, keepdim=True)) * torch.sin(self.c * theta)
        return torch.where(radius > 0, cone, torch.zeros_like(cone)) + ripples / self.dim

    @property
    def minimum(self) -> torch.Tensor:
        return torch.zeros(self.dim, dtype=torch.float64)

    @property
    def minimum_value(self) -> float:
        return 0.0

    def in_global_basin(self, theta: torch.Tensor) -> torch.Tensor:
        """max_i |θ_i| < 1/2 (the origin's lattice cell, for the default c = 2π)."""
        self._check(theta)
        return (theta.abs() < math.pi / self.c).all(dim=-1)

    def __repr__(self) -> str:
        return f"Ackley(dim={self.dim}, a={self.a:g}, b={self.b:g}, c={self.c:g})"


class Rosenbrock(Landscape):
    """The (extended) Rosenbrock function (Rosenbrock 1960; the chained form of Dixon & Mills 1994):

        U(θ) = Σ_{i=1}^{dim−1} [ b (θ_{i+1} − θ_i²)² + (1 − θ_i)² ],   b = 100,

    global minimum U = 0 at θ* = (1, …, 1), at the end of a narrow curved valley.

        ∂U/∂θ_i = −4b θ_i (θ_{i+1} − θ_i²) − 2(1 − θ_i)   [i < dim]   + 2b (θ_i − θ_{i−1}²)   [i > 1].

    **Global basin:** for dim ≤ 3 the global minimiser is the only local minimum (Shang & Qiu 2006,
    Evolutionary Computation 14(1)), so every finite point. For 4 ≤ dim ≤ 7 there is exactly one more,
    with θ_1 < 0 (U ≈ 3.70 at (−0.78, 0.61, 0.38, 0.15) for dim = 4; it tends to (−1, 1, …, 1) as dim
    grows): for dim ≥ 4 a point counts as in the global basin when θ_1 > 0, a proxy for the basin
    boundary, which is not known in closed form. Defined for dim ≥ 2.
    """

    start_box = (-2.0, 2.0)

    def __init__(self, dim: int = 2, b: float = 100.0) -> None:
        super().__init__(count("dim", dim, 2))
        self.b = positive("b", b)

    def potential(self, theta: torch.Tensor) -> torch.Tensor:
        self._check(theta)
        head, tail = theta[..., :-1], theta[..., 1:]
        return (self.b * (tail - head**2) ** 2 + (1 - head) ** 2).sum(dim=-1)

    def gradient(self, theta: torch.Tensor) -> torch.Tensor:
        self._check(theta)
        head, tail = theta[..., :-1], theta[..., 1:]
        valley = tail - head**2
        as_head = torch.nn.functional.pad(-4 * self.b * head * valley - 2 * (1 - head), (0, 1))
        as_tail = torch.nn.functional.pad(2 * self.b * valley, (1, 0))
        return as_head + as_tail

    @property
    def minimum(self) -> torch.Tensor:
        return torch.ones(self.dim, dtype=torch.float64)

    @property
    def minimum_value(self) -> float:
        return 0.0

    def in_global_basin(self, theta: torch.Tensor) -> torch.Tensor:
        """Every finite point for dim ≤ 3; θ_1 > 0 (and finite) for dim ≥ 4."""
        self._check(theta)
        if self.dim <= 3:
            return _finite(theta)
        return _finite(theta) & (theta[..., 0] > 0)

    def __repr__(self) -> str:
        return f"Rosenbrock(dim={self.dim}, b={self.b:g})"


class DoubleWell(Landscape):
    """A tilted double well in every coordinate: U(θ) = Σ_i [(θ_i² − 1)² + τ θ_i].

    At tilt τ = 0 each coordinate is the SGHMC paper's U(θ) = −2θ² + θ⁴ (Chen, Fox & Guestrin 2014,
    Fig. 1) plus 1, with two equal wells at ±1; a tilt 0 < τ < 8/(3√3) keeps both wells and makes the
    left one the global minimum. ∂U/∂θ_i = 4θ_i³ − 4θ_i + τ; its roots x_left < x_barrier < x_right
    are those of the depressed cubic x³ − x + τ/4 = 0 (trigonometric form), so the global minimiser
    is θ* = (x_left, …, x_left), 2^dim − 1 other minima sit at the corners with some x_right, and
    the barrier per coordinate is U(x_barrier) − U(x_right) above the right well.

    **Global basin:** every θ_i < x_barrier. U is a sum over coordinates, so gradient flow moves
    each coordinate in its own 1-D potential, whose left basin is exactly x < x_barrier.
    """

    start_box = (-2.0, 2.0)

    def __init__(self, dim: int = 2, tilt: float = 0.5) -> None:
        super().__init__(dim)
        self.tilt = positive("tilt", tilt)
        if self.tilt >= 8 / (3 * math.sqrt(3)):
            raise ValueError(f"tilt must be < 8/(3√3) ≈ 1.54 for two wells to exist, got {tilt}")
        angle = math.acos(-3 * math.sqrt(3) * self.tilt / 8) / 3
        roots = sorted(2 / math.sqrt(3) * math.cos(angle - 2 * math.pi * k / 3) for k in range(3))
        self.left_well, self.barrier, self.right_well = roots
        """The critical points of one coordinate: global well, barrier top, local well."""

    def _coordinate_potential(self, x: torch.Tensor | float) -> torch.Tensor | float:
        return (x**2 - 1) ** 2 + self.tilt * x

    def potential(self, theta: torch.Tensor) -> torch.Tensor:
        self._check(theta)
        return self._coordinate_potential(theta).sum(dim=-1)

    def gradient(self, theta: torch.Tensor) -> torch.Tensor:
        self._check(theta)
        return 4 * theta**3 - 4 * theta + self.tilt

    @property
    def minimum(self) -> torch.Tensor:
        return torch.full((self.dim,), self.left_well, dtype=torch.float64)

    @property
    def barrier_height(self) -> float:
        """U(x_barrier) − U(x_right): the climb out of the local well, per coordinate."""
        return self._coordinate_potential(self.barrier) - self._coordinate_potential(self.right_well)

    def in_global_basin(self, theta: torch.Tensor) -> torch.Tensor:
        """Every θ_i < x_barrier (and finite)."""
        self._check(theta)
        return _finite(theta) & (theta < self.barrier).all(dim=-1)

    def __repr__(self) -> str:
        return f"DoubleWell(dim={self.dim}, tilt={self.tilt:g})"


LANDSCAPES: dict[str, Callable[[int], Landscape]] = {
    "quadratic": lambda dim: Quadratic(dim),
    "ill-conditioned": lambda dim: Quadratic(dim, condition_number=100.0, rotated=True),
    "ackley": lambda dim: Ackley(dim),
    "rosenbrock": lambda dim: Rosenbrock(dim),
    "gaussian": lambda dim: IsotropicGaussian(dim),
    "double-well": lambda dim: DoubleWell(dim),
}
"""The named landscapes of ``sgmcmc landscape NAME``: name -> constructor taking ``dim``. "ill-conditioned" is
the quadratic with condition number 100, rotated so that its axes are not the coordinates (45° in 2-D)."""


def make_landscape(name: str, dim: int = 2) -> Landscape:
    """The landscape ``name`` (a key of :data:`LANDSCAPES`) in ``dim`` dimensions."""
    if name not in LANDSCAPES:
        raise ValueError(f"name must be one of {sorted(LANDSCAPES)}, got {name!r}")
    return LANDSCAPES[name](dim)

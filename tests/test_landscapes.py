"""Landscapes: known values and minima, analytic gradients against autograd, basins, and as sampler targets."""

import math

import numpy as np
import pytest
import torch

import sgmcmc
from sgmcmc.landscapes import (
    LANDSCAPES,
    Ackley,
    DoubleWell,
    IsotropicGaussian,
    Quadratic,
    Rosenbrock,
    make_landscape,
)
from targets import K_SIGMA, mean_and_se

ALL_LANDSCAPES = [
    pytest.param(factory, dim, id=f"{name}-{dim}d")
    for name, factory in LANDSCAPES.items()
    for dim in (1, 2, 3, 5)
    if not (name in ("rosenbrock", "ill-conditioned") and dim == 1)
]


def _random_points(landscape, shape, seed=0):
    generator = torch.Generator().manual_seed(seed)
    low, high = landscape.start_box
    return low + (high - low) * torch.rand(*shape, landscape.dim, generator=generator, dtype=torch.float64)


@pytest.mark.parametrize(("factory", "dim"), ALL_LANDSCAPES)
def test_analytic_gradient_equals_autograd(factory, dim):
    landscape = factory(dim)
    theta = _random_points(landscape, (4, 3)).requires_grad_()
    potential = landscape.potential(theta)
    assert potential.shape == (4, 3)
    (autograd,) = torch.autograd.grad(potential.sum(), theta)
    torch.testing.assert_close(landscape.gradient(theta.detach()), autograd, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize(("factory", "dim"), ALL_LANDSCAPES)
def test_minimum_is_stationary_and_lowest(factory, dim):
    landscape = factory(dim)
    minimum = landscape.minimum
    assert minimum.shape == (dim,)
    assert float(landscape.potential(minimum)) == pytest.approx(landscape.minimum_value, abs=1e-12)
    torch.testing.assert_close(landscape.gradient(minimum), torch.zeros(dim, dtype=torch.float64), atol=1e-12, rtol=0)
    assert bool(landscape.in_global_basin(minimum))
    assert float(landscape.squared_distance(minimum)) == 0.0
    others = _random_points(landscape, (20_000,), seed=1)
    assert float(landscape.potential(others).min()) > landscape.minimum_value
    torch.testing.assert_close(landscape.log_density(others), -landscape.potential(others))


def test_known_values():
    two = lambda *values: torch.tensor(values, dtype=torch.float64)  # noqa: E731
    # Ackley at a lattice point: both cosines are 1, so U = a (1 − exp(−b r)) with r = sqrt(mean θ²)
    assert float(Ackley(2).potential(two(1.0, 0.0))) == pytest.approx(20 * (1 - math.exp(-0.2 / math.sqrt(2))))
    assert float(Ackley(3).potential(two(0.0, 0.0, 0.0))) == 0.0
    assert float(Rosenbrock(2).potential(two(0.0, 0.0))) == 1.0
    assert float(Rosenbrock(2).potential(two(-1.0, 1.0))) == 4.0
    assert float(Rosenbrock(3).potential(two(1.0, 1.0, 2.0))) == 100.0
    quadratic = Quadratic(2, condition_number=9.0)
    assert float(quadratic.potential(two(1.0, 1.0))) == pytest.approx(0.5 * (1 + 9))
    assert float(IsotropicGaussian(3, scale=2.0).potential(two(2.0, 0.0, 0.0))) == pytest.approx(0.5)
    torch.testing.assert_close(IsotropicGaussian(2).gradient(two(0.3, -1.2)), two(0.3, -1.2))  # seed 000's target


def test_rotated_quadratic_has_the_stated_eigenvalues_off_the_axes():
    quadratic = Quadratic(3, condition_number=100.0, rotated=True)
    torch.testing.assert_close(torch.linalg.eigvalsh(quadratic.hessian), torch.tensor([1.0, 10.0, 100.0]).double())
    assert abs(float(quadratic.hessian[0, 1])) > 1.0  # not diagonal: Adam's per-coordinate scaling cannot undo it
    assert float(Quadratic(3, condition_number=100.0).hessian[0, 1]) == 0.0


def test_double_well_roots_and_exact_basin():
    well = DoubleWell(1, tilt=0.5)
    roots = torch.tensor([well.left_well, well.barrier, well.right_well], dtype=torch.float64)[:, None]
    torch.testing.assert_close(well.gradient(roots), torch.zeros(3, 1, dtype=torch.float64), atol=1e-12, rtol=0)
    assert well.potential(roots[:1]) < well.potential(roots[2:]) < well.potential(roots[1:2])
    assert well.barrier_height == pytest.approx(float(well.potential(roots[1:2]) - well.potential(roots[2:])))
    # gradient flow from either side of the barrier ends in the well on that side, as in_global_basin says
    theta = torch.tensor([[well.barrier - 1e-3, well.barrier + 1e-3]], dtype=torch.float64).T
    assert well.barrier > 1e-3 and well.in_global_basin(theta).tolist() == [True, False]  # split at the barrier, not 0
    for _ in range(5000):
        theta = theta - 0.01 * well.gradient(theta)
    torch.testing.assert_close(theta[:, 0], torch.tensor([well.left_well, well.right_well]).double())
    assert well.in_global_basin(roots).tolist() == [True, False, False]
    np.testing.assert_allclose(DoubleWell(2, tilt=1e-9).minimum.numpy(), [-1.0, -1.0], atol=1e-9)
    with pytest.raises(ValueError, match="tilt"):
        DoubleWell(2, tilt=1.6)


@pytest.mark.parametrize("dim", [2, 5])
def test_gradient_descent_from_the_ackley_cell_reaches_the_origin(dim):
    """The documented basin (max |θ_i| < 1/2) lies inside the basin of attraction of 0."""
    ackley = Ackley(dim)
    theta = 0.499 * (2 * torch.rand(300, dim, generator=torch.Generator().manual_seed(0), dtype=torch.float64) - 1)
    theta[0] = 0.499  # the corner of the cell
    assert ackley.in_global_basin(theta).all()
    lattice_neighbour = torch.zeros(1, dim, dtype=torch.float64)
    lattice_neighbour[0, 0] = 0.95
    for _ in range(1000):
        theta = theta - 0.004 * ackley.gradient(theta)
        lattice_neighbour = lattice_neighbour - 0.004 * ackley.gradient(lattice_neighbour)
    assert float(theta.abs().max()) < 0.01
    assert not ackley.in_global_basin(lattice_neighbour) and float(lattice_neighbour[0, 0]) > 0.9  # a local minimum


@pytest.mark.parametrize(("factory", "dim"), ALL_LANDSCAPES)
def test_a_non_finite_point_is_in_no_basin(factory, dim):
    landscape = factory(dim)
    minimum = landscape.minimum
    for value in (math.nan, math.inf, -math.inf):
        point = minimum.clone()
        point[0] = value
        assert not bool(landscape.in_global_basin(point)), value


def test_the_ackley_cell_scales_with_c():
    """The cell of the origin's lattice is max_i |θ_i| < π/c: 0.7 lies inside it at c = 4 (π/4 = 0.785), not at
    c = 2π (1/2), and gradient descent from it reaches the origin at c = 4."""
    point = torch.full((2,), 0.7, dtype=torch.float64)
    assert bool(Ackley(2, c=4.0).in_global_basin(point)) and not bool(Ackley(2).in_global_basin(point))
    ackley = Ackley(2, c=4.0)
    theta = point.clone()
    for _ in range(5000):
        theta = theta - 0.01 * ackley.gradient(theta)
    assert float(theta.abs().max()) < 0.05  # GD jitters about the kink at 0; the next minima lie near 2π/c = 1.57


def test_rosenbrock_basin_separates_the_second_minimum_in_four_dimensions():
    rosenbrock = Rosenbrock(4)
    theta = torch.tensor([-1.0, 1.0, 1.0, 1.0], dtype=torch.float64)
    for _ in range(20_000):
        theta = theta - 1e-3 * rosenbrock.gradient(theta)
    assert float(rosenbrock.gradient(theta).abs().max()) < 1e-3  # a stationary point …
    assert float(rosenbrock.potential(theta)) == pytest.approx(3.70, abs=0.01)  # … that is not the global minimum
    assert not rosenbrock.in_global_basin(theta)
    # in 3-D the same θ_1 < 0 start is in the global basin: gradient descent from it reaches θ*
    rosenbrock_3d, theta_3d = Rosenbrock(3), theta[:3].clone()
    assert rosenbrock_3d.in_global_basin(theta_3d)
    for _ in range(20_000):
        theta_3d = theta_3d - 1e-3 * rosenbrock_3d.gradient(theta_3d)
    torch.testing.assert_close(theta_3d, rosenbrock_3d.minimum, atol=1e-3, rtol=0)
    assert not Rosenbrock(3).in_global_basin(torch.tensor([math.nan, 0.0, 0.0]))


def test_make_landscape_and_shape_checks():
    assert isinstance(make_landscape("ill-conditioned", 4), Quadratic)
    with pytest.raises(ValueError, match="name must be one of"):
        make_landscape("himmelblau")
    with pytest.raises(ValueError, match=r"shape \(\.\.\., 3\)"):
        Ackley(3).potential(torch.zeros(2))
    with pytest.raises(ValueError, match="dim"):
        Rosenbrock(1)


@pytest.mark.parametrize(
    ("landscape", "step_size", "temperature"),
    [
        (IsotropicGaussian(2, scale=2.0), 2.0, 0.5),
        (Quadratic(2, condition_number=4.0, rotated=True), 0.3, 1.0),
    ],
    ids=["gaussian", "rotated-quadratic"],
)
def test_sgld_on_the_log_density_has_the_exact_discrete_time_covariance(landscape, step_size, temperature):
    """−U as log_posterior and the sampler's T: mean 0 and covariance Q diag(T / (λ(1 − ηλ/2))) Qᵀ, within
    K_SIGMA Monte Carlo standard errors, and distinguishable from the continuous-time T H⁻¹."""
    trace = sgmcmc.SGLD(landscape.log_density, step_size=step_size, temperature=temperature).sample(
        torch.zeros(2, dtype=torch.float64), num_chains=8, num_steps=3000, burn_in=100, seed=4, progress=False
    )
    draws = trace.posterior["theta"]
    exact = landscape.stationary_covariance(step_size, temperature).numpy()
    continuous = temperature * torch.linalg.inv(landscape.hessian).numpy()
    for i in range(2):
        mean, se = mean_and_se(draws[..., i])
        assert abs(mean) < K_SIGMA * se
        for j in range(2):
            product, product_se = mean_and_se(draws[..., i] * draws[..., j])
            assert abs(product - exact[i, j]) < K_SIGMA * product_se, (i, j, product, exact[i, j])
        variance, variance_se = mean_and_se(draws[..., i] ** 2)
        assert abs(variance - continuous[i, i]) > K_SIGMA * variance_se, "cannot tell the discrete-time law apart"


@pytest.mark.parametrize("dim", [2, 3, 4, 5, 10])
def test_rotated_quadratic_stays_ill_conditioned_whatever_each_coordinate_is_scaled_by(dim):
    """What Adam's per-coordinate step sizes can undo is a diagonal rescaling; the best one (Jacobi,
    H_ii = 1) leaves H's condition number near κ. Before, each coordinate pair was turned by 45°, which
    left a condition number of κ^(1/(dim − 1)): 10 at dim 3, 1.7 at dim 10. In 2-D the rotation is that
    45° turn (the CLI's default 'ill-conditioned' landscape, in the docs' tables)."""
    quadratic = Quadratic(dim, condition_number=100.0, rotated=True)
    torch.testing.assert_close(quadratic.rotation.T @ quadratic.rotation, torch.eye(dim, dtype=torch.float64))
    torch.testing.assert_close(torch.linalg.eigvalsh(quadratic.hessian), quadratic.curvatures)
    scale = quadratic.hessian.diagonal().rsqrt()
    assert float(torch.linalg.cond(scale[:, None] * quadratic.hessian * scale[None, :])) > 80.0
    torch.testing.assert_close(
        make_landscape("ill-conditioned").hessian,
        torch.tensor([[50.5, -49.5], [-49.5, 50.5]], dtype=torch.float64),
        rtol=1e-12,
        atol=0,
    )


def test_squared_distance_is_the_squared_euclidean_distance_to_the_minimiser():
    theta = torch.tensor([[0.0, 3.0], [1.0, 1.0]], dtype=torch.float64)
    torch.testing.assert_close(Rosenbrock(2).squared_distance(theta), torch.tensor([5.0, 0.0], dtype=torch.float64))


def test_landscapes_refuse_integer_points_and_a_one_dimensional_condition_number():
    """An integer θ cast the landscape's constants to integers: IsotropicGaussian(scale=2) at [2, 0] gave 0."""
    for landscape in (make_landscape("gaussian", 2), make_landscape("ill-conditioned", 2), make_landscape("ackley", 2)):
        for method in (landscape.potential, landscape.gradient, landscape.squared_distance):
            with pytest.raises(TypeError, match="theta must be floating point, got torch.int64"):
                method(torch.tensor([2, 0]))
    with pytest.raises(ValueError, match=r"theta must have shape \(\.\.\., 3\), got \(4, 1\)"):
        Rosenbrock(3).squared_distance(torch.zeros(4, 1))
    with pytest.raises(ValueError, match="a 1-D quadratic has one curvature"):
        Quadratic(1, condition_number=100.0)


def test_stationary_covariance_refuses_an_unstable_step():
    """At η ≥ 2/λ_max the chain is unstable and the formula would give a negative or infinite variance."""
    quadratic = Quadratic(2, condition_number=4.0)  # λ_max = 4
    assert torch.all(torch.diagonal(quadratic.stationary_covariance(0.49)) > 0)
    for step_size in (0.5, 0.7):
        with pytest.raises(ValueError, match="step_size must be < 2/λ_max"):
            quadratic.stationary_covariance(step_size)

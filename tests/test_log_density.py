"""The minibatch log posterior: unbiased for the full-data one, in value and gradient."""

import pytest
import torch

import sgmcmc
from targets import ConjugateLinearRegression


def test_average_over_a_partition_of_batches_is_the_full_log_posterior():
    model = ConjugateLinearRegression.make(num_data=120, dim=3, seed=1)
    log_posterior = model.log_posterior()
    weights = torch.tensor([0.3, -0.2, 1.1], dtype=torch.float64, requires_grad=True)
    full = model.log_prior(weights) + model.log_likelihood(weights, (model.features, model.targets)).sum()
    batches = list(sgmcmc.Minibatches(model.features, model.targets, batch_size=30))
    average = sum(log_posterior(weights, batch) for batch in batches) / len(batches)
    torch.testing.assert_close(average, full)
    (full_gradient,) = torch.autograd.grad(full, weights)
    (average_gradient,) = torch.autograd.grad(average, weights)
    torch.testing.assert_close(average_gradient, full_gradient)


def test_scaling_is_n_over_batch_size():
    log_posterior = sgmcmc.minibatch_log_posterior(
        lambda theta: torch.tensor(0.0), lambda theta, batch: torch.ones(len(batch)), num_data=1000
    )
    assert log_posterior(None, torch.zeros(10)).item() == pytest.approx(1000.0)


def test_errors():
    with pytest.raises(ValueError, match="num_data must be >= 1"):
        sgmcmc.minibatch_log_posterior(lambda p: p, lambda p, b: b, num_data=0)
    with pytest.raises(TypeError, match="callables"):
        sgmcmc.minibatch_log_posterior(None, lambda p, b: b, num_data=1)
    summed = sgmcmc.minibatch_log_posterior(lambda p: p.sum(), lambda p, b: (b * p).sum(), num_data=10)
    with pytest.raises(ValueError, match=r"one value per example, shape \(\|B\|,\); got \(\)"):
        summed(torch.ones(()), torch.ones(3))


def test_hessian_vector_product_for_every_chain():
    from sgmcmc.log_density import BoundPotential, ChainPotential

    matrix = torch.tensor([[2.0, 0.5], [0.5, 1.0]], dtype=torch.float64)
    potential = ChainPotential(lambda theta: -0.5 * theta @ matrix @ theta, lambda p: p["theta"], False, False)
    params = {"theta": torch.tensor([[1.0, 2.0], [-1.0, 0.5], [0.0, 3.0]], dtype=torch.float64)}
    tangent = {"theta": torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, -1.0]], dtype=torch.float64)}
    value, gradient, product = BoundPotential(potential, None).with_hessian_vector_product(params, tangent)
    torch.testing.assert_close(gradient["theta"], -params["theta"] @ matrix)
    torch.testing.assert_close(product["theta"], -tangent["theta"] @ matrix)
    torch.testing.assert_close(value, -0.5 * ((params["theta"] @ matrix) * params["theta"]).sum(dim=1))

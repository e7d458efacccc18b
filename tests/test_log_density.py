"""The minibatch log posterior: unbiased for the full-data one, in value and gradient."""

import pytest
import torch
from torch.func import grad_and_value, vmap

import sgmcmc
from sgmcmc.log_density import BoundPotential, ChainPotential
from sgmcmc.models import Classification, ModulePosterior
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


def test_a_likelihood_summed_over_the_wrong_dim_is_refused_not_rescaled():
    """Before, 3 terms for a batch of 50 rows were scaled by N/3: LD's posterior sd came out 18 times too small."""
    data = torch.randn(50, 3)
    per_feature = sgmcmc.minibatch_log_posterior(
        lambda p: -0.5 * (p**2).sum(), lambda p, x: -0.5 * ((x - p) ** 2).sum(0), num_data=1000
    )
    with pytest.raises(ValueError, match=r"got 3 values for a batch whose tensors have \[50\] rows"):
        per_feature(torch.ones(3), data)
    # the rows may sit in any leaf: a dict batch that holds a per-batch tensor first
    per_example = sgmcmc.minibatch_log_posterior(
        lambda p: -0.5 * (p**2).sum(), lambda p, b: -0.5 * ((b["x"] - p) ** 2).sum(1), num_data=1000
    )
    per_example(torch.ones(3), {"a_scale": torch.ones(7), "x": data})


def test_hessian_vector_product_for_every_chain():
    matrix = torch.tensor([[2.0, 0.5], [0.5, 1.0]], dtype=torch.float64)
    potential = ChainPotential(lambda theta: -0.5 * theta @ matrix @ theta, lambda p: p["theta"], False, False)
    params = {"theta": torch.tensor([[1.0, 2.0], [-1.0, 0.5], [0.0, 3.0]], dtype=torch.float64)}
    tangent = {"theta": torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, -1.0]], dtype=torch.float64)}
    value, gradient, product = BoundPotential(potential, None).with_hessian_vector_product(params, tangent)
    torch.testing.assert_close(gradient["theta"], -params["theta"] @ matrix)
    torch.testing.assert_close(product["theta"], -tangent["theta"] @ matrix)
    torch.testing.assert_close(value, -0.5 * ((params["theta"] @ matrix) * params["theta"]).sum(dim=1))


def _mlp_potential(batch_per_chain: bool, dtype: torch.dtype, num_chains: int = 4):
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.Tanh(), torch.nn.Linear(7, 3)).to(dtype)
    posterior = ModulePosterior(module, Classification(), num_data=100)
    params = {name: value.to(dtype) for name, value in posterior.initial_params(num_chains, seed=0).items()}
    shape = (num_chains, 16) if batch_per_chain else (16,)
    batch = (torch.randn(*shape, 5, dtype=dtype), torch.randint(0, 3, shape))
    return posterior, ChainPotential(posterior.log_posterior, lambda p: p, True, batch_per_chain), params, batch


@pytest.mark.parametrize("num_chains", [4, 1])
@pytest.mark.parametrize("batch_per_chain", [True, False], ids=["own batches", "shared batch"])
def test_every_chains_gradient_is_the_autograd_gradient_of_its_own_log_posterior(batch_per_chain, num_chains):
    posterior, potential, params, batch = _mlp_potential(batch_per_chain, torch.float64, num_chains)
    value, gradient = potential(params, batch)
    assert value.shape == (num_chains,) and all(gradient[name].shape == params[name].shape for name in params)
    for chain in range(num_chains):
        leaves = {name: param[chain].clone().requires_grad_() for name, param in params.items()}
        chain_batch = tuple(part[chain] for part in batch) if batch_per_chain else batch
        chain_value = posterior.log_posterior(leaves, chain_batch)
        chain_gradient = torch.autograd.grad(chain_value, tuple(leaves.values()))
        torch.testing.assert_close(value[chain], chain_value.detach())
        for name, expected in zip(leaves, chain_gradient, strict=True):
            torch.testing.assert_close(gradient[name][chain], expected)
    # the compiled step's path, vmap(grad_and_value), gives the same values
    functorch_gradient, functorch_value = vmap(
        grad_and_value(posterior.log_posterior), in_dims=(0, 0 if batch_per_chain else None)
    )(params, batch)
    torch.testing.assert_close(value, functorch_value)
    torch.testing.assert_close(gradient, functorch_gradient)
    assert not value.requires_grad and not any(part.requires_grad for part in gradient.values())


@pytest.mark.parametrize("batch_per_chain", [True, False], ids=["own batches", "shared batch"])
def test_a_single_chain_is_evaluated_without_vmap(batch_per_chain):
    """One chain's log posterior is called on its own tensors, not through vmap, whose per-op
    wrapping costs about as much again as the gradient of a small network."""
    _, potential, params, batch = _mlp_potential(batch_per_chain, torch.float32, num_chains=1)
    seen = []

    def log_posterior(chain_params, chain_batch):
        seen.append([torch._C._functorch.is_batchedtensor(leaf) for leaf in [*chain_params.values(), *chain_batch]])
        return -sum(leaf.square().sum() for leaf in chain_params.values()) + chain_batch[0].sum()

    potential = ChainPotential(log_posterior, lambda p: p, True, batch_per_chain)
    value, gradient = potential(params, batch)
    torch.testing.assert_close(gradient, {name: -2 * param for name, param in params.items()})
    assert value.shape == (1,)
    # the value alone (a checkpoint's model check) and the Hessian-vector product too
    torch.testing.assert_close(potential.value(params, batch), value)
    tangent = {name: torch.ones_like(param) for name, param in params.items()}
    with_product = potential.with_hessian_vector_product(params, batch, tangent)
    torch.testing.assert_close(with_product, (value, gradient, {name: -2 * part for name, part in tangent.items()}))
    assert seen == [[False] * (len(params) + 2)] * 3


@pytest.mark.parametrize("num_chains", [2, 1])
def test_params_the_log_posterior_does_not_use_get_zero_gradients(num_chains):
    params = {"used": torch.tensor([[1.0, 2.0], [3.0, 4.0]])[:num_chains], "unused": torch.ones(num_chains, 3)}
    potential = ChainPotential(lambda p: -0.5 * p["used"].square().sum(), lambda p: p, False, False)
    value, gradient = potential(params)
    torch.testing.assert_close(value, torch.tensor([-2.5, -12.5])[:num_chains])
    torch.testing.assert_close(gradient["used"], -params["used"])
    torch.testing.assert_close(gradient["unused"], torch.zeros(num_chains, 3))
    constant = ChainPotential(lambda p: torch.tensor(1.5), lambda p: p, False, False)
    value, gradient = constant(params)
    torch.testing.assert_close(value, torch.tensor([1.5, 1.5])[:num_chains])
    assert all(torch.equal(gradient[name], torch.zeros_like(params[name])) for name in params)

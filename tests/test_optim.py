"""The torch.optim front doors move parameters exactly as the samplers do, for the same seed."""

import io
import math

import numpy as np
import pytest
import torch

import sgmcmc
from targets import standard_normal_log_posterior

INIT = torch.tensor([1.5, -0.5, 0.25], dtype=torch.float64)
NUM_STEPS = 25


def _run(make_optimizer, num_steps=NUM_STEPS, start=INIT, state_dict=None):
    """(θ before each of ``num_steps`` steps on N(0, I) from ``start``, the last θ, the optimizer's
    state dict), the optimizer having loaded ``state_dict`` first if given."""
    theta = torch.nn.Parameter(start.clone())
    optimizer = make_optimizer([theta])
    if state_dict is not None:
        optimizer.load_state_dict(state_dict)
    trajectory = []
    for _ in range(num_steps):
        trajectory.append(theta.detach().clone().numpy())
        optimizer.zero_grad()
        loss = -standard_normal_log_posterior(theta)
        loss.backward()
        optimizer.step()
    return np.stack(trajectory), theta.detach().clone(), optimizer.state_dict()


PAIRS = pytest.mark.parametrize(
    ("sampler", "optimizer"),
    [
        (
            lambda: sgmcmc.SGLD(standard_normal_log_posterior, step_size=0.1, temperature=0.5),
            lambda params: sgmcmc.optim.SGLD(params, lr=0.1, temperature=0.5, seed=3),
        ),
        (
            lambda: sgmcmc.SGHMC(
                standard_normal_log_posterior, step_size=0.05, friction=0.2, mass=2.0, noise_estimate=0.1
            ),
            lambda params: sgmcmc.optim.SGHMC(params, lr=0.05, friction=0.2, mass=2.0, noise_estimate=0.1, seed=3),
        ),
        (
            lambda: sgmcmc.PSGLD(standard_normal_log_posterior, step_size=0.01, alpha=0.9, eps=1e-3),
            lambda params: sgmcmc.optim.PSGLD(params, lr=0.01, alpha=0.9, eps=1e-3, seed=3),
        ),
        (
            lambda: sgmcmc.ASGLD(standard_normal_log_posterior, step_size=0.1, momentum=0.8, noise=2.0),
            lambda params: sgmcmc.optim.ASGLD(params, lr=0.1, momentum=0.8, noise=2.0, seed=3),
        ),
    ],
    ids=["SGLD", "SGHMC", "PSGLD", "ASGLD"],
)


@PAIRS
def test_optimizer_trajectory_equals_the_samplers(sampler, optimizer):
    trace = sampler().sample(INIT, num_chains=1, num_steps=NUM_STEPS, seed=3, progress=False)
    np.testing.assert_allclose(_run(optimizer)[0], trace.posterior["theta"][0], rtol=1e-12, atol=1e-14)


@PAIRS
def test_a_run_resumed_from_a_saved_state_dict_goes_on_as_the_uninterrupted_run(sampler, optimizer):
    """The state dict carries the noise stream: a resumed run does not repeat the noise it drew."""
    uninterrupted, _, _ = _run(optimizer)
    first_part, theta, state_dict = _run(optimizer, num_steps=10)
    saved = io.BytesIO()
    torch.save(state_dict, saved)
    saved.seek(0)
    resumed, _, _ = _run(optimizer, NUM_STEPS - 10, start=theta, state_dict=torch.load(saved, weights_only=True))
    np.testing.assert_array_equal(np.concatenate([first_part, resumed]), uninterrupted)


def test_a_state_dict_without_the_noise_stream_is_refused():
    theta = [torch.nn.Parameter(torch.zeros(2))]
    state_dict = sgmcmc.optim.SGLD(theta, lr=0.1).state_dict()
    del state_dict["noise_generator"]
    with pytest.raises(ValueError, match="state_dict has no 'noise_generator'"):
        sgmcmc.optim.SGLD(theta, lr=0.1).load_state_dict(state_dict)


def test_trains_an_nn_module_in_an_ordinary_loop():
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(256, 4, generator=generator)
    targets = features @ torch.tensor([1.0, -2.0, 0.5, 3.0]) + torch.randn(256, generator=generator)
    model = torch.nn.Linear(4, 1)
    optimizer = sgmcmc.optim.SGLD(model.parameters(), lr=1e-3, seed=0)
    losses = []
    for _ in range(300):
        optimizer.zero_grad()
        loss = 0.5 * ((model(features)[:, 0] - targets) ** 2).sum()  # −log likelihood, noise sd 1, flat prior
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.1 * losses[0]  # the residual sum of squares of 256 unit-noise targets stays ≈ 128
    # posterior sd ≈ 1/sqrt(256) ≈ 0.06; the draw is within 5 sd of the truth
    torch.testing.assert_close(model.weight.detach()[0], torch.tensor([1.0, -2.0, 0.5, 3.0]), atol=0.3, rtol=0)


@pytest.mark.parametrize(
    "make",
    [
        lambda p: sgmcmc.optim.SGLD(p, lr=0.1),
        lambda p: sgmcmc.optim.PSGLD(p, lr=0.1),
        lambda p: sgmcmc.optim.ASGLD(p, lr=0.1),
    ],
)
def test_an_lr_set_between_steps_is_checked_at_the_step(make):
    """An LR scheduler edits param_groups[i]["lr"]: before, NaN made every parameter NaN without a word and a
    negative value failed with 'math domain error'. 0, where a cosine schedule may end, leaves θ where it is."""
    theta = torch.nn.Parameter(torch.ones(2))
    optimizer = make([theta])
    theta.grad = torch.ones(2)
    for bad in (math.nan, -0.1):
        optimizer.param_groups[0]["lr"] = bad
        with pytest.raises(ValueError, match=f"lr of param group 0 must be a finite number >= 0, got {bad}"):
            optimizer.step()
        assert torch.equal(theta.detach(), torch.ones(2))
    optimizer.param_groups[0]["lr"] = 0.0
    optimizer.step()
    assert torch.equal(theta.detach(), torch.ones(2))


def test_sghmc_at_lr_zero_moves_by_its_faded_momentum_as_its_docstring_says():
    """The module docstring said lr 0 leaves θ still, which SGHMC's momentum does not."""
    theta = torch.nn.Parameter(torch.ones(3))
    optimizer = sgmcmc.optim.SGHMC([theta], lr=0.1, friction=0.1, seed=0)
    for _ in range(3):
        optimizer.zero_grad()
        (theta**2).sum().backward()
        optimizer.step()
    before, momentum = theta.detach().clone(), optimizer.state[theta]["momentum"][0].clone()
    optimizer.param_groups[0]["lr"] = 0.0
    optimizer.zero_grad()
    (theta**2).sum().backward()
    optimizer.step()
    torch.testing.assert_close(theta.detach(), before + 0.9 * momentum, rtol=1e-6, atol=0)
    assert (theta.detach() - before).abs().max() > 0.1


def test_the_lr_of_every_param_group_is_checked_before_any_moves():
    first, second = torch.nn.Parameter(torch.ones(2)), torch.nn.Parameter(torch.ones(2))
    optimizer = sgmcmc.optim.SGLD([{"params": [first]}, {"params": [second]}], lr=0.1)
    first.grad, second.grad = torch.ones(2), torch.ones(2)
    optimizer.param_groups[1]["lr"] = math.nan
    with pytest.raises(ValueError, match="lr of param group 1 must be a finite number >= 0, got nan"):
        optimizer.step()
    assert torch.equal(first.detach(), torch.ones(2)) and torch.equal(second.detach(), torch.ones(2))


@pytest.mark.parametrize(
    "make, name, bad, message",
    [
        (lambda p: sgmcmc.optim.SGLD(p, lr=0.1), "temperature", math.nan, "temperature must be"),
        (lambda p: sgmcmc.optim.SGLD(p, lr=0.1), "temperature", -1.0, "temperature must be"),
        (lambda p: sgmcmc.optim.SGHMC(p, lr=0.1, friction=0.1), "friction", math.nan, "friction"),
        (lambda p: sgmcmc.optim.SGHMC(p, lr=0.1, friction=0.1), "mass", 0.0, "mass must be"),
        (lambda p: sgmcmc.optim.PSGLD(p, lr=0.1), "alpha", 1.5, "alpha"),
        (lambda p: sgmcmc.optim.ASGLD(p, lr=0.1), "momentum", math.nan, "momentum"),
    ],
)
def test_other_hyperparameters_set_between_steps_are_checked_at_the_step(make, name, bad, message):
    """Before, only lr was checked at the step: a NaN temperature, friction or momentum, a zero mass or an
    alpha above 1 set in param_groups made every parameter NaN without a word (a negative temperature
    failed with 'math domain error')."""
    theta = torch.nn.Parameter(torch.ones(2))
    optimizer = make([theta])
    theta.grad = torch.ones(2)
    optimizer.param_groups[0][name] = bad
    with pytest.raises(ValueError, match=f"param group 0: .*{message}"):
        optimizer.step()
    assert torch.equal(theta.detach(), torch.ones(2))


def test_errors():
    theta = [torch.nn.Parameter(torch.zeros(2))]
    with pytest.raises(ValueError, match="lr must be a finite number > 0"):
        sgmcmc.optim.SGLD(theta, lr=0.0)
    with pytest.raises(ValueError, match="temperature"):
        sgmcmc.optim.SGLD(theta, lr=0.1, temperature=-1.0)
    with pytest.raises(ValueError, match=r"noise_estimate \(0.2\) > friction × temperature \(0.1 × 1.0\)"):
        sgmcmc.optim.SGHMC(theta, lr=0.1, friction=0.1, noise_estimate=0.2)
    with pytest.raises(ValueError, match="mass must be a finite number > 0"):
        sgmcmc.optim.SGHMC(theta, lr=0.1, friction=0.1, mass=0.0)
    with pytest.raises(ValueError, match="SGLD got no parameters: every param group is empty"):
        sgmcmc.optim.SGLD([{"params": []}], lr=0.1)  # before, a bare StopIteration


def test_complex_parameters_are_refused():
    """Before, a complex parameter was sampled with half the noise variance in each part (T/2), and
    PSGLD's square average of a complex gradient went negative."""
    real, complex_valued = torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(2, dtype=torch.cfloat))
    with pytest.raises(TypeError, match="parameter 1 of param group 0 has dtype torch.complex64"):
        sgmcmc.optim.SGLD([real, complex_valued], lr=0.1)
    optimizer = sgmcmc.optim.PSGLD([real], lr=0.1)
    with pytest.raises(TypeError, match="parameter 0 of param group 1 has dtype torch.complex64"):
        optimizer.add_param_group({"params": complex_valued})
    assert len(optimizer.param_groups) == 1


def test_named_complex_parameters_and_sets_of_parameters_are_refused():
    """Before, a (name, tensor) pair as named_parameters() yields skipped the complex check, and a set
    was turned into a list, in an order that changes between processes (so does each parameter's noise
    and the state a resumed run gives it), which torch.optim itself refuses."""
    complex_valued = torch.nn.Parameter(torch.zeros(2, dtype=torch.cfloat))
    with pytest.raises(TypeError, match="parameter 0 of param group 0 has dtype torch.complex64"):
        sgmcmc.optim.SGLD([("z", complex_valued)], lr=0.1)
    first, second = torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(3))
    for params in ({first, second}, [{"params": {first, second}}]):
        with pytest.raises(TypeError, match="not a set: a set's order changes between runs"):
            sgmcmc.optim.SGHMC(params, lr=0.1, friction=0.1)
    sgmcmc.optim.SGLD([("a", first), ("b", second)], lr=0.1)  # real named parameters are accepted


@pytest.mark.parametrize(
    ("make", "gradient", "keys"),
    [
        (lambda params: sgmcmc.optim.PSGLD(params, lr=1e-6, seed=1), 300.0, ["square_average"]),
        (lambda params: sgmcmc.optim.ASGLD(params, lr=1e-6, seed=1), 2000.0, ["mean", "variance"]),
    ],
    ids=["PSGLD", "ASGLD"],
)
def test_a_float16_run_resumed_from_its_state_dict_keeps_its_float32_moments(make, gradient, keys):
    """torch.optim's load_state_dict casts state to the parameter's dtype. Before, a resumed float16 run
    got V (or μ, C) back in float16, where 300² is inf: pSGLD's preconditioner became 0 and froze the
    parameter, and ASGLD's parameter became NaN."""

    def run(resume_at=None):
        theta = torch.nn.Parameter(torch.zeros(2, dtype=torch.float16))
        optimizer = make([theta])
        for step in range(6):
            if step == resume_at:
                saved = io.BytesIO()
                torch.save(optimizer.state_dict(), saved)
                saved.seek(0)
                optimizer = make([theta])
                optimizer.load_state_dict(torch.load(saved, weights_only=True))
            theta.grad = torch.full_like(theta, gradient * (-1) ** step)
            optimizer.step()
        return theta.detach().clone(), optimizer.state[theta]

    uninterrupted, _ = run()
    resumed, state = run(resume_at=3)
    assert torch.isfinite(uninterrupted).all() and (uninterrupted != 0).all()
    torch.testing.assert_close(resumed, uninterrupted, rtol=0, atol=0)
    assert all(state[key].dtype == torch.float32 for key in keys)


def test_a_mass_that_rounds_to_zero_or_inf_in_the_parameters_dtype_is_refused():
    """Before, mass 1e-8 became 0 in float16 and the parameter NaN after one step; 1e5 gave torch's
    "value cannot be converted to type c10::Half without overflow". The optimizer refuses it when made."""
    for mass in (1e-8, 1e5):
        theta = torch.nn.Parameter(torch.zeros(3, dtype=torch.float16))
        with pytest.raises(ValueError, match=r"mass rounds to 0 or inf in the params' dtype torch.float16"):
            sgmcmc.optim.SGHMC([theta], lr=1e-4, friction=0.1, mass=mass)
        with pytest.raises(ValueError, match=r"mass of 'theta' rounds to 0 or inf in the params' dtype torch.float16"):
            sgmcmc.SGHMC(standard_normal_log_posterior, step_size=1e-4, friction=0.1, mass=mass).sample(
                torch.zeros(3, dtype=torch.float16), num_steps=2, progress=False
            )


@pytest.mark.parametrize("name", ["SGLD", "SGHMC", "PSGLD", "ASGLD"])
def test_a_sparse_gradient_moves_the_parameter_as_its_dense_equal(name):
    """Before, SGHMC and ASGLD failed inside torch on an nn.Embedding(sparse=True) gradient."""
    moved = []
    for sparse in (True, False):
        torch.manual_seed(0)
        embedding = torch.nn.Embedding(4, 2, sparse=sparse)
        options = {"friction": 0.5} if name == "SGHMC" else {}
        optimizer = getattr(sgmcmc.optim, name)(embedding.parameters(), lr=0.1, seed=1, **options)
        for _ in range(3):
            optimizer.zero_grad()
            embedding(torch.tensor([1, 2, 2])).square().sum().backward()
            optimizer.step()
        moved.append(embedding.weight.detach())
    torch.testing.assert_close(moved[0], moved[1], rtol=1e-6, atol=1e-6)


def test_an_empty_param_group_is_accepted_as_by_torch_optim():
    theta = torch.nn.Parameter(torch.zeros(2))
    optimizer = sgmcmc.optim.SGLD([{"params": []}, {"params": [theta]}], lr=0.1)
    assert len(optimizer.param_groups) == 2


def test_decay_rates_must_be_below_one():
    theta = [torch.nn.Parameter(torch.zeros(2))]
    with pytest.raises(ValueError, match=r"alpha must be in \[0, 1\)"):
        sgmcmc.optim.PSGLD(theta, lr=0.1, alpha=1.0)
    with pytest.raises(ValueError, match=r"momentum must be in \[0, 1\)"):
        sgmcmc.optim.ASGLD(theta, lr=0.1, momentum=1.5)


def test_hyperparameters_set_per_parameter_group_are_checked():
    theta, other = torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(2))
    with pytest.raises(ValueError, match="lr must be a finite number > 0, got -1.0"):
        sgmcmc.optim.SGLD([{"params": [theta], "lr": -1.0}], lr=0.1)
    with pytest.raises(ValueError, match="friction must be <= 1"):
        sgmcmc.optim.SGHMC([{"params": [theta], "friction": 5.0}], lr=0.1, friction=0.1)
    with pytest.raises(ValueError, match="eps must be a finite number > 0"):
        sgmcmc.optim.PSGLD([{"params": [theta], "eps": 0.0}], lr=0.1)
    optimizer = sgmcmc.optim.SGHMC([theta], lr=0.1, friction=0.1)
    with pytest.raises(ValueError, match=r"noise_estimate \(0.5\) > friction × temperature \(0.1 × 1.0\)"):
        optimizer.add_param_group({"params": [other], "noise_estimate": 0.5})
    assert len(optimizer.param_groups) == 1
    optimizer = sgmcmc.optim.ASGLD([theta], lr=0.1)
    with pytest.raises(ValueError, match=r"momentum must be in \[0, 1\)"):
        optimizer.add_param_group({"params": [other], "momentum": 1.0})


def test_state_stays_with_its_parameter_when_another_has_no_gradient():
    first, second = torch.nn.Parameter(torch.ones(2)), torch.nn.Parameter(torch.ones(3))
    optimizer = sgmcmc.optim.PSGLD([first, second], lr=0.01, alpha=0.5, temperature=0.0)
    (-(second**2).sum()).backward()  # first has no gradient at step 1
    optimizer.step()
    assert "square_average" not in optimizer.state[first]
    torch.testing.assert_close(optimizer.state[second]["square_average"][0], 0.5 * (2 * torch.ones(3)) ** 2)
    optimizer.zero_grad()
    gradient_2 = 2 * second.detach().clone()
    (-(first**2).sum() - (second**2).sum()).backward()
    optimizer.step()
    torch.testing.assert_close(optimizer.state[first]["square_average"][0], 0.5 * (2 * torch.ones(2)) ** 2)
    torch.testing.assert_close(
        optimizer.state[second]["square_average"][0], 0.5 * 0.5 * (2 * torch.ones(3)) ** 2 + 0.5 * gradient_2**2
    )


MEAN_LOSS_RULE = {
    "SGLD": lambda params, step_size, num_data, mean: sgmcmc.optim.SGLD(
        params, lr=step_size * (num_data if mean else 1), temperature=1 / num_data if mean else 1.0, seed=3
    ),
    "SGHMC": lambda params, step_size, num_data, mean: sgmcmc.optim.SGHMC(
        params,
        lr=step_size * (num_data if mean else 1),
        friction=0.2,
        noise_estimate=0.1 / (num_data if mean else 1),
        temperature=1 / num_data if mean else 1.0,
        seed=3,
    ),
    "PSGLD": lambda params, step_size, num_data, mean: sgmcmc.optim.PSGLD(
        params,
        lr=step_size,
        alpha=0.9,
        eps=1e-3 / (num_data if mean else 1),
        temperature=1 / num_data if mean else 1.0,
        seed=3,
    ),
}
"""Optimizer name -> make(params, η, N, mean): on the full-data loss with η, or on the mean loss by the module
docstring's rule."""


@pytest.mark.parametrize("name", MEAN_LOSS_RULE)
def test_a_mean_loss_by_the_module_docstrings_rule_moves_as_the_full_data_loss(name):
    """The loss divided by N, with the settings the module docstring gives, is the full-data loss step for
    step (the same noise, up to rounding); the mean loss at temperature 1 is not."""
    num_data, step_size = 1000, 1e-4

    def trajectory(mean, temperature_one=False):
        theta = torch.nn.Parameter(INIT.clone())
        optimizer = MEAN_LOSS_RULE[name]([theta], step_size, num_data, mean)
        if temperature_one:
            optimizer.param_groups[0]["temperature"] = 1.0
        thetas = []
        for _ in range(NUM_STEPS):
            optimizer.zero_grad()
            (-num_data * standard_normal_log_posterior(theta) / (num_data if mean else 1)).backward()
            optimizer.step()
            thetas.append(theta.detach().clone())
        return torch.stack(thetas)

    full = trajectory(mean=False)
    np.testing.assert_allclose(trajectory(mean=True), full, rtol=1e-12)
    assert not torch.allclose(trajectory(mean=True, temperature_one=True), full, rtol=1e-3)

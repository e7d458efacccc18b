"""nn.Module posteriors: the log posterior by hand, independent inits, and R-hat on functionals."""

import warnings

import arviz as az
import numpy as np
import pytest
import torch
from scipy import stats
from sklearn.datasets import load_digits
from torch import nn

import sgmcmc
from sgmcmc.models import Classification, ModulePosterior, Regression
from sgmcmc.trace import group_dataset


def _regression_net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(1, 1, bias=False), nn.Tanh(), nn.Linear(1, 1, bias=False))


def test_log_posterior_equals_the_hand_written_one():
    net = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    posterior = ModulePosterior(net, Classification(), num_data=50, prior_scale={"*.bias": 10.0, "*": 0.5})
    params = posterior.params()
    inputs, labels = torch.randn(5, 3), torch.tensor([0, 1, 1, 0, 1])
    logits = torch.tanh(inputs @ params["0.weight"].T + params["0.bias"]) @ params["2.weight"].T + params["2.bias"]
    log_likelihood = torch.log_softmax(logits, dim=1)[torch.arange(5), labels]
    log_prior = sum(
        torch.distributions.Normal(0.0, 10.0 if name.endswith("bias") else 0.5).log_prob(value).sum()
        for name, value in params.items()
    )
    expected = log_prior + 50 / 5 * log_likelihood.sum()
    torch.testing.assert_close(posterior.log_posterior(params, (inputs, labels)), expected)
    torch.testing.assert_close(posterior.predictive(params, inputs), logits.softmax(dim=1))


def test_classification_refuses_labels_that_are_not_integers():
    """Before, a float label 0.7 (a regression target given by mistake) was truncated to class 0."""
    logits = torch.zeros(2, 3)
    with pytest.raises(TypeError, match="integer class labels as targets, got dtype torch.float32"):
        Classification().log_likelihood(logits, torch.tensor([0.7, 1.9]))
    torch.testing.assert_close(
        Classification().log_likelihood(logits, torch.tensor([0, 2])), -torch.full((2,), 3.0).log()
    )


@pytest.mark.parametrize("num_chains", [1, 2], ids=["one chain", "vmapped"])
def test_labels_outside_the_classes_are_named(num_chains):
    """Labels 1 … 3 for 3 logits (counted from 1); before, gather's "index 3 is out of bounds for dimension 1"."""
    posterior = ModulePosterior(nn.Linear(3, 3), Classification(), num_data=20)
    data = sgmcmc.Minibatches(torch.randn(20, 3), torch.arange(20) % 3 + 1, batch_size=5)
    with pytest.raises(ValueError, match="Classification takes labels 0 … 2 for logits of 3 classes"):
        sgmcmc.SGLD(posterior.log_posterior, step_size=1e-3).sample(
            posterior.params(), data, num_chains=num_chains, num_steps=2, progress=False
        )


def test_regression_likelihood_is_gaussian():
    outputs, targets = torch.tensor([[0.5], [1.0]]), torch.tensor([1.0, 1.0])
    expected = torch.distributions.Normal(outputs.squeeze(1), 0.3).log_prob(targets)
    torch.testing.assert_close(Regression(0.3).log_likelihood(outputs, targets), expected)


def test_initial_params_are_independent_reproducible_and_leave_the_global_rng_alone():
    posterior = ModulePosterior(nn.Linear(4, 3), Classification(), num_data=10)
    state = torch.random.get_rng_state()
    first = posterior.initial_params(3, seed=0)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert first["weight"].shape == (3, 3, 4)
    assert not torch.equal(first["weight"][0], first["weight"][1])
    torch.testing.assert_close(posterior.initial_params(3, seed=0), first, rtol=0, atol=0)
    # seed 1's chains start apart from seed 0's (with seed + c, seed 1's chain 0 was seed 0's chain 1)
    other = posterior.initial_params(3, seed=1)["weight"]
    assert not any(torch.equal(start, other_start) for start in first["weight"] for other_start in other)


class Scaled(nn.Module):
    """Attention with a learned temperature: a parameter of its own, on a module without reset_parameters."""

    def __init__(self):
        super().__init__()
        self.attention = nn.MultiheadAttention(4, num_heads=1, batch_first=True)  # torch's _reset_parameters
        self.temperature = nn.Parameter(torch.ones(1))

    def forward(self, inputs):
        return self.attention(inputs, inputs, inputs)[0].mean(dim=1) / self.temperature


def test_initial_params_redraw_what_torch_can_redraw_and_name_what_it_cannot():
    posterior = ModulePosterior(Scaled(), Classification(), num_data=10)
    with pytest.warns(RuntimeWarning, match=r"parameters \['temperature'\] belong to modules without reset_parameters"):
        starts = posterior.initial_params(3, seed=0)
    weights = starts["attention.in_proj_weight"]
    assert not torch.equal(weights[0], weights[1]) and not torch.equal(weights[1], weights[2])
    assert (starts["temperature"] == 1.0).all()


def test_frozen_parameters_are_held_fixed_and_have_no_prior():
    """A Bayesian last layer on a frozen feature extractor. Before, requires_grad=False was ignored: the
    frozen weights were sampled, and moved, with the rest."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    net[0].requires_grad_(False)
    posterior = ModulePosterior(net, Classification(), num_data=20, prior_scale=0.5)
    assert list(posterior.params()) == ["2.weight", "2.bias"]
    assert list(posterior.initial_params(2, seed=0)) == ["2.weight", "2.bias"]
    inputs, labels = torch.randn(20, 3), torch.randint(0, 2, (20,))
    features = torch.tanh(net[0](inputs))
    params = posterior.params()
    logits = features @ params["2.weight"].T + params["2.bias"]
    log_prior = sum(torch.distributions.Normal(0.0, 0.5).log_prob(value).sum() for value in params.values())
    expected = log_prior + torch.log_softmax(logits, dim=1)[torch.arange(20), labels].sum()
    torch.testing.assert_close(posterior.log_posterior(params, (inputs, labels)), expected)
    frozen = net[0].weight.clone()
    trace = sgmcmc.SGLD(posterior.log_posterior, step_size=1e-3).sample(
        params, sgmcmc.Minibatches(inputs, labels, batch_size=5), num_chains=2, num_steps=20, seed=0, progress=False
    )
    assert set(trace.posterior) == {"2.weight", "2.bias"} and torch.equal(net[0].weight, frozen)
    net.requires_grad_(False)
    with pytest.raises(ValueError, match="no parameters to sample: all 4 of its parameters have requires_grad=False"):
        ModulePosterior(net, Classification(), num_data=20)


def test_bad_module_inputs():
    with pytest.raises(TypeError, match="torch.nn.Module"):
        ModulePosterior(lambda x: x, Classification(), num_data=10)
    with pytest.raises(ValueError, match="'bias' matches no pattern"):
        ModulePosterior(nn.Linear(2, 2), Classification(), num_data=10, prior_scale={"weight": 1.0})
    with pytest.raises(ValueError, match="no parameters"):
        ModulePosterior(nn.Tanh(), Classification(), num_data=10)


def test_data_of_another_dtype_than_the_network_is_named_with_the_remedy():
    """Features from numpy are float64; before, torch's "mat1 and mat2 must have the same dtype" named neither."""
    torch.manual_seed(0)
    network = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    posterior = ModulePosterior(network, Classification(), num_data=20)
    features, labels = torch.randn(20, 3, dtype=torch.float64), torch.arange(20) % 2
    message = r"the inputs are torch.float64 but the module's sampled parameters are torch.float32.*inputs.float\(\)"
    with pytest.raises(TypeError, match=message):
        sgmcmc.SGLD(posterior.log_posterior, step_size=1e-3).sample(
            posterior.params(),
            sgmcmc.Minibatches(features, labels, batch_size=5),
            num_chains=2,
            num_steps=2,
            progress=False,
        )
    # a module that converts its inputs itself is not refused
    converting = ModulePosterior(nn.Sequential(_Float(), network), Classification(), num_data=20)
    assert torch.isfinite(converting.log_posterior(converting.params(), (features, labels)))


class _Float(nn.Module):
    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return inputs.float()


def test_batches_that_are_not_input_target_pairs_are_refused_by_name():
    posterior = ModulePosterior(nn.Linear(3, 2), Classification(), num_data=8)
    batch = {"x": torch.randn(4, 3), "y": torch.zeros(4, dtype=torch.long)}
    with pytest.raises(TypeError, match=r"batches of \(inputs, targets\), got a dict with keys \['x', 'y'\]"):
        posterior.log_posterior(posterior.params(), batch)


class _OutputsAndState(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(3, 2)

    def forward(self, inputs: torch.Tensor) -> tuple[torch.Tensor, None]:
        return self.linear(inputs), None


def test_a_module_that_returns_more_than_one_tensor_is_refused_by_name():
    """Before, the likelihood failed on it with "'tuple' object has no attribute 'shape'"."""
    posterior = ModulePosterior(_OutputsAndState(), Classification(), num_data=8)
    data = sgmcmc.Minibatches(torch.randn(8, 3), torch.randint(0, 2, (8,)), batch_size=4)
    with pytest.raises(TypeError, match="the module returned a tuple, not one tensor of outputs"):
        sgmcmc.SGLD(posterior.log_posterior, step_size=1e-3).sample(
            posterior.params(), data, num_chains=2, num_steps=2, progress=False
        )


def test_batch_norm_in_training_mode_is_refused_before_it_touches_its_statistics():
    module = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Dropout(0.1), nn.Linear(4, 2))
    posterior = ModulePosterior(module, Classification(), num_data=8)
    data = sgmcmc.Minibatches(torch.randn(8, 3), torch.randint(0, 2, (8,)), batch_size=4)
    statistics = module[1].running_mean.clone()
    with pytest.raises(ValueError, match=r"submodules \['1', '2'\] of the module are in training mode.*eval\(\)"):
        sgmcmc.SGLD(posterior.log_posterior, step_size=1e-3).sample(
            posterior.params(), data, num_steps=2, progress=False
        )
    assert torch.equal(module[1].running_mean, statistics) and module[1].num_batches_tracked == 0
    module.eval()
    trace = sgmcmc.SGLD(posterior.log_posterior, step_size=1e-3).sample(
        posterior.params(), data, num_chains=2, num_steps=2, progress=False
    )
    assert trace.num_draws == 2 and torch.equal(module[1].running_mean, statistics)


def test_functional_rhat_ignores_relabelled_copies_that_fool_the_weights_rhat():
    """f(x) = w₂ tanh(w₁ x) has two posterior modes, ±(w₁, w₂), computing the same function.

    Chains started in both (MALA, which does not cross between them here) mix perfectly in
    function space: R-hat of the prediction f(1) is ~1, while R-hat of the weights is huge.
    """
    generator = torch.Generator().manual_seed(0)
    inputs = 4 * torch.rand(40, 1, generator=generator, dtype=torch.float64) - 2
    targets = 1.5 * torch.tanh(2 * inputs[:, 0]) + 0.3 * torch.randn(40, generator=generator, dtype=torch.float64)
    posterior = ModulePosterior(_regression_net().double(), Regression(0.3), num_data=40)
    mode = {"0.weight": torch.tensor([[2.0]]), "2.weight": torch.tensor([[1.5]])}
    starts = {name: torch.stack([value, -value, value, -value]).double() for name, value in mode.items()}
    sampler = sgmcmc.LD(posterior.log_posterior, step_size=1e-3, metropolis=True)
    trace = sampler.sample(
        starts,
        sgmcmc.Minibatches(inputs, targets, batch_size=40),
        num_chains=4,
        num_steps=3000,
        burn_in=500,
        seed=0,
        stacked_init=True,
        functionals={"prediction_at_1": lambda params: posterior.predictive(params, torch.ones(1, 1).double())[0]},
        progress=False,
    )
    idata = trace.to_arviz()
    assert float(az.rhat(idata.posterior)["0.weight"].max()) > 1.5
    functional = group_dataset(idata, "functionals")[["prediction_at_1"]]
    # For m split chains from one distribution, R-hat − 1 ≈ (variance of the split-chain means) / (2 W)
    # ≈ m χ²_{m−1} / ((m − 1) 2 ESS); bound it at that χ² law's 0.9999 quantile.
    ess, split_chains = float(az.ess(functional)["prediction_at_1"]), 8
    bound = 1 + split_chains * stats.chi2(split_chains - 1).ppf(0.9999) / ((split_chains - 1) * 2 * ess)
    assert float(az.rhat(functional)["prediction_at_1"]) < bound


def test_functional_rhat_flags_chains_in_different_modes_of_an_mlp():
    """Two chains near each of two SGD solutions of a digits MLP, whose predictions differ."""
    features, labels = load_digits(return_X_y=True)
    features = (features - features.mean(axis=0)) / (features.std(axis=0) + 1e-9)
    inputs, labels = torch.tensor(features[:400], dtype=torch.float32), torch.tensor(labels[:400])
    held_out = torch.tensor(features[400:440], dtype=torch.float32)
    torch.manual_seed(0)
    posterior = ModulePosterior(nn.Sequential(nn.Linear(64, 16), nn.Tanh(), nn.Linear(16, 10)), Classification(), 400)
    data = sgmcmc.Minibatches(inputs, labels, batch_size=400)
    functionals = {"confidence": lambda params: posterior.predictive(params, held_out).max(dim=-1).values}
    modes = sgmcmc.LD(posterior.log_posterior, 1e-3, temperature=0.0).sample(
        posterior.initial_params(2, seed=0), data, num_chains=2, num_steps=600, burn_in=599, stacked_init=True,
        progress=False,
    )  # fmt: skip
    starts = {name: value[[0, 0, 1, 1]] for name, value in modes.final_state["params"].items()}
    trace = sgmcmc.LD(posterior.log_posterior, 1e-3, temperature=0.01).sample(
        starts, data, num_chains=4, num_steps=200, seed=1, stacked_init=True, functionals=functionals,
        progress=False,
    )  # fmt: skip
    confidence = trace.functionals["confidence"]
    assert np.abs(confidence[0].mean(axis=0) - confidence[2].mean(axis=0)).max() > 0.1  # the modes differ
    assert float(az.rhat(group_dataset(trace.to_arviz(), "functionals"))["confidence"].max()) > 1.5


def test_training_mode_of_instance_norm_recurrent_and_attention_dropout_is_refused_too():
    """Before, only batch norm and dropout modules were checked: a one-chain run of these updated the
    instance norm's buffers or drew from the global RNG (the same seed gave other draws)."""
    inputs = torch.randn(4, 2, 2)
    for layer in (
        nn.InstanceNorm1d(2, track_running_stats=True),
        nn.GRU(2, 2, num_layers=2, dropout=0.5),
        nn.MultiheadAttention(2, 1, dropout=0.5),
    ):
        posterior = ModulePosterior(nn.Sequential(layer, nn.Linear(2, 2)), Classification(), num_data=8)
        with pytest.raises(ValueError, match=r"submodules \['0'\] of the module are in training mode"):
            posterior(posterior.params(), inputs)
    # without running statistics the mode changes nothing, and nothing is refused
    posterior = ModulePosterior(nn.Sequential(nn.InstanceNorm1d(2, affine=True), nn.Linear(2, 2)), Classification(), 8)
    assert posterior(posterior.params(), inputs).shape == (4, 2, 2)


def test_params_with_other_names_than_the_sampled_ones_are_refused():
    """Before, a frozen layer's weights passed in init were sampled under no prior, without a word."""
    net = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    net[0].requires_grad_(False)
    posterior = ModulePosterior(net, Classification(), num_data=8)
    batch = (torch.randn(4, 3), torch.zeros(4, dtype=torch.long))
    with_frozen = {name: value.detach() for name, value in net.named_parameters()}
    with pytest.raises(ValueError, match=r"unexpected \['0.bias', '0.weight'\], missing \[\]"):
        posterior.log_posterior(with_frozen, batch)
    without_bias = {name: value for name, value in posterior.params().items() if name != "2.bias"}
    with pytest.raises(ValueError, match=r"unexpected \[\], missing \['2.bias'\]"):
        posterior.log_posterior(without_bias, batch)  # before, a bare KeyError


def test_prior_scale_patterns_that_match_no_parameter_are_refused():
    """Before, "*.bias" on a top-level Linear (whose bias is "bias") silently fell through to "*"."""
    with pytest.raises(ValueError, match=r"patterns \['\*.bias'\] match no sampled parameter; .* \['weight', 'bias'\]"):
        ModulePosterior(nn.Linear(3, 1), Regression(0.5), 10, prior_scale={"*.bias": 10.0, "*": 1.0})
    posterior = ModulePosterior(nn.Linear(3, 1), Regression(0.5), 10, prior_scale={"bias": 1.0, "*": 2.0})
    assert posterior.prior_scales == {"weight": 2.0, "bias": 1.0}


def test_prior_scale_patterns_that_only_an_earlier_pattern_lets_through_are_refused():
    """Before, {"*": 2.0, "bias": 1.0} was accepted and gave the bias the scale 2.0: the first match
    applies, so "bias" never did, the same silent failure as a pattern that matches nothing."""
    for module, prior_scale, shadowed in (
        (nn.Linear(3, 1), {"*": 2.0, "bias": 1.0}, r"\['bias'\]"),
        (nn.Sequential(nn.Linear(3, 1)), {"*": 1.0, "*.bias": 10.0, "0.*": 3.0}, r"\['\*.bias', '0.\*'\]"),
    ):
        with pytest.raises(ValueError, match=shadowed + " match only parameters that an earlier pattern matches"):
            ModulePosterior(module, Regression(0.5), 10, prior_scale=prior_scale)


def test_targets_of_shape_b_by_1_are_refused_naming_their_shape():
    """Before, Classification failed inside gather and Regression blamed log_likelihood's return."""
    inputs = torch.randn(10, 3)
    with pytest.raises(ValueError, match=r"labels of shape \(\|B\|,\) .* got labels \(10, 1\) for logits \(10, 2\)"):
        Classification().log_likelihood(nn.Linear(3, 2)(inputs), torch.zeros(10, 1, dtype=torch.long))
    with pytest.raises(ValueError, match=r"got targets \(10, 1\) and outputs \(10, 1\)"):
        Regression(0.5).log_likelihood(nn.Linear(3, 1)(inputs), torch.randn(10, 1))


class _Recurrent(nn.Module):
    def __init__(self, layer):
        super().__init__()
        self.layer, self.head = layer, nn.Linear(2, 2)

    def forward(self, inputs):
        if isinstance(self.layer, nn.MultiheadAttention):
            return self.head(self.layer(inputs, inputs, inputs)[0])
        return self.head(self.layer(inputs)[0])


def test_recurrent_and_attention_layers_without_dropout_may_stay_in_training_mode():
    """Their training mode matters only through their dropout: with dropout 0 (the default), a module
    left in training mode (as constructed) is evaluated, not refused."""
    inputs = torch.randn(4, 3, 2)
    for layer in (nn.GRU(2, 2, num_layers=2), nn.LSTM(2, 2), nn.MultiheadAttention(2, 1)):
        posterior = ModulePosterior(_Recurrent(layer), Classification(), num_data=8)
        assert posterior.module.training
        assert posterior(posterior.params(), inputs).shape == (4, 3, 2)


def test_labels_and_outputs_of_mismatched_shapes_are_refused():
    """gather would read only the first rows of logits (5, 2) for labels (3,); outputs (1, |B|) (a transposed
    head), (|B|/2, 2) or (|B|, 1, 1) reshape to (|B|,) without an error and pair with the wrong targets."""
    with pytest.raises(ValueError, match=r"got labels \(3,\) for logits \(5, 2\)"):
        Classification().log_likelihood(torch.zeros(5, 2), torch.zeros(3, dtype=torch.long))
    for outputs in (torch.zeros(1, 4), torch.zeros(2, 2), torch.zeros(4, 1, 1)):
        with pytest.raises(ValueError, match=r"Regression takes targets of shape"):
            Regression(0.5).log_likelihood(outputs, torch.zeros(4))


def test_a_float16_network_of_some_90_000_weights_has_a_finite_log_posterior_and_samples():
    """Before, the log prior's constant (−0.92 a weight) and Σθ² were added in float16, whose range ends at
    −65504: a 300-300-10 MLP (93,310 weights) had log prior −inf and sample refused to start. The
    minibatch sum N/|B| Σ log p(y|x) overflowed float16 the same way for N = 60,000."""
    net = nn.Sequential(nn.Linear(300, 300), nn.Tanh(), nn.Linear(300, 10)).half()
    posterior = ModulePosterior(net, Classification(), num_data=60_000)
    params = posterior.params()
    generator = torch.Generator().manual_seed(0)
    inputs, labels = torch.randn(64, 300, generator=generator).half(), torch.randint(0, 10, (64,), generator=generator)
    expected_prior = sum(stats.norm.logpdf(value.double().numpy()).sum() for value in params.values())
    log_prior = posterior.log_prior(params)
    assert log_prior.dtype == torch.float32
    assert log_prior.item() == pytest.approx(expected_prior, rel=1e-6)
    log_likelihood = posterior.log_likelihood(params, (inputs, labels)).double().sum().item()
    log_posterior = posterior.log_posterior(params, (inputs, labels))
    assert log_posterior.item() == pytest.approx(expected_prior + 60_000 / 64 * log_likelihood, rel=1e-5)
    data = sgmcmc.Minibatches(inputs.repeat(10, 1), labels.repeat(10), batch_size=64)
    posterior = ModulePosterior(net, Classification(), num_data=640)
    trace = sgmcmc.SGLD(posterior.log_posterior, step_size=1e-6).sample(
        params, data, num_chains=1, num_steps=3, seed=0, progress=False, keep=()
    )
    assert np.isfinite(trace.sample_stats["lp"]).all() and not trace.sample_stats["diverging"].any()


def test_batch_norm_without_running_statistics_is_refused():
    """Before, it was accepted in eval mode, where it still normalises by each batch's statistics: one
    point's predictive changed with the other points beside it in the batch."""
    net = nn.Sequential(nn.Linear(2, 3), nn.BatchNorm1d(3, track_running_stats=False), nn.Linear(3, 2)).eval()
    with pytest.raises(ValueError, match=r"batch norm submodules \['1'\] have track_running_stats=False"):
        ModulePosterior(net, Classification(), num_data=10)


def test_rrelu_in_training_mode_is_refused_as_dropout_is():
    """Before, RReLU's random slopes were drawn from the global RNG at every call (with one chain the log
    posterior was random; with several, vmap failed on aten::rrelu)."""
    posterior = ModulePosterior(nn.Sequential(nn.Linear(2, 3), nn.RReLU(), nn.Linear(3, 2)), Classification(), 10)
    with pytest.raises(ValueError, match=r"submodules \['1'\] of the module are in training mode"):
        posterior(posterior.params(), torch.randn(4, 2))
    posterior.module.eval()
    assert posterior(posterior.params(), torch.randn(4, 2)).shape == (4, 2)


def test_params_of_another_shape_are_named_with_the_likely_cause():
    """The likeliest: initial_params() sampled without stacked_init=True. Before, torch's "t() expects a
    tensor with <= 2 dimensions, but self is 3D", which named neither the parameter nor the cause."""
    net = nn.Sequential(nn.Linear(2, 16), nn.Tanh(), nn.Linear(16, 2))
    posterior = ModulePosterior(net, Classification(), num_data=20)
    data = sgmcmc.Minibatches(torch.randn(20, 2), torch.randint(0, 2, (20,)), batch_size=5)
    with pytest.raises(
        ValueError,
        match=r"params of one network have the module's shapes \{'0.weight': \(16, 2\), .*got \{'0.weight': "
        r"\(4, 16, 2\), .* sampled with stacked_init=True",
    ):
        sgmcmc.SGLD(posterior.log_posterior, 1e-3).sample(
            posterior.initial_params(4, seed=0), data, num_chains=4, num_steps=3, progress=False
        )
    trace = sgmcmc.SGLD(posterior.log_posterior, 1e-3).sample(
        posterior.initial_params(4, seed=0), data, num_chains=4, num_steps=3, stacked_init=True, progress=False
    )
    assert trace.posterior["0.weight"].shape == (4, 3, 16, 2)


def test_a_recurrent_layer_that_vmap_cannot_batch_is_named_as_torchs_gap_and_one_chain_samples():
    """torch.func.vmap has no batching rule for aten::gru: the error told the user to avoid .item() and Python
    ifs, which their module does not use."""

    class Recurrent(nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn, self.head = nn.GRU(4, 8, batch_first=True), nn.Linear(8, 2)

        def forward(self, x):
            return self.head(self.rnn(x)[0][:, -1])

    posterior = ModulePosterior(Recurrent(), Classification(), num_data=10)
    data = sgmcmc.Minibatches(torch.randn(10, 3, 4), torch.randint(0, 2, (10,)), batch_size=5)
    sampler = sgmcmc.SGLD(posterior.log_posterior, 1e-4)
    with pytest.raises(RuntimeError, match=r"Batching rule not implemented for aten::gru.*sample one chain a run"):
        sampler.sample(posterior.params(), data, num_chains=2, num_steps=2, progress=False)
    assert sampler.sample(posterior.params(), data, num_chains=1, num_steps=2, progress=False).num_draws == 2


def test_a_likelihood_that_is_a_class_or_lacks_its_methods_is_refused_by_name():
    """Before, accepted, and the first call failed with "log_likelihood() missing 1 required positional
    argument: 'targets'" (the class) or "'str' object has no attribute 'log_likelihood'"."""
    with pytest.raises(TypeError, match=r"likelihood is the class Classification; give an instance, such as Class"):
        ModulePosterior(nn.Linear(3, 2), Classification, num_data=10)
    with pytest.raises(TypeError, match=r"likelihood must have log_likelihood.*str 'classification' lacks \['log_"):
        ModulePosterior(nn.Linear(3, 2), "classification", num_data=10)


@pytest.mark.parametrize("api", ["parametrization", "hook"])
def test_spectral_norm_in_training_mode_is_refused_as_batch_norm_is(api):
    """Its power iteration updated the u and v buffers at every call in training mode: the log posterior
    changed with the calls before it, and the module's buffers changed under the sampler."""
    normalise = nn.utils.parametrizations.spectral_norm if api == "parametrization" else nn.utils.spectral_norm
    torch.manual_seed(0)
    net = nn.Sequential(normalise(nn.Linear(3, 4)), nn.Tanh(), nn.Linear(4, 2))
    posterior = ModulePosterior(net, Classification(), num_data=20)
    buffers = {name: value.clone() for name, value in net.named_buffers()}
    with pytest.raises(ValueError, match=r"submodules \[.*\] of the module are in training mode"):
        posterior(posterior.params(), torch.randn(5, 3))
    net.eval()
    first = posterior(posterior.params(), torch.ones(5, 3))
    torch.testing.assert_close(posterior(posterior.params(), torch.ones(5, 3)), first, rtol=0, atol=0)
    for name, value in net.named_buffers():
        assert torch.equal(value, buffers[name]), name


@pytest.mark.parametrize("layer", ["attention", "transformer"])
def test_attention_in_eval_mode_samples_several_chains_and_gives_the_fused_kernels_values(layer):
    """In eval mode torch runs fused attention kernels, which have no derivative under torch.func: sampling
    two chains failed with "derivative for aten::_native_multi_head_attention is not implemented"."""

    class Network(nn.Module):
        def __init__(self):
            super().__init__()
            if layer == "attention":
                self.attention = nn.MultiheadAttention(4, 2, dropout=0.1, batch_first=True)
            else:
                self.encoder = nn.TransformerEncoderLayer(4, 2, dim_feedforward=8, batch_first=True)
            self.head = nn.Linear(4, 2)

        def forward(self, x):
            mixed = self.attention(x, x, x, need_weights=False)[0] if layer == "attention" else self.encoder(x)
            return self.head(mixed.mean(1))

    torch.manual_seed(0)
    posterior = ModulePosterior(Network().eval(), Classification(), num_data=10)
    features, labels = torch.randn(10, 3, 4), torch.randint(0, 2, (10,))
    init = posterior.initial_params(2, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # torch: no batching rule for the CPU flash attention
        trace = sgmcmc.LD(posterior.log_posterior, step_size=1e-4).sample(
            init,
            sgmcmc.Minibatches(features, labels, batch_size=10),
            num_chains=2,
            num_steps=2,
            stacked_init=True,
            progress=False,
        )
    with torch.no_grad():  # the fused kernels' path
        direct = [posterior.log_posterior({n: v[c] for n, v in init.items()}, (features, labels)) for c in range(2)]
    np.testing.assert_allclose(trace.sample_stats["lp"][:, 0], torch.stack(direct).numpy(), rtol=1e-5)
    assert torch.backends.mha.get_fastpath_enabled()


def test_initial_params_leave_the_gpus_generators_alone(monkeypatch):
    """Before, torch.manual_seed(seed + c) also reseeded every CUDA generator, which fork_rng(devices=[])
    does not restore: a GPU run's global generator was left at seed + num_chains − 1."""
    reseeded = []
    monkeypatch.setattr(torch.cuda, "manual_seed_all", reseeded.append)
    ModulePosterior(nn.Linear(3, 2), Classification(), num_data=10).initial_params(4, seed=100)
    assert reseeded == []


def test_a_classifier_with_one_logit_is_refused():
    """Before, labels 0 got log-likelihood exactly 0 whatever the logit, and label 1 an IndexError."""
    posterior = ModulePosterior(nn.Linear(2, 1), Classification(), num_data=10)
    with pytest.raises(ValueError, match=r"logits for 2 or more classes, got outputs of shape \(4, 1\)"):
        posterior.log_likelihood(posterior.params(), (torch.randn(4, 2), torch.zeros(4, dtype=torch.long)))


def test_the_regression_predictive_of_one_point_keeps_its_batch_dim():
    """Before, a module with outputs (|B|,) gave a predictive of shape () for one point, (|B|,) for more."""
    posterior = ModulePosterior(nn.Sequential(nn.Linear(2, 1), nn.Flatten(0)), Regression(), num_data=10)
    for num_points in (1, 3):
        assert posterior.predictive(posterior.params(), torch.randn(num_points, 2)).shape == (num_points,)
    posterior = ModulePosterior(nn.Linear(2, 1), Regression(), num_data=10)
    assert posterior.predictive(posterior.params(), torch.randn(1, 2)).shape == (1,)

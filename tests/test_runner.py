"""The engine: determinism, chain independence, input checks, divergence guard, interruption."""

import dis
import math
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import sgmcmc
from sgmcmc.runner import kept_steps
from sgmcmc.trace import TraceRecorder
from targets import ConjugateLinearRegression, Interrupting, standard_normal_log_posterior


def _sgld(log_posterior):
    return sgmcmc.SGLD(log_posterior, step_size=1e-3)


def _mala(log_posterior):
    return sgmcmc.LD(log_posterior, step_size=5e-3, metropolis=True)  # noise and uniforms, full data


def _regression_run(make_sampler=_sgld, **kwargs):
    model = ConjugateLinearRegression.make(num_data=100, dim=2, seed=0)
    data = sgmcmc.Minibatches(model.features, model.targets, batch_size=10)
    options = dict(num_chains=4, num_steps=60, seed=7, progress=False)
    options.update(kwargs)
    return make_sampler(model.log_posterior()).sample(torch.zeros(2, dtype=torch.float64), data, **options)


def test_same_seed_same_draws_other_seed_other_draws():
    first, second, other = _regression_run(), _regression_run(), _regression_run(seed=8)
    np.testing.assert_array_equal(first.posterior["theta"], second.posterior["theta"])
    np.testing.assert_array_equal(first.sample_stats["lp"], second.sample_stats["lp"])
    assert not np.allclose(first.posterior["theta"], other.posterior["theta"])


@pytest.mark.parametrize("make_sampler", [_sgld, _mala], ids=["SGLD", "MALA"])
def test_chains_run_together_equal_each_chain_run_alone(make_sampler):
    """Proves vectorisation and independent per-chain streams (noise and minibatches; MALA's
    acceptance uniforms) at once."""
    together = _regression_run(make_sampler, num_chains=4)
    seeds = sgmcmc.chain_seeds(7, 4)
    assert together.attrs["chain_seeds"] == repr(seeds)
    for chain, seed in enumerate(seeds):
        alone = _regression_run(make_sampler, num_chains=1, seed=[seed])
        np.testing.assert_array_equal(alone.posterior["theta"][0], together.posterior["theta"][chain])
        if "acceptance_rate" in together.sample_stats:  # lp on all 100 rows rounds apart at K = 1 and 4
            np.testing.assert_allclose(
                alone.sample_stats["acceptance_rate"][0], together.sample_stats["acceptance_rate"][chain], rtol=1e-12
            )
    draws = together.posterior["theta"]
    assert all(not np.allclose(draws[0], draws[chain]) for chain in range(1, 4))


def test_chains_move_independently():
    """Increments of different chains are uncorrelated (|r| within 4/sqrt(n) of 0)."""
    trace = sgmcmc.SGLD(standard_normal_log_posterior, step_size=0.5).sample(
        torch.zeros(1), num_chains=4, num_steps=2000, seed=0, progress=False
    )
    increments = np.diff(trace.posterior["theta"][..., 0], axis=1)
    correlation = np.corrcoef(increments)
    off_diagonal = correlation[~np.eye(4, dtype=bool)]
    assert np.abs(off_diagonal).max() < 4 / np.sqrt(increments.shape[1])


def test_dict_params_keep_names_shapes_and_dtypes():
    def log_posterior(params):
        return -0.5 * (params["weights"] ** 2).sum() - 0.5 * params["bias"] ** 2

    init = {"weights": torch.zeros(2, 3, dtype=torch.float64), "bias": torch.zeros((), dtype=torch.float64)}
    trace = sgmcmc.SGLD(log_posterior, step_size=0.1).sample(
        init, num_chains=3, num_steps=10, burn_in=2, thin=3, seed=0, progress=False
    )
    assert trace.posterior["weights"].shape == (3, 3, 2, 3)  # draws at steps 2, 5, 8
    assert trace.posterior["bias"].shape == (3, 3)
    assert trace.posterior["weights"].dtype == np.float64
    assert trace.final_state["params"]["weights"].shape == (3, 2, 3)


def test_stacked_init_and_jitter():
    init = torch.tensor([[-5.0], [0.0], [5.0]])
    trace = sgmcmc.SGLD(standard_normal_log_posterior, step_size=1e-6).sample(
        init, num_chains=3, num_steps=1, seed=0, stacked_init=True, progress=False
    )
    np.testing.assert_array_equal(trace.posterior["theta"][:, 0, 0], [-5.0, 0.0, 5.0])
    jittered = sgmcmc.SGLD(standard_normal_log_posterior, step_size=1e-6).sample(
        torch.zeros(1), num_chains=64, num_steps=1, seed=0, init_jitter=2.0, progress=False
    )
    starts = jittered.posterior["theta"][:, 0, 0]
    assert 1.3 < starts.std() < 2.7  # sd 2 with 64 draws: s.e. about 0.18


def _error(exception, match, sampler_kwargs=None, **sample_kwargs):
    sampler_options = dict(log_posterior=standard_normal_log_posterior, step_size=0.1)
    sampler_options.update(sampler_kwargs or {})
    options = dict(init=torch.zeros(2), num_chains=2, num_steps=10, progress=False)
    options.update(sample_kwargs)
    with pytest.raises(exception, match=match):
        sgmcmc.SGLD(**sampler_options).sample(**options)


def test_bad_sampler_arguments():
    _error(TypeError, "log_posterior must be callable", {"log_posterior": 3.0})
    _error(ValueError, "step_size must be a finite number > 0", {"step_size": 0.0})
    _error(ValueError, "step_size must be a finite number > 0", {"step_size": -1e-3})
    _error(ValueError, "temperature must be a finite number >= 0", {"temperature": -1.0})


def test_bad_log_posterior_results():
    _error(TypeError, "must return a torch.Tensor", {"log_posterior": lambda theta: 1.0})
    _error(ValueError, "0-dim tensor, got shape \\(2,\\)", {"log_posterior": lambda theta: -0.5 * theta**2})
    _error(ValueError, "non-finite", {"log_posterior": lambda theta: theta.sum() / 0.0})
    _error(TypeError, "floating", {"log_posterior": lambda theta: torch.tensor(1)})


def test_a_log_posterior_that_cannot_take_the_arguments_it_gets_is_told_why():
    """Before, Python's "missing 1 required positional argument: 'batch'" (or "takes 1 positional argument but
    2 were given"), which named neither the data nor the call."""
    _error(
        TypeError,
        r"no data is given, so log_posterior is called as log_posterior\(params\), which its signature "
        r"\(theta, batch\) does not take",
        {"log_posterior": lambda theta, batch: -(theta**2).sum()},
    )
    _error(
        TypeError,
        r"data is given, so log_posterior is called as log_posterior\(params, batch\), which its signature "
        r"\(theta: 'torch.Tensor'\) -> 'torch.Tensor' does not take",
        data=sgmcmc.Minibatches(torch.zeros(10, 2), batch_size=5),
    )
    # an optional batch takes either call
    optional = sgmcmc.SGLD(lambda theta, batch=None: -(theta**2).sum(), step_size=0.1)
    for data in (None, sgmcmc.Minibatches(torch.zeros(10, 2), batch_size=5)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the num_data check finds no num_data on a lambda
            assert optional.sample(torch.zeros(2), data, num_steps=2, progress=False).num_draws == 2


def test_bad_params():
    _error(TypeError, "floating point", init=torch.zeros(2, dtype=torch.long))
    _error(TypeError, "tensor or a dict", init=[0.0, 0.0])
    _error(TypeError, "parameter 'w' of init is a list", init={"w": [0.0]})
    _error(ValueError, "empty dict", init={})
    # before, a run of 0 parameters went through, and find_mode's L-BFGS stage failed inside torch
    _error(ValueError, r"init has no elements \(shapes \{'theta': \(0,\)\}\)", init=torch.zeros(0))
    with pytest.raises(ValueError, match=r"init has no elements \(shapes \{'w': \(0, 3\)\}\)"):
        sgmcmc.find_mode(
            lambda params: -(params["w"] ** 2).sum(),
            {"w": torch.zeros(0, 3)},
            None,
            num_steps=0,
            num_full_batch_steps=5,
            full_batch_method="lbfgs",
        )
    _error(ValueError, "non-finite", init=torch.tensor([0.0, float("nan")]))
    # before, torch's NotImplementedError for aten::ne on the SparseCPU backend
    _error(
        TypeError, r"parameter 'theta' of init is a torch.sparse_coo tensor.*to_dense", init=torch.zeros(3).to_sparse()
    )
    _error(
        TypeError,
        "parameter 'theta' of init has dtype torch.bfloat16, which numpy and so the trace cannot hold",
        init=torch.zeros(2, dtype=torch.bfloat16),
    )
    _error(ValueError, "leading dim must be num_chains=2", init=torch.zeros(3, 2), stacked_init=True)


def test_bad_device_jitter_and_file_paths_are_named(tmp_path):
    """Before: torch's "META device type not an accelerator", a non-finite log posterior that did not name
    init_jitter, and h5py's IsADirectoryError once the trace file was created."""
    _error(ValueError, "device is the meta device, whose tensors hold no values", device="meta")
    _error(ValueError, "device must name a torch device, such as cpu or cuda, got 'gpu'", device="gpu")
    # no machine has 100 GPUs; a CPU-only torch raised its bare AssertionError "Torch not compiled with CUDA"
    _error(
        ValueError,
        "device 'cuda:99' (needs a CUDA GPU, and this torch sees none|names a GPU past the)",
        device="cuda:99",
    )
    _error(
        ValueError, r"init_jitter=1e\+300 overflows parameters \['theta'\] \(torch.float32\) to inf", init_jitter=1e300
    )
    _error(ValueError, f"trace_file {re.escape(str(tmp_path))} is a directory; give a file in it", trace_file=tmp_path)
    _error(ValueError, f"checkpoint {re.escape(str(tmp_path))} is a directory; give a file in it", checkpoint=tmp_path)
    assert not any(tmp_path.iterdir())


def test_a_log_posterior_that_vmap_cannot_batch_is_named_with_the_remedy():
    """Chain 0 alone runs it eagerly, where .item() is allowed; before, vmap's own error came without saying that
    sample evaluates the chains together (functionals already had such a message)."""

    def with_item(theta):
        return -0.5 * theta.square().sum() * float(theta.abs().sum().item() < 10)

    _error(
        RuntimeError,
        r"failed for all 2 chains together, .*vmap.*\.item\(\).* no \.item\(\), float\(\)",
        {"log_posterior": with_item},
    )
    trace = sgmcmc.SGLD(with_item, step_size=0.1).sample(torch.zeros(2), num_chains=1, num_steps=3, progress=False)
    assert trace.posterior["theta"].shape == (1, 3, 2)  # one chain is not vmapped: nothing to refuse


def test_non_finite_start_names_the_chain():
    """Every chain's log p̃ and gradient are checked at its initial params (chain 1 at θ = −1, where log θ is NaN;
    chain 2 at θ = 0, where the gradient of log θ is inf); then the sampler's whole initial state: LD's log p̃ on
    all the data, finite on the first batch, is NaN in chain 1 only (log(1 − 1.5))."""

    def log_posterior(theta):
        return torch.log(theta).sum() - theta.square().sum() / 2

    with pytest.raises(
        ValueError, match=r"log_posterior or its gradient is not finite at the initial params of chains \[1, 2\]"
    ):
        sgmcmc.LD(log_posterior, step_size=1e-2).sample(
            torch.tensor([[1.0], [-1.0], [0.0]]), num_chains=3, num_steps=5, stacked_init=True, progress=False
        )

    def shifted_log_posterior(theta, batch):
        return torch.log(theta + batch).sum()

    rows = torch.tensor([[0.0], [0.0], [-1.5], [-1.5]])
    with pytest.raises(ValueError, match=r"initial state is not finite: state\['lp'\] of chains \[1\]"):
        sgmcmc.LD(shifted_log_posterior, step_size=1e-2).sample(
            torch.tensor([[2.0], [1.0], [3.0]]),
            sgmcmc.Minibatches(rows, batch_size=2),
            num_chains=3,
            num_steps=5,
            stacked_init=True,
            progress=False,
        )


def test_log_posterior_that_does_not_depend_on_the_params_is_refused():
    """Computed under no_grad, log p̃ has no gradient: the sampler would random-walk without a word."""

    def log_posterior(theta):
        with torch.no_grad():
            return -(theta**2).sum()

    with pytest.raises(ValueError, match=r"does not depend on the params at the initial params of chain 0.*no_grad"):
        sgmcmc.SGLD(log_posterior, step_size=1e-2).sample(torch.zeros(2), num_steps=5, progress=False)

    # a module called with its own weights: the value has a graph, to them (before, accepted: chains moved by noise)
    model = torch.nn.Linear(2, 1)
    with pytest.raises(ValueError, match=r"does not depend on the params .*functional_call"):
        sgmcmc.SGLD(lambda theta, x: -(model(x) ** 2).sum(), step_size=1e-2).sample(
            torch.zeros(2), sgmcmc.Minibatches(torch.randn(20, 2), batch_size=5), num_steps=5, progress=False
        )


def test_num_data_that_is_not_the_number_of_examples_is_warned():
    """num_data = len(loader), the number of batches, is a common slip: the posterior comes out sqrt(B) too wide."""
    rows = torch.randn(20, 1, generator=torch.Generator().manual_seed(0))

    def sample(data, num_data):
        log_posterior = sgmcmc.minibatch_log_posterior(
            lambda theta: -(theta**2).sum() / 2, lambda theta, batch: -((batch - theta) ** 2).sum(dim=1) / 2, num_data
        )
        return sgmcmc.SGLD(log_posterior, step_size=1e-3).sample(torch.zeros(1), data, num_steps=3, progress=False)

    premade = [rows[start : start + 4] for start in range(0, 20, 4)]
    for data in (sgmcmc.Minibatches(rows, batch_size=4), premade):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            sample(data, num_data=20)
        with pytest.warns(RuntimeWarning, match="num_data=5 but the data holds 20 examples") as record:
            sample(data, num_data=5)
        assert [warning.filename for warning in record] == [__file__]  # the line that called sample


def test_pre_made_dict_batches_count_their_examples_from_any_tensor():
    """A dict batch whose first tensor is per batch (3 weights) and whose second has the 10 rows: 4 batches
    hold 40 examples. Before, only the first tensor was counted (12 examples), and a correct num_data=40
    was warned about."""
    generator = torch.Generator().manual_seed(0)
    batches = [
        {
            "weights": torch.ones(3, dtype=torch.float64),
            "x": torch.randn(10, 2, dtype=torch.float64, generator=generator),
        }
        for _ in range(4)
    ]

    def sample(num_data):
        log_posterior = sgmcmc.minibatch_log_posterior(
            lambda theta: -(theta**2).sum() / 2,
            lambda theta, batch: -((batch["x"] - theta) ** 2).sum(dim=1) * batch["weights"].mean() / 2,
            num_data,
        )
        return sgmcmc.SGLD(log_posterior, step_size=1e-3).sample(
            torch.zeros(2, dtype=torch.float64), batches, num_steps=3, progress=False
        )

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sample(num_data=40)
    with pytest.warns(RuntimeWarning, match=r"num_data=4 but the data holds 12 or 40 examples"):
        sample(num_data=4)


def test_bad_run_lengths():
    _error(ValueError, "burn_in \\(10\\) must be < num_steps \\(10\\)", burn_in=10)
    _error(ValueError, "thin must be >= 1", thin=0)
    _error(ValueError, "num_chains must be >= 1", num_chains=0)
    _error(TypeError, "num_steps must be an integer", num_steps=10.0)
    _error(ValueError, "seed gives 3 per-chain seeds for num_chains=2", seed=[1, 2, 3])
    _error(ValueError, r"seed must be an integer in \[0, 2\*\*64\), got -1", seed=-1)
    _error(ValueError, r"seed must be an integer in \[0, 2\*\*64\), got 1180591620717411303424", seed=2**70)
    _error(ValueError, "init_jitter", init_jitter=-1.0)


@pytest.mark.parametrize("name", ["stacked_init", "keep_gradients", "progress", "compile"])
def test_flags_must_be_bools(name):
    """Before, the string "False" was truthy: stacked_init="False" read init's first dim as the chains'."""
    _error(TypeError, f"{name} must be True or False, got str 'False'", **{name: "False"})


def test_checkpoint_and_trace_file_must_differ(tmp_path):
    """Before, the first checkpoint overwrote the trace file and the run failed at its next chunk, its draws lost."""
    _error(
        ValueError,
        "checkpoint and trace_file are the same file",
        checkpoint=tmp_path / "run",
        trace_file=tmp_path / "run",
    )


@pytest.mark.parametrize("compile", [False, True], ids=["eager", "compiled guard"])
def test_diverging_chain_is_frozen_flagged_and_reported(compile):
    def quartic(theta):  # in float64, so that the float32 state overflows before its log posterior does
        return -(theta.double() ** 4).sum()

    init = torch.tensor([[0.1], [0.1], [10.0], [0.1]])
    with pytest.warns(sgmcmc.SamplerDivergenceWarning, match=r"1 of 4 chains diverged.*chain 2 at step \d+") as record:
        trace = sgmcmc.SGLD(quartic, step_size=0.01).sample(
            init, num_chains=4, num_steps=200, seed=0, stacked_init=True, progress=False, compile=compile
        )
    divergences = [warning for warning in record if warning.category is sgmcmc.SamplerDivergenceWarning]
    assert [warning.filename for warning in divergences] == [__file__]  # the line that called sample
    assert np.isfinite(trace.posterior["theta"]).all()
    diverging = trace.sample_stats["diverging"]
    assert diverging[2].any() and not diverging[[0, 1, 3]].any()
    first = int(np.argmax(diverging[2]))
    assert diverging[2, first:].all()
    frozen = trace.posterior["theta"][2, first - 1 :]
    assert (frozen == frozen[0]).all()
    assert torch.isfinite(trace.final_state["params"]["theta"]).all()
    assert trace.attrs["diverged_at_step"] == repr([-1, -1, first - 1, -1])  # the update from draw first − 1
    np.testing.assert_array_equal(trace.diverged_at_step, [-1, -1, first - 1, -1])


def _not_a_number_beyond(theta: torch.Tensor, edge: float, where: str) -> torch.Tensor:
    """3θ − θ²/2 (T = 0 and η = 0.1 take θ from 0 to 1.41 at step 6 and 1.57 at step 7), NaN beyond
    ``edge``: in log p̃ itself, or (``where="gradient"``) in its gradient alone, by a term of value 0
    whose gradient, −0.5/sqrt(x) masked by x > 0 as a product, is 0 · (−inf) there."""
    log_density = 3 * theta - 0.5 * theta**2
    if where == "value":
        return (log_density - 0.01 * torch.sqrt(edge - theta)).sum()
    distance = (edge - theta) * (edge - theta > 0)
    return (log_density + 0.01 * (torch.sqrt(distance) - torch.sqrt(distance).detach())).sum()


@pytest.mark.parametrize("where", ["value", "gradient"])
def test_a_chain_that_meets_nan_is_frozen_before_it(where):
    """The guard against NaN, not only inf: in log p̃ (the state that gives it is flagged and kept out of
    the next state), or in the gradient alone (the state stays unflagged, the NaN update is refused)."""
    sampler = sgmcmc.SGLD(lambda theta: _not_a_number_beyond(theta, 1.5, where), step_size=0.1, temperature=0.0)
    init = torch.tensor([[0.0], [-5.0]])  # chain 1, from further away, reaches 1.5 only at step 16
    with pytest.warns(sgmcmc.SamplerDivergenceWarning, match=r"1 of 2 chains diverged.*: chain 0 at step 7\."):
        trace = sampler.sample(init, num_chains=2, stacked_init=True, num_steps=12, seed=0, progress=False)
    theta, diverging = trace.posterior["theta"][..., 0], trace.sample_stats["diverging"]
    assert np.isfinite(theta).all() and 1.5 < theta[0, 7] < 1.6 and (theta[0, 7:] == theta[0, 7]).all()
    flagged_from = 7 if where == "value" else 8
    assert diverging[0].tolist() == [False] * flagged_from + [True] * (12 - flagged_from)
    assert not diverging[1].any() and (np.diff(theta[1]) > 0).all()
    assert trace.diverged_at_step.tolist() == [7, -1]


def test_a_divergence_after_the_last_kept_draw_is_recorded_and_the_file_is_complete_under_warnings_as_errors(
    tmp_path,
):
    """θ ← θ − 3θ = −2θ exactly (T = 0): θ = 2⁶⁴ after 64 steps, whose θ² overflows float32, so the
    chain diverges at step 64, which the odd-step thinning does not keep. The record is in the
    attrs; and the warning, raised as an error, comes after the file is complete."""
    sampler = sgmcmc.SGLD(standard_normal_log_posterior, step_size=3.0, temperature=0.0)
    options = dict(num_chains=1, num_steps=65, burn_in=1, thin=2, seed=0, progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error", sgmcmc.SamplerDivergenceWarning)
        with pytest.raises(sgmcmc.SamplerDivergenceWarning, match="chain 0 at step 64"):
            sampler.sample(torch.ones(1), trace_file=tmp_path / "trace.nc", **options)
    stored = sgmcmc.Trace.load(tmp_path / "trace.nc")
    assert stored.attrs["steps_done"] == 65 and stored.num_draws == 32
    assert not stored.sample_stats["diverging"].any()
    assert stored.attrs["diverged_at_step"] == "[64]"
    assert stored.diverged_at_step.tolist() == [64] and stored.diverged_at_step.dtype == np.int64


@pytest.mark.parametrize("compile", [False, True], ids=["eager", "compiled guard"])
def test_chain_whose_log_posterior_overflows_is_flagged_from_that_draw(compile):
    # SGLD with step 3 on N(0, 1) multiplies θ by about -2 a step: in float32, θ² overflows (lp = -inf)
    # near |θ| = 1.8e19, about 60 steps before θ itself would
    with pytest.warns(sgmcmc.SamplerDivergenceWarning, match=r"2 of 2 chains diverged.*chain 0 at step \d+"):
        trace = sgmcmc.SGLD(standard_normal_log_posterior, step_size=3.0).sample(
            torch.ones(2), num_chains=2, num_steps=100, seed=0, progress=False, compile=compile
        )
    lp, diverging = trace.sample_stats["lp"], trace.sample_stats["diverging"]
    assert np.isfinite(lp[~diverging]).all() and not np.isfinite(lp[diverging]).any()
    for chain in range(2):
        first = int(np.argmax(diverging[chain]))
        assert 50 < first < 80 and diverging[chain, first:].all()
        frozen = trace.posterior["theta"][chain, first:]
        assert np.isfinite(frozen).all() and (frozen == frozen[0]).all()


def test_float16_state_of_large_finite_values_is_not_diverging():
    # 1000 values of 100 sum to 1e5, past float16's largest finite value (65504)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        trace = sgmcmc.SGLD(lambda theta: -0.5 * ((theta - 100) ** 2).sum(), step_size=1e-4).sample(
            torch.full((1000,), 100.0, dtype=torch.float16), num_chains=2, num_steps=3, seed=0, progress=False
        )
    assert not trace.sample_stats["diverging"].any()


def test_numpy_integer_seed_is_the_same_seed():
    sampler = sgmcmc.SGLD(standard_normal_log_posterior, step_size=0.1)
    numpy_seed, python_seed = (
        sampler.sample(torch.zeros(2), num_chains=2, num_steps=3, seed=seed, progress=False)
        for seed in (np.int64(3), 3)
    )
    assert numpy_seed.attrs["seed"] == 3
    np.testing.assert_array_equal(numpy_seed.posterior["theta"], python_seed.posterior["theta"])
    array_seeds, list_seeds = (
        sampler.sample(torch.zeros(2), num_chains=2, num_steps=3, seed=seeds, progress=False)
        for seeds in (np.array([5, 2**64 - 1], dtype=np.uint64), [5, 2**64 - 1])
    )
    np.testing.assert_array_equal(array_seeds.posterior["theta"], list_seeds.posterior["theta"])


class _Linear(sgmcmc.schedules.Schedule):
    """η_k = initial (1 − k / length): 0 at k = length, below 0 after."""

    def __init__(self, initial: float, length: int) -> None:
        self.initial, self.length = initial, length

    def __call__(self, step: int) -> float:
        return self.initial * (1 - step / self.length)

    def satisfies_robbins_monro(self) -> bool:
        return False


class _NaNAt(_Linear):
    def __call__(self, step: int) -> float:
        return math.nan if step == self.length else self.initial


def test_a_schedule_that_gives_a_step_size_that_is_not_positive_and_finite_is_refused():
    """Before, SGLD failed mid-run in math.sqrt and SGHMC or a NaN reported every chain as diverged."""
    for make in (sgmcmc.SGLD, lambda *args: sgmcmc.SGHMC(*args, friction=0.1)):
        with pytest.raises(ValueError, match=r"_Linear\(initial=0.1, length=8\) gave step_size -0.0125 at step 9"):
            make(standard_normal_log_posterior, _Linear(0.1, 8)).sample(torch.zeros(2), num_steps=10, progress=False)
    with pytest.raises(ValueError, match=r"gave step_size nan at step 5; step sizes must be finite and > 0"):
        sgmcmc.SGLD(standard_normal_log_posterior, _NaNAt(0.1, 5)).sample(torch.zeros(2), num_steps=10, progress=False)
    # a warm-up from 0: SGHMC's init draws its momentum at step 0's η, and before, blamed a non-finite initial state
    with pytest.raises(ValueError, match=r"_Linear\(initial=-0.1, length=0.5\) gave step_size -0.1 at step 0"):
        sgmcmc.SGHMC(standard_normal_log_posterior, _Linear(-0.1, 0.5), friction=0.1).sample(
            torch.zeros(2), num_steps=10, progress=False
        )


class _Gives(_Linear):
    """η_k = ``initial`` as it is, whatever its type."""

    def __call__(self, step: int) -> float:
        return self.initial


def test_a_schedule_that_gives_something_other_than_a_number_is_refused_and_any_number_taken():
    """float() takes the string "0.1" and True, which were sampled with as step sizes 0.1 and 1."""
    for value in ("0.1", True, None):
        with pytest.raises(TypeError, match=rf"gave {re.escape(repr(value))} at step 0, not a number"):
            sgmcmc.SGLD(standard_normal_log_posterior, _Gives(value, 1)).sample(
                torch.zeros(2), num_steps=3, progress=False
            )
    for value in (np.float32(0.25), torch.tensor(0.25, dtype=torch.float64), 1):
        trace = sgmcmc.SGLD(standard_normal_log_posterior, _Gives(value, 1)).sample(
            torch.zeros(2), num_steps=3, progress=False
        )
        np.testing.assert_array_equal(np.unique(trace.sample_stats["step_size"]), [float(value)])


def test_interrupted_run_keeps_its_draws():
    with pytest.warns(RuntimeWarning, match="interrupted after 50 of 1000 steps") as record:
        trace = sgmcmc.SGLD(Interrupting(standard_normal_log_posterior, at_step=50), step_size=0.1).sample(
            torch.zeros(2), num_chains=2, num_steps=1000, burn_in=10, seed=0, progress=False
        )
    assert [warning.filename for warning in record] == [__file__]
    assert trace.num_draws == 40
    assert trace.attrs["steps_done"] == 50
    assert np.isfinite(trace.posterior["theta"]).all()


def test_stop_when_ends_the_run_after_the_step_it_says_keeping_the_draws_without_a_warning():
    sampler = sgmcmc.SGLD(standard_normal_log_posterior, step_size=0.1)
    options = dict(num_chains=2, num_steps=100, burn_in=10, thin=2, seed=0, progress=False)
    full = sampler.sample(torch.zeros(2), **options)
    steps_asked = []

    def stop_when(steps_done):
        steps_asked.append(steps_done)
        return steps_done >= 30

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        stopped = sampler.sample(torch.zeros(2), stop_when=stop_when, **options)
    assert steps_asked == list(range(1, 31))
    assert stopped.attrs["steps_done"] == 30
    assert stopped.num_draws == 10  # steps 10, 12, ..., 28
    np.testing.assert_array_equal(stopped.posterior["theta"], full.posterior["theta"][:, :10])
    never = sampler.sample(torch.zeros(2), stop_when=steps_asked.append, **{**options, "num_steps": 5, "burn_in": 0})
    assert never.attrs["steps_done"] == 5 and steps_asked[30:] == [1, 2, 3, 4]  # not asked after the last step
    with pytest.raises(TypeError, match="stop_when must be callable"):
        sampler.sample(torch.zeros(2), stop_when=3600, **options)


@pytest.mark.parametrize("streamed", [False, True], ids=["in memory", "streamed"])
def test_a_run_stopped_by_an_error_hands_its_draws_on_with_the_error(tmp_path, streamed):
    """Before, an in-memory run lost every draw to an error (out of memory, a failing data read)."""
    trace_file = tmp_path / "t.nc" if streamed else None
    options = dict(num_chains=2, num_steps=1000, burn_in=10, seed=0, progress=False, trace_file=trace_file)
    failing = Interrupting(standard_normal_log_posterior, at_step=50, error=MemoryError("out of memory"))
    with pytest.raises(MemoryError, match="out of memory") as raised:
        sgmcmc.SGLD(failing, step_size=0.1).sample(torch.zeros(2), **options)
    partial = raised.value.partial_trace
    assert "the 40 draws kept in the 50 steps before this error are in its .partial_trace" in raised.value.__notes__[0]
    assert partial.num_draws == 40 and partial.attrs["steps_done"] == 50
    whole = sgmcmc.SGLD(standard_normal_log_posterior, step_size=0.1).sample(
        torch.zeros(2), **(options | {"trace_file": None})
    )
    np.testing.assert_array_equal(partial.posterior["theta"], whole.posterior["theta"][:, :40])
    # the state after 50 steps, whose step 50 (which would have recorded it) failed
    final = partial.final_state["params"]["theta"]
    np.testing.assert_array_equal(final.numpy(), whole.posterior["theta"][:, 40])
    if streamed:
        np.testing.assert_array_equal(sgmcmc.Trace.load(trace_file).posterior["theta"], partial.posterior["theta"])


def test_an_error_while_keeping_the_draws_of_a_failed_run_leaves_the_first_error_to_the_caller(monkeypatch):
    def failing_finish(*arguments):
        raise OSError("disk full")

    monkeypatch.setattr(TraceRecorder, "finish", failing_finish)
    failing = Interrupting(standard_normal_log_posterior, at_step=5, error=MemoryError("out of memory"))
    with pytest.raises(MemoryError, match="out of memory") as raised:
        sgmcmc.SGLD(failing, step_size=0.1).sample(torch.zeros(2), num_steps=10, progress=False)
    assert raised.value.__notes__ == ["sgmcmc: the draws kept before this error were lost: OSError('disk full')"]


@pytest.mark.parametrize("streamed", [False, True], ids=["in memory", "streamed"])
def test_a_ctrl_c_at_any_line_of_a_chunk_flush_keeps_every_draw_made_before_it(tmp_path, streamed):
    """Ctrl-C lands between two bytecodes. Raised in turn at each line of the flush that moves the
    first full chunk (256 draws, after step 255) to the host or the file, the run still returns
    those 256 draws, equal to the uninterrupted run's, and not a half-written or unwritten chunk."""
    sampler = sgmcmc.SGLD(standard_normal_log_posterior, step_size=0.1)
    options = dict(num_chains=2, num_steps=300, seed=0, progress=False)
    reference = sampler.sample(torch.zeros(2), **options).posterior["theta"][:, :256]
    flush = TraceRecorder.flush.__code__
    for _, line in dis.findlinestarts(flush):
        state = {"raised": False}

        def tracer(frame, event, arg, line=line, state=state):
            if frame.f_code is not flush:
                return None
            if event == "line" and frame.f_lineno == line and not state["raised"]:
                state["raised"] = True
                raise KeyboardInterrupt
            return tracer

        path = tmp_path / f"trace_{line}.nc" if streamed else None
        previous = sys.gettrace()
        sys.settrace(tracer)
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                trace = sampler.sample(torch.zeros(2), trace_file=path, **options)
        finally:
            sys.settrace(previous)
        if not state["raised"]:  # a line the first flush does not reach (e.g. the empty-chunk return)
            continue
        assert any("interrupted after 255 of 300 steps" in str(warning.message) for warning in caught), line
        assert trace.attrs["steps_done"] == 255 and trace.num_draws == 256, line
        np.testing.assert_array_equal(trace.draw_coords["step"], np.arange(256))
        np.testing.assert_array_equal(trace.posterior["theta"], reference, err_msg=f"line {line}")


def test_no_warning_on_a_healthy_run():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sgmcmc.SGLD(standard_normal_log_posterior, step_size=0.1).sample(
            torch.zeros(2), num_chains=2, num_steps=20, seed=0, progress=False
        )


_LOG_POSTERIOR = ConjugateLinearRegression.make(100, 2, 0).log_posterior()


_EVERY_SAMPLER = {
    "SGLD": (sgmcmc.SGLD(_LOG_POSTERIOR, step_size=1e-3), 1),
    "SGHMC, decaying step": (
        sgmcmc.SGHMC(_LOG_POSTERIOR, step_size=sgmcmc.schedules.Polynomial(1e-3, 1.0, 0.55), friction=1.0),
        2,
    ),
    "MALA, uniform draws": (sgmcmc.LD(_LOG_POSTERIOR, step_size=1e-3, metropolis=True), 1),
    "SGNHT": (sgmcmc.SGNHT(_LOG_POSTERIOR, step_size=1e-3), 1),
    "PSGLD": (sgmcmc.PSGLD(_LOG_POSTERIOR, step_size=1e-3), 1),
    "cSGLD, T 0 then 1": (
        sgmcmc.CyclicalSGLD(_LOG_POSTERIOR, step_size=sgmcmc.schedules.Cyclical(1e-3, num_cycles=2, total_steps=40)),
        3,
    ),
    "cSGHMC, noise estimate, T 0 then 0.5": (
        sgmcmc.CyclicalSGHMC(
            _LOG_POSTERIOR,
            step_size=sgmcmc.schedules.Cyclical(1e-3, num_cycles=2, total_steps=40),
            friction=0.5,
            noise_estimate=0.1,
            temperature=0.5,
        ),
        3,
    ),
    "SGLDCV": (sgmcmc.SGLDCV(_LOG_POSTERIOR, step_size=1e-3, mode=torch.zeros(2, dtype=torch.float64)), 1),
    "ASGLD": (sgmcmc.ASGLD(_LOG_POSTERIOR, step_size=1e-3, momentum=0.5, noise=2.0), 1),
}


def _regression_data():
    model = ConjugateLinearRegression.make(num_data=100, dim=2, seed=0)
    return sgmcmc.Minibatches(model.features, model.targets, batch_size=10)


@pytest.mark.parametrize(("sampler", "max_graphs"), list(_EVERY_SAMPLER.values()), ids=list(_EVERY_SAMPLER))
def test_compiled_run_equals_eager_run(sampler, max_graphs):
    """compile=True keeps every chain's random streams, and a float that changes during the run
    (a decaying step size; cSGLD's temperature, 0 while exploring) becomes an input of the graph
    after one recompilation, not a constant that recompiles it at every step (dynamo would stop at
    its recompile limit, 8, and run the rest eagerly): one graph plus one per changing float."""
    from torch._dynamo.utils import counters

    data = _regression_data()
    options = dict(num_chains=3, num_steps=40, seed=7, progress=False)
    counters.clear()
    torch._dynamo.reset()
    compiled = sampler.sample(torch.zeros(2, dtype=torch.float64), data, compile=True, **options)
    assert counters["stats"]["unique_graphs"] <= max_graphs
    eager = sampler.sample(torch.zeros(2, dtype=torch.float64), data, **options)
    np.testing.assert_allclose(compiled.posterior["theta"], eager.posterior["theta"], rtol=1e-10)


@pytest.mark.parametrize("sampler", [sampler for sampler, _ in _EVERY_SAMPLER.values()], ids=list(_EVERY_SAMPLER))
def test_a_run_inside_torch_no_grad_equals_the_run_outside_it(sampler):
    """Sampling under a caller's torch.no_grad() (an evaluation loop, say) still differentiates the
    log posterior; it used to fail inside autograd with "does not require grad"."""
    options = dict(num_chains=3, num_steps=40, seed=7, progress=False)
    with torch.no_grad():
        inside = sampler.sample(torch.zeros(2, dtype=torch.float64), _regression_data(), **options)
    outside = sampler.sample(torch.zeros(2, dtype=torch.float64), _regression_data(), **options)
    np.testing.assert_array_equal(inside.posterior["theta"], outside.posterior["theta"])


def test_a_compiled_run_inside_torch_no_grad_equals_the_eager_run():
    sampler = _EVERY_SAMPLER["SGLD"][0]
    options = dict(num_chains=3, num_steps=40, seed=7, progress=False)
    with torch.no_grad():
        compiled = sampler.sample(torch.zeros(2, dtype=torch.float64), _regression_data(), compile=True, **options)
    eager = sampler.sample(torch.zeros(2, dtype=torch.float64), _regression_data(), **options)
    np.testing.assert_allclose(compiled.posterior["theta"], eager.posterior["theta"], rtol=1e-10)


def _scaled_standard_normal(scale):
    def log_posterior(theta):
        return -0.5 * scale * (theta**2).sum()

    return log_posterior


def test_a_step_that_is_not_one_graph_falls_back_to_eager_with_a_warning():
    def log_posterior(theta):
        torch._dynamo.graph_break()  # nothing eagerly; splits the step in two under compile
        return -0.5 * (theta**2).sum()

    sampler = sgmcmc.SGLD(log_posterior, step_size=0.1)
    options = dict(num_chains=2, num_steps=20, seed=0, progress=False)
    with pytest.warns(RuntimeWarning, match="torch.compile failed, sampling eagerly") as record:
        compiled = sampler.sample(torch.zeros(2), compile=True, **options)
    assert [warning.filename for warning in record] == [__file__]
    np.testing.assert_array_equal(
        compiled.posterior["theta"], sampler.sample(torch.zeros(2), **options).posterior["theta"]
    )


def test_each_sampler_has_its_own_recompile_limit_and_a_run_reports_reaching_it():
    """Runs of other samplers do not use up a sampler's recompile limit; a run that needs more
    compilations than the limit (a decaying step size: a constant float, then an input) warns
    and goes on eagerly."""
    options = dict(num_chains=2, num_steps=20, seed=0, progress=False, compile=True)
    with torch._dynamo.config.patch(recompile_limit=1), warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        for scale in (1.0, 2.0, 3.0):
            sgmcmc.SGLD(_scaled_standard_normal(scale), step_size=0.1).sample(torch.zeros(2), **options)
        decaying = sgmcmc.schedules.Polynomial(a=0.1, b=1.0, gamma=0.55)
        with pytest.warns(RuntimeWarning, match=r"more than torch._dynamo.config.recompile_limit \(1\) compilations"):
            sgmcmc.SGLD(_scaled_standard_normal(1.0), step_size=decaying).sample(torch.zeros(2), **options)


def test_compiled_runs_with_other_data_and_batch_sizes_in_one_process_all_compile():
    """A second run's different sizes would otherwise be made symbolic in its step (dynamo's
    automatic dynamic shapes), which N / batch.shape[0] in a log posterior cannot take."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        for num_data, batch_size in ((100, 10), (100, 25), (60, 25)):
            model = ConjugateLinearRegression.make(num_data=num_data, dim=2, seed=0)
            sgmcmc.SGLD(model.log_posterior(), step_size=1e-3).sample(
                torch.zeros(2),
                sgmcmc.Minibatches(model.features.float(), model.targets.float(), batch_size=batch_size),
                num_chains=2,
                num_steps=3,
                seed=0,
                progress=False,
                compile=True,
            )


class _NormStoppingAt:
    """A functional, θ ↦ ‖θ‖², that raises KeyboardInterrupt (as Ctrl-C would) at its call ``at``.

    Functionals run outside the compiled step, once at the start, once per kept draw and once per checkpoint
    (which keeps their values at its state)."""

    def __init__(self, at=None):
        self.at, self.calls = at, 0

    def __call__(self, theta):
        self.calls += 1
        if self.calls == self.at:
            raise KeyboardInterrupt
        return (theta**2).sum()


def _compiled_run_stopped_and_resumed(sampler, data, checkpoint, **options):
    """A compiled run stopped at step 23 (by its functional), then resumed from its checkpoint of step 20."""
    resume = dict(compile=True, checkpoint=checkpoint, checkpoint_every=10)
    with pytest.warns(RuntimeWarning, match="interrupted after 23 of 40 steps"):
        sampler.sample(
            torch.zeros(2, dtype=torch.float64), data, functionals={"norm": _NormStoppingAt(27)}, **resume, **options
        )
    return sampler.sample(
        torch.zeros(2, dtype=torch.float64), data, functionals={"norm": _NormStoppingAt()}, **resume, **options
    )


def test_compiled_run_resumed_compiled_equals_it_uninterrupted_bit_for_bit(tmp_path):
    """The first step of every compiled call is compiled too (an eager first step, which rounds
    differently, made the resumed run differ from the one never stopped)."""
    model = ConjugateLinearRegression.make(num_data=100, dim=2, seed=0)
    data = sgmcmc.Minibatches(model.features, model.targets, batch_size=10)
    sampler = sgmcmc.SGHMC(model.log_posterior(), step_size=1e-3, friction=0.1)
    options = dict(num_chains=3, num_steps=40, seed=7, progress=False)
    uninterrupted = sampler.sample(
        torch.zeros(2, dtype=torch.float64), data, functionals={"norm": _NormStoppingAt()}, compile=True, **options
    )
    resumed = _compiled_run_stopped_and_resumed(sampler, data, tmp_path / "run.pt", **options)
    for group, name in [("posterior", "theta"), ("sample_stats", "lp"), ("functionals", "norm")]:
        np.testing.assert_array_equal(getattr(resumed, group)[name], getattr(uninterrupted, group)[name])


def test_compiled_run_with_functionals_gradients_and_a_resumed_checkpoint_equals_the_eager_run(tmp_path):
    """What runs around the compiled step: functionals, kept gradients and a checkpoint written by
    a compiled run stopped at step 23 and resumed from step 20."""
    model = ConjugateLinearRegression.make(num_data=100, dim=2, seed=0)
    data = sgmcmc.Minibatches(model.features, model.targets, batch_size=10)
    sampler = sgmcmc.SGLD(model.log_posterior(), step_size=1e-3)
    options = dict(num_chains=3, num_steps=40, seed=7, progress=False, keep_gradients=True)
    eager = sampler.sample(
        torch.zeros(2, dtype=torch.float64), data, functionals={"norm": _NormStoppingAt()}, **options
    )
    resumed = _compiled_run_stopped_and_resumed(sampler, data, tmp_path / "run.pt", **options)
    assert resumed.num_draws == eager.num_draws == 40
    for group, name in [
        ("posterior", "theta"),
        ("functionals", "norm"),
        ("gradients", "theta"),
        ("sample_stats", "lp"),
    ]:
        np.testing.assert_allclose(
            getattr(resumed, group)[name], getattr(eager, group)[name], rtol=1e-10, err_msg=f"{group}/{name}"
        )


def test_compile_failure_falls_back_to_eager(monkeypatch):
    def failing_compile(function, **options):
        def compiled(*args):
            raise RuntimeError("no C compiler")

        return compiled

    monkeypatch.setattr(torch, "compile", failing_compile)
    with pytest.warns(RuntimeWarning, match="torch.compile failed, sampling eagerly: no C compiler"):
        fallen_back = _regression_run(compile=True)
    np.testing.assert_array_equal(fallen_back.posterior["theta"], _regression_run().posterior["theta"])


def test_the_step_size_stat_is_the_schedules_step_size_of_each_draw_in_float64():
    schedule = sgmcmc.schedules.Polynomial(a=0.1, b=1.0, gamma=0.55)
    trace = sgmcmc.SGLD(standard_normal_log_posterior, step_size=schedule).sample(
        torch.zeros(2), num_chains=2, num_steps=30, burn_in=5, thin=3, seed=0, progress=False
    )
    expected = np.array([schedule(int(step)) for step in trace.draw_coords["step"]])
    assert trace.sample_stats["step_size"].dtype == np.float64
    np.testing.assert_array_equal(trace.sample_stats["step_size"], np.broadcast_to(expected, (2, len(expected))))


def test_warnings_point_at_the_caller_when_the_package_is_imported_through_a_symlink(tmp_path):
    """warn_caller compares resolved paths: a package reached through a symlinked folder (a linked
    checkout, a venv on a linked disk) still attributes its warnings to the user's line."""
    (tmp_path / "linked").mkdir()
    (tmp_path / "linked" / "sgmcmc").symlink_to(Path(sgmcmc.__file__).parent, target_is_directory=True)
    script = tmp_path / "user.py"
    script.write_text(
        "import warnings, torch, sgmcmc\n"
        "assert 'linked' in sgmcmc.__file__, sgmcmc.__file__\n"
        "data = sgmcmc.Minibatches(torch.randn(20, 1), batch_size=5)\n"
        "log_posterior = lambda theta, batch: -0.5 * (theta**2).sum()\n"
        "log_posterior.num_data = 7\n"
        "with warnings.catch_warnings(record=True) as record:\n"
        "    warnings.simplefilter('always')\n"
        "    sgmcmc.SGLD(log_posterior, 0.01).sample(torch.zeros(1), data, num_steps=3, progress=False)\n"
        "print([warning.filename for warning in record if 'num_data=7' in str(warning.message)])\n"
    )
    result = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(tmp_path / "linked")},
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout.strip() == repr([str(script)])


def test_a_log_posterior_that_rebinds_a_key_of_its_params_gets_the_same_gradient_alone_as_among_chains():
    """p["w"] = 2 p["w"] (a reparametrisation, no in-place op): before, a chain alone got the gradient with
    respect to 2w, the leaf having been replaced in the engine's own dict: −2 at w = 1 instead of −4."""

    def reparametrised(params):
        params["w"] = 2 * params["w"]
        return -0.5 * (params["w"] ** 2).sum()

    sampler = sgmcmc.SGLD(reparametrised, step_size=0.01, temperature=0.0)
    options = dict(num_steps=3, progress=False, keep_gradients=True)
    alone = sampler.sample({"w": torch.ones(2)}, num_chains=1, **options)
    among = sampler.sample({"w": torch.ones(2)}, num_chains=2, **options)
    np.testing.assert_array_equal(alone.gradients["w"][0, 0], [-4.0, -4.0])
    np.testing.assert_array_equal(alone.posterior["w"][0], among.posterior["w"][0])


@pytest.mark.parametrize(
    "make, other_gradients",
    [
        (lambda log_posterior: sgmcmc.SGLD(log_posterior, step_size=0.1), 0),
        (lambda log_posterior: sgmcmc.SGHMC(log_posterior, step_size=0.1, friction=0.3), 0),
        (lambda log_posterior: sgmcmc.PSGLD(log_posterior, step_size=0.01, gamma_correction=True), 1),  # init's check
        (lambda log_posterior: sgmcmc.SGNHT(log_posterior, step_size=0.1), 0),
        (lambda log_posterior: sgmcmc.LD(log_posterior, step_size=0.1), 1 + 20),  # init's, and one a kept draw
    ],
    ids=["SGLD", "SGHMC", "pSGLD with its Hessian-vector product", "SGNHT", "LD"],
)
@pytest.mark.parametrize("compile", [False, True], ids=["eager", "compiled"])
def test_kept_gradients_are_the_ones_the_step_took_not_taken_again(make, other_gradients, compile):
    """∇log p of N(0, I) is −θ. Before, every kept draw took the gradient a second time (1.7× the eager step,
    3.7× the compiled one, whose step already had it); LD, whose step reuses the previous step's full-data
    gradient and takes the next one at the new state, still takes it for the draw."""
    calls = 0

    def counted(theta):
        nonlocal calls
        calls += torch.is_grad_enabled()
        return standard_normal_log_posterior(theta)

    trace = make(counted).sample(
        torch.ones(3, dtype=torch.float64),
        num_chains=2,
        num_steps=20,
        keep_gradients=True,
        compile=compile,
        progress=False,
    )
    np.testing.assert_allclose(trace.gradients["theta"], -trace.posterior["theta"], rtol=1e-12)
    if not compile:  # compiled, the graph calls it once when it is traced
        assert calls == Interrupting.CHECKS + 20 + other_gradients


class _StandStill(sgmcmc.Sampler):
    """A step that keeps its state as it is (the same tensors), as a rejected move may."""

    def step(self, state, potential, step_size, temperature, generators):
        return state, {"lp": potential(state["params"])[0]}


class _OwnNoise(sgmcmc.Sampler):
    """Langevin with its noise drawn through ChainGenerators.normal and its chains counted by len()."""

    def step(self, state, potential, step_size, temperature, generators):
        log_posterior, gradient = potential(state["params"])
        theta = state["params"]["theta"]
        noise = generators.normal(theta.shape[1], theta.dtype)[: len(generators)]
        return {"params": {"theta": theta + step_size * gradient["theta"] + math.sqrt(2 * step_size) * noise}}, {
            "lp": log_posterior
        }


def test_custom_steps_that_keep_their_state_or_draw_with_normal_run_eagerly_and_compiled():
    """Before, a step returning its state unchanged failed in the divergence guard ('int' object has no
    attribute 'abs'), and compile=True failed on generators.normal, which the recording stand-in lacked."""
    trace = _StandStill(standard_normal_log_posterior, 0.1).sample(torch.ones(2), num_chains=2, num_steps=3)
    assert (trace.posterior["theta"] == 1).all() and not trace.sample_stats["diverging"].any()
    sampler = _OwnNoise(standard_normal_log_posterior, 0.1)
    eager = sampler.sample(torch.zeros(2), num_chains=2, num_steps=5, seed=1, progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no fallback to eager
        compiled = sampler.sample(torch.zeros(2), num_chains=2, num_steps=5, seed=1, progress=False, compile=True)
    np.testing.assert_allclose(compiled.posterior["theta"], eager.posterior["theta"], rtol=1e-6, atol=1e-6)


def test_a_sampler_given_another_log_posterior_compiles_its_step_anew():
    """Before, the compiled step's code was shared by the sampler's runs whatever its log posterior: one
    with another num_data turned N/|B| into a symbolic float, inductor failed, and the run fell back to eager."""
    features = torch.randn(80, 3, generator=torch.Generator().manual_seed(0))
    targets = features @ torch.tensor([1.0, -2.0, 0.5])

    def log_posterior(num_data):
        return sgmcmc.minibatch_log_posterior(
            lambda theta: -0.5 * (theta**2).sum(),
            lambda theta, batch: -0.5 * (batch[0] @ theta - batch[1]) ** 2,
            num_data,
        )

    sampler = sgmcmc.SGLD(log_posterior(80), step_size=1e-3)
    options = dict(num_chains=3, num_steps=4, progress=False, seed=1)
    sampler.sample(torch.zeros(3), sgmcmc.Minibatches(features, targets, batch_size=10), compile=True, **options)
    sampler.log_posterior = log_posterior(40)
    half = sgmcmc.Minibatches(features[:40], targets[:40], batch_size=10)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no fallback to eager
        compiled = sampler.sample(torch.zeros(3), half, compile=True, **options)
    eager = sampler.sample(torch.zeros(3), half, **options)
    np.testing.assert_allclose(compiled.posterior["theta"], eager.posterior["theta"], rtol=1e-5, atol=1e-6)


def test_the_kept_steps_of_a_very_long_run_are_counted_without_a_pass_over_them():
    """A run of 10¹² steps (stopped by Ctrl-C, its draws streamed to a file) starts at once: a sampler that
    keeps every state has its kept steps counted, not listed (10⁸ steps took 4 GB and 8 s)."""
    kept, count = kept_steps(sgmcmc.SGLD(standard_normal_log_posterior, 0.1), 10**12, burn_in=10, thin=3)
    assert count == (10**12 - 10 + 2) // 3
    assert [step for step in range(20) if kept(step)] == [10, 13, 16, 19] and kept(10 + 3 * (count - 1))
    cyclical = sgmcmc.CyclicalSGLD(
        standard_normal_log_posterior, sgmcmc.schedules.Cyclical(0.1, num_cycles=2, total_steps=40)
    )
    kept, count = kept_steps(cyclical, 40, burn_in=0, thin=1)
    assert count == sum(map(kept, range(40))) == sum(map(cyclical.keeps, range(40))) > 0


@pytest.mark.parametrize("num_chains", [1, 2])
def test_a_log_posterior_that_draws_from_the_global_rng_is_refused(num_chains):
    """Before, one chain ran with dropout's global draws (the same seed then gave other draws each run) and
    two chains failed in vmap's randomness check with its own message."""

    def log_posterior(theta):
        return -0.5 * (torch.nn.functional.dropout(theta, p=0.5, training=True) ** 2).sum()

    with pytest.raises(ValueError, match="log_posterior draws from torch's global random number generator"):
        sgmcmc.SGLD(log_posterior, 0.1).sample(torch.ones(3), num_chains=num_chains, num_steps=2, progress=False)


@pytest.mark.parametrize("trace_file", [False, True])
def test_a_functional_that_leaves_its_domain_is_reported_with_its_count(tmp_path, trace_file):
    """Before, log θ of chains that cross 0 was stored as NaN and -inf without a word."""
    options = dict(num_chains=2, num_steps=50, seed=0, progress=False)
    if trace_file:
        options["trace_file"] = tmp_path / "trace.nc"
    sampler = sgmcmc.SGLD(standard_normal_log_posterior, step_size=0.1)
    with pytest.warns(
        RuntimeWarning, match=r"functional 'log_theta' is NaN or infinite at (\d+) of the 2 × 50"
    ) as caught:
        trace = sampler.sample(
            torch.zeros(1), functionals={"log_theta": lambda theta: torch.log(theta).sum()}, **options
        )
    non_finite = int((~np.isfinite(np.asarray(trace.functionals["log_theta"]))).sum())
    assert non_finite > 0 and f"at {non_finite} of" in str(caught[0].message)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sampler.sample(torch.zeros(1), functionals={"square": lambda theta: theta.square().sum()}, **options)


def test_a_chain_that_diverges_at_step_0_is_warned_of():
    """diverged_at_step 0 is a divergence like any other (found by mutation testing: warning only from step 1
    went unseen). θ = 10¹⁰ − 10³⁰⁰ · 10¹⁰ overflows float64 in the first update."""
    with pytest.warns(sgmcmc.SamplerDivergenceWarning, match="1 of 2 chains diverged .*: chain 0 at step 0"):
        trace = sgmcmc.SGLD(standard_normal_log_posterior, step_size=1e300, temperature=0.0).sample(
            torch.tensor([[1e10], [0.0]], dtype=torch.float64),
            num_chains=2,
            num_steps=3,
            stacked_init=True,
            progress=False,
        )
    assert trace.diverged_at_step.tolist() == [0, -1]

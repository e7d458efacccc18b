"""On a CUDA device (skipped without one): same engine, same stationary law."""

import pytest
import torch
from torch import nn

import sgmcmc
from sgmcmc.models import Classification, ModulePosterior
from targets import (
    K_SIGMA,
    ConjugateLinearRegression,
    Interrupting,
    assert_moments,
    standard_normal_log_posterior,
    variance_about_and_se,
)

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def test_sgld_on_cuda_has_the_discrete_time_variance():
    step_size = 0.5
    trace = sgmcmc.SGLD(standard_normal_log_posterior, step_size=step_size).sample(
        torch.zeros(2, dtype=torch.float64),
        num_chains=64,
        num_steps=2000,
        burn_in=100,
        seed=0,
        device="cuda",
        progress=False,
    )
    assert trace.final_state["params"]["theta"].device.type == "cuda"
    variance, se = variance_about_and_se(trace.posterior["theta"][..., 0], center=0.0)
    assert abs(variance - 1 / (1 - step_size / 2)) < K_SIGMA * se


def test_minibatches_on_cuda_are_reproducible():
    rows = torch.randn(100, 2, dtype=torch.float64)
    data = sgmcmc.Minibatches(rows, batch_size=10)

    def log_posterior(theta, batch):
        return -0.5 * (theta**2).sum() - 10.0 * ((batch @ theta) ** 2).mean()

    runs = [
        sgmcmc.SGLD(log_posterior, step_size=1e-2).sample(
            torch.zeros(2, dtype=torch.float64), data, num_chains=8, num_steps=50, seed=1, device="cuda", progress=False
        )
        for _ in range(2)
    ]
    assert (runs[0].posterior["theta"] == runs[1].posterior["theta"]).all()


@pytest.mark.filterwarnings("error:compile=True:RuntimeWarning")  # a compiler failure falls back to eager
def test_compiled_run_on_cuda_equals_the_eager_run():
    """compile=True on CUDA: per-chain CUDA generators drawn outside the graph, replayed inside it."""
    rows = torch.randn(100, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    data = sgmcmc.Minibatches(rows, batch_size=10)

    def log_posterior(theta, batch):
        return -0.5 * (theta**2).sum() - 10.0 * ((batch @ theta) ** 2).mean()

    eager, compiled = (
        sgmcmc.SGLD(log_posterior, step_size=1e-2).sample(
            torch.zeros(2, dtype=torch.float64),
            data,
            num_chains=8,
            num_steps=50,
            seed=1,
            device="cuda",
            progress=False,
            compile=compile,
        )
        for compile in (False, True)
    )
    # float64 and 50 contracting steps: compiled kernels differ from eager ones by rounding only
    torch.testing.assert_close(compiled.posterior["theta"], eager.posterior["theta"], rtol=1e-10, atol=0)


def test_run_on_cuda_resumes_from_its_checkpoint(tmp_path):
    """The checkpoint (trace so far, generator states) is loaded on the host; the chains' state goes to the device."""
    common = dict(num_chains=4, num_steps=60, seed=2, device="cuda", progress=False, checkpoint_every=10)
    uninterrupted = sgmcmc.SGLD(standard_normal_log_posterior, step_size=0.1).sample(torch.zeros(2), **common)
    checkpoint = tmp_path / "run.pt"
    with pytest.warns(RuntimeWarning, match="interrupted after 30 of 60 steps"):
        sgmcmc.SGLD(Interrupting(standard_normal_log_posterior, at_step=30), step_size=0.1).sample(
            torch.zeros(2), checkpoint=checkpoint, **common
        )
    resumed = sgmcmc.SGLD(standard_normal_log_posterior, step_size=0.1).sample(
        torch.zeros(2), checkpoint=checkpoint, **common
    )
    assert (resumed.posterior["theta"] == uninterrupted.posterior["theta"]).all()


def test_a_chain_alone_on_cuda_equals_that_chain_among_others():
    """Per-chain CUDA generators: chain c run alone with its seed has chain c's noise and minibatches.

    Up to rounding: cuBLAS may pick another kernel for 1 and 4 chains (docs/conventions.md)."""
    model = ConjugateLinearRegression.make(num_data=100, dim=2, seed=0)
    data = sgmcmc.Minibatches(model.features, model.targets, batch_size=10)

    def run(num_chains, seed):
        return sgmcmc.SGLD(model.log_posterior(), step_size=1e-3).sample(
            torch.zeros(2, dtype=torch.float64),
            data,
            num_chains=num_chains,
            num_steps=60,
            seed=seed,
            device="cuda",
            progress=False,
        )

    together = run(4, 7)
    for chain, seed in enumerate(sgmcmc.chain_seeds(7, 4)):
        alone = run(1, [seed])
        torch.testing.assert_close(alone.posterior["theta"][0], together.posterior["theta"][chain], rtol=1e-10, atol=0)


def test_initial_params_of_a_module_on_cuda_are_its_cpu_starts_and_leave_the_cuda_rng_alone():
    posterior = ModulePosterior(nn.Linear(4, 3), Classification(), num_data=10)
    on_cpu = posterior.initial_params(3, seed=0)
    posterior.module.to("cuda")
    state = torch.cuda.get_rng_state()
    on_cuda = posterior.initial_params(3, seed=0)
    assert torch.equal(torch.cuda.get_rng_state(), state)
    for name, value in on_cpu.items():
        assert on_cuda[name].device.type == "cuda"
        torch.testing.assert_close(on_cuda[name].cpu(), value, rtol=0, atol=0)


@pytest.mark.parametrize("built_on", ["cpu", "cuda"])
def test_a_whitened_mala_run_on_cuda_matches_the_exact_posterior(built_on):
    """The Laplace whitening built on either device serves a run on CUDA (its tensors follow z's
    device); MALA in z matches the exact mean and covariance of a regression of condition number 1e4."""
    model = ConjugateLinearRegression.make(num_data=200, dim=3, seed=0).with_feature_scales([1.0, 10.0, 0.1])
    mean, covariance = model.posterior()
    data = sgmcmc.Minibatches(model.features, model.targets, batch_size=20)
    laplace = sgmcmc.laplace_approximation(model.log_posterior(), torch.from_numpy(mean).to(built_on), data)
    trace = sgmcmc.LD(laplace.whitened_log_posterior, step_size=0.5, metropolis=True).sample(
        laplace.whiten(laplace.mode),
        data,
        num_chains=8,
        num_steps=2500,
        burn_in=500,
        init_jitter=1.0,
        seed=3,
        device="cuda",
        progress=False,
    )
    assert_moments(laplace.unwhiten(trace).posterior["theta"], mean, covariance, relative_bias=0.0)


def test_a_mode_on_the_gpu_is_recorded_as_the_same_mode_on_the_cpu():
    """The trace attrs (which a checkpoint compares) hold the mode's values, not the device it was given on."""
    model = ConjugateLinearRegression.make(num_data=100, dim=2, seed=0)
    data = sgmcmc.Minibatches(model.features, model.targets, batch_size=20)
    mode = torch.from_numpy(model.posterior()[0])
    attrs = [
        sgmcmc.SGLDCV(model.log_posterior(), step_size=1e-4, mode=mode.to(device))
        .sample(
            torch.zeros(2, dtype=torch.float64), data, num_chains=2, num_steps=5, seed=0, device="cuda", progress=False
        )
        .to_arviz()
        .posterior.attrs["mode"]
        for device in ("cpu", "cuda")
    ]
    assert attrs[0] == attrs[1] and "cuda" not in attrs[1]


def test_a_log_posterior_that_draws_from_the_cuda_rng_is_refused():
    """Dropout on a CUDA tensor advances only that device's generator, which the start check reads too."""

    def log_posterior(theta):
        return -0.5 * (torch.nn.functional.dropout(theta, p=0.5, training=True) ** 2).sum()

    with pytest.raises(ValueError, match="draws from torch's global random number generator"):
        sgmcmc.SGLD(log_posterior, 0.1).sample(torch.ones(3), num_chains=1, num_steps=2, device="cuda", progress=False)

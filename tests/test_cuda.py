"""On a CUDA device (skipped without one): same engine, same stationary law."""

import pytest
import torch

import sgmcmc
from targets import K_SIGMA, Interrupting, standard_normal_log_posterior, variance_about_and_se

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


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
    """The checkpoint is loaded onto the device; the CUDA generators' states must go back to the CPU."""
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

"""The ArviZ export: groups, dims, coords, stats, attrs, netCDF round trip, diagnostics."""

import arviz as az
import numpy as np
import pytest
import torch

import sgmcmc
from targets import standard_normal_log_posterior


def _log_posterior(params):
    return -0.5 * (params["weights"] ** 2).sum() - 0.5 * params["bias"] ** 2


@pytest.fixture(scope="module")
def trace():
    init = {"weights": torch.zeros(2, 3), "bias": torch.zeros(())}
    return sgmcmc.SGLD(_log_posterior, step_size=0.3).sample(
        init, num_chains=4, num_steps=2000, burn_in=500, thin=2, seed=0, progress=False
    )


def test_groups_dims_and_coords(trace):
    idata = trace.to_arviz()
    assert isinstance(idata, az.InferenceData)
    posterior = idata.posterior
    assert posterior["weights"].dims == ("chain", "draw", "weights_dim_0", "weights_dim_1")
    assert posterior["bias"].dims == ("chain", "draw")
    np.testing.assert_array_equal(posterior.chain, np.arange(4))
    np.testing.assert_array_equal(posterior.draw, np.arange(750))
    np.testing.assert_array_equal(posterior["weights"].values, trace.posterior["weights"])
    stats = idata.sample_stats
    assert {"lp", "step_size", "diverging"} <= set(stats.data_vars)
    assert stats["diverging"].dtype == bool and not stats["diverging"].any()
    np.testing.assert_allclose(stats["step_size"], 0.3)
    assert stats["lp"].dims == ("chain", "draw")


def test_attrs_record_sampler_hyperparameters_seed_and_versions(trace):
    attrs = trace.to_arviz().posterior.attrs
    assert attrs["sampler"] == "SGLD"
    assert attrs["step_size"] == "Constant(step_size=0.3)"
    assert attrs["temperature"] == 1.0
    assert attrs["seed"] == 0 and attrs["burn_in"] == 500 and attrs["thin"] == 2
    assert attrs["inference_library"] == "sgmcmc"
    assert attrs["inference_library_version"] == sgmcmc.__version__
    assert attrs["torch_version"] == torch.__version__
    assert attrs["arviz_version"] == az.__version__


def test_netcdf_round_trip(trace, tmp_path):
    idata = trace.to_arviz()
    path = tmp_path / "trace.nc"
    idata.to_netcdf(str(path))
    loaded = az.from_netcdf(str(path))
    for name in ("weights", "bias"):
        np.testing.assert_array_equal(loaded.posterior[name].values, idata.posterior[name].values)
    for name in ("lp", "step_size", "diverging"):
        np.testing.assert_array_equal(loaded.sample_stats[name].values, idata.sample_stats[name].values)
    assert loaded.sample_stats["diverging"].dtype == bool
    assert loaded.posterior.attrs["sampler"] == "SGLD"


def test_summary_and_rhat_near_one_on_mixed_chains(trace):
    summary = az.summary(trace.to_arviz())
    assert len(summary) == 7
    assert summary["r_hat"].max() < 1.01


def test_rhat_flags_chains_started_far_apart_and_run_briefly():
    init = torch.tensor([[-20.0], [-10.0], [10.0], [20.0]])
    trace = sgmcmc.SGLD(standard_normal_log_posterior, step_size=0.01).sample(
        init, num_chains=4, num_steps=60, seed=0, stacked_init=True, progress=False
    )
    assert float(az.rhat(trace.to_arviz())["theta"].max()) > 1.1

"""The ArviZ export: groups, dims, coords, stats, attrs, netCDF round trip, diagnostics."""

import signal
import subprocess
import sys

import arviz as az
import h5netcdf
import numpy as np
import pytest
import torch
import xarray as xr

import sgmcmc
from sgmcmc.trace import TraceRecorder, Variable, group_dataset, netcdf_attr
from targets import Interrupting, group_names, standard_normal_log_posterior


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
    assert isinstance(idata, az.InferenceData if int(az.__version__.split(".")[0]) < 1 else xr.DataTree)
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


def _cyclical_run(**kwargs):
    """A cyclical sampler (draw coords step and cycle) keeping functionals and gradients."""
    init = {"weights": torch.zeros(2, 3), "bias": torch.zeros(())}
    schedule = sgmcmc.schedules.Cyclical(initial_step_size=0.3, num_cycles=3, total_steps=90, exploration=0.0)
    sampler = sgmcmc.CyclicalSGLD(_log_posterior, schedule)
    functionals = {"norm": lambda params: params["weights"].norm(), "squares": lambda params: params["weights"] ** 2}
    return sampler.sample(
        init, num_chains=3, num_steps=90, seed=0, functionals=functionals, keep_gradients=True, progress=False, **kwargs
    )


def test_functionals_and_gradients_are_groups_of_their_own():
    trace = _cyclical_run()
    weights = trace.posterior["weights"]
    np.testing.assert_allclose(trace.functionals["norm"], np.linalg.norm(weights.reshape(3, -1, 6), axis=-1), rtol=1e-6)
    np.testing.assert_array_equal(trace.functionals["squares"], weights**2)
    np.testing.assert_allclose(trace.gradients["weights"], -weights)  # ∇log p of a standard normal
    np.testing.assert_allclose(trace.gradients["bias"], -trace.posterior["bias"])
    idata = trace.to_arviz()
    assert idata.functionals["squares"].dims == ("chain", "draw", "squares_dim_0", "squares_dim_1")
    np.testing.assert_array_equal(idata.functionals["cycle"], trace.draw_coords["cycle"])
    summary = az.summary(idata, group="functionals", kind="diagnostics")
    assert len(summary) == 1 + 6 and summary["ess_bulk"].notna().all()


def test_keep_chooses_parameters():
    only_bias = _cyclical_run(keep=["bias"])
    assert list(only_bias.posterior) == ["bias"] and list(only_bias.gradients) == ["bias"]
    assert list(_cyclical_run(keep=(name for name in ["bias"])).posterior) == ["bias"]  # a generator too
    nothing = _cyclical_run(keep=())
    assert not nothing.posterior and list(nothing.functionals) == ["norm", "squares"]
    np.testing.assert_array_equal(nothing.functionals["norm"], _cyclical_run().functionals["norm"])
    assert "posterior" not in group_names(nothing.to_arviz())


def test_streaming_to_a_file_equals_keeping_in_memory(tmp_path):
    in_memory = _cyclical_run()
    streamed = _cyclical_run(trace_file=tmp_path / "trace.nc")
    assert streamed.path == tmp_path / "trace.nc"
    for group in ("posterior", "functionals", "gradients", "sample_stats"):
        assert list(getattr(streamed, group)) == list(getattr(in_memory, group))
        for name, values in getattr(in_memory, group).items():
            np.testing.assert_array_equal(getattr(streamed, group)[name], values)
            assert getattr(streamed, group)[name].dtype == values.dtype
    for name, values in in_memory.draw_coords.items():
        np.testing.assert_array_equal(streamed.draw_coords[name], values)
    assert streamed.attrs["steps_done"] == 90
    idata = streamed.to_arviz()
    np.testing.assert_array_equal(idata.posterior["weights"].values, in_memory.posterior["weights"])
    assert idata.sample_stats["diverging"].dtype == bool


def test_a_parameter_with_no_elements_streams_to_a_file(tmp_path):
    init = {"w": torch.zeros(2), "empty": torch.zeros(3, 0)}
    trace = sgmcmc.SGLD(lambda params: -0.5 * (params["w"] ** 2).sum(), 0.1).sample(
        init, num_chains=2, num_steps=5, seed=0, trace_file=tmp_path / "trace.nc", progress=False
    )
    assert trace.posterior["empty"].shape == (2, 5, 3, 0)
    assert trace.to_arviz().posterior["w"].shape == (2, 5, 2)


def test_streamed_file_of_an_interrupted_run_holds_the_draws_so_far(tmp_path):
    with pytest.warns(RuntimeWarning, match="interrupted after 700 of 1000 steps"):
        sgmcmc.SGLD(Interrupting(standard_normal_log_posterior, at_step=700), step_size=0.1).sample(
            torch.zeros(2), num_chains=2, num_steps=1000, seed=0, trace_file=tmp_path / "t.nc", progress=False
        )
    loaded = sgmcmc.Trace.load(tmp_path / "t.nc")
    assert loaded.attrs["steps_done"] == 700 and loaded.num_draws == 700  # 2 chunks of 256, then the rest
    idata = az.from_netcdf(str(tmp_path / "t.nc"))
    assert idata.posterior["theta"].shape == (2, 700, 2)
    np.testing.assert_array_equal(idata.posterior["step"], np.arange(700))


def test_group_dataset_gives_a_group_as_a_dataset_under_either_arviz(trace):
    idata = trace.to_arviz()
    tree = xr.DataTree.from_dict({name: group_dataset(idata, name) for name in group_names(idata)})  # as ArviZ 1.x
    for container in (idata, tree):
        stats = group_dataset(container, "sample_stats")
        assert isinstance(stats, xr.Dataset) and list(stats[["lp"]]) == ["lp"]
        np.testing.assert_array_equal(stats["lp"], trace.sample_stats["lp"])


def test_a_run_that_writes_a_trace_file_held_open_by_its_inferencedata_says_so(tmp_path):
    def run():
        return sgmcmc.SGLD(standard_normal_log_posterior, 0.1).sample(
            torch.zeros(2), num_chains=2, num_steps=5, seed=0, trace_file=tmp_path / "t.nc", progress=False
        )

    idata = run().to_arviz()
    assert idata.posterior["theta"].shape == (2, 5, 2)
    with pytest.raises(OSError, match=r"cannot open the trace file .*t.nc to write.*close that first"):
        run()
    if int(az.__version__.split(".")[0]) < 1:  # InferenceData.close() closes nothing in ArviZ 0.x
        for group in idata.groups():
            idata[group].close()
    else:
        idata.close()
    assert run().num_draws == 5


def test_a_trace_file_that_cannot_be_written_for_another_reason_gets_no_hint_about_holding_it_open(
    tmp_path, monkeypatch
):
    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(h5netcdf, "File", full_disk)
    with pytest.raises(OSError, match="No space left on device") as raised:
        sgmcmc.SGLD(standard_normal_log_posterior, 0.1).sample(
            torch.zeros(2), num_chains=2, num_steps=5, seed=0, trace_file=tmp_path / "t.nc", progress=False
        )
    assert "close that first" not in str(raised.value)


def test_bad_trace_requests():
    def run(**kwargs):
        return sgmcmc.SGLD(standard_normal_log_posterior, 0.1).sample(
            torch.zeros(2), num_chains=2, num_steps=5, progress=False, **kwargs
        )

    with pytest.raises(ValueError, match=r"keep names unknown parameters \['w'\]"):
        run(keep=["w"])
    with pytest.raises(TypeError, match="functional 'f' is a float"):
        run(functionals={"f": 1.0})
    with pytest.raises(ValueError, match="functional name 'step' is not usable"):
        run(functionals={"step": lambda theta: theta})
    with pytest.raises(ValueError, match="functional name 'theta_dim_0' is not usable.*ending in '_dim_<i>'"):
        run(functionals={"theta_dim_0": lambda theta: theta[0]})  # would be taken for θ's axis
    with pytest.raises(ValueError, match="parameter name '.' is not usable"):
        sgmcmc.SGLD(lambda params: -(params["."] ** 2).sum(), 0.1).sample(
            {".": torch.zeros(2)}, num_chains=2, num_steps=5, progress=False
        )
    with pytest.raises(ValueError, match="functional 'f' failed on the initial params.*vmap"):
        run(functionals={"f": lambda theta: theta.sum().item()})
    with pytest.raises(TypeError, match="functional 'f' has dtype torch.bfloat16, which numpy"):
        run(functionals={"f": lambda theta: theta.sum().to(torch.bfloat16)})
    with pytest.raises(FileNotFoundError, match="no trace file"):
        sgmcmc.Trace.load("missing.nc")


def test_loading_a_file_that_is_not_netcdf_names_the_file(tmp_path):
    """Before, h5py's "OSError: Unable to synchronously open file (file signature not found)"; and a
    directory was "no trace file at" it."""
    with pytest.raises(ValueError, match="is a directory; give the trace file in it"):
        sgmcmc.Trace.load(tmp_path)
    path = tmp_path / "draws.nc"
    path.write_text("chain,draw,theta\n0,0,0.5\n")
    with pytest.raises(ValueError, match="draws.nc is not an sgmcmc trace: it is not a netCDF-4"):
        sgmcmc.Trace.load(path)


def test_a_file_arviz_wrote_loads_with_the_runs_attrs_and_one_of_another_library_is_refused(trace, tmp_path):
    """ArviZ keeps the attrs on each group, not at the file's root, the one place load read them: the trace
    came back with no attrs (diverged_at_step a KeyError), and a file without sgmcmc's step coordinate
    failed in num_draws with StopIteration."""
    trace.to_arviz().to_netcdf(str(tmp_path / "posterior.nc"))
    loaded = sgmcmc.Trace.load(tmp_path / "posterior.nc")
    assert loaded.attrs == trace.attrs
    assert loaded.diverged_at_step.tolist() == trace.diverged_at_step.tolist()
    assert loaded.num_draws == trace.num_draws
    np.testing.assert_array_equal(loaded.posterior["weights"], trace.posterior["weights"])
    xr.Dataset({"lp": (("chain", "draw"), np.zeros((2, 5)))}).to_netcdf(
        tmp_path / "other.nc", group="sample_stats", engine="h5netcdf"
    )
    with pytest.raises(ValueError, match="other.nc is not an sgmcmc trace: its sample_stats has no step coordinate"):
        sgmcmc.Trace.load(tmp_path / "other.nc")


def test_a_trace_read_from_its_file_counts_its_chains_without_reading_a_variable(trace, tmp_path, monkeypatch):
    """Before, num_chains read all of lp from the file (124 ms for a 102 MB lp, at every call)."""
    trace.to_arviz().to_netcdf(str(tmp_path / "posterior.nc"))
    loaded = sgmcmc.Trace.load(tmp_path / "posterior.nc")
    monkeypatch.setattr(sgmcmc.trace._StoredGroup, "__getitem__", lambda group, name: pytest.fail(f"read {name}"))
    assert loaded.num_chains == trace.num_chains == trace.posterior["weights"].shape[0]


def test_a_streamed_trace_refuses_to_read_its_file_once_another_run_wrote_it(tmp_path):
    """Before, the first run's trace read the second run's draws: its attrs said 20 draws of seed 0, its
    posterior held the 10 draws of seed 1."""
    sampler = sgmcmc.SGLD(standard_normal_log_posterior, step_size=0.1)
    options = dict(num_chains=2, trace_file=tmp_path / "trace.nc", progress=False)
    first = sampler.sample(torch.zeros(5), num_steps=20, seed=0, **options)
    assert first.posterior["theta"].shape == (2, 20, 5)
    second = sampler.sample(torch.zeros(5), num_steps=10, seed=1, **options)
    for read in (lambda: first.posterior["theta"], first.to_arviz):
        with pytest.raises(RuntimeError, match="trace.nc now holds another run .*: it was written again after this"):
            read()
    assert second.posterior["theta"].shape == (2, 10, 5)


@pytest.mark.parametrize("streamed", [False, True], ids=["in memory", "streamed"])
def test_a_bfloat16_log_posterior_is_recorded_as_float64(tmp_path, streamed):
    """Before, lp's device buffer took the value's dtype, which numpy cannot hold: the run failed at its first
    chunk's copy to the host (at the end of a short run) and its partial trace failed the same way."""
    trace = sgmcmc.SGLD(lambda theta: -0.5 * (theta**2).sum().to(torch.bfloat16), step_size=0.1).sample(
        torch.zeros(2),
        num_chains=2,
        num_steps=5,
        seed=0,
        progress=False,
        trace_file=tmp_path / "t.nc" if streamed else None,
    )
    assert trace.sample_stats["lp"].dtype == np.float64
    expected = -0.5 * (trace.posterior["theta"].astype(np.float64) ** 2).sum(-1)
    np.testing.assert_allclose(trace.sample_stats["lp"], expected, rtol=2**-7)  # bfloat16's rounding


def _recorder(max_draws, **kwargs):
    layout = {"posterior": {"x": Variable((2,), np.dtype(np.float32))}, "sample_stats": {}}
    return TraceRecorder(layout, ["step"], num_chains=3, attrs={}, max_draws=max_draws, **kwargs)


def test_draws_pass_through_the_device_buffer_chunk_by_chunk_and_survive_a_checkpoint():
    """Chunks of 2 draws (24 bytes each): 7 draws fill the host arrays in order, also across a
    checkpoint taken mid-chunk and restored into a fresh recorder."""
    draws = torch.arange(7 * 3 * 2, dtype=torch.float32).reshape(7, 3, 2)
    first = _recorder(7, chunk_bytes=48)
    first.start(steps_done=0)
    assert first.chunk_size == 2
    for step in range(5):
        first.append({"posterior": {"x": draws[step]}}, {"step": 10 * step}, steps_done=10 * step + 1)
    saved = first.checkpoint(steps_done=5)
    assert saved["values"]["posterior"]["x"].shape == (3, 5, 2)
    resumed = _recorder(7, chunk_bytes=48)
    resumed.restore(saved, steps_done=5)
    for step in range(5, 7):
        resumed.append({"posterior": {"x": draws[step]}}, {"step": 10 * step}, steps_done=10 * step + 1)
    trace = resumed.finish(steps_done=7, final_state={})
    np.testing.assert_array_equal(trace.posterior["x"], draws.transpose(0, 1).numpy())
    np.testing.assert_array_equal(trace.draw_coords["step"], 10 * np.arange(7))


def test_a_streamed_file_says_how_far_the_run_got_with_every_chunk(tmp_path):
    """The file must tell a run killed between checkpoints (SIGKILL, out of memory) how far it got:
    before, a chunk written between checkpoints left its steps_done at the start's 0."""
    recorder = _recorder(7, chunk_bytes=48, path=tmp_path / "t.nc")
    recorder.start(steps_done=0)
    for step in range(3):
        recorder.append({"posterior": {"x": torch.zeros(3, 2)}}, {"step": step}, steps_done=step + 1)
    # as the process died here, the third draw still on the device
    with h5netcdf.File(tmp_path / "t.nc", "r") as stored:
        assert stored.groups["posterior"].dimensions["draw"].size == 2 and stored.attrs["steps_done"] == 2


def test_a_streamed_file_read_mid_run_has_the_divergence_record_as_of_its_steps_done(tmp_path):
    """Before, diverged_at_step was written only when the run finished: a file read mid-run, or left by a
    run that was killed or raised SystemExit, had none, and its Trace.diverged_at_step raised KeyError.

    At T = 0 chain 1 moves θ0 up by exactly 1 a step, so its log posterior is first NaN at the state after
    255 steps: it diverges at step 255, whose draw (flagged) completes the first chunk of 256 draws. The
    file's record must then name step 255 with that chunk, not only with the next one."""
    path, calls, seen = tmp_path / "t.nc", [], {}

    def log_posterior(theta):
        drifting = theta[0] - 0.5 * (theta[1] - 100) ** 2  # chain 1 starts at θ1 = 100
        value = torch.where(theta[1] > 50, drifting, -0.5 * (theta**2).sum())
        return torch.where(theta[0] > 254.5, torch.nan, value)

    def watch(theta):  # called once for the layout, then once per kept draw, for both chains at once
        calls.append(None)
        if len(calls) == 2 + 256:  # at the draw of step 256: the first chunk is in the file
            seen["file"] = sgmcmc.Trace.load(path)
        return theta.sum()

    with pytest.warns(sgmcmc.SamplerDivergenceWarning, match="chain 1 at step 255"):
        trace = sgmcmc.SGLD(log_posterior, step_size=1.0, temperature=0.0).sample(
            torch.tensor([[0.0, 0.0], [0.0, 100.0]]),
            num_chains=2,
            num_steps=300,
            stacked_init=True,
            trace_file=path,
            functionals={"s": watch},
            seed=0,
            progress=False,
        )
    mid_run = seen["file"]
    assert mid_run.attrs["steps_done"] == 256 and mid_run.num_draws == 256
    assert mid_run.sample_stats["diverging"][:, -1].tolist() == [False, True]
    np.testing.assert_array_equal(mid_run.diverged_at_step, [-1, 255])
    np.testing.assert_array_equal(trace.diverged_at_step, [-1, 255])


def test_a_streamed_file_read_before_its_first_chunk_has_a_divergence_record(tmp_path):
    path, seen = tmp_path / "t.nc", {}

    def watch(theta):
        if "file" not in seen and path.exists():
            seen["file"] = sgmcmc.Trace.load(path)
        return theta.sum()

    sgmcmc.SGLD(standard_normal_log_posterior, 0.1).sample(
        torch.zeros(2), num_chains=2, num_steps=3, trace_file=path, functionals={"s": watch}, seed=0, progress=False
    )
    assert seen["file"].num_draws == 0
    np.testing.assert_array_equal(seen["file"].diverged_at_step, [-1, -1])


def test_a_resumed_streamed_file_has_the_divergence_record_of_its_checkpoint(tmp_path):
    """The file cut back to a checkpoint at step 60 must not keep the record of a divergence at step 64 that
    the stopped run wrote after it (until the resumed run writes its next chunk)."""
    path, checkpoint, seen = tmp_path / "t.nc", tmp_path / "run.pt", {}
    options = dict(
        num_chains=2,
        num_steps=100,
        seed=0,
        stacked_init=True,
        progress=False,
        checkpoint_every=60,
        checkpoint=checkpoint,
        trace_file=path,
    )
    init = torch.tensor([[1.0], [0.0]])  # θ ← −2θ: chain 0 overflows float32 at step 64

    def watch(theta):
        if "resumed" in seen:  # called once for the layout, once to check it against the checkpoint, then at each draw
            seen["resumed"] += 1
            if seen["resumed"] == 3:  # the first draw after the restore (step 60)
                seen["file"] = sgmcmc.Trace.load(path)
        return theta.sum()

    sampler = sgmcmc.SGLD(Interrupting(standard_normal_log_posterior, at_step=80), step_size=3.0, temperature=0.0)
    with pytest.warns(RuntimeWarning, match="interrupted after 80"), pytest.warns(sgmcmc.SamplerDivergenceWarning):
        sampler.sample(init, functionals={"s": watch}, **options)
    assert sgmcmc.Trace.load(path).diverged_at_step.tolist() == [64, -1]
    seen["resumed"] = 0
    with pytest.warns(sgmcmc.SamplerDivergenceWarning, match="chain 0 at step 64"):
        sgmcmc.SGLD(standard_normal_log_posterior, step_size=3.0, temperature=0.0).sample(
            init, functionals={"s": watch}, **options
        )
    assert seen["file"].attrs["steps_done"] == 60
    np.testing.assert_array_equal(seen["file"].diverged_at_step, [-1, -1])


def test_an_in_memory_trace_too_large_for_the_host_names_the_variable_and_the_remedies():
    # 3 chains x 10**15 draws x 2 floats x 4 bytes = 2.4e16 bytes: more than any host's address space
    with pytest.raises(MemoryError, match=r"'posterior/x' would take 24000000\.0 GB.*trace_file="):
        _recorder(10**15)


def test_a_streamed_trace_numbers_its_draws_0_to_n(tmp_path):
    """The 'draw' coordinate of a streamed trace counts across its chunks (600 draws: 3 chunks of ≤ 256)."""
    trace = sgmcmc.SGLD(standard_normal_log_posterior, 0.1).sample(
        torch.zeros(2), num_chains=2, num_steps=600, seed=0, trace_file=tmp_path / "t.nc", progress=False
    )
    idata = trace.to_arviz()
    np.testing.assert_array_equal(idata.posterior["draw"].values, np.arange(600))
    np.testing.assert_array_equal(az.from_netcdf(str(tmp_path / "t.nc")).sample_stats["draw"].values, np.arange(600))


def test_a_tensor_attr_records_values_not_how_the_tensor_was_held():
    """A checkpoint compares these attrs: a Parameter (or a CUDA tensor, tests/test_cuda.py) holding the
    same values must give the same attr as a plain CPU tensor."""
    values = torch.tensor([0.25, -1.5])
    assert netcdf_attr({"mode": torch.nn.Parameter(values.clone())}) == netcdf_attr({"mode": values})
    assert netcdf_attr({"mode": values}) != netcdf_attr({"mode": values + 1e-6})  # the digest sees what repr rounds


READ_AND_HOLD = """
import sys, time, h5py
file = h5py.File(sys.argv[1], "r")  # HDF5's default: a shared lock on the file while it is open
print(file["sample_stats"]["lp"].shape[1], flush=True)
time.sleep(60)
"""
"""Another process that opens the trace file for reading, says how many draws it sees, and holds it open."""


def test_another_process_reading_the_trace_file_does_not_stop_the_run(tmp_path):
    """A notebook that opens the file mid-run holds HDF5's shared file lock. Before, the run's next chunk
    could not take the lock to write, and the run died ("unable to lock file") with its pending draws."""
    path = tmp_path / "watched.nc"
    calls, reader, seen = 0, None, None

    def log_posterior(theta):
        nonlocal calls, reader, seen
        calls += 1
        if calls == 300:  # step 297: the first chunk, 256 draws, is in the file
            command = [sys.executable, "-c", READ_AND_HOLD, str(path)]
            reader = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
            seen = int(reader.stdout.readline())
        return -0.5 * (theta**2).sum()

    try:
        trace = sgmcmc.SGLD(log_posterior, step_size=0.1).sample(
            torch.zeros(2), num_chains=2, num_steps=600, seed=0, trace_file=path, progress=False
        )
        assert reader.poll() is None, "the reader held the file open to the end"
    finally:
        if reader is not None:
            reader.kill()
            reader.communicate()  # waits, and closes its stdout pipe
    assert seen == 256 and trace.num_draws == 600 and sgmcmc.Trace.load(path).num_draws == 600


KILLED_WHILE_WRITING = """
import os, signal, sys
import torch, sgmcmc
from sgmcmc import trace

write, writes = trace._TraceFile.write, []


def killed_in_the_third_write(self, start, chunk, coords, attrs):
    writes.append(start)
    if len(writes) < 3:
        return write(self, start, chunk, coords, attrs)
    # as write does, up to the posterior's new size and coords pushed to disk; then the process is killed
    file = self._open("a")
    group = file.groups["posterior"]
    group.resize_dimension("draw", start + len(coords["draw"]))
    for coord, values in coords.items():
        group.variables[coord][start:] = values
    file.flush()
    os.kill(os.getpid(), signal.SIGKILL)


trace._TraceFile.write = killed_in_the_third_write
sgmcmc.SGLD(lambda theta: -0.5 * (theta**2).sum(), step_size=0.1).sample(
    torch.zeros(3), num_chains=2, num_steps=2000, seed=0, trace_file=sys.argv[1], progress=False
)
"""


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX signals")
def test_a_run_killed_while_writing_a_chunk_leaves_a_file_with_the_chunks_before(tmp_path):
    """SIGKILL (the OOM killer, a scheduler's hard limit) in the middle of a chunk's write, after HDF5 has
    pushed part of it to disk: the file is closed between chunks, so it reads as the two chunks written
    before, the draws an uninterrupted run makes. A file held open across chunks reads as empty here."""
    path = tmp_path / "killed.nc"
    killed = subprocess.run([sys.executable, "-c", KILLED_WHILE_WRITING, str(path)], capture_output=True, text=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    stored = sgmcmc.Trace.load(path)
    assert stored.num_draws == 512 and stored.attrs["steps_done"] == 512
    uninterrupted = sgmcmc.SGLD(lambda theta: -0.5 * (theta**2).sum(), step_size=0.1).sample(
        torch.zeros(3), num_chains=2, num_steps=512, seed=0, progress=False
    )
    np.testing.assert_array_equal(stored.posterior["theta"], uninterrupted.posterior["theta"])
    np.testing.assert_array_equal(stored.sample_stats["lp"], uninterrupted.sample_stats["lp"])
    assert az.from_netcdf(path).posterior.sizes["draw"] == 512

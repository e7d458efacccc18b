"""Checkpoint and resume: a resumed run equals the uninterrupted one draw for draw."""

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

import sgmcmc
from sgmcmc.checkpoint import check_same_run, load_checkpoint, write_atomically
from sgmcmc.trace import group_dataset
from targets import ConjugateLinearRegression, Interrupting, standard_normal_log_posterior

NUM_STEPS = 120


def _sghmc(log_posterior):
    return sgmcmc.SGHMC(log_posterior, step_size=1e-3, friction=0.1)


def _run(checkpoint=None, interrupt_at=None, make_sampler=_sghmc, batch_size=30, **kwargs):
    """SGHMC (momentum in its state) with minibatches (a data position) on a conjugate regression."""
    model = ConjugateLinearRegression.make(num_data=100, dim=2, seed=0)
    interrupting = Interrupting(model.log_posterior(), at_step=interrupt_at)
    data = sgmcmc.Minibatches(model.features, model.targets, batch_size=batch_size)  # 3 batches an epoch at 30
    options = dict(num_chains=3, num_steps=NUM_STEPS, burn_in=10, thin=3, seed=5, progress=False)
    options.update(kwargs)
    sampler = make_sampler(interrupting)
    trace = sampler.sample(
        torch.zeros(2, dtype=torch.float64),
        data,
        checkpoint=checkpoint,
        checkpoint_every=25,
        **options,
    )
    trace.steps_run = interrupting.steps_run
    return trace


def _assert_same_draws(first, second):
    assert first.num_draws == second.num_draws
    for group in ("posterior", "sample_stats", "functionals"):
        for name in getattr(first, group):
            np.testing.assert_array_equal(getattr(first, group)[name], getattr(second, group)[name], err_msg=name)
    for name in first.draw_coords:
        np.testing.assert_array_equal(first.draw_coords[name], second.draw_coords[name])


def test_resumed_run_equals_uninterrupted_run(tmp_path):
    uninterrupted = _run()
    checkpoint = tmp_path / "run.pt"
    with pytest.warns(RuntimeWarning, match="interrupted after 60 of 120 steps"):
        stopped = _run(checkpoint, interrupt_at=60)
    assert stopped.num_draws < uninterrupted.num_draws
    resumed = _run(checkpoint)
    assert resumed.steps_run == NUM_STEPS - 50  # from the checkpoint of step 50
    _assert_same_draws(resumed, uninterrupted)
    for name, value in uninterrupted.final_state["momentum"].items():
        torch.testing.assert_close(resumed.final_state["momentum"][name], value, rtol=0, atol=0)


def test_a_run_stopped_by_stop_when_between_checkpoints_saves_there_and_resumes_bit_for_bit(tmp_path):
    """A time budget's stop at step 61 (checkpoints every 25): the run saves step 61, so the same call
    resumes from it rather than redoing the steps after the checkpoint of step 50."""
    uninterrupted = _run()
    checkpoint, steps_asked = tmp_path / "run.pt", []

    def stop_when(steps_done):
        steps_asked.append(steps_done)
        return steps_done == 61

    stopped = _run(checkpoint, stop_when=stop_when)
    assert steps_asked == list(range(1, 62))
    assert stopped.attrs["steps_done"] == 61 and stopped.steps_run == 61
    assert load_checkpoint(checkpoint)["step"] == 61
    resumed = _run(checkpoint)
    assert resumed.steps_run == NUM_STEPS - 61
    _assert_same_draws(resumed, uninterrupted)


def test_a_stop_when_that_raises_comes_after_the_checkpoint_due_at_its_step(tmp_path):
    checkpoint = tmp_path / "run.pt"

    def stop_when(steps_done):
        if steps_done == 75:  # a checkpoint is due (every 25)
            raise RuntimeError("the budget's clock failed")
        return False

    with pytest.raises(RuntimeError, match="clock failed") as raised:
        _run(checkpoint, stop_when=stop_when)
    assert raised.value.partial_trace.attrs["steps_done"] == 75
    assert load_checkpoint(checkpoint)["step"] == 75


def test_resumed_streaming_run_equals_uninterrupted_run(tmp_path):
    uninterrupted = _run()
    checkpoint, trace_file = tmp_path / "run.pt", tmp_path / "trace.nc"
    with pytest.warns(RuntimeWarning, match="interrupted"):
        _run(checkpoint, interrupt_at=88, trace_file=trace_file)
    assert sgmcmc.Trace.load(trace_file).attrs["steps_done"] == 88
    resumed = _run(checkpoint, trace_file=trace_file)  # cuts the file back to step 75, then appends
    assert resumed.steps_run == NUM_STEPS - 75
    _assert_same_draws(resumed, uninterrupted)
    _assert_same_draws(sgmcmc.Trace.load(trace_file), uninterrupted)


def test_finished_run_rerun_from_its_checkpoint_does_nothing_more(tmp_path):
    checkpoint = tmp_path / "run.pt"
    first = _run(checkpoint)
    again = _run(checkpoint)
    assert again.steps_run == 0
    _assert_same_draws(again, first)


def test_checkpoint_of_another_run_is_refused(tmp_path):
    checkpoint = tmp_path / "run.pt"
    _run(checkpoint, num_steps=30)
    with pytest.raises(ValueError, match="different run.*num_steps: checkpoint 30, now 120"):
        _run(checkpoint)
    with pytest.raises(ValueError, match="different run.*sampler: checkpoint 'SGHMC', now 'SGLD'"):
        _run(checkpoint, num_steps=30, make_sampler=lambda log_posterior: sgmcmc.SGLD(log_posterior, 1e-3))


def test_checkpoint_with_another_batch_size_is_refused(tmp_path):
    checkpoint = tmp_path / "run.pt"
    with pytest.warns(RuntimeWarning, match="interrupted"):
        _run(checkpoint, interrupt_at=60)
    with pytest.raises(ValueError, match="the checkpoint's data had batches of 30 rows, this has 50"):
        _run(checkpoint, batch_size=50)


def test_checkpoint_with_other_data_of_the_same_size_is_refused(tmp_path):
    checkpoint = tmp_path / "run.pt"
    model = ConjugateLinearRegression.make(num_data=100, dim=2, seed=0)
    sampler = sgmcmc.SGLD(model.log_posterior(), step_size=1e-3)
    options = dict(num_steps=20, seed=0, progress=False, checkpoint=checkpoint)
    data = sgmcmc.Minibatches(model.features, model.targets, batch_size=10)
    sampler.sample(torch.zeros(2, dtype=torch.float64), data, **options)
    shifted = sgmcmc.Minibatches(model.features, model.targets + 1, batch_size=10)
    with pytest.raises(ValueError, match="written with other data of the same size"):
        sampler.sample(torch.zeros(2, dtype=torch.float64), shifted, **options)


def test_hyperparameters_are_compared_exactly_whatever_their_type(tmp_path):
    """A numpy mass is stored as a number (a numpy scalar would not load with weights_only=True), and tensor
    hyperparameters (SGHMC's mass, SGLD-CV's mode) by digest: their repr rounds to 4 decimals."""
    options = dict(num_chains=2, num_steps=10, seed=0, progress=False)

    def run(sampler, name):
        return sampler.sample(torch.zeros(2, dtype=torch.float64), checkpoint=tmp_path / name, **options)

    first = run(sgmcmc.SGHMC(standard_normal_log_posterior, 1e-2, 0.1, mass=np.float64(2.0)), "numpy.pt")
    again = run(sgmcmc.SGHMC(standard_normal_log_posterior, 1e-2, 0.1, mass=np.float64(2.0)), "numpy.pt")
    _assert_same_draws(again, first)
    mass = torch.full((2,), 1.00001, dtype=torch.float64)
    run(sgmcmc.SGHMC(standard_normal_log_posterior, 1e-2, 0.1, mass=mass), "mass.pt")
    with pytest.raises(ValueError, match="different run.*mass: checkpoint 'tensor.*sha256"):
        run(sgmcmc.SGHMC(standard_normal_log_posterior, 1e-2, 0.1, mass=mass + 1e-5), "mass.pt")
    mode = torch.zeros(2, dtype=torch.float64)
    run(sgmcmc.SGLDCV(standard_normal_log_posterior, 1e-2, mode=mode), "mode.pt")
    with pytest.raises(ValueError, match="different run.*mode: checkpoint"):
        run(sgmcmc.SGLDCV(standard_normal_log_posterior, 1e-2, mode=mode + 1e-9), "mode.pt")


def test_checkpoint_is_written_atomically(tmp_path):
    checkpoint = tmp_path / "run.pt"
    _run(checkpoint, num_steps=30)
    assert [path.name for path in tmp_path.iterdir()] == ["run.pt"]  # no temporary file left behind
    contents = torch.load(checkpoint, weights_only=True)
    assert contents["step"] == 30 and len(contents["generators"]) == 3


def test_checkpoint_with_params_of_another_dtype_is_refused(tmp_path):
    """A float64 run resumed with float32 params would cast its saved draws down without a word."""
    checkpoint = tmp_path / "run.pt"
    sampler = sgmcmc.SGLD(lambda theta: -0.5 * (theta**2).sum(), 1e-3)
    options = dict(num_chains=2, num_steps=10, seed=0, progress=False, checkpoint=checkpoint)
    sampler.sample(torch.zeros(2, dtype=torch.float64), **options)
    with pytest.raises(ValueError, match=r"params: checkpoint \{'theta': \(\(2, 2\), 'torch.float64'\)\}"):
        sampler.sample(torch.zeros(2, dtype=torch.float32), **options)


def test_checkpoint_of_another_device_type_is_refused_by_name(tmp_path):
    """A CUDA run's generator states cannot continue on the CPU; say so rather than fail in set_state."""
    checkpoint = tmp_path / "run.pt"
    with pytest.warns(RuntimeWarning, match="interrupted"):
        _run(checkpoint, interrupt_at=60)
    contents = torch.load(checkpoint, weights_only=True)
    assert contents["settings"]["device_type"] == "cpu"
    contents["settings"]["device_type"] = "cuda"  # as a run on a GPU writes it
    torch.save(contents, checkpoint)
    with pytest.raises(ValueError, match="different run.*device_type: checkpoint 'cuda', now 'cpu'"):
        _run(checkpoint)


class Decay(sgmcmc.schedules.Schedule):
    """A user's schedule, written as the conventions describe: η_k = initial / (1 + k)^rate."""

    def __init__(self, initial, rate):
        self.initial, self.rate = initial, rate

    def __call__(self, step):
        return self.initial / (1 + step) ** self.rate

    def satisfies_robbins_monro(self):
        return 0.5 < self.rate <= 1


def test_a_run_with_a_custom_schedule_resumes_with_a_new_instance_of_it(tmp_path):
    """The checkpoint compares the schedule's repr: its attributes, not its address in this process."""
    checkpoint = tmp_path / "run.pt"

    def make_sampler(log_posterior):
        return sgmcmc.SGHMC(log_posterior, step_size=Decay(1e-3, 0.55), friction=0.1)

    uninterrupted = _run(make_sampler=make_sampler)
    with pytest.warns(RuntimeWarning, match="interrupted"):
        _run(checkpoint, interrupt_at=60, make_sampler=make_sampler)
    resumed = _run(checkpoint, make_sampler=make_sampler)
    _assert_same_draws(resumed, uninterrupted)
    assert resumed.attrs["step_size"] == "Decay(initial=0.001, rate=0.55)"


def test_a_failed_write_leaves_the_previous_file_and_no_partial_file(tmp_path):
    """A writer that fails half-way leaves the previous checkpoint as it was, and no temporary file."""
    path = tmp_path / "run.pt"
    path.write_text("previous")

    def fail_half_way(target):
        target.write_text("partial")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        write_atomically(path, fail_half_way)
    assert path.read_text() == "previous"
    assert [p.name for p in tmp_path.iterdir()] == ["run.pt"]


def test_a_setting_present_on_one_side_only_is_a_different_run(tmp_path):
    """A setting that only one side has (a checkpoint of an older version, say) is a difference too."""
    with pytest.raises(ValueError, match="thin: checkpoint None, now 2"):
        check_same_run({"num_steps": 10}, {"num_steps": 10, "thin": 2}, tmp_path / "run.pt")
    with pytest.raises(ValueError, match="thin: checkpoint 2, now None"):
        check_same_run({"num_steps": 10, "thin": 2}, {"num_steps": 10}, tmp_path / "run.pt")


def test_a_file_that_is_not_an_sgmcmc_checkpoint_is_refused(tmp_path):
    """A torch.save file without the format version is not taken for a checkpoint."""
    path = tmp_path / "other.pt"
    torch.save({"step": 3}, path)
    with pytest.raises(ValueError, match="not an sgmcmc checkpoint of format"):
        load_checkpoint(path)
    torch.save(torch.zeros(2), path)
    with pytest.raises(ValueError, match="not an sgmcmc checkpoint of format"):
        load_checkpoint(path)  # before, an AttributeError
    # before, a KeyError and an EOFError from inside torch.load
    for contents in ("hello", ""):
        path.write_text(contents)
        with pytest.raises(ValueError, match=f"{path} is not an sgmcmc checkpoint .it cannot be read"):
            sgmcmc.SGLD(standard_normal_log_posterior, 0.1).sample(
                torch.zeros(2), num_steps=5, checkpoint=path, progress=False
            )


def test_a_checkpoint_with_data_and_a_run_without_or_the_other_way_round_is_a_different_run(tmp_path):
    """Before, resuming a run without data with data crashed inside the data stream (TypeError), and the
    other way round blamed an edited log posterior."""

    def log_posterior(theta, batch=None):
        return standard_normal_log_posterior(theta) - (0 if batch is None else 0.5 * ((batch - theta) ** 2).sum())

    sampler, data = sgmcmc.SGLD(log_posterior, 0.01), sgmcmc.Minibatches(torch.randn(20, 2), batch_size=5)
    for first, second, difference in ((None, data, "data: checkpoint None, now 'rows'"), (data, None, "now None")):
        checkpoint = tmp_path / f"{first is None}.pt"
        sampler.sample(torch.zeros(2), first, num_steps=10, checkpoint=checkpoint, progress=False)
        with pytest.raises(ValueError, match=f"belongs to a different run.*{difference}"):
            sampler.sample(torch.zeros(2), second, num_steps=10, checkpoint=checkpoint, progress=False)


def test_a_trace_file_named_by_another_path_resumes(tmp_path, monkeypatch):
    """The same file, relative then absolute (a job restarted from elsewhere); before, "a different run"."""
    monkeypatch.chdir(tmp_path)
    uninterrupted = _run()
    with pytest.warns(RuntimeWarning, match="interrupted"):
        _run("run.pt", interrupt_at=88, trace_file="trace.nc")
    _assert_same_draws(_run(tmp_path / "run.pt", trace_file=tmp_path / "trace.nc"), uninterrupted)


def test_a_resumed_streaming_run_stopped_again_at_once_keeps_no_stale_draws(tmp_path):
    """Resuming cuts the file back to the checkpoint: the first run wrote draws up to step 87, its checkpoint is at
    step 75; the resumed run stops in its first step, so the file must hold exactly the draws of steps < 75."""
    checkpoint, trace_file = tmp_path / "run.pt", tmp_path / "trace.nc"
    with pytest.warns(RuntimeWarning, match="interrupted"):
        _run(checkpoint, interrupt_at=88, trace_file=trace_file)
    with pytest.warns(RuntimeWarning, match="interrupted after 75 of 120"):
        _run(checkpoint, interrupt_at=0, trace_file=trace_file)
    loaded = sgmcmc.Trace.load(trace_file)
    assert loaded.attrs["steps_done"] == 75
    np.testing.assert_array_equal(loaded.draw_coords["step"], np.arange(10, 75, 3))


def test_a_trace_read_from_a_file_a_resume_rewrites_keeps_the_draws_it_was_opened_with(tmp_path):
    """Before, a Trace over the file kept its coordinates but read every draw the file held at each index
    (the steps of 26 draws beside 37 values), or fewer after the resume had cut the file back."""
    checkpoint, trace_file = tmp_path / "run.pt", tmp_path / "trace.nc"
    with pytest.warns(RuntimeWarning, match="interrupted after 88"):
        interrupted = _run(checkpoint, interrupt_at=88, trace_file=trace_file)
    reader = sgmcmc.Trace.load(trace_file)
    assert interrupted.num_draws == reader.num_draws == 26  # steps 10, 13, ..., 85
    with pytest.warns(RuntimeWarning, match="interrupted after 77"):  # cut back to step 75's 22 draws
        _run(checkpoint, interrupt_at=2, trace_file=trace_file)
    for trace in (interrupted, reader):
        with pytest.raises(RuntimeError, match="now holds 23 draws, fewer than the 26 .* load it again"):
            trace.posterior["theta"]
        with pytest.raises(RuntimeError, match="now holds 23 draws, fewer than the 26 .* load it again"):
            trace.to_arviz()
    finished = _run(checkpoint, trace_file=trace_file)
    for trace in (interrupted, reader):
        assert trace.posterior["theta"].shape == (3, 26, 2) and trace.sample_stats["lp"].shape == (3, 26)
        np.testing.assert_array_equal(trace.posterior["theta"], finished.posterior["theta"][:, :26])
        posterior = group_dataset(trace.to_arviz(), "posterior")
        np.testing.assert_array_equal(posterior["step"], np.arange(10, 88, 3))
        assert posterior.attrs["steps_done"] == 88  # as of these draws, not the finished run's 120


def test_a_resume_refuses_a_trace_file_another_run_has_since_written_and_leaves_it_alone(tmp_path):
    """Before, the resume cut any file at that path back to the checkpoint's draws: another run's trace written
    there since (here the same settings, run to the end) lost its later draws."""
    checkpoint, trace_file = tmp_path / "run.pt", tmp_path / "trace.nc"
    with pytest.warns(RuntimeWarning, match="interrupted"):
        _run(checkpoint, interrupt_at=88, trace_file=trace_file)
    other = _run(trace_file=trace_file)
    with pytest.raises(ValueError, match="trace file .* is not the one the checkpoint's run wrote .* left untouched"):
        _run(checkpoint, trace_file=trace_file)
    _assert_same_draws(sgmcmc.Trace.load(trace_file), other)
    assert sgmcmc.Trace.load(trace_file).attrs["steps_done"] == NUM_STEPS


def test_checkpoint_of_an_edited_log_posterior_is_refused(tmp_path):
    """Editing the model (here the prior's scale, by 1%) and rerunning with the same checkpoint would
    resume it, mixing two posteriors' draws; the log posterior at the saved state, on a batch the
    checkpoint keeps, tells the two apart (at the start, zeros, this prior is 0 whatever its scale)."""
    checkpoint = tmp_path / "run.pt"
    model = ConjugateLinearRegression.make(num_data=100, dim=2, seed=0)
    data = sgmcmc.Minibatches(model.features, model.targets, batch_size=10)
    options = dict(num_chains=3, num_steps=20, seed=0, progress=False, checkpoint=checkpoint)

    def sample(prior_scale):
        def log_posterior(theta, batch):
            return model.log_posterior()(theta, batch) - 0.5 * ((theta / prior_scale) ** 2).sum()

        return sgmcmc.SGLD(log_posterior, step_size=1e-3).sample(torch.zeros(2, dtype=torch.float64), data, **options)

    sample(prior_scale=1.0)
    sample(prior_scale=1.0)  # the same model, rebuilt: resumed
    with pytest.raises(ValueError, match=r"written with another log_posterior: at chain \d's saved state it gave"):
        sample(prior_scale=1.01)


def test_a_resume_with_another_init_and_reshuffled_batches_is_the_same_model(tmp_path):
    """The check does not depend on what a resume ignores: the init (unseeded here) and the order in
    which a shuffling loader, read once, yields its batches."""
    checkpoint = tmp_path / "run.pt"
    model = ConjugateLinearRegression.make(num_data=100, dim=2, seed=0)
    rows = [(model.features[row], model.targets[row]) for row in range(100)]  # a plain list: read once
    options = dict(num_chains=2, num_steps=40, seed=0, progress=False, checkpoint=checkpoint, checkpoint_every=10)
    sampler = sgmcmc.SGLD(Interrupting(model.log_posterior(), at_step=25), step_size=1e-3)
    with pytest.warns(RuntimeWarning, match="interrupted after 25 of 40 steps"):
        sampler.sample(torch.randn(2, dtype=torch.float64), DataLoader(rows, batch_size=10, shuffle=True), **options)
    resumed = sgmcmc.SGLD(model.log_posterior(), step_size=1e-3).sample(
        torch.randn(2, dtype=torch.float64), DataLoader(rows, batch_size=10, shuffle=True), **options
    )
    assert resumed.attrs["steps_done"] == 40


def test_a_resume_that_records_other_functionals_or_params_is_refused(tmp_path):
    """Before, a functional of another shape failed mid-run in numpy or h5py, and one of another dtype
    was cast silently; the kept params were not compared at all."""
    checkpoint = tmp_path / "run.pt"
    with pytest.warns(RuntimeWarning, match="interrupted"):
        _run(checkpoint, interrupt_at=60, functionals={"f": lambda theta: theta.sum()})
    with pytest.raises(ValueError, match=r"different run.*functionals: checkpoint \{'f': \(\(\), 'float64'\)\}"):
        _run(checkpoint, functionals={"f": lambda theta: theta})
    with pytest.raises(ValueError, match=r"different run.*'f': \(\(\), 'float32'\)"):
        _run(checkpoint, functionals={"f": lambda theta: theta.sum().float()})
    with pytest.raises(ValueError, match=r"different run.*kept: checkpoint \['theta'\], now \[\]"):
        _run(checkpoint, functionals={"f": lambda theta: theta.sum()}, keep=())
    # same name, shape and dtype, other values: before, the resumed draws recorded 1000 + Σθ after Σθ
    with pytest.raises(ValueError, match="written with another functional 'f': at chain 0's saved state"):
        _run(checkpoint, functionals={"f": lambda theta: 1000 + theta.sum()})
    resumed = _run(checkpoint, functionals={"f": lambda theta: theta.sum()})
    np.testing.assert_allclose(resumed.functionals["f"], resumed.posterior["theta"].sum(axis=-1), rtol=1e-12)


def test_a_chain_that_diverged_before_the_checkpoint_is_still_reported_after_the_resume(tmp_path):
    """θ ← θ − 3θ = −2θ (T = 0): the chain from 1 overflows float32 at step 64, the chain from 0 stays at 0."""
    sampler = sgmcmc.SGLD(Interrupting(standard_normal_log_posterior, at_step=80), step_size=3.0, temperature=0.0)
    options = dict(num_chains=2, num_steps=100, seed=0, stacked_init=True, progress=False, checkpoint_every=10)
    init = torch.tensor([[1.0], [0.0]])
    with pytest.warns(RuntimeWarning, match="interrupted after 80"), pytest.warns(sgmcmc.SamplerDivergenceWarning):
        sampler.sample(init, checkpoint=tmp_path / "run.pt", **options)
    with pytest.warns(sgmcmc.SamplerDivergenceWarning, match=r"1 of 2 chains diverged.*chain 0 at step 64"):
        resumed = sampler.sample(init, checkpoint=tmp_path / "run.pt", **options)
    with pytest.warns(sgmcmc.SamplerDivergenceWarning, match="chain 0 at step 64"):
        uninterrupted = sgmcmc.SGLD(standard_normal_log_posterior, 3.0, temperature=0.0).sample(init, **options)
    assert resumed.attrs["diverged_at_step"] == uninterrupted.attrs["diverged_at_step"] == repr([64, -1])
    _assert_same_draws(resumed, uninterrupted)


@pytest.mark.parametrize("streamed", [False, True])
def test_a_resumed_run_warns_of_every_non_finite_functional_value_as_an_uninterrupted_one(tmp_path, streamed):
    """log θ₀ is NaN wherever a chain's θ₀ < 0. The count covered only the draws made after a resume, and a
    rerun of a finished run warned of none."""
    options = dict(num_chains=2, num_steps=100, seed=1, progress=False, checkpoint_every=50)
    options.update(functionals={"log_first": lambda theta: torch.log(theta[0])})
    if streamed:
        options.update(trace_file=tmp_path / "trace.nc")
    init = torch.full((3,), 0.5)

    def sample(sampler):
        with pytest.warns(RuntimeWarning, match="functional 'log_first' is NaN or infinite") as warned:
            trace = sampler.sample(init, **options)
        count = int(np.isnan(trace.functionals["log_first"]).sum())
        return count, next(str(w.message) for w in warned if "log_first" in str(w.message))

    expected, message = sample(sgmcmc.SGLD(standard_normal_log_posterior, step_size=0.1))
    assert 0 < expected < 200 and f"at {expected} of the 2 × 100" in message
    options.update(checkpoint=tmp_path / "run.pt")
    with pytest.warns(RuntimeWarning, match="interrupted after 80"), pytest.warns(RuntimeWarning, match="log_first"):
        sgmcmc.SGLD(Interrupting(standard_normal_log_posterior, at_step=80), step_size=0.1).sample(init, **options)
    for _ in range(2):  # the resumed run, then a rerun of the finished one
        assert sample(sgmcmc.SGLD(standard_normal_log_posterior, step_size=0.1)) == (expected, message)


def test_resuming_with_pre_made_batches_a_run_of_rows_names_the_kind_of_data(tmp_path):
    def log_posterior(theta, batch):
        return standard_normal_log_posterior(theta) - 0.5 * ((batch - theta) ** 2).sum()

    sampler, x = sgmcmc.SGLD(log_posterior, 0.01), torch.randn(20, 2)
    rows, batches = sgmcmc.Minibatches(x, batch_size=5), [x[i : i + 5] for i in range(0, 20, 5)]
    sampler.sample(torch.zeros(2), rows, num_steps=10, checkpoint=tmp_path / "run.pt", progress=False)
    with pytest.raises(ValueError, match="data: checkpoint 'rows', now 'pre-made batches'"):
        sampler.sample(torch.zeros(2), batches, num_steps=10, checkpoint=tmp_path / "run.pt", progress=False)


def test_a_checkpoint_that_cannot_be_opened_raises_its_os_error(tmp_path):
    """Not "not a checkpoint": the file may be one, behind a permission or a wrong path."""
    with pytest.raises(IsADirectoryError):
        load_checkpoint(tmp_path)

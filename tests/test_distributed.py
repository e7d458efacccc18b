"""Sampling across processes: torchrun with 2 CPU processes (gloo) against single-process runs."""

import json
import os
import re
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import distributed_script as script
import numpy as np
import pytest
import torch

import sgmcmc
from sgmcmc import distributed
from targets import Interrupting, standard_normal_log_posterior

SCRIPT = Path(__file__).with_name("distributed_script.py")
FLOAT64_TOLERANCE = 1e-10
"""Relative tolerance for data-parallel vs single-process: the runs differ only in the order in which
the 64 per-example terms are summed (two shard sums of 32, averaged), a relative change of order
64 × 2⁻⁵³ ≈ 10⁻¹⁴ per gradient, which 30 contracting steps do not grow by 10⁴."""


def torchrun(*arguments: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """``python -m torch.distributed.run --standalone --nproc-per-node=2 ARGUMENTS`` (a free port), 1 thread each."""
    environment = {**os.environ, "CI": "1", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", *arguments]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=environment)


@pytest.fixture(scope="module")
def two_process_results(tmp_path_factory):
    output = tmp_path_factory.mktemp("distributed") / "results.pt"
    completed = torchrun(str(SCRIPT), "sample", str(output))
    assert completed.returncode == 0, completed.stderr[-4000:]
    return torch.load(output, weights_only=False)


def test_chain_parallel_draws_equal_single_process_draws(two_process_results):
    run = script.chain_parallel_run()
    single = run.pop("sampler").sample(run.pop("init"), run.pop("data"), **run)
    parallel = two_process_results["chains"]
    for group in ("posterior", "sample_stats", "functionals"):
        expected = getattr(single, group)
        assert set(parallel[group]) == set(expected)
        for name, values in expected.items():
            assert parallel[group][name].shape[0] == 5
            np.testing.assert_array_equal(parallel[group][name], values, err_msg=f"{group}/{name}")
    torch.testing.assert_close(parallel["final_params"], single.final_state["params"], rtol=0, atol=0)
    for key in ("num_chains", "chain_seeds", "seed", "num_steps", "steps_done", "sampler", "diverged_at_step"):
        assert parallel["attrs"][key] == single.attrs[key], key
    assert parallel["attrs"]["num_processes"] == 2


def test_a_chain_diverging_on_rank_1_is_reported_as_a_single_process_run_reports_it(two_process_results):
    run = script.diverging_chain_parallel_run()
    with pytest.warns(sgmcmc.SamplerDivergenceWarning) as caught:
        single = run.pop("sampler").sample(run.pop("init"), run.pop("data"), **run)
    parallel = two_process_results["diverging_chains"]
    assert single.attrs["diverged_at_step"].startswith("[-1, -1, ")  # chain 2, the one on rank 1
    assert parallel["attrs"]["diverged_at_step"] == single.attrs["diverged_at_step"]
    assert parallel["warnings"] == [str(warning.message) for warning in caught]
    np.testing.assert_array_equal(parallel["sample_stats"]["diverging"], single.sample_stats["diverging"])


def test_shards_of_premade_batches_of_other_sizes_are_refused(two_process_results):
    """2 batches a rank either way, of 16 rows on rank 0 and 8 on rank 1: the union batch would be
    weighted wrongly, so every rank refuses, naming the shapes."""
    assert two_process_results["unequal_batches"].startswith("the ranks' shards differ")
    assert "(2, 16, 3)" in two_process_results["unequal_batches"]
    assert "(2, 8, 3)" in two_process_results["unequal_batches"]


def test_replicas_that_drift_apart_are_an_error_on_rank_0_too(two_process_results):
    """Rank 0 compares its own params with what it broadcast, which always agree: before, it returned
    (and a job wrote) the trace while only rank 1 raised."""
    assert two_process_results["drifted"].startswith("the replicas drifted apart: parameters ['weights']")


def test_ranks_given_other_settings_are_refused_at_the_start_on_every_rank(two_process_results):
    """Before, a data-parallel run whose ranks took other numbers of steps failed only at the process
    group's timeout, blaming another rank, and a chain-parallel run with another step size on rank 1
    returned one trace of chains sampled under two step sizes, recording rank 0's."""
    assert (
        two_process_results["other_num_steps"]
        == [
            "the ranks were given different settings (num_steps by rank: [3, 4]); "
            "give every rank the same sampler, init and arguments"
        ]
        * 2
    )
    assert (
        two_process_results["other_step_size"]
        == [
            "the ranks were given different settings (step_size by rank: ['Constant(step_size=0.001)', "
            "'Constant(step_size=0.002)']); give every rank the same sampler, init and arguments"
        ]
        * 2
    )


def test_chain_parallel_ranks_given_other_data_and_data_parallel_shards_of_other_dtypes_are_refused(
    two_process_results,
):
    """Before, chains sampled on two ranks' different data (here rank 1's labels negated) were merged into
    one trace without a word, and a float32 shard beside float64 ones deadlocked the ranks' all_reduces
    until the timeout, blaming another rank."""
    other_data, other_dtype = two_process_results["other_data"], two_process_results["other_dtype"]
    assert other_data[0] == other_data[1] and re.match(
        r"the ranks were given different settings \(data by rank: \['64 rows \(sha256 \w+\) in batches of 8', '64 rows",
        other_data[0],
    )
    # before, chains 0-1 sampled on batches of 8 and chains 2-3 on batches of 9 were gathered into one trace
    other_batch_size = two_process_results["other_batch_size"]
    assert other_batch_size[0] == other_batch_size[1] and re.match(
        r"the ranks were given different settings \(data by rank: \['64 rows \(sha256 (\w+)\) in batches of 8', "
        r"'64 rows \(sha256 \1\) in batches of 9'\]\)",
        other_batch_size[0],
    )
    assert (
        other_dtype[0] == other_dtype[1]
        and "'torch.float64')]), (8, [((32, 3), 'torch.float32'), ((32,), 'torch.float32')])]" in other_dtype[0]
    )


def test_a_rank_without_chains_waits_at_the_gather_longer_than_the_timeout(tmp_path):
    """Before, the gather ran under the process group's timeout: a rank that finished early (or had no
    chain) and waited longer than that for the others failed, and both ranks lost their draws."""
    output = tmp_path / "draws"
    completed = torchrun(str(SCRIPT), "slow_gather", str(output), timeout=90)
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert output.read_text() == "16"


def test_sharing_data_without_joining_a_process_group_under_torchrun_is_refused():
    """Before, every rank took itself for rank 0 of 1: shard_rows gave each all the rows, and each rank ran
    (and wrote) the whole job."""
    completed = torchrun(str(SCRIPT), "no_group", timeout=60)
    assert completed.returncode != 0
    assert "this process is rank 1 of 2 started by a launcher, but it joined no process group" in completed.stderr


def test_ranks_compare_what_decides_the_run_but_not_their_device_progress_or_output():
    sampler = sgmcmc.SGLD(script.log_posterior(), step_size=1e-3)
    settings = distributed._settings(sampler, {"init": script.init(), "num_steps": 10})
    per_rank = {"device": "cpu", "progress": False, "trace_file": "t.nc", "data": None}
    assert distributed._settings(sampler, {"init": script.init(), "num_steps": 10, **per_rank}) == settings
    assert settings["num_data"] == script.NUM_DATA and settings["step_size"] == "Constant(step_size=0.001)"
    # a default given explicitly is the same setting; other values of init are not
    assert distributed._settings(sampler, {"init": script.init()}) == {**settings, "num_steps": 1000}
    other_init = {name: value + 1 for name, value in script.init().items()}
    assert distributed._settings(sampler, {"init": other_init, "num_steps": 10})["init"] != settings["init"]


@pytest.mark.parametrize("sampler_name", ["ld", "psgld"])
def test_data_parallel_full_batch_shards_equal_single_process_full_batch(two_process_results, sampler_name):
    features, labels = script.regression_data()
    sampler = script.full_batch_samplers()[sampler_name]
    single = sampler.sample(
        script.init(),
        script.full_batch_data(features, labels, sampler_name),
        num_chains=2,
        num_steps=script.NUM_STEPS,
        seed=5,
        progress=False,
    )
    parallel = two_process_results[sampler_name]
    np.testing.assert_allclose(parallel["posterior"]["weights"], single.posterior["weights"], rtol=FLOAT64_TOLERANCE)
    np.testing.assert_allclose(parallel["sample_stats"]["lp"], single.sample_stats["lp"], rtol=FLOAT64_TOLERANCE)
    moved = np.linalg.norm(single.posterior["weights"][:, -1] - single.posterior["weights"][:, 0], axis=-1)
    assert moved.min() > 0.1  # the chains went somewhere, so agreement is not trivial


def test_compiled_data_parallel_step_with_its_all_reduce_samples_what_the_eager_one_does(two_process_results):
    eager, compiled = two_process_results["ld"], two_process_results["ld_compiled"]
    # float64, 30 contracting steps: compiled and eager kernels differ by rounding only (measured 2e-16)
    np.testing.assert_allclose(compiled["posterior"]["weights"], eager["posterior"]["weights"], rtol=FLOAT64_TOLERANCE)
    np.testing.assert_allclose(compiled["sample_stats"]["lp"], eager["sample_stats"]["lp"], rtol=FLOAT64_TOLERANCE)


def test_a_failing_rank_stops_the_job_within_the_timeout():
    start = time.perf_counter()
    completed = torchrun(str(SCRIPT), "fail", timeout=60)
    elapsed = time.perf_counter() - start
    assert completed.returncode != 0
    assert "rank 1 of 2 failed with RuntimeError: rank 1 fails on purpose" in completed.stderr
    assert elapsed < 30  # the script's collective timeout is 20 s, the run itself 100 000 steps


def test_data_parallel_ranks_stop_together_after_ctrl_c_or_stop_when_on_one_rank_keeping_the_draws(tmp_path):
    """Before, rank 1 stopped alone and rank 0 waited in the step's all-reduce until the 20 s timeout, losing
    every draw. Now the ranks agree to stop at a later step (the final comparison of their params, which would
    fail otherwise, checks it is the same one), and rank 0 keeps the draws of all the steps done."""
    output = tmp_path / "stops.pt"
    completed = torchrun(str(SCRIPT), "stop", str(output), timeout=90)
    assert completed.returncode == 0, completed.stderr[-4000:]
    results = torch.load(output)
    checks = Interrupting.CHECKS  # log posterior calls before the first step
    for name, first_request in [("stop_when", 5), ("ctrl_c", 20 - checks), ("slow_steps", 5 - checks)]:
        steps_done = results[name]["steps_done"]
        assert first_request <= steps_done < 100_000 and results[name]["num_draws"] == steps_done, (name, results)
    assert results["stop_when"]["warnings"] == []
    steps_done = results["ctrl_c"]["steps_done"]
    assert results["ctrl_c"]["warnings"] == [
        f"sampling interrupted after {steps_done} of 100000 steps; the trace keeps the draws so far"
    ]
    # 0.2 s steps: the ranks agree about once a second, so within about 5 steps, not after a fixed 16 (3 s):
    # torchrun kills its workers 30 s after it forwards a Ctrl-C, which steps over 1.9 s overran
    assert results["slow_steps"]["steps_done"] <= 5 + 2 * 5, results["slow_steps"]


def test_a_second_ctrl_c_interrupts_its_rank_at_once_and_the_peer_fails_fast():
    """Before, the twice-interrupted rank went on to the final comparison while its peer waited in the step's
    all-reduce, and both hung until the process group's timeout (600 s by default)."""
    start = time.perf_counter()
    completed = torchrun(str(SCRIPT), "forced", timeout=90)
    elapsed = time.perf_counter() - start
    assert completed.returncode != 0
    assert "rank 1 of 2: interrupted at once by a second Ctrl-C; its draws are lost" in completed.stderr, (
        completed.stderr[-4000:]
    )
    assert elapsed < 20  # the script's collective timeout is 20 s


def test_the_ranks_agree_whether_to_stop_about_once_a_second_and_at_most_every_16_steps(monkeypatch):
    """The gap to the next agreement comes from the step time since the last one (the all-reduce, here
    left out, makes it the slowest rank's). Before, fast steps stretched it to 1000 steps, which steps that
    then slowed down (3 ms to 150 ms) took 48 s to reach, past torchrun's 30 s."""
    monkeypatch.setattr(distributed.dist, "all_reduce", lambda tensor, op: None)
    agreement = distributed._StopAgreement(torch.device("cpu"), None)
    assert agreement.next_agreement == 1
    assert agreement(1) is False  # a fast first step
    assert agreement.next_agreement == 1 + distributed.STOP_CHECK_MAX_STEPS == 17
    agreement.last_agreement = (1, time.monotonic() - 16 * 0.4)  # 16 steps of 0.4 s
    assert agreement(17) is False
    assert agreement.next_agreement == 17 + 2  # ⌊1 s / 0.4 s⌋


def test_one_ctrl_c_reaching_a_data_parallel_rank_twice_at_once_marks_one_stop():
    agreement = distributed._StopAgreement(torch.device("cpu"), None)
    agreement.interrupt(signal.SIGINT, None)
    agreement.interrupt(signal.SIGINT, None)  # torchrun's forwarded copy, milliseconds later
    assert agreement.interrupted_at is not None and not agreement.forced
    agreement.interrupted_at -= distributed.REPEATED_INTERRUPT_S + 0.1
    with pytest.raises(KeyboardInterrupt):
        agreement.interrupt(signal.SIGINT, None)
    assert agreement.forced


def test_a_rank_waiting_on_a_hung_peer_stops_at_its_timeout_saying_another_rank_is_the_cause():
    """Rank 1 sleeps 60 s; rank 0, whose process group has timeout_s=4, stops at its first collective."""
    start = time.perf_counter()
    completed = torchrun(str(SCRIPT), "hang", timeout=90)
    elapsed = time.perf_counter() - start
    assert completed.returncode != 0
    assert "rank 0 of 2 failed with DistributedSamplingError: rank 0 of 2: comparing the ranks' settings failed" in (
        completed.stderr
    ), completed.stderr[-4000:]
    assert elapsed < 30  # the 4 s timeout, torchrun's start and stop; not rank 1's 60 s


def test_sharing_helpers_on_two_ranks(two_process_results):
    """Each rank's batch is half of 8 rows; 5 rows give each rank 2, with a warning; AveragedPotential.value
    averages the ranks' values (0 and 1)."""
    warning = "5 rows do not split evenly over 2 ranks: the last 1 are left out"
    assert two_process_results["helpers"] == [
        {"batch_size": 4, "rows": [0, 1], "warnings": [warning], "averaged_value": 0.5},
        {"batch_size": 4, "rows": [2, 3], "warnings": [warning], "averaged_value": 0.5},
    ]


def test_keep_given_as_a_generator_or_a_set_is_the_same_setting_on_every_rank(two_process_results):
    assert two_process_results["keep"] == [[["weights"], ["unused", "weights"]], []]


def test_a_data_parallel_trace_file_is_written_by_rank_0_alone_and_holds_the_returned_draws(two_process_results):
    written = two_process_results["trace_file"]
    assert written["file"]["weights"].shape == (2, 5, script.DIM)
    np.testing.assert_array_equal(written["file"]["weights"], written["returned"]["weights"])


def test_num_data_that_is_not_the_shards_rows_times_the_ranks_is_warned_about_on_every_rank(two_process_results):
    """num_data = one shard's 32 rows weights the likelihood half as much as the 64 rows sampled; every rank
    given all 64 rows repeats the other's. Before, data-parallel runs skipped the runner's check, silently."""
    expected = [
        "log_posterior was made with num_data=32 but the 2 ranks' shards hold 2 × 32 = 64 examples",
        "log_posterior was made with num_data=64 but the 2 ranks' shards hold 2 × 64 = 128 examples",
    ]
    for messages in two_process_results["num_data_warnings"]:
        assert [message.split(";")[0] for message in messages] == expected


@pytest.mark.parametrize("parallel", ["chains", "data"])
def test_sgmcmc_run_under_torchrun_writes_one_report(tmp_path, parallel):
    output = tmp_path / "run"
    completed = torchrun(
        "-m",
        "sgmcmc.cli",
        "run",
        f"--parallel={parallel}",
        "--num-chains=3",
        "--num-steps=20",
        "--thin=5",
        "--hidden",
        "4",
        "--no-progress",
        f"--output={output}",
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    # the ensemble, on rank 0 alone over all 1347 rows, scales its likelihood to them (it had data-parallel's N)
    assert "was made with num_data" not in completed.stderr, completed.stderr[-4000:]
    report = json.loads((output / "report.json").read_text())
    assert report["methods"]["posterior"]["draws"] == 3 * 2 and "SGD ensemble of 3" in report["methods"]
    assert report["config"]["parallel"] == parallel
    # digits' 1347 training rows over 2 ranks: data-parallel samples 2 × 673 and scales the likelihood to them
    assert report["num_train"] == 1347 and report["num_data"] == (1347 if parallel == "chains" else 1346)


def test_chain_blocks_cover_the_chains_once_with_sizes_differing_by_at_most_one():
    for num_chains in range(1, 8):
        for world_size in range(1, 5):
            blocks = [distributed.chain_block(num_chains, rank, world_size) for rank in range(world_size)]
            assert [chain for block in blocks for chain in block] == list(range(num_chains))
            assert max(map(len, blocks)) - min(map(len, blocks)) <= 1
    # before, rank 5 of 2 got range(7, 9) and rank -1 range(-2, 0): chains that do not exist
    for rank in (5, 2, -1):
        with pytest.raises(ValueError, match="rank must be"):
            distributed.chain_block(3, rank, 2)


def test_one_process_chain_parallel_run_is_the_plain_run():
    run = script.chain_parallel_run()
    sampler, init, data = run.pop("sampler"), run.pop("init"), run.pop("data")
    stacked = {
        "weights": torch.randn(
            run["num_chains"], script.DIM, dtype=torch.float64, generator=torch.Generator().manual_seed(0)
        )
    }
    plain = sampler.sample(stacked, data, stacked_init=True, **run)
    parallel = distributed.sample_chain_parallel(sampler, stacked, data, stacked_init=True, **run)
    np.testing.assert_array_equal(parallel.posterior["weights"], plain.posterior["weights"])
    assert parallel.attrs["chain_seeds"] == plain.attrs["chain_seeds"]
    numpy_seed = distributed.sample_chain_parallel(
        sampler, stacked, data, stacked_init=True, **{**run, "seed": np.int64(11)}
    )
    np.testing.assert_array_equal(numpy_seed.posterior["weights"], plain.posterior["weights"])
    with pytest.raises(ValueError, match="leading dim must be num_chains=4"):
        distributed.sample_chain_parallel(sampler, stacked, data, stacked_init=True, **{**run, "num_chains": 4})
    with pytest.raises(ValueError, match="trace_file"):
        distributed.sample_chain_parallel(sampler, init, data, trace_file="trace.nc", **run)


def test_one_process_data_parallel_run_is_the_plain_run():
    """Under plain python (no launcher) there is nothing to average: the run is the plain one."""
    features, labels = script.regression_data()
    sampler = sgmcmc.SGLD(script.log_posterior(), step_size=1e-3)
    data = sgmcmc.Minibatches(features, labels, batch_size=8)
    options = dict(num_chains=2, num_steps=20, seed=3, progress=False)
    parallel = distributed.sample_data_parallel(sampler, script.init(), data, **options)
    plain = sampler.sample(script.init(), data, **options)
    np.testing.assert_array_equal(parallel.posterior["weights"], plain.posterior["weights"])
    with pytest.raises(ValueError, match="checkpoint= is not supported when sampling across processes"):
        distributed.sample_data_parallel(sampler, script.init(), data, checkpoint="run.pt", **options)


def test_write_atomically_leaves_no_partial_file(tmp_path):
    target = tmp_path / "results.json"

    def write_half_then_fail(path: Path) -> None:
        path.write_text('{"draws": [1, 2')
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        distributed.write_atomically(target, write_half_then_fail)
    assert list(tmp_path.iterdir()) == []
    distributed.write_atomically(target, lambda path: path.write_text("{}"))
    assert [path.name for path in tmp_path.iterdir()] == ["results.json"]


def test_shard_rows_in_one_process_is_everything_and_parallel_modes_are_checked():
    features, labels = script.regression_data()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        shard = distributed.shard_rows(features, labels)
    assert all(torch.equal(part, whole) for part, whole in zip(shard, (features, labels), strict=True))
    sampler = sgmcmc.SGLD(script.log_posterior(), step_size=1e-3)
    with pytest.raises(ValueError, match=r"tensors \[1\] are 0-dim; shard_rows shares out rows along dim 0"):
        distributed.shard_rows(features, torch.tensor(1.0))
    with pytest.raises(ValueError, match="parallel must be None or one of"):
        distributed.sample_in_parallel(
            "gpus", sampler, script.init(), sgmcmc.Minibatches(features, labels, batch_size=8)
        )


def test_process_group_timeout_must_be_a_finite_positive_number():
    for timeout_s in (0.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="timeout_s must be a finite number > 0"):
            with distributed.process_group(timeout_s=timeout_s):
                pass


def test_process_group_timeouts_past_torchs_limit_and_unknown_backends_are_named():
    """Before, under a launcher: 1e10 s failed at once with "The client socket has timed out after
    10000000000000ms", 1e15 with "Python int too large to convert to C int", and backend "bogus" with a bare
    AssertionError."""
    for timeout_s in (1e10, 1e15):
        with pytest.raises(ValueError, match=r"timeout_s must be below 2\*\*31 ms \(about 24.8 days\)"):
            with distributed.process_group(timeout_s=timeout_s):
                pass
    with pytest.raises(ValueError, match=r"backend must be None or one of \[.*'gloo'.*\], got 'bogus'"):
        with distributed.process_group(backend="bogus"):
            pass
    for backend in ("gloo", "cpu:gloo,cuda:nccl"):
        with distributed.process_group(backend=backend) as group:
            assert group.world_size == 1


def test_process_group_devices_are_checked_as_samplings_are():
    """The device check of sample, find_mode and the job (sampling_device), not torch's raw RuntimeError."""
    for device, match in (("gpu0", "device must name a torch device"), ("meta", "device is the meta device")):
        with pytest.raises(ValueError, match=match):
            with distributed.process_group(device=device):
                pass


def test_traces_of_ranks_stopped_at_different_steps_are_joined_on_the_draws_every_rank_made():
    """A Ctrl-C stops each rank at its own step: before, rank 0 raised "the ranks kept different draws" and
    the job lost every draw (and wrote nothing)."""
    options = dict(num_chains=1, num_steps=100, burn_in=10, progress=False)
    whole = sgmcmc.SGLD(standard_normal_log_posterior, 0.1).sample(torch.zeros(2), seed=1, **options)
    with pytest.warns(RuntimeWarning, match="interrupted after 60 of 100"):
        stopped = sgmcmc.SGLD(Interrupting(standard_normal_log_posterior, at_step=60), 0.1).sample(
            torch.zeros(2), seed=2, **options
        )
    whole.attrs["diverged_at_step"] = "[70]"  # a divergence after the other rank stopped: not in the trace
    with pytest.warns(
        RuntimeWarning,
        match=r"stopped after different numbers of steps \(\[100, 60\]\); the trace "
        r"keeps the 50 draws of the first 60 steps",
    ):
        joined = distributed._concatenate_chains([whole, stopped], seed=[1, 2], seeds=[1, 2], num_processes=2)
    assert joined.num_draws == 50 and joined.attrs["steps_done"] == 60
    np.testing.assert_array_equal(joined.draw_coords["step"], np.arange(10, 60))
    np.testing.assert_array_equal(joined.posterior["theta"][0], whole.posterior["theta"][0, :50])
    np.testing.assert_array_equal(joined.posterior["theta"][1], stopped.posterior["theta"][0])
    assert joined.diverged_at_step.tolist() == [-1, -1]

"""Worker for tests/test_distributed.py, run as ``torchrun --nproc-per-node=2 tests/distributed_script.py MODE OUT``.

Modes:
    sample: chain-parallel SGHMC (5 chains over 2 ranks), chain-parallel SGLD whose chain on rank 1
        diverges, data-parallel SGLD on shards of pre-made batches of other sizes (refused), a
        data-parallel SGLD whose rank 1 has another step size (the replicas drift apart),
        data-parallel LD and data-parallel pSGLD
        with its Hessian-vector product on full-batch shards, and the data-parallel LD again with
        ``compile=True`` (a compile failure is an error here, not a fallback); the sharing helpers,
        ``keep`` given as a generator or set, a data-parallel trace file, and ``num_data`` that does
        not match the shards; rank 0 saves every result to OUT.
    fail: data-parallel SGLD in which rank 1 raises after a few steps.
    stop: data-parallel SGLD stopped by one rank's ``stop_when``, by Ctrl-C (SIGINT) reaching the ranks at other
        steps, and by Ctrl-C in a run of slow steps; rank 0 saves what each run kept to OUT.
    forced: data-parallel SGLD whose rank 1 gets a second Ctrl-C while its peer waits in a collective.
    hang: rank 1 sleeps past rank 0's 4 s collective timeout before it starts.

The models are also imported by the test, which runs them in a single process to compare.
"""

from __future__ import annotations

import os
import signal
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

import sgmcmc
from sgmcmc import distributed

NUM_DATA = 64
DIM = 3
NUM_STEPS = 30


def regression_data() -> tuple[torch.Tensor, torch.Tensor]:
    """Logistic-regression data, float64: features (NUM_DATA, DIM), labels (NUM_DATA,)."""
    generator = torch.Generator().manual_seed(3)
    features = torch.randn(NUM_DATA, DIM, generator=generator, dtype=torch.float64)
    labels = (torch.rand(NUM_DATA, generator=generator, dtype=torch.float64) < torch.sigmoid(features[:, 0])).double()
    return features, labels


def log_posterior(num_data: int = NUM_DATA) -> Any:
    """Bayesian logistic regression with a N(0, 1) prior, minibatch-scaled to ``num_data`` rows."""

    def log_prior(params: dict[str, torch.Tensor]) -> torch.Tensor:
        return -0.5 * (params["weights"] ** 2).sum()

    def log_likelihood(params: dict[str, torch.Tensor], batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        features, labels = batch
        logits = features @ params["weights"]
        return -torch.nn.functional.binary_cross_entropy_with_logits(logits, labels, reduction="none")

    return sgmcmc.minibatch_log_posterior(log_prior, log_likelihood, num_data=num_data)


def init() -> dict[str, torch.Tensor]:
    return {"weights": torch.zeros(DIM, dtype=torch.float64)}


def chain_parallel_run() -> dict[str, Any]:
    """Arguments of the chain-parallel SGHMC run: 5 chains, so the 2 ranks get 2 and 3 (a rank of one
    chain would call log_posterior without vmap, whose matrix-vector products round apart)."""
    features, labels = regression_data()
    return {
        "sampler": sgmcmc.SGHMC(log_posterior(), step_size=1e-3, friction=0.1),
        "init": init(),
        "data": sgmcmc.Minibatches(features, labels, batch_size=16),
        "num_chains": 5,
        "num_steps": NUM_STEPS,
        "burn_in": 5,
        "thin": 2,
        "seed": 11,
        "init_jitter": 0.1,
        "functionals": {"norm": lambda params: (params["weights"] ** 2).sum()},
        "progress": False,
    }


def diverging_chain_parallel_run() -> dict[str, Any]:
    """Arguments of a chain-parallel SGLD run whose last chain (on rank 1) diverges: θ⁴ from 10 at step 0.01."""
    return {
        "sampler": sgmcmc.SGLD(lambda params: -(params["weights"] ** 4).sum(), step_size=0.01),
        "init": {"weights": torch.tensor([[0.1] * DIM, [0.1] * DIM, [10.0] * DIM], dtype=torch.float64)},
        "data": None,
        "num_chains": 3,
        "num_steps": NUM_STEPS,
        "stacked_init": True,
        "seed": 2,
        "progress": False,
    }


def full_batch_samplers() -> dict[str, sgmcmc.Sampler]:
    """Samplers whose data-parallel run on full-batch shards equals the single-process full-batch run."""
    return {
        "ld": sgmcmc.LD(log_posterior(), step_size=0.02),
        "psgld": sgmcmc.PSGLD(log_posterior(), step_size=1e-2, gamma_correction=True),
    }


def full_batch_data(features: torch.Tensor, labels: torch.Tensor, sampler_name: str) -> Any:
    """LD takes rows; pSGLD takes a list of one batch (the whole shard every step, same generator draws)."""
    if sampler_name == "ld":
        return sgmcmc.Minibatches(features, labels, batch_size=len(labels))
    return [(features, labels)]


def as_arrays(trace: sgmcmc.Trace) -> dict[str, Any]:
    return {
        "posterior": dict(trace.posterior),
        "sample_stats": dict(trace.sample_stats),
        "functionals": dict(trace.functionals),
        "attrs": trace.attrs,
        "final_params": trace.final_state["params"],
    }


def every_rank(value: Any) -> list[Any]:
    """``value`` of every rank, in rank order."""
    gathered = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(gathered, value)
    return gathered


def refusals(run: Callable[..., Any], sampler: sgmcmc.Sampler, data: Any, **options: Any) -> list[str | None]:
    """Every rank's ValueError message from ``run(sampler, init(), data, **options)``, or None where it ran."""
    refused = None
    try:
        run(sampler, init(), data, progress=False, **options)
    except ValueError as error:
        refused = str(error)
    return every_rank(refused)


def sample(output: Path) -> None:
    torch.set_num_threads(1)
    with distributed.process_group(timeout_s=30) as group:
        results = {}
        run = chain_parallel_run()
        trace = distributed.sample_chain_parallel(run.pop("sampler"), run.pop("init"), run.pop("data"), **run)
        results["chains"] = None if trace is None else as_arrays(trace)
        run = diverging_chain_parallel_run()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            trace = distributed.sample_chain_parallel(run.pop("sampler"), run.pop("init"), run.pop("data"), **run)
        if trace is not None:
            results["diverging_chains"] = {
                **as_arrays(trace),
                "warnings": [str(warning.message) for warning in caught],
            }
        shard = distributed.shard_rows(*regression_data())
        rows = 16 if group.rank == 0 else 8  # pre-made batches: as many per rank, of other sizes
        try:
            distributed.sample_data_parallel(
                sgmcmc.SGLD(log_posterior(), step_size=1e-3),
                init(),
                [(shard[0][start : start + rows], shard[1][start : start + rows]) for start in (0, rows)],
                num_chains=1,
                num_steps=2,
                progress=False,
            )
        except ValueError as error:
            results["unequal_batches"] = str(error)
        sgld = lambda step_size=1e-3: sgmcmc.SGLD(log_posterior(), step_size=step_size)  # noqa: E731
        # rank 1 given another number of steps: refused at the start, not at the 30 s timeout
        results["other_num_steps"] = refusals(
            distributed.sample_data_parallel,
            sgld(),
            sgmcmc.Minibatches(*shard, batch_size=8),
            num_chains=1,
            num_steps=3 if group.rank == 0 else 4,
        )
        # rank 1's chains given another step size: refused, not gathered into one trace
        results["other_step_size"] = refusals(
            distributed.sample_chain_parallel,
            sgld(1e-3 if group.rank == 0 else 2e-3),
            sgmcmc.Minibatches(*regression_data(), batch_size=8),
            num_chains=2,
            num_steps=3,
        )
        # rank 1's chains given other labels (of the same size): refused, not gathered into one trace
        features, labels = regression_data()
        results["other_data"] = refusals(
            distributed.sample_chain_parallel,
            sgld(),
            sgmcmc.Minibatches(features, labels if group.rank == 0 else -labels, batch_size=8),
            num_chains=2,
            num_steps=3,
        )
        # rank 1's chains given batches of another size: refused, not gathered into one trace
        results["other_batch_size"] = refusals(
            distributed.sample_chain_parallel,
            sgld(),
            sgmcmc.Minibatches(features, labels, batch_size=8 + group.rank),
            num_chains=2,
            num_steps=3,
        )
        # rank 1's shard in float32: refused at the start, not a deadlock of unlike all_reduces
        results["other_dtype"] = refusals(
            distributed.sample_data_parallel,
            sgld(),
            sgmcmc.Minibatches(*(tensor.float() if group.rank == 1 else tensor for tensor in shard), batch_size=8),
            num_chains=1,
            num_steps=3,
        )
        rank_1_step_size = sgmcmc.SGLD(log_posterior(), step_size=1e-3 if group.rank == 0 else 2e-3)
        # a setting the start-up comparison cannot see (here hidden from it): the replicas drift apart
        rank_1_step_size.hyperparameters = lambda: {"step_size": 1e-3}
        try:
            distributed.sample_data_parallel(
                rank_1_step_size,
                init(),
                sgmcmc.Minibatches(*shard, batch_size=8),
                num_chains=1,
                num_steps=3,
                progress=False,
            )
        except distributed.DistributedSamplingError as error:
            results["drifted"] = str(error)
        samplers = full_batch_samplers()
        for name, compile in [*((name, False) for name in samplers), ("ld", True)]:
            with warnings.catch_warnings():
                warnings.filterwarnings("error", message="compile=True")
                trace = distributed.sample_data_parallel(
                    samplers[name],
                    init(),
                    full_batch_data(*shard, name),
                    num_chains=2,
                    num_steps=NUM_STEPS,
                    seed=5,
                    progress=False,
                    compile=compile,
                )
            results[f"{name}_compiled" if compile else name] = None if trace is None else as_arrays(trace)
        results["helpers"] = every_rank(sharing_helpers())
        results["keep"] = every_rank(keep_not_a_list(shard))
        trace_file = output.with_name("data_parallel.nc")
        trace = distributed.sample_data_parallel(
            sgmcmc.SGLD(log_posterior(), step_size=1e-3),
            init(),
            sgmcmc.Minibatches(*shard, batch_size=8),
            num_chains=2,
            num_steps=5,
            progress=False,
            trace_file=trace_file,
        )
        if trace is not None:
            results["trace_file"] = {
                "returned": dict(trace.posterior),
                "file": dict(sgmcmc.Trace.load(trace_file).posterior),
            }
        results["num_data_warnings"] = every_rank(num_data_warnings(shard))
        if group.rank == 0:
            distributed.write_atomically(output, lambda path: torch.save(results, path))


def sharing_helpers() -> dict[str, Any]:
    """This rank's share of 8-row batches, of 5 rows (with the warning), and AveragedPotential.value of
    a potential whose value is the rank."""
    rank = torch.distributed.get_rank()

    class RankValue:
        def value(self, params: Any, batch: Any = None) -> torch.Tensor:
            return torch.tensor([float(rank)], dtype=torch.float64)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rows = distributed.shard_rows(torch.arange(5))[0].tolist()
    return {
        "batch_size": distributed.shard_minibatches(sgmcmc.Minibatches(*regression_data(), batch_size=8)).batch_size,
        "rows": rows,
        "warnings": [str(warning.message) for warning in caught],
        "averaged_value": distributed.AveragedPotential(RankValue()).value({}).item(),
    }


def keep_not_a_list(shard: tuple[torch.Tensor, ...]) -> list[list[str]]:
    """The kept names of a chain-parallel run given ``keep`` as a generator and of a data-parallel run given a
    set (before, both were refused: their reprs differ between ranks)."""
    two_params = {"weights": init()["weights"], "unused": torch.zeros(2, dtype=torch.float64)}
    model = log_posterior()

    def with_unused(params: dict[str, torch.Tensor], batch: Any) -> torch.Tensor:
        return model(params, batch) + 0.0 * params["unused"].sum()

    options = dict(num_chains=2, num_steps=2, progress=False)
    chains = distributed.sample_chain_parallel(
        sgmcmc.SGLD(model, step_size=1e-3),
        init(),
        sgmcmc.Minibatches(*regression_data(), batch_size=8),
        keep=(name for name in ["weights"]),
        **options,
    )
    data = distributed.sample_data_parallel(
        sgmcmc.SGLD(with_unused, step_size=1e-3),
        two_params,
        sgmcmc.Minibatches(*shard, batch_size=8),
        keep={"weights", "unused"},
        **options,
    )
    return [sorted(trace.posterior) for trace in (chains, data) if trace is not None]


def num_data_warnings(shard: tuple[torch.Tensor, ...]) -> list[str]:
    """The warnings of data-parallel runs whose log posterior counts one shard's rows as N, and whose ranks
    each got the whole data set."""
    messages = []
    for num_data, data in ((len(shard[0]), shard), (NUM_DATA, regression_data())):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            distributed.sample_data_parallel(
                sgmcmc.SGLD(log_posterior(num_data), step_size=1e-3),
                init(),
                sgmcmc.Minibatches(*data, batch_size=8),
                num_chains=1,
                num_steps=2,
                progress=False,
            )
        messages += [str(warning.message) for warning in caught if "num_data" in str(warning.message)]
    return messages


def hang() -> None:
    with distributed.process_group(timeout_s=4) as group:
        if group.rank == 1:
            time.sleep(60)
        distributed.sample_data_parallel(
            sgmcmc.SGLD(log_posterior(), step_size=1e-3),
            init(),
            sgmcmc.Minibatches(*distributed.shard_rows(*regression_data()), batch_size=8),
            num_chains=1,
            num_steps=2,
            progress=False,
        )


def slow_gather(output: Path) -> None:
    """One chain, on rank 1, for about 4 s, under a 2 s timeout: rank 0, which has no chain, waits at the
    gather for longer than the timeout."""
    with distributed.process_group(timeout_s=2) as group:
        healthy = log_posterior()

        def slow_log_posterior(params: dict[str, torch.Tensor], batch: Any) -> torch.Tensor:
            time.sleep(0.25)
            return healthy(params, batch)

        trace = distributed.sample_chain_parallel(
            sgmcmc.SGLD(slow_log_posterior, step_size=1e-3),
            init(),
            sgmcmc.Minibatches(*regression_data(), batch_size=8),
            num_chains=1,
            num_steps=16,
            progress=False,
        )
        if group.rank == 0:
            output.write_text(str(trace.num_draws))


def no_group() -> None:
    distributed.shard_rows(*regression_data())


def fail() -> None:
    torch.set_num_threads(1)
    with distributed.process_group(timeout_s=20) as group:
        calls = 0
        healthy = log_posterior()

        def failing_log_posterior(params: dict[str, torch.Tensor], batch: Any) -> torch.Tensor:
            nonlocal calls
            calls += 1
            if group.rank == 1 and calls > 5:
                raise RuntimeError("rank 1 fails on purpose")
            return healthy(params, batch)

        features, labels = distributed.shard_rows(*regression_data())
        distributed.sample_data_parallel(
            sgmcmc.SGLD(failing_log_posterior, step_size=1e-3),
            init(),
            sgmcmc.Minibatches(features, labels, batch_size=8),
            num_chains=2,
            num_steps=100_000,
            progress=False,
        )


def _signalling_log_posterior(signals: dict[int, tuple[float, ...]], sleep: float = 0.0) -> Callable[..., torch.Tensor]:
    """The regression's log posterior, sleeping ``sleep`` seconds at each call; at call n (from 1), for each
    pause in ``signals[n]``, it waits that many seconds and sends this process SIGINT."""
    healthy, calls = log_posterior(), 0

    def signalling(params: dict[str, torch.Tensor], batch: Any) -> torch.Tensor:
        nonlocal calls
        calls += 1
        time.sleep(sleep)
        for pause in signals.get(calls, ()):
            time.sleep(pause)
            os.kill(os.getpid(), signal.SIGINT)
        return healthy(params, batch)

    return signalling


def stop(output: Path) -> None:
    """Data-parallel SGLD stopped by rank 1's stop_when alone; by Ctrl-C reaching rank 1 twice at once at its
    20th call (a terminal's and torchrun's copy) and rank 0 at its 40th; and by Ctrl-C on rank 1 in a run of
    0.2 s steps. Rank 0 saves what each run kept."""
    torch.set_num_threads(1)
    with distributed.process_group(timeout_s=20) as group:
        shard = distributed.shard_rows(*regression_data())
        runs = {
            "stop_when": (log_posterior(), lambda steps_done: group.rank == 1 and steps_done >= 5),
            "ctrl_c": (_signalling_log_posterior({20: (0, 0)} if group.rank == 1 else {40: (0,)}), None),
            "slow_steps": (_signalling_log_posterior({5: (0,)} if group.rank == 1 else {}, sleep=0.2), None),
        }
        results = {}
        for name, (density, stop_when) in runs.items():
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                trace = distributed.sample_data_parallel(
                    sgmcmc.SGLD(density, step_size=1e-3),
                    init(),
                    sgmcmc.Minibatches(*shard, batch_size=8),
                    num_chains=2,
                    num_steps=100_000,
                    progress=False,
                    stop_when=stop_when,
                )
            if group.rank == 0:
                results[name] = {
                    "steps_done": trace.attrs["steps_done"],
                    "num_draws": trace.num_draws,
                    "warnings": [str(warning.message) for warning in caught],
                }
        if group.rank == 0:
            torch.save(results, output)


def forced() -> None:
    """Rank 1 gets Ctrl-C, then another 1.2 s later while its log posterior runs; rank 0 waits in the step's
    all-reduce."""
    torch.set_num_threads(1)
    with distributed.process_group(timeout_s=20) as group:
        distributed.sample_data_parallel(
            sgmcmc.SGLD(_signalling_log_posterior({5: (0, 1.2)} if group.rank == 1 else {}), step_size=1e-3),
            init(),
            sgmcmc.Minibatches(*distributed.shard_rows(*regression_data()), batch_size=8),
            num_chains=2,
            num_steps=100_000,
            progress=False,
        )


if __name__ == "__main__":
    mode, *arguments = sys.argv[1:]
    if mode == "sample":
        sample(Path(arguments[0]))
    elif mode == "fail":
        fail()
    elif mode == "stop":
        stop(Path(arguments[0]))
    elif mode == "forced":
        forced()
    elif mode == "hang":
        hang()
    elif mode == "slow_gather":
        slow_gather(Path(arguments[0]))
    elif mode == "no_group":
        no_group()
    else:
        raise SystemExit(f"unknown mode {mode!r}")
